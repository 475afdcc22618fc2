"""Device equations exactly as ngspice 39 evaluates them in a DC operating point.

Sources: ngspice's const.h (CODATA 2014 constants), devices/dio/diotemp.c (temperature scaling)
and devices/dio/dioload.c (junction current, reverse cubic, GMIN), devsup.c (DEVpnjlim).
Only what a level-1 diode with IS, N and TNOM set needs: no series resistance, no breakdown.
"""

from __future__ import annotations

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
        vd = np.asarray(vd, dtype=float)
        forward = vd >= -3.0 * self.vte
        e = np.exp(np.where(forward, vd, 0.0) / self.vte)
        # Below -3·vte ngspice replaces the exponential by a cubic that tends to -IS.
        safe = np.where(forward, -1.0, vd)
        cube = (3.0 * self.vte / (safe * np.e)) ** 3
        cd = np.where(forward, self.saturation_current * (e - 1.0), -self.saturation_current * (1.0 + cube))
        gd = np.where(forward, self.saturation_current * e / self.vte, self.saturation_current * 3.0 * cube / safe)
        return cd + self.gmin * vd, gd + self.gmin

    def limit(self, vnew: np.ndarray, vold: np.ndarray) -> np.ndarray:
        """DEVpnjlim: keep a Newton step on the exponential from overshooting."""
        vnew = np.asarray(vnew, dtype=float)
        vold = np.asarray(vold, dtype=float)
        vt = self.vte
        if len(vnew) == 0 or np.max(np.abs(vnew - vold)) <= 2.0 * vt:
            return vnew  # small steps are never limited (and never reach the floor below)
        big = (vnew > self.vcrit) & (np.abs(vnew - vold) > 2.0 * vt)
        with np.errstate(invalid="ignore", divide="ignore"):
            arg = (vnew - vold) / vt
            up = vold + vt * (2.0 + np.log(np.maximum(arg - 2.0, 1e-300)))
            down = vold - vt * (2.0 + np.log(np.maximum(2.0 - arg, 1e-300)))
            from_off = vt * np.log(np.maximum(vnew / vt, 1e-300))
        stepped = np.where(vold > 0.0, np.where(arg > 0.0, up, down), from_off)
        out = np.where(big, stepped, vnew)
        floor = np.where(vold > 0.0, -vold - 1.0, 2.0 * vold - 1.0)
        return np.where(~big & (out < 0.0) & (out < floor), floor, out)
