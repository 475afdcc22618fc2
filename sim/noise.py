"""What an SMU does to the numbers: a seeded instrument error model per model and range, and a
backend that puts it around the twin or ngspice so they read like a bench.

The error model (`SmuModel`, built from `FIGURES`, every figure with the document it comes from):
- source: the level is rounded to the range's programming resolution, then off by a gain and an
  offset error, plus source noise (0.1–10 Hz), which is flicker-like: it does not average away.
- measure: a gain and an offset error, reading noise that falls with NPLC and with averaging, and
  the reading rounded to the range's resolution.
- ranges: the smallest range that holds the value (autorange), overrange as the datasheet says.
Gain and offset errors are drawn once per channel and range when a session opens (seeded, fixed
for the session); noise is drawn per reading. How each figure becomes a number:
- accuracy "±(% + offset)" is a 1-year bound over a population of instruments: one instrument's
  gain and offset errors are drawn normal with σ = bound/3, clipped to the bound.
- noise given peak to peak (0.1–10 Hz) becomes rms by /6.6 (±3.3σ holds 99.9 % of a Gaussian).
- reading noise at 1 PLC is one count of the range's resolution at 1 PLC (6½ digits), which is
  the size a Keithley 2015 DMM shows as rms noise at 1 PLC (0.4 ppm of its 10 V range); it scales
  with NPLC as that DMM's table does (`NPLC_SHAPE`), and below 1 PLC the SMU's own derating term
  (a % of range added to the accuracy) is added as a 3σ bound of extra reading noise.
- source noise is one flicker process per channel (`Flicker`: five relaxation processes with
  corners 0.1–10 Hz, equal shares of the variance), scaled to the range's rms figure. Time is
  the model's own clock: each reading takes NPLC/50 Hz plus `READING_OVERHEAD_S`.

`NoisyBackend` reads a simulated circuit as a bench would: each source node by its own SMU
channel, each nudge node by the channel that forces its current, every other node by one probe
channel (forcing 0 A; its offset current is left out: picoamps into ohms). The sources are
forced with the model's errors at the moment of each settle (one noise value per source for the
whole settle: its readings span a few tenths of a second, well inside the slowest corner's
1.6 s), solved exactly by the inner backend, and every node voltage goes through its channel's
measure errors. Currents of a State are the simulator's, exact: no SMU on a board reads them.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hil.config import NOISE_MODELS
from hil.interface import Backend, Identity, State
from hil.network import Network, VoltageSource

LINE_HZ = 50.0  # 1 PLC = 20 ms
# Per reading, besides the integration: trigger, autozero bookkeeping and the answer on the bus
# (assumed; the 2450 reference manual's reading rates at 1 PLC are 30-50 per second).
READING_OVERHEAD_S = 3e-3
PP_TO_RMS = 1 / 6.6

# Documents the figures come from (the `source` column of FIGURES names one of these).
DOCUMENTS = {
    "2450": "Keithley SPEC-2450 Rev. A (July 2013), Model 2450 datasheet",
    "2602B": "Keithley SPEC-2602B Rev. B (February 2014), Models 2601B/2602B/2604B datasheet",
    "B2900": "Keysight B2900A Series Precision Source/Measure Unit data sheet",
    "2015": "Keithley Model 2015 multimeter specifications (user's manual, appendix A)",
}


@dataclass(frozen=True)
class Figure:
    """One range of one SMU model as its datasheet gives it. Fractions, not percent."""

    model: str
    unit: str  # "V" or "A"
    full_scale: float
    source_resolution: float  # programming resolution
    source_gain: float  # "% of setting" / 100
    source_offset: float
    source_noise: float  # rms, 0.1-10 Hz (converted from p-p where the datasheet gives p-p)
    measure_resolution: float  # at 1 PLC
    measure_gain: float  # "% of reading" / 100
    measure_offset: float
    source: str  # where each number is, document and table


_PP = PP_TO_RMS
_2450 = "2450 p. 2, Voltage/Current specifications (1 PLC)"
_2602 = "2602B p. 2, Voltage/Current accuracy specifications; noise p-p 0.1-10 Hz /6.6"
_B29 = (
    "B2900 p. 16, Voltage/Current measurement specifications; ASSUMED (source table not at hand): "
    "source resolution = measure resolution, source accuracy = measure accuracy, source noise = "
    "the 2450's on the range of the same full scale"
)


# The one table of figures, as the datasheets print them (accuracy gains in %). Columns: unit,
# range; source: resolution, % of setting, offset, noise rms (0.1-10 Hz); measure: resolution
# (1 PLC), % of reading, offset. Where each model's rows come from is given with them.
def _rows(model: str, where: str, rows: tuple[tuple[Any, ...], ...]) -> tuple[Figure, ...]:
    out = []
    for unit, full, s_res, s_pct, s_off, s_noise, m_res, m_pct, m_off in rows:
        out.append(
            Figure(model, unit, full, s_res, s_pct / 100, s_off, s_noise, m_res, m_pct / 100, m_off, where)
        )
    return tuple(out)


FIGURES: tuple[Figure, ...] = (
    # Keithley 2450: "Noise (RMS) <10 Hz" is given as rms.
    *_rows(
        "keithley-2450",
        _2450,
        (
            ("V", 0.02, 500e-9, 0.100, 200e-6, 1e-6, 10e-9, 0.100, 150e-6),
            ("V", 0.2, 5e-6, 0.015, 200e-6, 1e-6, 100e-9, 0.012, 200e-6),
            ("V", 2.0, 50e-6, 0.020, 300e-6, 10e-6, 1e-6, 0.012, 300e-6),
            ("V", 20.0, 500e-6, 0.015, 2.4e-3, 100e-6, 10e-6, 0.015, 1e-3),
            ("V", 200.0, 5e-3, 0.015, 24e-3, 1e-3, 100e-6, 0.015, 10e-3),
            ("A", 10e-9, 500e-15, 0.100, 100e-12, 500e-15, 10e-15, 0.10, 50e-12),
            ("A", 100e-9, 5e-12, 0.060, 150e-12, 500e-15, 100e-15, 0.060, 100e-12),
            ("A", 1e-6, 50e-12, 0.025, 400e-12, 5e-12, 1e-12, 0.025, 300e-12),
            ("A", 10e-6, 500e-12, 0.025, 1.5e-9, 40e-12, 10e-12, 0.025, 700e-12),
            ("A", 100e-6, 5e-9, 0.020, 15e-9, 400e-12, 100e-12, 0.02, 6e-9),
            ("A", 1e-3, 50e-9, 0.020, 150e-9, 5e-9, 1e-9, 0.02, 60e-9),
            ("A", 10e-3, 500e-9, 0.020, 1.5e-6, 40e-9, 10e-9, 0.02, 600e-9),
            ("A", 100e-3, 5e-6, 0.025, 15e-6, 100e-9, 100e-9, 0.025, 6e-6),
            ("A", 1.0, 50e-6, 0.067, 900e-6, 3e-6, 1e-6, 0.03, 500e-6),
        ),
    ),
    # Keithley 2602B: "Typical noise (peak to peak) 0.1 Hz to 10 Hz", made rms by _PP.
    *_rows(
        "keithley-2602b",
        _2602,
        (
            ("V", 0.1, 5e-6, 0.02, 250e-6, 20e-6 * _PP, 100e-9, 0.015, 150e-6),
            ("V", 1.0, 50e-6, 0.02, 400e-6, 50e-6 * _PP, 1e-6, 0.015, 200e-6),
            ("V", 6.0, 50e-6, 0.02, 1.8e-3, 100e-6 * _PP, 1e-6, 0.015, 1e-3),
            ("V", 40.0, 500e-6, 0.02, 12e-3, 500e-6 * _PP, 10e-6, 0.015, 8e-3),
            ("A", 100e-9, 2e-12, 0.06, 100e-12, 5e-12 * _PP, 100e-15, 0.05, 100e-12),
            ("A", 1e-6, 20e-12, 0.03, 800e-12, 25e-12 * _PP, 1e-12, 0.025, 500e-12),
            ("A", 10e-6, 200e-12, 0.03, 5e-9, 60e-12 * _PP, 10e-12, 0.025, 1.5e-9),
            ("A", 100e-6, 2e-9, 0.03, 60e-9, 3e-9 * _PP, 100e-12, 0.02, 25e-9),
            ("A", 1e-3, 20e-9, 0.03, 300e-9, 6e-9 * _PP, 1e-9, 0.02, 200e-9),
            ("A", 10e-3, 200e-9, 0.03, 6e-6, 200e-9 * _PP, 10e-9, 0.02, 2.5e-6),
            ("A", 100e-3, 2e-6, 0.03, 30e-6, 600e-9 * _PP, 100e-9, 0.02, 20e-6),
            ("A", 1.0, 20e-6, 0.05, 1.8e-3, 70e-6 * _PP, 1e-6, 0.03, 1.5e-3),
            ("A", 3.0, 20e-6, 0.06, 4e-3, 150e-6 * _PP, 1e-6, 0.05, 3.5e-3),
        ),
    ),
    # Keysight B2902A: measurement columns from the data sheet, source columns assumed (see _B29).
    *_rows(
        "keysight-b2902a",
        _B29,
        (
            ("V", 0.2, 100e-9, 0.015, 225e-6, 1e-6, 100e-9, 0.015, 225e-6),
            ("V", 2.0, 1e-6, 0.02, 350e-6, 10e-6, 1e-6, 0.02, 350e-6),
            ("V", 20.0, 10e-6, 0.015, 5e-3, 100e-6, 10e-6, 0.015, 5e-3),
            ("V", 200.0, 100e-6, 0.015, 50e-3, 1e-3, 100e-6, 0.015, 50e-3),
            ("A", 100e-9, 100e-15, 0.06, 100e-12, 500e-15, 100e-15, 0.06, 100e-12),
            ("A", 1e-6, 1e-12, 0.025, 500e-12, 5e-12, 1e-12, 0.025, 500e-12),
            ("A", 10e-6, 10e-12, 0.025, 1.5e-9, 40e-12, 10e-12, 0.025, 1.5e-9),
            ("A", 100e-6, 100e-12, 0.02, 25e-9, 400e-12, 100e-12, 0.02, 25e-9),
            ("A", 1e-3, 1e-9, 0.02, 200e-9, 5e-9, 1e-9, 0.02, 200e-9),
            ("A", 10e-3, 10e-9, 0.02, 2.5e-6, 40e-9, 10e-9, 0.02, 2.5e-6),
            ("A", 100e-3, 100e-9, 0.02, 20e-6, 100e-9, 100e-9, 0.02, 20e-6),
            ("A", 1.0, 1e-6, 0.03, 1.5e-3, 3e-6, 1e-6, 0.03, 1.5e-3),
        ),
    ),
)

# Overrange (the largest value a range holds, × full scale): 2450 p. 3 "Overrange 105 %"; 2602B:
# its ranges source and measure to 101 % (reference manual, "Range"); B2900 p. 16 "106 %".
OVERRANGE = {"keithley-2450": 1.05, "keithley-2602b": 1.01, "keysight-b2902a": 1.06}

# Accuracy derating below 1 PLC, added % of range: (NPLC, voltage ranges, current ranges), for
# the 1 V-40 V and 1 µA-100 mA ranges. 2602B p. 2 note 4; B2900 p. 16 "Derating accuracy with PLC
# setting < 1 PLC" (2 V-200 V and 1 µA-100 mA columns). The 2450 datasheet gives none: it is given
# the 2602B's (ASSUMED: the same maker's SMU converter at the same line rejection, p. 4).
DERATING = {
    "keithley-2602b": ((0.1, 0.01e-2, 0.01e-2), (0.01, 0.07e-2, 0.05e-2), (0.001, 0.6e-2, 0.5e-2)),
    "keysight-b2902a": ((0.1, 0.01e-2, 0.01e-2), (0.01, 0.02e-2, 0.05e-2), (0.001, 0.2e-2, 0.5e-2)),
    "keithley-2450": ((0.1, 0.01e-2, 0.01e-2), (0.01, 0.07e-2, 0.05e-2), (0.001, 0.6e-2, 0.5e-2)),
}
# Reading noise against NPLC, relative to 1 PLC: the Keithley 2015's "Speed and noise rejection"
# table (RMS noise, 10 V range: 10 PLC 1.5 µV, 1 PLC 4 µV, 0.1 PLC 22 µV, 0.01 PLC 150 µV).
NPLC_SHAPE = ((0.01, 150 / 4), (0.1, 22 / 4), (1.0, 1.0), (10.0, 1.5 / 4))
# Which error model a bench instrument model uses under `[bench] noise = "datasheet"`.
BY_INSTRUMENT = {
    "keithley-2450": "keithley-2450",
    "keithley-2600b": "keithley-2602b",
    "keysight-b2900": "keysight-b2902a",
}


@dataclass(frozen=True)
class SmuModel:
    """One SMU model's ranges (ascending) and what its readings do against NPLC."""

    name: str
    volts: tuple[Figure, ...]
    amps: tuple[Figure, ...]
    overrange: float
    derating: tuple[tuple[float, float, float], ...]

    def ranges(self, unit: str) -> tuple[Figure, ...]:
        return self.volts if unit == "V" else self.amps

    def range_index(self, unit: str, values: np.ndarray) -> np.ndarray:
        """Per value, the smallest range that holds it (autorange); the top range beyond."""
        tops = np.array([f.full_scale * self.overrange for f in self.ranges(unit)])
        return np.minimum(np.searchsorted(tops, np.abs(values), side="left"), len(tops) - 1)

    def reading_noise(self, unit: str, nplc: float) -> np.ndarray:
        """rms reading noise per range at `nplc`, one reading."""
        ranges = self.ranges(unit)
        base = np.array([f.measure_resolution for f in ranges]) * nplc_factor(nplc)
        if nplc >= 1.0:
            return base
        points = sorted(self.derating)
        x = [math.log10(p[0]) for p in points] + [0.0]
        column = 1 if unit == "V" else 2
        y = [math.log10(p[column]) for p in points] + [math.log10(points[-1][column]) - 1.0]
        # The derating falls to nothing at 1 PLC: interpolated in log-log, a decade per decade after
        # the last tabulated point (0.1 PLC), and zero from 1 PLC on.
        extra = 10 ** float(np.interp(math.log10(nplc), x, y)) / 3
        full = np.array([f.full_scale for f in ranges])
        return np.sqrt(base**2 + (extra * full) ** 2)


