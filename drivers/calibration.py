"""Pot calibration: each pot's conductance measured in-circuit against its code, a fit of its
wiper and end-to-end resistances, and the table file a bench config loads (`[instruments.NAME]
calibration`). `hil calibrate-pots` runs `calibrate` on an open bench; the trainer then maps
conductance to code through the measured table (`drivers.pots.Calibration`).

Only what the bench's instruments measure is used (no ohmmeter on the board):

- A pot between a source node and a probed node (R1…R6 of the XOR bench: each source node carries
  one pot only): its SMU forces V_s and reads the current I_s it delivers; all of it flows through
  the pot, so G = I_s / (V_s − V_h), with V_h read by the probe. The other sources sit at 0 V.
- A pot between two nodes of which one is a nudged output that nothing but pots joins (R7, R8 to
  node 11): KCL at the output, I_n = Σ_k G_k (V_out − V_k), summed over its pots, with the nudge
  current I_n forced (and known) and every V read. One pot's code is swept while the others are
  held; their conductances are unknowns shared by every reading, so the readings at all swept codes
  and several states (nudge currents of either sign, held pots' far nodes moved by the inputs)
  are one linear least-squares problem: unknowns G(code) of the swept pot and G of each held pot.
  The held pots sit at the safe (top) code, the smallest conductance, so the current circulating
  between the far nodes through them stays small, and the nudge current is sized per code from the
  nominal conductance so the pot sees about `volts` across it.

Any other pot (its terminals not observable this way) is refused before anything is energised.

The fit: 1/G = R_W + R_AB·code/256 by least squares on the relative residuals (a reading's error is
a fraction of it, so the small resistances of the low codes weigh as much as the large ones).
Out-of-spec parts are named against the AD5204/AD5206 datasheet (Rev. C, Table 1): nominal resistor
tolerance ΔR_AB −30 % … +30 % at 25 °C, wiper resistance R_W 50 Ω typical, 100 Ω maximum.
"""

from __future__ import annotations

import datetime as _dt
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tomli_w

from drivers.pots import TAPS, AD5206Model, Calibration
from hil.interface import State
from hil.network import Network

# AD5204/AD5206 data sheet, Rev. C, Table 1 (rheostat mode, 25 °C).
R_AB_TOLERANCE = 0.30  # nominal resistor tolerance ΔR_AB, ± fraction
R_W_MAX = 100.0  # Ω, wiper resistance, maximum
ALL_CODES = tuple(range(TAPS))
FORMAT = 1  # the table file's layout version


class CalibrationError(ValueError):
    """A pot cannot be calibrated as asked (one line: what and how to fix it)."""


# ---------------------------------------------------------------------------------------- the fit
@dataclass(frozen=True)
class PotFit:
    """One pot: what was measured and the rheostat fitted to it."""

    edge: str
    bank: str
    channel: int
    codes: tuple[int, ...]
    conductances: tuple[float, ...]  # S, measured, one per code
    r_w: float  # Ω
    r_ab: float  # Ω
    rms_relative: float  # rms of (G_fit − G)/G over the codes

    def fitted(self, code: int) -> float:
        return 1.0 / (self.r_w + self.r_ab * code / TAPS)

    def table(self) -> dict[int, float]:
        """Conductance per code: measured where measured, the fit elsewhere."""
        out = {code: self.fitted(code) for code in ALL_CODES}
        out.update(zip(self.codes, self.conductances, strict=True))
        return out

    def problems(self, nominal: AD5206Model) -> list[str]:
        """Where the part is outside its datasheet figures (empty when it is in spec)."""
        found = []
        deviation = self.r_ab / nominal.r_ab - 1.0
        if abs(deviation) > R_AB_TOLERANCE:
            found.append(
                f"R_AB {self.r_ab:.4g} Ω is {deviation:+.0%} off the nominal {nominal.r_ab:.4g} Ω "
                f"(datasheet ±{R_AB_TOLERANCE:.0%})"
            )
        if self.r_w > R_W_MAX or self.r_w < 0:
            found.append(f"R_W {self.r_w:.4g} Ω is outside 0…{R_W_MAX:g} Ω (datasheet maximum)")
        return found


