"""Bench configs: which instruments, where, how they meet the board, and the safety limits.

Everything here is checked against the network before any instrument is touched: `hil.config.load`
runs `check_experiment` (registered below) on every bench config it loads, so every command
refuses a bad bench config before it writes a log. The file has keyed tables (`KEYS`, documented
key by key like an experiment's) and maps (`MAPS`, one entry per network element):

    [bench]               experiment, emulated, settle_seconds, nplc, averages, noise
    [limits]              max_volts, compliance_current, compliance_voltage, max_nudge_current,
                          ramp_step, pot_terminal_volts (these required), ramp_delay
    [instruments.NAME]    model, address (+ pot banks: part, supply, wiper_current (its ratings,
                          `drivers.ratings`), channels, r_ab, r_w)
    [sources]             network source -> SMU channel ("smu1" for a 2450, "k26.a", "b29.1")
    [nudges]              output node -> SMU channel that forces the nudge current
    [probe]               channel (an SMU channel forcing 0 A), matrix; [probe.routes] node -> crosspoints
    [pots]                edge -> "bank.channel"
    [amplifiers]          amplifier -> crosspoints that invert it (negative weights behind it)
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivers import calibration as pot_calibration
from drivers import ratings
from drivers.models import MATRIX, MODELS, POTS, SMU
from drivers.pots import AD5206Model, Calibration
from drivers.router import Crosspoint, RouteMap
from drivers.switch import keithley_crosspoints, keysight_crosspoints
from hil.config import (
    NOISE_MODELS,
    REQUIRED,
    ConfigError,
    Experiment,
    Key,
    check_table,
    name_of,
    nearest,
    number,
    show,
)
from hil.network import Network
from hil.train import Hyper


def _address_ok(address: str) -> bool:
    return bool(
        re.match(r"^(TCPIP\d*::|ASRL|GPIB\d*::|USB\d*::|socket://|rfc2217://|/dev/|COM\d+$)", address)
    )


# What an instrument may do at most, whatever the config says (the instruments' own ranges).
HARD_LIMITS = {
    "max_volts": 200.0,
    "compliance_current": 1.0,
    "compliance_voltage": 200.0,
    "max_nudge_current": 0.1,
    "ramp_step": 200.0,
    "pot_terminal_volts": 5.5,
}
# A ramp is one write per step: a full swing (-max_volts to +max_volts) in more steps than this
# would spend seconds per level change, for every source, in every phase.
MAX_RAMP_STEPS = 1000
MAX_INSTRUMENTS = 64
# What an emulated SMU's readings go through (sim.noise): each instrument's own model's datasheet
# errors, one model's for all of them, or none.
BENCH_NOISE = ("none", "datasheet", *NOISE_MODELS[1:])
# How each matrix model names its crosspoints (its driver refuses any other name).
CROSSPOINT_NAMES = {
    "keithley-707b": keithley_crosspoints,
    "keithley-3706a": keithley_crosspoints,
    "keysight-34980a": keysight_crosspoints,
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")  # "k26a" in "k26a.b": no dot, no space

KEYS: dict[str, dict[str, Key]] = {
    "bench": {
        "experiment": Key(
            REQUIRED,
            str,
            lambda v: bool(v.strip()),
            rule='the path of an experiment config, e.g. "xor-bench.toml"',
            doc="the experiment config this bench runs (relative to the bench config)",
        ),
        "emulated": Key(
            False, bool, doc="true: start a virtual bench of emulators on free local ports for the run"
        ),
        "settle_seconds": number(0.0, 0.0, 60.0, "s", "wait after setting levels, s"),
        "nplc": number(1.0, 0.01, 10.0, "PLC", "integration time of every SMU reading, PLC"),
        # Both shrink the reading noise as 1/√(time spent); NPLC integrates over whole line cycles
        # (rejects mains pickup, one autozero), readings averaged each pay the per-reading overhead;
        # neither removes the sources' flicker, and a longer read leaves more drift between +β and −β.
        "averages": number(
            1,
            1,
            1000,
            "",
            "readings averaged per node and phase (each at nplc): the reading noise falls as 1/√averages, "
            "as with averages × nplc, but each reading costs its overhead too and the sources' flicker "
            "does not average away",
            kind=int,
        ),
        "noise": Key(
            "none",
            str,
            lambda v: v in BENCH_NOISE,
            f"one of {', '.join(BENCH_NOISE)}",
            "virtual bench: the emulated SMUs read with datasheet errors, each its own model's "
            "(`datasheet`) or all one model's (e.g. `keithley-2450`), or exactly (`none`)",
        ),
    },
    "limits": {
        "max_volts": number(
            REQUIRED, 1e-3, HARD_LIMITS["max_volts"], "V", "the most any source may force, V"
        ),
        "compliance_current": number(
            REQUIRED,
            1e-9,
            HARD_LIMITS["compliance_current"],
            "A",
            "current limit of every voltage-forcing channel, set before output on, A",
        ),
        "compliance_voltage": number(
            REQUIRED,
            1e-3,
            HARD_LIMITS["compliance_voltage"],
            "V",
            "voltage limit of the nudge and probe channels, V",
        ),
        "max_nudge_current": number(
            REQUIRED, 1e-12, HARD_LIMITS["max_nudge_current"], "A", "largest nudge current, A"
        ),
        "ramp_step": number(
            REQUIRED,
            1e-3,
            HARD_LIMITS["ramp_step"],
            "V",
            "largest single step of a source level, V",
            f"±max_volts in at most {MAX_RAMP_STEPS} steps",
        ),
        "pot_terminal_volts": number(
            REQUIRED,
            0.1,
            HARD_LIMITS["pot_terminal_volts"],
            "V",
            "largest |V| on any digital-pot terminal, V",
        ),
        "ramp_delay": number(
            0.005,
            0.0,
            1.0,
            "s",
            "wait between two ramp steps of a source level, s (0: none, for an emulated bench)",
        ),
    },
    "instruments.NAME": {
        "model": Key(
            REQUIRED, str, lambda v: v in MODELS, f"one of {', '.join(MODELS)}", f"one of {', '.join(MODELS)}"
        ),
        "address": Key(
            REQUIRED,
            str,
            _address_ok,
            "a VISA resource (TCPIP::host::port::SOCKET, ASRL…, GPIB…) or a serial port/URL",
            f"VISA resource, or serial port/URL for the pot bridge (at most {MAX_INSTRUMENTS} instruments)",
        ),
        "channels": number(6, 1, 64, "", "pot bridge: number of pots", kind=int),
        "r_ab": number(10e3, 100.0, 1e7, "Ω", "pot bridge: end-to-end resistance R_AB, Ω"),
        # A wiper of 0 Ω would make code 0 an infinite conductance.
        "r_w": number(50.0, 1.0, 1e4, "Ω", "pot bridge: wiper resistance R_W, Ω"),
        "part": Key(
            "ad5206",
            str,
            lambda v: v in ratings.PARTS,
            f"one of {', '.join(ratings.PARTS)}",
            f"pot bridge: the pot part, for its ratings (one of {', '.join(ratings.PARTS)})",
        ),
        "supply": Key(
            REQUIRED,
            list,
            rule="a list [VSS, VDD] in V, e.g. [0, 5] (single supply) or [-2.5, 2.5] (dual)",
            doc="pot bridge: the pots' supply rails [VSS, VDD], V: every pot terminal must stay inside them",
        ),
        "wiper_current": number(
            0.0,
            0.0,
            ratings.PARTS["ad5206"].continuous_current,
            "A",
            "pot bridge: largest wiper current allowed, A (0: the part's continuous rating, 5 mA for "
            "an AD5204/AD5206)",
        ),
        "calibration": Key(
            "",
            str,
            rule='the path of a table written by `hil calibrate-pots`, e.g. "pots-calibration.toml"',
            doc="pot bridge: the table `hil calibrate-pots` wrote (relative to the bench config): codes "
            "from measured conductances, and the experiment's g_min/g_max narrowed to what every pot "
            "realises",
        ),
        "r_ab_tolerance": number(
            0.0,
            0.0,
            0.5,
            "",
            "virtual bench pot bridge: each emulated pot's R_AB drawn within r_ab·(1 ± this)",
            "real benches refuse it",
        ),
        "r_w_range": Key(
            [],
            list,
            lambda v: v == [] or (len(v) == 2 and all(_ohms(x) for x in v) and v[0] <= v[1]),
            "[] or two resistances [low, high] in Ω, low ≤ high, each from 1 to 10000",
            "virtual bench pot bridge: each emulated pot's R_W drawn in [low, high] Ω ([]: r_w); real "
            "benches refuse it",
        ),
        "boot_seconds": number(
            2.0,
            0.0,
            60.0,
            "s",
            "pot bridge on a serial port: wait after opening it for a board that resets on open, then "
            "drain its boot banner, s",
            "socket:// addresses skip it",
        ),
        "part_seed": number(
            0, 0, 2**31 - 1, "", "virtual bench pot bridge: seed of the emulated pots' draws", kind=int
        ),
    },
    "probe": {
        "channel": Key(
            "", str, doc="SMU channel that forces 0 A and reads the nodes the matrix routes to it"
        ),
        "matrix": Key("", str, doc="the switch matrix (an [instruments] name) that routes the probe"),
        "routes": Key(
            {},
            dict,
            rule='a table [probe.routes] of node = crosspoints, e.g. "7" = ["1A01"]',
            doc="[probe.routes] node = crosspoints joining the probe to it",
        ),
    },
}
MAPS = {
    "sources": 'network source = SMU channel that forces it, e.g. Vx1 = "k26a.a"',
    "nudges": 'output node = SMU channel that forces its nudge current, e.g. "11" = "k26d.a"',
    "pots": 'edge = digital-pot channel, "bank.channel" (channels from 1), e.g. R1 = "pots.1"',
    "amplifiers": 'amplifier = crosspoints that invert it (negative weights behind it), e.g. X1 = ["1B01"]',
}
_POT_ONLY = (
    "channels",
    "r_ab",
    "r_w",
    "part",
    "supply",
    "wiper_current",
    "calibration",
    "r_ab_tolerance",
    "r_w_range",
    "part_seed",
    "boot_seconds",
)
# Keys that describe an emulated part, not a real one.
_EMULATED_ONLY = ("r_ab_tolerance", "r_w_range", "part_seed")


def _ohms(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and 1.0 <= x <= 1e4


@dataclass(frozen=True)
class InstrumentSpec:
    """One [instruments.NAME] table: what the bench config says of an instrument."""

    name: str
    model: str
    address: str
    channels: int = 0  # pot banks
    r_ab: float = 10e3  # Ω, pot end-to-end resistance
    r_w: float = 50.0  # Ω, pot wiper resistance
    calibration: Path | None = None  # the table `hil calibrate-pots` wrote
    calibrations: Mapping[int, Calibration] = field(default_factory=dict)  # loaded from it
    # A virtual bench's parts: R_AB within ±r_ab_tolerance, R_W in r_w_range, drawn from part_seed.
    r_ab_tolerance: float = 0.0
    r_w_range: tuple[float, float] | None = None
    part_seed: int = 0
    boot_seconds: float = 2.0  # pot bridges: wait after opening the serial port (a board resets)
    part: str = "ad5206"  # pot banks: the part, for its ratings
    supply: tuple[float, float] = (0.0, 0.0)  # pot banks: [VSS, VDD], V
    wiper_current: float = 0.0  # pot banks: A, 0 for the part's continuous rating

    @property
    def role(self) -> str:
        return MODELS[self.model].role

    def pot_model(self) -> AD5206Model:
        """The part behind a pot bank, as this spec sizes it, with its measured calibration."""
        return AD5206Model(
            r_ab=self.r_ab, r_w=self.r_w, channels=self.channels, calibrations=self.calibrations
        )

    def pot_ratings(self) -> ratings.PotRatings:
        """What this bank's pots may see: its supply, its part's (or the configured) wiper current."""
        return ratings.pot_ratings(self.part, self.supply, self.wiper_current)


@dataclass(frozen=True)
class BenchConfig:
    path: Path
    experiment: Path
    emulated: bool
    settle_seconds: float
    nplc: float
    limits: dict[str, float]
    instruments: dict[str, InstrumentSpec]
    sources: dict[str, str]
    nudges: dict[str, str]
    probe_channel: str | None
    probe_matrix: str | None
    probe_routes: dict[str, list[str]]
    pots: dict[str, tuple[str, int]]
    amplifiers: dict[str, list[str]]
    noise: str = "none"  # the virtual bench's SMU error model ([bench] noise)
    averages: int = 1  # readings averaged per node and phase ([bench] averages)

    def smu_channels(self) -> list[str]:
        used = [*self.sources.values(), *self.nudges.values()]
        return used + ([self.probe_channel] if self.probe_channel else [])

    def of_role(self, role: str) -> dict[str, InstrumentSpec]:
        return {name: spec for name, spec in self.instruments.items() if spec.role == role}


def read(path: str | Path, calibrations: bool = True) -> BenchConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"bench config {path} not found: give the path to a bench .toml") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"bench config {path} cannot be read ({exc}): give the path to a bench .toml"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc}): fix the syntax at that line") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: malformed TOML (nested too deeply): fix the file") from exc
    return parse(path, raw, calibrations)


SECTIONS = ("bench", "limits", "instruments", "probe", *MAPS)


def parse(path: Path, raw: dict[str, Any], calibrations: bool = True) -> BenchConfig:
    """Check every table of a bench config on its own (`check_against` checks it with the network).
    `calibrations=False` leaves the pots' calibration tables unread (`hil calibrate-pots` writes
    them)."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        name = unknown[0]
        guess = nearest(name, SECTIONS)
        hint = (
            f"did you mean [{guess}]?"
            if guess
            else f"known sections are {', '.join(f'[{k}]' for k in SECTIONS)}"
        )
        raise ConfigError(f"{path}: unknown section [{name_of(name)}] in a bench config: {hint}")
    bench = check_table(path, "bench", raw.get("bench", {}), KEYS["bench"])
    limits = check_table(path, "limits", raw.get("limits", {}), KEYS["limits"])
    steps = 2 * limits["max_volts"] / limits["ramp_step"]
    if steps > MAX_RAMP_STEPS:
        raise ConfigError(
            f"{path}: [limits] ramp_step = {limits['ramp_step']:g} V takes {steps:,.0f} steps to swing "
            f"±max_volts = {limits['max_volts']:g} V, more than {MAX_RAMP_STEPS}: raise ramp_step to at "
            f"least {2 * limits['max_volts'] / MAX_RAMP_STEPS:g} V"
        )
    instruments = _instruments(path, _map(path, raw, "instruments"), calibrations)
    if not bench["emulated"]:
        for spec in instruments.values():
            if spec.r_ab_tolerance or spec.r_w_range is not None:
                raise ConfigError(
                    f"{path}: [instruments.{spec.name}] r_ab_tolerance / r_w_range describe emulated parts, "
                    "and this bench is real (emulated = false): remove them (measure the parts with "
                    "`hil calibrate-pots`)"
                )
    smu = _smu_channel(path, instruments)
    probe = check_table(path, "probe", raw.get("probe", {}), KEYS["probe"])
    if probe["matrix"] and instruments.get(probe["matrix"], _NONE).role != MATRIX:
        raise ConfigError(
            f"{path}: [probe] matrix = {show(probe['matrix'])} is not a switch matrix of this bench: "
            "name one of its [instruments] with a matrix model"
        )
    amplifiers = {
        k: _crosspoints(path, f"amplifiers.{name_of(k)}", v) for k, v in _map(path, raw, "amplifiers").items()
    }
    routes = {str(k): _crosspoints(path, f"probe.routes.{name_of(k)}", v) for k, v in probe["routes"].items()}
    _check_crosspoints(path, instruments, probe["matrix"] or None, routes, amplifiers)
    return BenchConfig(
        path,
        _experiment_path(path, bench["experiment"]),
        bench["emulated"],
        float(bench["settle_seconds"]),
        float(bench["nplc"]),
        {k: float(v) for k, v in limits.items()},
        instruments,
        {k: smu("sources", k, v) for k, v in _map(path, raw, "sources").items()},
        {str(k): smu("nudges", k, v) for k, v in _map(path, raw, "nudges").items()},
        smu("probe", "channel", probe["channel"]) if probe["channel"] else None,
        probe["matrix"] or None,
        routes,
        _pots(path, _map(path, raw, "pots"), instruments),
        amplifiers,
        noise=bench["noise"],
        averages=int(bench["averages"]),
    )