def nplc_factor(nplc: float) -> float:
    """Reading noise at `nplc` relative to 1 PLC (log-log through `NPLC_SHAPE`, its end slopes
    carried beyond)."""
    x = np.log10([p[0] for p in NPLC_SHAPE])
    y = np.log10([p[1] for p in NPLC_SHAPE])
    lx = math.log10(nplc)
    if lx <= x[0]:
        slope = (y[1] - y[0]) / (x[1] - x[0])
        return float(10 ** (y[0] + slope * (lx - x[0])))
    if lx >= x[-1]:
        slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
        return float(10 ** (y[-1] + slope * (lx - x[-1])))
    return float(10 ** np.interp(lx, x, y))


def _build() -> dict[str, SmuModel]:
    models: dict[str, SmuModel] = {}
    for name in dict.fromkeys(f.model for f in FIGURES):
        rows = [f for f in FIGURES if f.model == name]
        models[name] = SmuModel(
            name,
            tuple(sorted((f for f in rows if f.unit == "V"), key=lambda f: f.full_scale)),
            tuple(sorted((f for f in rows if f.unit == "A"), key=lambda f: f.full_scale)),
            OVERRANGE[name],
            DERATING[name],
        )
    return models


MODELS: dict[str, SmuModel] = _build()
if set(MODELS) != set(NOISE_MODELS) - {"none"}:  # the config schema names these models too
    raise ImportError(f"sim.noise models {sorted(MODELS)} differ from hil.config.NOISE_MODELS")


