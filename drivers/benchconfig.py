"""Bench configs: which instruments, where, how they meet the board, and the safety limits.

Everything here is checked against the network before any instrument is touched. The file has
keyed tables (`KEYS`, documented key by key like an experiment's) and maps (`MAPS`, one entry per
network element):

    [bench]               experiment, emulated, settle_seconds, nplc
    [limits]              max_volts, compliance_current, compliance_voltage, max_nudge_current,
                          ramp_step, pot_terminal_volts (every one required)
    [instruments.NAME]    model, address (+ pot banks: channels, r_ab, r_w)
    [sources]             network source -> SMU channel ("smu1" for a 2450, "k26.a", "b29.1")
    [nudges]              output node -> SMU channel that forces the nudge current
    [probe]               channel (an SMU channel forcing 0 A), matrix; [probe.routes] node -> crosspoints
    [pots]                edge -> "bank.channel"
    [amplifiers]          amplifier -> crosspoints that invert it (negative weights behind it)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.models import MATRIX, MODELS, POTS, SMU
from drivers.pots import AD5206Model
from drivers.router import Crosspoint, RouteMap
from hil.config import REQUIRED, ConfigError, Key, check_table
from hil.network import Network


def _within(low: float, high: float, unit: str) -> tuple[Any, str]:
    check = lambda v: low <= v <= high  # noqa: E731
    return check, f"from {low:g} to {high:g} {unit}".rstrip()


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
_NUMBER = (int, float)

KEYS: dict[str, dict[str, Key]] = {
    "bench": {
        "experiment": Key(
            REQUIRED,
            str,
            rule='the path of an experiment config, e.g. "xor-bench.toml"',
            doc="the experiment config this bench runs (relative to the bench config)",
        ),
        "emulated": Key(
            False, bool, doc="true: start a virtual bench of emulators on free local ports for the run"
        ),
        "settle_seconds": Key(0.0, _NUMBER, *_within(0.0, 60.0, "s"), "wait after setting levels, s"),
        "nplc": Key(1.0, _NUMBER, *_within(0.01, 10.0, "PLC"), "integration time of every SMU reading, PLC"),
    },
    "limits": {
        "max_volts": Key(REQUIRED, _NUMBER, *_within(1e-12, 200.0, "V"), "the most any source may force, V"),
        "compliance_current": Key(
            REQUIRED,
            _NUMBER,
            *_within(1e-12, 1.0, "A"),
            "current limit of every voltage-forcing channel, set before output on, A",
        ),
        "compliance_voltage": Key(
            REQUIRED, _NUMBER, *_within(1e-12, 200.0, "V"), "voltage limit of the nudge and probe channels, V"
        ),
        "max_nudge_current": Key(REQUIRED, _NUMBER, *_within(1e-12, 0.1, "A"), "largest nudge current, A"),
        "ramp_step": Key(
            REQUIRED, _NUMBER, *_within(1e-3, 200.0, "V"), "largest single step of a source level, V"
        ),
        "pot_terminal_volts": Key(
            REQUIRED, _NUMBER, *_within(1e-12, 5.5, "V"), "largest |V| on any digital-pot terminal, V"
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
            "VISA resource, or serial port/URL for the pot bridge",
        ),
        "channels": Key(6, int, *_within(1, 64, "channels"), "pot bridge: number of pots"),
        "r_ab": Key(10e3, _NUMBER, *_within(1.0, 1e7, "Ω"), "pot bridge: end-to-end resistance R_AB, Ω"),
        "r_w": Key(50.0, _NUMBER, *_within(0.0, 1e4, "Ω"), "pot bridge: wiper resistance R_W, Ω"),
    },
    "probe": {
        "channel": Key(
            "", str, doc="SMU channel that forces 0 A and reads the nodes the matrix routes to it"
        ),
        "matrix": Key("", str, doc="the switch matrix (an [instruments] name) that routes the probe"),
        "routes": Key({}, dict, doc="[probe.routes] node = crosspoints joining the probe to it"),
    },
}
MAPS = {
    "sources": 'network source = SMU channel that forces it, e.g. Vx1 = "k26a.a"',
    "nudges": 'output node = SMU channel that forces its nudge current, e.g. "11" = "k26d.a"',
    "pots": 'edge = digital-pot channel, "bank.channel" (channels from 1), e.g. R1 = "pots.1"',
    "amplifiers": 'amplifier = crosspoints that invert it (negative weights behind it), e.g. X1 = ["1B01"]',
}
_POT_ONLY = ("channels", "r_ab", "r_w")


@dataclass(frozen=True)
class InstrumentSpec:
    """One [instruments.NAME] table: what the bench config says of an instrument."""

    name: str
    model: str
    address: str
    channels: int = 0  # pot banks
    r_ab: float = 10e3  # Ω, pot end-to-end resistance
    r_w: float = 50.0  # Ω, pot wiper resistance

    @property
    def role(self) -> str:
        return MODELS[self.model].role

    def pot_model(self) -> AD5206Model:
        """The part behind a pot bank, as this spec sizes it."""
        return AD5206Model(r_ab=self.r_ab, r_w=self.r_w, channels=self.channels)


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

    def smu_channels(self) -> list[str]:
        used = [*self.sources.values(), *self.nudges.values()]
        return used + ([self.probe_channel] if self.probe_channel else [])

    def of_role(self, role: str) -> dict[str, InstrumentSpec]:
        return {name: spec for name, spec in self.instruments.items() if spec.role == role}


def read(path: str | Path) -> BenchConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"bench config {path} not found: give the path to a bench .toml") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc}): fix the syntax at that line") from exc
    return parse(path, raw)


def parse(path: Path, raw: dict[str, Any]) -> BenchConfig:
    """Check every table of a bench config on its own (`check_against` checks it with the network)."""
    known = {"bench", "limits", "instruments", "probe", *MAPS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown section [{unknown[0]}]: known sections are "
            f"{', '.join(f'[{k}]' for k in sorted(known))}"
        )
    bench = check_table(path, "bench", raw.get("bench", {}), KEYS["bench"])
    limits = check_table(path, "limits", raw.get("limits", {}), KEYS["limits"])
    instruments = _instruments(path, _map(path, raw, "instruments"))
    smu = _smu_channel(path, instruments)
    probe = check_table(path, "probe", raw.get("probe", {}), KEYS["probe"])
    if probe["matrix"] and instruments.get(probe["matrix"], _NONE).role != MATRIX:
        raise ConfigError(
            f"{path}: [probe] matrix = {probe['matrix']!r} is not a switch matrix of this bench"
        )
    return BenchConfig(
        path,
        (path.parent / bench["experiment"]).resolve(),
        bench["emulated"],
        float(bench["settle_seconds"]),
        float(bench["nplc"]),
        {k: float(v) for k, v in limits.items()},
        instruments,
        {k: smu("sources", k, v) for k, v in _map(path, raw, "sources").items()},
        {str(k): smu("nudges", k, v) for k, v in _map(path, raw, "nudges").items()},
        smu("probe", "channel", probe["channel"]) if probe["channel"] else None,
        probe["matrix"] or None,
        {str(k): _crosspoints(path, f"probe.routes.{k}", v) for k, v in probe["routes"].items()},
        _pots(path, _map(path, raw, "pots"), instruments),
        {k: _crosspoints(path, f"amplifiers.{k}", v) for k, v in _map(path, raw, "amplifiers").items()},
    )


_NONE = InstrumentSpec("", "keithley-2450", "")


def _map(path: Path, raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{key}] must be a table")
    return value


def _instruments(path: Path, tables: dict[str, Any]) -> dict[str, InstrumentSpec]:
    specs: dict[str, InstrumentSpec] = {}
    for name, table in tables.items():
        section = f"instruments.{name}"
        keys = KEYS["instruments.NAME"]
        model = table.get("model") if isinstance(table, dict) else None
        if isinstance(model, str) and model in MODELS and MODELS[model].role != POTS:
            keys = {k: v for k, v in keys.items() if k not in _POT_ONLY}
        values = check_table(path, section, table, keys)
        if values["model"] in MODELS and MODELS[values["model"]].role == POTS:
            specs[name] = InstrumentSpec(
                name, values["model"], values["address"], values["channels"], values["r_ab"], values["r_w"]
            )
        else:
            specs[name] = InstrumentSpec(name, values["model"], values["address"])
    return specs


def _smu_channel(path: Path, instruments: dict[str, InstrumentSpec]) -> Any:
    """A checker of "instrument.channel" names against this bench's SMUs."""

    def channel(section: str, key: str, value: Any) -> str:
        inst, _, ch = str(value).partition(".")
        spec = instruments.get(inst)
        if spec is None or spec.role != SMU or ch not in (MODELS[spec.model].channels or ("",)):
            raise ConfigError(
                f"{path}: [{section}] {key} = {value!r} is not an SMU channel of this bench "
                '(e.g. "smu1" for a 2450, "k26.a" for a 2600B, "b29.1" for a B2900)'
            )
        return str(value)

    return channel