_NONE = InstrumentSpec("", "keithley-2450", "")


def _experiment_path(path: Path, experiment: str) -> Path:
    try:
        return (path.parent / experiment).resolve()
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: [bench] experiment = {show(experiment)} is not a usable path ({exc}): name an "
            "experiment config, relative to the bench config"
        ) from exc


def _map(path: Path, raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key} = {show(value)} must be a table: write it as [{key}]")
    return value


def _instruments(path: Path, tables: dict[str, Any], calibrations: bool = True) -> dict[str, InstrumentSpec]:
    if len(tables) > MAX_INSTRUMENTS:
        raise ConfigError(
            f"{path}: [instruments] lists {len(tables)} instruments, more than {MAX_INSTRUMENTS}: split the "
            "bench or remove the ones it does not use"
        )
    specs: dict[str, InstrumentSpec] = {}
    for name, table in tables.items():
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{path}: [instruments.{name_of(name)}]: an instrument name is a letter then letters, "
                'digits, _ or - (at most 32; no dot, it separates "name.channel"): rename it'
            )
        section = f"instruments.{name}"
        keys = KEYS["instruments.NAME"]
        model = table.get("model") if isinstance(table, dict) else None
        if isinstance(model, str) and model in MODELS and MODELS[model].role != POTS:
            keys = {k: v for k, v in keys.items() if k not in _POT_ONLY}
        values = check_table(path, section, table, keys)
        if values["model"] in MODELS and MODELS[values["model"]].role == POTS:
            table_path = (path.parent / values["calibration"]) if values["calibration"] else None
            loaded: dict[int, Calibration] = {}
            if table_path is not None and calibrations:
                try:
                    loaded = pot_calibration.load(table_path, name, values["channels"])
                except pot_calibration.CalibrationError as exc:
                    raise ConfigError(f"{path}: [{section}] calibration: {exc}") from None
            wrong = ratings.supply_refusal(values["part"], values["supply"])
            if wrong is not None:
                raise ConfigError(
                    f"{path}: [{section}] supply = {show(values['supply'])} is invalid: it must be {wrong}"
                )
            r_w_range = values["r_w_range"]
            specs[name] = InstrumentSpec(
                name,
                values["model"],
                values["address"],
                values["channels"],
                values["r_ab"],
                values["r_w"],
                table_path,
                loaded,
                float(values["r_ab_tolerance"]),
                (float(r_w_range[0]), float(r_w_range[1])) if r_w_range else None,
                values["part_seed"],
                float(values["boot_seconds"]),
                part=values["part"],
                supply=(float(values["supply"][0]), float(values["supply"][1])),
                wiper_current=float(values["wiper_current"]),
            )
        else:
            specs[name] = InstrumentSpec(name, values["model"], values["address"])
    return specs