def model(name: str) -> SmuModel:
    if name not in MODELS:
        raise ValueError(f"no SMU error model {name!r}: use one of {', '.join(MODELS)} (or none)")
    return MODELS[name]


# ---------------------------------------------------------------------------------------- noise in time
class Flicker:
    """Unit-variance noise whose spectrum falls as 1/f between 0.1 and 10 Hz: the sum of five
    relaxation processes with corners a half decade apart, equal shares of the variance. What a
    datasheet's 0.1-10 Hz figure describes: averaging readings over a second barely reduces it."""

    CORNERS_HZ = (0.1, 0.316, 1.0, 3.16, 10.0)

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.tau = 1 / (2 * np.pi * np.array(self.CORNERS_HZ))
        self.share = 1 / len(self.tau)
        self.x = rng.normal(0.0, math.sqrt(self.share), len(self.tau))
        self.t = 0.0

    def at(self, t: float) -> float:
        """The value at time t (s, never earlier than the last asked)."""
        dt = max(t - self.t, 0.0)
        if dt > 0:
            keep = np.exp(-dt / self.tau)
            self.x = self.x * keep + np.sqrt(self.share * (1 - keep**2)) * self.rng.normal(size=len(self.tau))
            self.t = t
        return float(self.x.sum())


def _draw(rng: np.random.Generator, bounds: np.ndarray) -> np.ndarray:
    """One instrument's fixed errors within datasheet bounds: normal, σ = bound/3, clipped."""
    return np.clip(rng.normal(0.0, 1.0, bounds.shape) * bounds / 3, -bounds, bounds)