def fit_rheostat(codes: Sequence[int], conductances: Sequence[float]) -> tuple[float, float, float]:
    """(R_W, R_AB, rms relative residual) of 1/G = R_W + R_AB·code/256, least squares weighted by
    1/R so every code counts by its relative error."""
    c = np.asarray(codes, dtype=float)
    g = np.asarray(conductances, dtype=float)
    if len(set(codes)) < 2:
        raise CalibrationError("a fit needs at least two different codes: give --codes with two or more")
    if not np.all(g > 0):
        raise CalibrationError("a measured conductance is not positive: check the pot's wiring")
    r = 1.0 / g
    design = np.column_stack([np.ones_like(c), c / TAPS]) / r[:, None]
    (r_w, r_ab), *_ = np.linalg.lstsq(design, np.ones_like(r), rcond=None)
    fitted = 1.0 / (r_w + r_ab * c / TAPS)
    return float(r_w), float(r_ab), float(np.sqrt(np.mean(((fitted - g) / g) ** 2)))


# ---------------------------------------------------------------------------------------- the file
def save(path: Path, bank: str, fits: Sequence[PotFit], note: str) -> None:
    """The table file of one pot bank (TOML: a lab can read it)."""
    tables: dict[str, Any] = {
        "format": FORMAT,
        "bank": bank,
        "written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "channels": {
            str(f.channel): {
                "edge": f.edge,
                "r_w": f.r_w,
                "r_ab": f.r_ab,
                "rms_relative": f.rms_relative,
                "codes": list(f.codes),
                "conductances": list(f.conductances),
            }
            for f in sorted(fits, key=lambda f: f.channel)
        },
    }
    header = "".join(f"# {line}\n" for line in note.splitlines())
    path.write_text(header + tomli_w.dumps(tables))


def load(path: Path, bank: str, channels: int) -> dict[int, Calibration]:
    """Per channel, the measured conductances (the fit for codes not measured). Raises
    `CalibrationError` (one line) for a file that is missing, malformed, or for another bank."""
    return {fit.channel: Calibration(fit.table()) for fit in read_fits(path, bank, channels)}