def _smu_channel(path: Path, instruments: dict[str, InstrumentSpec]) -> Any:
    """A checker of "instrument.channel" names against this bench's SMUs."""

    def channel(section: str, key: str, value: Any) -> str:
        inst, _, ch = str(value).partition(".")
        spec = instruments.get(inst)
        if (
            not isinstance(value, str)
            or spec is None
            or spec.role != SMU
            or ch not in (MODELS[spec.model].channels or ("",))
        ):
            raise ConfigError(
                f"{path}: [{section}] {name_of(str(key))} = {show(value)} is not an SMU channel of this "
                'bench: name one (e.g. "smu1" for a 2450, "k26.a" for a 2600B, "b29.1" for a B2900)'
            )
        return value

    return channel


def _pots(
    path: Path, table: dict[str, Any], instruments: dict[str, InstrumentSpec]
) -> dict[str, tuple[str, int]]:
    pots: dict[str, tuple[str, int]] = {}
    for edge, where in table.items():
        bank, _, ch = str(where).partition(".")
        spec = instruments.get(bank)
        if (
            not isinstance(where, str)
            or spec is None
            or spec.role != POTS
            or not re.fullmatch(r"[0-9]{1,3}", ch)
            or not 1 <= int(ch) <= spec.channels
        ):
            raise ConfigError(
                f"{path}: [pots] {name_of(edge)} = {show(where)} is not a pot channel of this bench: "
                'name one as "bank.channel", channels numbered from 1'
            )
        pots[edge] = (bank, int(ch))
    return pots