def _seed(seed: int, name: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), stream])


class Channel:
    """One SMU channel of one model: its fixed errors (drawn when it is made) and its noise."""

    def __init__(self, smu: SmuModel, name: str, seed: int) -> None:
        self.model = smu
        self.name = name
        fixed = _seed(seed, name, 0)
        self.errors: dict[str, dict[str, np.ndarray]] = {}
        for unit in ("V", "A"):
            ranges = smu.ranges(unit)
            self.errors[unit] = {
                key: _draw(fixed, np.array([getattr(f, key) for f in ranges]))
                for key in ("source_gain", "source_offset", "measure_gain", "measure_offset")
            }
        self.flicker = Flicker(_seed(seed, name, 1))
        self.readings = _seed(seed, name, 2)

    def source(self, unit: str, levels: np.ndarray, times: np.ndarray) -> np.ndarray:
        """What the channel forces when told `levels` at `times` (one per level, ascending)."""
        levels = np.asarray(levels, dtype=float)
        k = self.model.range_index(unit, levels)
        ranges = self.model.ranges(unit)
        step = np.array([ranges[i].source_resolution for i in k])
        noise = np.array([ranges[i].source_noise for i in k])
        e = self.errors[unit]
        flick = np.array([self.flicker.at(float(t)) for t in times])
        return (
            np.round(levels / step) * step * (1 + e["source_gain"][k]) + e["source_offset"][k] + noise * flick
        )

    def measure(self, unit: str, values: np.ndarray, nplc: float, averages: int) -> np.ndarray:
        """Readings of `values` (any shape), each the mean of `averages` readings at `nplc`."""
        values = np.asarray(values, dtype=float)
        k = self.model.range_index(unit, values)
        e = self.errors[unit]
        sigma = self.model.reading_noise(unit, nplc)[k]
        step = np.array([f.measure_resolution for f in self.model.ranges(unit)])[k]
        seen = values * (1 + e["measure_gain"][k]) + e["measure_offset"][k]
        draws = self.readings.normal(size=(*values.shape, averages))
        each = np.round((seen[..., None] + sigma[..., None] * draws) / step[..., None]) * step[..., None]
        out: np.ndarray = each.mean(axis=-1)
        return out

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Everything that moves: the two noise generators' states, and the flicker's."""
        return (
            np.concatenate([_rng_words(self.flicker.rng), _rng_words(self.readings)]),
            np.concatenate([self.flicker.x, [self.flicker.t]]),
        )

    def restore(self, words: np.ndarray, flicker: np.ndarray) -> None:
        _set_rng(self.flicker.rng, words[:6])
        _set_rng(self.readings, words[6:])
        self.flicker.x = np.array(flicker[:-1], dtype=float)
        self.flicker.t = float(flicker[-1])


def _rng_words(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's state as six uint64 words."""
    s = rng.bit_generator.state
    words = []
    for big in (s["state"]["state"], s["state"]["inc"]):
        words += [(big >> 64) & 0xFFFFFFFFFFFFFFFF, big & 0xFFFFFFFFFFFFFFFF]
    return np.array([*words, s["has_uint32"], s["uinteger"]], dtype=np.uint64)