def read_fits(path: Path, bank: str, channels: int) -> list[PotFit]:
    """The table file's pots as written (see `load`)."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(
            f"calibration file {path} not found: run `hil calibrate-pots` on this bench to write it"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CalibrationError(
            f"calibration file {path} cannot be read ({exc}): write it again with `hil calibrate-pots`"
        ) from None
    again = "write it again with `hil calibrate-pots`"
    if raw.get("format") != FORMAT or not isinstance(raw.get("channels"), dict):
        raise CalibrationError(f"{path} is not a pot calibration table (format {FORMAT}): {again}")
    if raw.get("bank") != bank:
        raise CalibrationError(f"{path} calibrates bank {raw.get('bank')!r}, not {bank!r}: name its own file")
    out: list[PotFit] = []
    for key, entry in raw["channels"].items():
        try:
            channel = int(key)
            codes = [int(c) for c in entry["codes"]]
            g = [float(x) for x in entry["conductances"]]
            r_w, r_ab = float(entry["r_w"]), float(entry["r_ab"])
            if not 1 <= channel <= channels or len(codes) != len(g) or not codes:
                raise ValueError("channel or table size")
            rms = float(entry.get("rms_relative", 0.0))
            fit = PotFit(str(entry.get("edge", "")), bank, channel, tuple(codes), tuple(g), r_w, r_ab, rms)
            fit.table()  # refuses a table that is not a calibration (a code out of range, G ≤ 0)
            Calibration(fit.table())
            out.append(fit)
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{path}: channel {key!r} is malformed ({exc}): {again}") from None
    return out


def common_range(calibrations: Mapping[str, Calibration]) -> tuple[float, float]:
    """The conductances every pot can realise: (largest g_min, smallest g_max)."""
    return max(c.g_min for c in calibrations.values()), min(c.g_max for c in calibrations.values())


# ---------------------------------------------------------------------------------------- measuring
class CalibrationBench(Protocol):
    """What `calibrate` needs of a bench (`drivers.bench.BenchBackend`)."""

    network: Network

    def program_codes(self, codes: dict[str, int]) -> np.ndarray: ...

    def settle_levels(
        self, levels: dict[str, float], nudge_currents: dict[str, float] | None = None
    ) -> tuple[State, dict[str, float]]: ...


@dataclass(frozen=True)
class Plan:
    """How one pot is measured: through its own source (`source`), or by KCL at a nudged output
    (`output`, with the `held` pots that join it too)."""

    edge: str
    far: str  # the node at the pot's other end
    source: str = ""  # network source whose node holds only this pot
    output: str = ""  # nudged output node that only pots join
    held: tuple[str, ...] = ()  # the other pots at that output
    # Source plans: the other pots at the far node whose other end is a source (at 0 V): set near
    # the tested pot's conductance, they hold the far node near half the drive, so the drop across
    # the tested pot is large enough to read at every code.
    companions: tuple[str, ...] = ()


def plan(network: Network, nudged: Sequence[str], probed: Sequence[str], edges: Sequence[str]) -> list[Plan]:
    """How each edge's pot is measured, or `CalibrationError` naming the first that cannot be."""
    observed = {s.node for s in network.sources} | set(nudged) | set(probed)
    fixed_at: set[str] = set()  # nodes fixed elements touch (their currents are not read)
    for clamp in network.clamps:
        fixed_at.add(clamp.node)
    for amp in network.amplifiers:
        fixed_at.update((amp.node_in, amp.node_out))
    for load in getattr(network, "loads", []):
        fixed_at.update(n for n in (getattr(load, "a", ""), getattr(load, "b", "")) if n)
    touching: dict[str, list[str]] = {}
    for g in network.conductances:
        touching.setdefault(g.a, []).append(g.name)
        touching.setdefault(g.b, []).append(g.name)
    by_node = {s.node: s.name for s in network.sources}
    sources_at: dict[str, int] = {}
    for s in network.sources:
        sources_at[s.node] = sources_at.get(s.node, 0) + 1
    plans = []
    edge_by_name = {g.name: g for g in network.conductances}
    for name in edges:
        g = edge_by_name[name]
        found: Plan | None = None
        for near, far in ((g.a, g.b), (g.b, g.a)):
            if far not in observed:
                continue
            if near in by_node and touching[near] == [name] and sources_at[near] == 1:
                companions = tuple(
                    e for e in touching[far] if e != name and _far_end(network, e, far) in by_node
                )
                found = Plan(name, far, source=by_node[near], companions=companions)
                break
            if near in nudged and near not in fixed_at and near not in by_node:
                others = tuple(e for e in touching[near] if e != name)
                ends = [edge_by_name[e].b if edge_by_name[e].a == near else edge_by_name[e].a for e in others]
                if all(end in observed for end in ends):
                    found = Plan(name, far, output=near, held=others)
                    break
        if found is None:
            raise CalibrationError(
                f"pot of edge {name} ({g.a}–{g.b}) cannot be measured in-circuit on this bench: neither "
                "end is a source node that only it joins nor a nudged output that only pots join, "
                "with the other ends read; calibrate it off the board"
            )
        plans.append(found)
    return plans


@dataclass(frozen=True)
class Levels:
    """The sizes of the calibration's stimuli."""

    volts: float = 0.2  # V across a pot under test (sources' pots; the nudge current is sized for it)
    drive: float = 0.5  # V on the inputs that move the held pots' far ends (output pots)
    max_current: float = 1e-3  # A through any pot: below the part's continuous wiper rating
    max_nudge: float = 1e-3  # A: the bench's max_nudge_current


def calibrate(
    bench: CalibrationBench,
    plans: Sequence[Plan],
    where: Mapping[str, tuple[str, int]],
    parts: Mapping[str, AD5206Model],
    codes: Sequence[int] = ALL_CODES,
    levels: Levels = Levels(),
    progress: Callable[[str], None] = lambda line: None,
    check: Callable[[], None] = lambda: None,
) -> list[PotFit]:
    """Every planned pot measured at `codes` and fitted. Pots not under test sit at the safe (top)
    code; levels are sized so no pot carries more than `levels.max_current` by the nominal part.
    `check` is called before each code (it raises to stop: a signal, between two readings)."""
    net = bench.network
    safe = TAPS - 1
    everything = {p.edge: safe for p in plans}
    fits = []
    for p in plans:
        bank, channel = where[p.edge]
        part = parts[bank]
        if p.source:
            g = _through_source(bench, p, codes, part, levels, everything, check)
        else:
            g = _through_output(bench, p, codes, part, levels, everything, net, check)
        bench.program_codes({p.edge: safe})
        r_w, r_ab, rms = fit_rheostat(codes, g)
        fits.append(PotFit(p.edge, bank, channel, tuple(codes), tuple(float(x) for x in g), r_w, r_ab, rms))
        progress(f"{p.edge} ({bank}.{channel}): R_W {r_w:.4g} Ω, R_AB {r_ab:.5g} Ω, fit rms {rms:.2%}")
    return fits