def _crosspoints(path: Path, where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
        raise ConfigError(
            f'{path}: [{where}] = {show(value)} must be a list of crosspoint names, e.g. ["1A01"]: fix it'
        )
    return value


def _check_crosspoints(
    path: Path,
    instruments: dict[str, InstrumentSpec],
    probe_matrix: str | None,
    routes: dict[str, list[str]],
    amplifiers: dict[str, list[str]],
) -> None:
    """Every crosspoint named as its matrix names them, and each relay given one job only."""
    matrices = [name for name, spec in instruments.items() if spec.role == MATRIX]
    if amplifiers and not matrices:
        raise ConfigError(
            f"{path}: [amplifiers] needs a switch matrix for its inverting relays: add one to [instruments]"
        )
    # The amplifier relays sit on the probe's matrix, or on the only one there is (drivers.bench).
    matrix = probe_matrix or (matrices[0] if matrices else None)
    jobs: dict[str, str] = {}
    for kind, table in (("probe.routes", routes), ("amplifiers", amplifiers)):
        if matrix is None:
            continue
        valid = CROSSPOINT_NAMES[instruments[matrix].model]
        for key, names in table.items():
            where = f"[{kind}] {name_of(key)}"
            try:
                valid(names)
            except ValueError as exc:
                raise ConfigError(f"{path}: {where}: {exc}: fix the crosspoint names") from None
            for cp in names:
                if cp in jobs:
                    raise ConfigError(
                        f"{path}: {where} uses crosspoint {cp}, which {jobs[cp]} uses too: give each relay "
                        "one job"
                    )
                jobs[cp] = where


def probe_routes(config: BenchConfig, network: Network) -> RouteMap:
    """The probe's routes for the router: each route joins the probe channel to one node; the
    nodes that sources and nudges hold are off limits to it."""
    probe = config.probe_channel or ""
    crosspoints = {cp: Crosspoint(probe, node) for node, cps in config.probe_routes.items() for cp in cps}
    driven: dict[str, str | None] = {s.node: None for s in network.sources}
    driven.update({node: None for node in config.nudges})
    return RouteMap(dict(config.probe_routes), crosspoints, driven)


def max_source_volts(network: Network, inputs: Any) -> float:
    """The largest |V| any source is set to over a data set's inputs (before sign flips)."""
    return float(max((abs(v) for x in inputs for v in network.source_values(x)), default=0.0))


def _unknown_entries(config: BenchConfig, network: Network) -> None:
    """Every map entry names something of this network: a typo is not silently ignored."""
    tables: list[tuple[str, Iterable[str], list[str], str]] = [
        ("sources", config.sources, [s.name for s in network.sources], "a source"),
        ("nudges", config.nudges, network.nudge_nodes, "an output node"),
        ("pots", config.pots, network.edge_names, "an edge"),
        ("amplifiers", config.amplifiers, [a.name for a in network.amplifiers], "an amplifier"),
        ("probe.routes", config.probe_routes, network.nodes, "a node"),
    ]
    for table, entries, known, what in tables:
        names = set(known)
        for key in entries:
            if key not in names:
                guess = nearest(key, known)
                fix = f"did you mean {guess!r}?" if guess else "remove it"
                raise ConfigError(
                    f"{config.path}: [{table}] {name_of(key)} is not {what} of network "
                    f"'{network.name}': {fix}"
                )


def check_against(config: BenchConfig, network: Network, method: str, max_source_volts: float) -> None:
    """Everything that needs the network: wiring complete, limits respected. Before any I/O."""
    p = config.path
    _unknown_entries(config, network)
    for s in network.sources:
        if s.name not in config.sources:
            raise ConfigError(
                f"{p}: [sources] has no SMU channel for source {s.name} (node {s.node}): add one"
            )
    for node in network.nudge_nodes:
        if node not in config.nudges:
            raise ConfigError(f"{p}: [nudges] has no SMU channel for output node {node!r}: add one")
    used = Counter(config.smu_channels())
    twice = sorted(c for c, n in used.items() if n > 1)
    if twice:
        raise ConfigError(
            f"{p}: SMU channel {twice[0]} has two jobs: give each source, nudge and the probe its own"
        )
    measurable = {s.node for s in network.sources} | set(config.nudges) | set(config.probe_routes)
    for edge in network.conductances:
        for node in (edge.a, edge.b):
            if node not in measurable:
                raise ConfigError(
                    f"{p}: no route to measure node {node!r} (edge {edge.name}): add it to [probe.routes]"
                )
        if edge.name not in config.pots:
            raise ConfigError(f"{p}: [pots] has no pot channel for edge {edge.name}: add one")
    if config.probe_routes and (config.probe_channel is None or config.probe_matrix is None):
        raise ConfigError(f"{p}: [probe] needs channel and matrix to use its routes: give both")
    driven = {s.node for s in network.sources}
    for node in config.probe_routes:
        if node in driven:
            raise ConfigError(
                f"{p}: [probe.routes] {node!r} is a source node: the probe would sit on an SMU output; "
                "remove it"
            )
        if node in config.nudges:
            raise ConfigError(
                f"{p}: [probe.routes] {node!r} is a nudged output: its nudge channel reads it; "
                "remove the route"
            )
    where = list(config.pots.values())
    if len(set(where)) != len(where):
        raise ConfigError(f"{p}: [pots] two edges share one pot channel: give each edge its own")
    amp_names = {a.name for a in network.amplifiers}
    for g in network.conductances:
        if g.signed_by in amp_names and g.signed_by not in config.amplifiers:
            raise ConfigError(
                f"{p}: edge {g.name} can turn negative by inverting amplifier {g.signed_by}, but "
                f"[amplifiers] has no inverting relay for it: add one"
            )
    if method == "pcm":
        raise ConfigError(
            f"{p}: method pcm needs every element's branch current, which a bench does not "
            "measure: use vdm or vdm-centered"
        )
    lim = config.limits
    if max_source_volts > lim["max_volts"]:
        raise ConfigError(
            f"{p}: the experiment drives sources to {max_source_volts:g} V, above [limits] "
            f"max_volts = {lim['max_volts']:g}: lower its [dataset] input_low/input_high (or bias_volts) "
            "or raise the limit"
        )
    if lim["compliance_voltage"] < lim["max_volts"] and config.nudges:
        raise ConfigError(
            f"{p}: [limits] compliance_voltage = {lim['compliance_voltage']:g} is below "
            f"max_volts = {lim['max_volts']:g}: the nudge and probe SMUs would clip node voltages; raise it"
        )


def check_experiment(experiment: Experiment) -> dict[str, float] | None:
    """A bench config with the experiment it names, before any log or instrument: its tables,
    the wiring against the network, and what the experiment will ask of its parts. Returns the
    [conductances] values narrowed to calibrated pots' common range (None: nothing to narrow)."""
    if experiment.bench is None:
        return None
    config = parse(experiment.bench.path, experiment.bench.tables)
    network, hyper, data = experiment.network(), experiment.hyper(), experiment.dataset()
    # A dry run measures on a simulator, which can do what a bench cannot (pcm); the bench's own
    # tables, wiring and limits must hold all the same, or the rehearsal rehearses nothing.
    method = "" if experiment.dry_run else hyper.method
    check_against(config, network, method, max_source_volts(network, data.inputs))
    p = config.path
    if not experiment.dry_run and "pcm" in experiment["sweep"]["methods"]:
        raise ConfigError(
            f"{p}: [sweep] methods names pcm, which a bench cannot measure: remove it (or sweep "
            "with --backend numeric, a dry run)"
        )
    # A pruned edge is an open switch; a rheostat cannot open, and no bench config wires a relay in
    # series with a pot yet. (A dry run may prune: the simulators can open an edge.)
    if not experiment.dry_run and hyper.pruning is not None:
        raise ConfigError(
            f"{p}: the experiment prunes edges ([training] prune_below = {hyper.pruning.below:g}), but "
            "this bench cannot open a pot: set prune_below = 0 (no pruning) for the bench"
        )
    narrowed = _pot_range(config, experiment)
    # The largest nudge any sample can ask for, refused here: a phase beyond the limit mid-run
    # would stop the run.
    nudge, how = largest_nudge(network, hyper, data.targets, config.limits["compliance_voltage"])
    if nudge > config.limits["max_nudge_current"]:
        key = "nudge_current" if hyper.nudge_current > 0 else "beta"
        raise ConfigError(
            f"{p}: [limits] max_nudge_current = {config.limits['max_nudge_current']:g} A is below the "
            f"largest nudge the experiment can ask for, {how} = {nudge:.3g} A: lower [training] {key} "
            "(or raise the limit)"
        )
    # The parts' ratings over the device range the trainer will use (narrowed by a calibration).
    g_low, g_high = (narrowed["g_min"], narrowed["g_max"]) if narrowed else (hyper.g_min, hyper.g_max)
    check_ratings(config, network, max_source_volts(network, data.inputs), g_low, g_high)
    return narrowed


def largest_nudge(
    network: Network, hyper: Hyper, targets: np.ndarray, output_volts: float
) -> tuple[float, str]:
    """(A, how it is bounded): the largest current a nudge channel is asked for over a data set.
    A constant-current nudge: I0. A fixed β: β·max|t − y|, with y anywhere its nudge channels let
    it be: each channel holds its node within ±compliance_voltage (a doubled output's y spans
    twice that), so no reading of y, however far training wanders, asks for more."""
    if hyper.nudge_current > 0:
        return network.nudge_peak(hyper.nudge_current), "[training] nudge_current"
    span = output_volts * np.array([2.0 if o.minus is not None else 1.0 for o in network.outputs])
    error = np.max(np.abs(np.asarray(targets, float)), axis=0, initial=0.0) + span
    return network.largest_nudge(hyper.beta * error), (
        f"beta·max|t − y| (|y| up to compliance_voltage = {output_volts:g} V) = {hyper.beta:g} A/V × "
        f"{float(np.max(error)):g} V"
    )


def _pot_range(config: BenchConfig, experiment: Experiment) -> dict[str, float] | None:
    """Each edge's pot must reach the whole device range the trainer clips to. Nominal parts: a
    range beyond them is refused. Calibrated pots: the experiment's [conductances] range is
    narrowed to what every pot realises (the returned values; None when nothing changes)."""
    p, hyper = config.path, experiment.hyper()
    parts = {bank: config.instruments[bank].pot_model() for bank, _ in config.pots.values()}
    if not any(part.calibrations for part in parts.values()):
        for edge, (bank, channel) in sorted(config.pots.items()):
            part = parts[bank]
            low = part.nominal_conductance(part.taps - 1)
            high = part.nominal_conductance(0)
            tolerance = 1e-9 * high
            if hyper.g_min < low - tolerance or hyper.g_max > high + tolerance:
                raise ConfigError(
                    f'{p}: [pots] {edge} = "{bank}.{channel}" reaches {low:.4g} to {high:.4g} S, but the '
                    f"experiment's [conductances] g_min = {hyper.g_min:g}, g_max = {hyper.g_max:g} go "
                    "beyond: narrow the device range to the pots' (or set r_ab, r_w to the parts fitted, "
                    "or calibrate them: `hil calibrate-pots`)"
                )
        return None
    tables = {edge: parts[bank].calibration(channel) for edge, (bank, channel) in config.pots.items()}
    low, high = pot_calibration.common_range(tables)
    g_min, g_max = max(hyper.g_min, low), min(hyper.g_max, high)
    if g_min >= g_max:
        raise ConfigError(
            f"{p}: the calibrated pots all realise only {low:.4g} to {high:.4g} S, which misses the "
            f"experiment's [conductances] g_min = {hyper.g_min:g}, g_max = {hyper.g_max:g}: move the "
            "device range into theirs (or fit parts of another grade)"
        )
    if (g_min, g_max) == (hyper.g_min, hyper.g_max):
        return None
    c = experiment["conductances"]
    return {
        "g_min": g_min,
        "g_max": g_max,
        "init_low": min(max(float(c["init_low"]), g_min), g_max),
        "init_high": max(min(float(c["init_high"]), g_max), g_min),
    }


def check_ratings(
    config: BenchConfig, network: Network, source_volts: float, g_min: float, g_max: float
) -> None:
    """Refuse a bench whose pots could leave their ratings anywhere in the training: the worst
    case (`drivers.ratings.worst_case`: a bound, not a sample) over the data set's source levels,
    every conductance the pots realise in [g_min, g_max], both polarities of every amplifier and
    every nudge up to `[limits] max_nudge_current`."""
    p = config.path
    g_low, g_high = g_min, {}
    for edge, (bank, channel) in config.pots.items():
        calibration = config.instruments[bank].pot_model().calibration(channel)
        realised = []
        for g in (g_min, g_max):
            try:
                realised.append(calibration.conductance(calibration.code_for(g)))
            except ValueError:
                realised.append(g)  # beyond the pot's range: refused above, or a dry run's
        g_low = min(g_low, realised[0])
        g_high[edge] = max(g_max, realised[1])
    try:
        bounds = ratings.worst_case(
            network,
            source_volts,
            g_low,
            config.limits["max_nudge_current"],
            max(g_high.values(), default=g_max),
        )
    except ratings.RatingError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    found = ratings.worst_case_violations(
        network,
        config.pots,
        {name: spec.pot_ratings() for name, spec in config.of_role(POTS).items()},
        bounds,
        g_high,
    )
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(
            f"{p}: {found[0]}{more} in the worst case over the data set (sources up to ±{source_volts:g} V), "
            f"g in [{g_low:.3g}, {max(g_high.values(), default=g_max):.3g}] S, either "
            f"amplifier polarity and nudges up to {config.limits['max_nudge_current']:g} A: lower the input "
            "and bias volts, the amplifier gain, g_max or max_nudge_current, or widen [instruments] supply"
        )