def _set_rng(rng: np.random.Generator, words: np.ndarray) -> None:
    w = [int(x) for x in words]
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
        "has_uint32": w[4],
        "uinteger": w[5],
    }


# ---------------------------------------------------------------------------------------- the wrapper
def sources_as_inputs(network: Network) -> Network:
    """The same circuit with every source an input of its own (scale 1, its name and so its sign
    flips kept): a wrapper can then force each source's level, errors included."""
    sources = [VoltageSource(s.name, s.node, input_index=i) for i, s in enumerate(network.sources)]
    board = Network(
        name=network.name,
        conductances=network.conductances,
        sources=sources,
        clamps=network.clamps,
        amplifiers=network.amplifiers,
        loads=network.loads,
        outputs=network.outputs,
        diode_model=network.diode_model,
        temperature=network.temperature,
        n_inputs=len(sources),
        nudge_sign=network.nudge_sign,
        layer_compensation=network.layer_compensation,
        estimator_pairing=network.estimator_pairing,
    )
    if board.nodes != network.nodes:  # the inner backend's voltages must line up with ours
        raise ValueError(f"network '{network.name}': its nodes reorder when its sources become inputs")
    return board


class NoisyBackend:
    """A simulator read as a bench would read it (see the module notes). `open_inner` builds the
    simulator for a network (the one given, with its sources turned into inputs)."""

    def __init__(
        self,
        network: Network,
        open_inner: Callable[[Network], Backend],
        smu: SmuModel,
        seed: int = 0,
        nplc: float = 1.0,
        averages: int = 1,
    ) -> None:
        if not (0.001 <= nplc <= 25) or averages < 1:
            raise ValueError(f"nplc = {nplc:g}, averages = {averages}: NPLC from 0.001 to 25, averages >= 1")
        self.network = network
        self.model = smu
        self.seed = seed
        self.nplc = nplc
        self.averages = averages
        self.inner = open_inner(sources_as_inputs(network))
        self.clock = 0.0  # s, the model's time: what the flicker noise evolves in
        self._sources = [Channel(smu, f"source {s.name}", seed) for s in network.sources]
        self._nudges = [Channel(smu, f"nudge {n}", seed) for n in network.nudge_nodes]
        self._probe = Channel(smu, "probe", seed)
        index = network.node_index
        self._source_nodes = np.array([index[s.node] for s in network.sources], dtype=int)
        self._nudge_nodes = np.array([index[n] for n in network.nudge_nodes], dtype=int)
        own = set(self._source_nodes.tolist()) | set(self._nudge_nodes.tolist())
        self._probed = np.array([i for i in range(len(network.nodes)) if i not in own], dtype=int)
        self._signs = np.ones(len(network.sources))

    # ------------------------------------------------------------------ timing
    @property
    def reading_seconds(self) -> float:
        return self.averages * (self.nplc / LINE_HZ + READING_OVERHEAD_S)

    @property
    def settle_seconds(self) -> float:
        """Model time of one settle: every level set, then every node read."""
        commands = len(self._sources) + len(self._nudges)
        return commands * READING_OVERHEAD_S + len(self.network.nodes) * self.reading_seconds

    def idle(self, seconds: float) -> None:
        """Let model time pass with nothing read (the noise moves on)."""
        self.clock += max(float(seconds), 0.0)

    # ------------------------------------------------------------------ interface
    def program(self, conductances: np.ndarray) -> np.ndarray:
        realised = self.inner.program(conductances)
        self._signs, _ = self.network.sign_multipliers(realised)
        return realised

    def settle(self, inputs: np.ndarray, nudge_currents: dict[str, float] | None = None) -> State:
        nudges = None
        if nudge_currents:
            unknown = set(nudge_currents) - set(self.network.nudge_nodes)
            if unknown:
                raise ValueError(f"nudge at {sorted(unknown)}: only output nodes can be nudged")
            nudges = np.array([[nudge_currents.get(n, 0.0) for n in self.network.nudge_nodes]])
        state = self.settle_batch(np.asarray(inputs, dtype=float)[None, :], nudges)
        return state.row(0)

    def settle_batch(self, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
        """The samples one after another in model time, as a bench settles them; one inner
        `settle_batch` for all of them."""
        net = self.network
        inputs = np.atleast_2d(np.asarray(inputs, dtype=float))
        n = len(inputs)
        if inputs.shape[1] != net.n_inputs:
            net.source_values(inputs[0])  # its error names the mismatch
        fixed, index, scale = net.source_map
        levels = (fixed + scale * inputs[:, index] if net.n_inputs else np.tile(fixed, (n, 1))) * self._signs
        wanted = np.zeros((n, len(self._nudges))) if nudges is None else np.asarray(nudges, dtype=float)
        # Each sample's levels act from the middle of its settle (see the module notes).
        times = self.clock + self.settle_seconds * (np.arange(n) + 0.5)
        self.clock += self.settle_seconds * n
        forced = np.empty_like(levels)
        for j, ch in enumerate(self._sources):
            forced[:, j] = ch.source("V", levels[:, j], times)
        injected = np.empty_like(wanted)
        for j, ch in enumerate(self._nudges):
            injected[:, j] = ch.source("A", wanted[:, j], times)
        exact = self.inner.settle_batch(forced * self._signs, injected)
        v = exact.voltages
        read = np.empty_like(v)
        for j, ch in enumerate(self._sources):
            read[:, self._source_nodes[j]] = ch.measure(
                "V", v[:, self._source_nodes[j]], self.nplc, self.averages
            )
        for j, ch in enumerate(self._nudges):
            read[:, self._nudge_nodes[j]] = ch.measure(
                "V", v[:, self._nudge_nodes[j]], self.nplc, self.averages
            )
        if len(self._probed):
            read[:, self._probed] = self._probe.measure("V", v[:, self._probed], self.nplc, self.averages)
        return State(read, exact.source_currents, exact.clamp_currents, exact.amplifier_currents)

    def safe_state(self) -> None:
        self.inner.safe_state()

    def close(self) -> None:
        self.inner.close()

    def identity(self) -> Identity:
        inner = self.inner.identity()
        what = (
            f"{inner.description}, read through the {self.model.name} error model (seed {self.seed}, "
            f"NPLC {self.nplc:g}, {self.averages} reading{'s' * (self.averages > 1)} per node)"
        )
        return Identity(inner.kind, what, {**inner.versions, "noise": self.model.name}, inner.instruments)

    def channels(self) -> Sequence[Channel]:
        return [*self._sources, *self._nudges, self._probe]

    def solver_state(self) -> dict[str, np.ndarray]:
        state = dict(self.inner.solver_state())
        state["noise_clock"] = np.array([self.clock])
        words, flicker = zip(*(ch.state() for ch in self.channels()), strict=True)
        state["noise_generators"] = np.stack(words)
        state["noise_flicker"] = np.stack(flicker)
        return state

    def restore_solver_state(self, state: dict[str, np.ndarray]) -> None:
        inner = {k: v for k, v in state.items() if not k.startswith("noise_")}
        self.inner.restore_solver_state(inner)
        if "noise_clock" in state:
            self.clock = float(state["noise_clock"][0])
            for ch, words, flicker in zip(
                self.channels(), state["noise_generators"], state["noise_flicker"], strict=True
            ):
                ch.restore(words, flicker)


# ---------------------------------------------------------------------------------------- virtual bench
class BenchErrors:
    """The error models of a virtual bench's SMU channels: `models` maps an instrument name to its
    SmuModel; a channel key ("k26a.b", or "smu1" for a one-channel SMU) gets a `Channel` of its
    instrument's model, drawn the first time it is asked for (seeded by the key, so the order of
    asking does not matter). `clock` is the bench's model time, advanced per reading."""

    def __init__(self, models: dict[str, SmuModel], seed: int = 0) -> None:
        self.models = models
        self.seed = seed
        self.clock = 0.0
        self._channels: dict[str, Channel] = {}

    def channel(self, key: str) -> Channel | None:
        instrument = key.split(".")[0]
        if instrument not in self.models:
            return None
        if key not in self._channels:
            self._channels[key] = Channel(self.models[instrument], key, self.seed)
        return self._channels[key]

    def reading_seconds(self, nplc: float) -> float:
        return nplc / LINE_HZ + READING_OVERHEAD_S


def bench_errors(setting: str, instruments: dict[str, str], seed: int = 0) -> BenchErrors | None:
    """A virtual bench's errors from its `[bench] noise` setting: "none" (exact readings),
    "datasheet" (each SMU its own model's figures, `BY_INSTRUMENT`) or one error model's name for
    every SMU. `instruments` maps each SMU's name to its bench model (e.g. "keithley-2600b")."""
    if setting == "none":
        return None
    if setting == "datasheet":
        chosen = {name: MODELS[BY_INSTRUMENT[kind]] for name, kind in instruments.items()}
    else:
        chosen = {name: model(setting) for name in instruments}
    return BenchErrors(chosen, seed)
