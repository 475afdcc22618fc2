"""Device equations exactly as ngspice 39 evaluates them in a DC operating point.

Sources: ngspice's const.h (CODATA 2014 constants), devices/dio/diotemp.c (temperature scaling)
and devices/dio/dioload.c (junction current, reverse cubic, GMIN), devsup.c (DEVpnjlim).
Only what a level-1 diode with IS, N and TNOM set needs: no series resistance, no breakdown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hil.network import DiodeModel

CHARGE = 1.6021766208e-19  # C
BOLTZMANN = 1.38064852e-23  # J/K
CELSIUS_TO_KELVIN = 273.15
K_OVER_Q = BOLTZMANN / CHARGE
ENERGY_GAP = 1.11  # EG default, eV
XTI = 3.0  # saturation-current temperature exponent, default
DEFAULT_GMIN = 1e-12  # S, ngspice's CKTgmin
EXP_CAP = 600.0  # largest vd/vte fed to exp in the vectorised diode: e^600 ≈ 4e260, far from overflow


@dataclass(frozen=True)
class DiodeAtTemperature:
    """A diode model evaluated at the circuit temperature, as ngspice's DIOtemp does."""

    vte: float  # N·kT/q, V
    saturation_current: float  # A, at the circuit temperature
    vcrit: float  # V, where ngspice starts and limits Newton steps
    gmin: float

    @classmethod
    def at(cls, model: DiodeModel, temperature_c: float, gmin: float = DEFAULT_GMIN) -> DiodeAtTemperature:
        t = temperature_c + CELSIUS_TO_KELVIN
        tnom = model.nominal_temperature + CELSIUS_TO_KELVIN
        vte = model.emission_coefficient * K_OVER_Q * t
        ratio = t / tnom
        isat = model.saturation_current * np.exp(
            (ratio - 1.0) * ENERGY_GAP / vte + XTI / model.emission_coefficient * np.log(ratio)
        )
        vcrit = vte * np.log(vte / (np.sqrt(2.0) * isat))
        return cls(float(vte), float(isat), float(vcrit), gmin)

    def current(self, vd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(current, conductance) at junction voltages `vd`, GMIN included."""
        # A plain loop: clamp circuits have a few diodes, where numpy's per-call cost dominates.
        vte, isat, gmin = self.vte, self.saturation_current, self.gmin
        edge = -3.0 * vte
        n = len(vd)
        cd, gd = [0.0] * n, [0.0] * n
        for i, v in enumerate(np.asarray(vd, dtype=float).tolist()):
            if v >= edge:
                e = math.exp(v / vte)
                cd[i] = isat * (e - 1.0) + gmin * v
                gd[i] = isat * e / vte + gmin
            else:  # below -3·vte ngspice swaps the exponential for a cubic that tends to -IS
                a = 3.0 * vte / (v * math.e)
                a = a * a * a
                cd[i] = -isat * (1.0 + a) + gmin * v
                gd[i] = isat * 3.0 * a / v + gmin
        return np.array(cd), np.array(gd)

    def limit(self, vnew: np.ndarray, vold: np.ndarray) -> np.ndarray:
        """DEVpnjlim: keep a Newton step on the exponential from overshooting. Returns `vnew`
        itself when no junction needed limiting."""
        vt, vcrit = self.vte, self.vcrit
        out = np.asarray(vnew, dtype=float).tolist()
        changed = False
        for i, (v, old) in enumerate(zip(out, np.asarray(vold, dtype=float).tolist(), strict=True)):
            if v > vcrit and abs(v - old) > 2.0 * vt:
                if old > 0.0:
                    arg = (v - old) / vt
                    out[i] = (
                        old + vt * (2.0 + math.log(arg - 2.0))
                        if arg > 0.0
                        else old - vt * (2.0 + math.log(2.0 - arg))
                    )
                else:
                    out[i] = vt * math.log(v / vt)
                changed = True
            elif v < 0.0:
                floor = -old - 1.0 if old > 0.0 else 2.0 * old - 1.0
                if v < floor:
                    out[i] = floor
                    changed = True
        return np.array(out) if changed else vnew

    # Vectorised twins of `current` and `limit`, for junction voltages of any shape (a batch of
    # samples × diodes): the same formulas, term for term.
    def currents(self, vd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(current, conductance) at junction voltages `vd` of any shape, GMIN included."""
        vte, isat, gmin = self.vte, self.saturation_current, self.gmin
        edge = -3.0 * vte
        forward = vd >= edge
        # Capped where exp would overflow: such a junction (31 V at N = 2, 27 °C) makes Newton's next
        # step diverge, which the solver reports, instead of raising mid-step.
        e = np.exp(np.minimum(vd, EXP_CAP * vte) / vte)  # below the edge unused (and no overflow)
        below = np.minimum(vd, edge)
        a = 3.0 * vte / (below * math.e)
        a = a * a * a
        # isat·(e − 1) and −isat·(1 + a) as one isat·(x − 1), x = e or −a: fewer passes.
        cd = np.where(forward, e, -a)
        cd -= 1.0
        cd *= isat
        cd += gmin * vd
        gd = np.where(forward, e * (isat / vte), a * (isat * 3.0) / below)
        gd += gmin
        return cd, gd

    def limits(self, vnew: np.ndarray, vold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """DEVpnjlim for arrays of any shape: (limited voltages, which junctions were limited)."""
        vt, vcrit = self.vte, self.vcrit
        up = (vnew > vcrit) & (np.abs(vnew - vold) > 2.0 * vt)
        # The floor is below -1 V, so a junction under it is also below 0, as DEVpnjlim asks.
        floor = np.where(vold > 0.0, -vold - 1.0, 2.0 * vold - 1.0)
        down = ~up & (vnew < floor)
        limited = up | down
        if not limited.any():
            return vnew, limited
        arg = (vnew - vold) / vt
        # Each branch's argument kept in its domain where the branch is not taken (no warnings).
        rising = np.where(
            arg > 0.0,
            vold + vt * (2.0 + np.log(np.maximum(arg - 2.0, 1e-300))),
            vold - vt * (2.0 + np.log(2.0 - np.minimum(arg, 0.0))),
        )
        lifted = np.where(vold > 0.0, rising, vt * np.log(np.maximum(vnew, vcrit) / vt))
        return np.where(up, lifted, np.where(down, floor, vnew)), limited