def _pots(
    path: Path, table: dict[str, Any], instruments: dict[str, InstrumentSpec]
) -> dict[str, tuple[str, int]]:
    pots: dict[str, tuple[str, int]] = {}
    for edge, where in table.items():
        bank, _, ch = str(where).partition(".")
        spec = instruments.get(bank)
        if spec is None or spec.role != POTS or not ch.isdigit() or not 1 <= int(ch) <= spec.channels:
            raise ConfigError(
                f"{path}: [pots] {edge} = {where!r} is not a pot channel of this bench "
                '("bank.channel", channels numbered from 1)'
            )
        pots[edge] = (bank, int(ch))
    return pots


def _crosspoints(path: Path, where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
        raise ConfigError(f'{path}: [{where}] must be a list of crosspoint names, e.g. ["1A01"]')
    return value


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


def check_against(config: BenchConfig, network: Network, method: str, max_source_volts: float) -> None:
    """Everything that needs the network: wiring complete, limits respected. Before any I/O."""
    p = config.path
    for s in network.sources:
        if s.name not in config.sources:
            raise ConfigError(f"{p}: [sources] has no SMU channel for source {s.name} (node {s.node})")
    for node in network.nudge_nodes:
        if node not in config.nudges:
            raise ConfigError(f"{p}: [nudges] has no SMU channel for output node {node!r}")
    used = config.smu_channels()
    twice = sorted({c for c in used if used.count(c) > 1})
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
            raise ConfigError(f"{p}: [pots] has no pot channel for edge {edge.name}")
    if config.probe_routes and (config.probe_channel is None or config.probe_matrix is None):
        raise ConfigError(f"{p}: [probe] needs channel and matrix to use its routes")
    driven = {s.node for s in network.sources}
    for node in config.probe_routes:
        if node in driven:
            raise ConfigError(
                f"{p}: [probe.routes] {node!r} is a source node: the probe would sit on an SMU output"
            )
    where = list(config.pots.values())
    if len(set(where)) != len(where):
        raise ConfigError(f"{p}: [pots] two edges share one pot channel")
    amp_names = {a.name for a in network.amplifiers}
    for g in network.conductances:
        if g.signed_by in amp_names and g.signed_by not in config.amplifiers:
            raise ConfigError(
                f"{p}: edge {g.name} can turn negative by inverting amplifier {g.signed_by}, but "
                f"[amplifiers] has no inverting relay for it"
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
            f"max_volts = {lim['max_volts']:g}: lower the inputs or raise the limit"
        )
    if lim["compliance_voltage"] < lim["max_volts"] and config.nudges:
        raise ConfigError(
            f"{p}: [limits] compliance_voltage = {lim['compliance_voltage']:g} is below "
            f"max_volts = {lim['max_volts']:g}: the nudge and probe SMUs would clip node voltages"
        )