def _drive(part: AD5206Model, code: int, levels: Levels) -> float:
    """V across a pot so it carries at most `max_current` even if its conductance is twice the
    nominal (a part at the tolerance edge with a low wiper resistance)."""
    return min(levels.volts, levels.max_current / (2.0 * part.nominal_conductance(code)))


def _through_source(
    bench: CalibrationBench,
    p: Plan,
    codes: Sequence[int],
    part: AD5206Model,
    levels: Levels,
    start: dict[str, int],
    check: Callable[[], None],
) -> list[float]:
    bench.program_codes(dict(start))
    index = bench.network.node_index
    out = []
    for code in codes:
        check()
        share = part.nominal_conductance(code) / max(len(p.companions), 1)
        companion = min(part.codes, key=lambda c: abs(part.nominal_conductance(c) - share))
        bench.program_codes({p.edge: code, **{e: companion for e in p.companions}})
        volts = _drive(part, code, levels)
        state, currents = bench.settle_levels({p.source: volts})
        node = bench.network.sources[[s.name for s in bench.network.sources].index(p.source)].node
        across = state.voltages[index[node]] - state.voltages[index[p.far]]
        if abs(across) < 1e-3 * volts:
            raise CalibrationError(
                f"pot of edge {p.edge} at code {code}: {across:.3g} V across it, too little to measure: "
                "check its wiring (the probed node follows the source)"
            )
        out.append(currents[p.source] / across)
    return out


def _through_output(
    bench: CalibrationBench,
    p: Plan,
    codes: Sequence[int],
    part: AD5206Model,
    levels: Levels,
    start: dict[str, int],
    net: Network,
    check: Callable[[], None],
) -> list[float]:
    """KCL at the output: I_n = G_swept(code)·(V_out − V_far) + Σ_held G_h·(V_out − V_h)."""
    bench.program_codes(dict(start))
    index = net.node_index
    held_far = [_far_end(net, h, p.output) for h in p.held]
    # States that move the far ends apart, so the readings tell the held pots from the swept one:
    # the nudge of either sign, and each far end's own input in turn at `drive`.
    movers = _movers(net, [p.far, *held_far])
    rows: list[list[float]] = []
    rhs: list[float] = []
    n_codes = len(codes)
    for k, code in enumerate(codes):
        check()
        bench.program_codes({p.edge: code})
        current = levels.volts * part.nominal_conductance(code) / 2.0
        current = min(current, levels.max_current / 2.0, levels.max_nudge)
        states = [
            ({}, current),
            ({}, -current),
            *(({name: levels.drive}, current) for name in movers),
        ]
        for source_levels, nudge in states:
            state, _ = bench.settle_levels(source_levels, {p.output: nudge})
            v = state.voltages
            row = [0.0] * (n_codes + len(p.held))
            row[k] = v[index[p.output]] - v[index[p.far]]
            for j, far in enumerate(held_far):
                row[n_codes + j] = v[index[p.output]] - v[index[far]]
            rows.append(row)
            rhs.append(nudge)
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return [float(x) for x in solution[:n_codes]]


def _movers(net: Network, ends: Sequence[str]) -> list[str]:
    """For each node in `ends` that an amplifier drives, one source that moves it alone: a source
    whose pot joins that amplifier's input (XOR: Vx1 moves node 9 through X1, Vx2 node 10)."""
    sources = {s.node: s.name for s in net.sources}
    found: list[str] = []
    for end in ends:
        for amp in net.amplifiers:
            if amp.node_out != end:
                continue
            for g in net.conductances:
                other = g.b if g.a == amp.node_in else g.a if g.b == amp.node_in else ""
                if other in sources and sources[other] not in found:
                    found.append(sources[other])
                    break
    return found or [s.name for s in net.sources[:2]]


def _far_end(net: Network, edge: str, node: str) -> str:
    g = next(c for c in net.conductances if c.name == edge)
    return g.b if g.a == node else g.a
