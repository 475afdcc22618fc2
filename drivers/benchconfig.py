"""Bench configs: which instruments, where, how they meet the board, and the safety limits.

Everything here is checked against the network before any instrument is touched. The file:

    [bench]        experiment (an experiment config, relative to this file), emulated, settle_seconds,
                   nplc (integration time of every SMU reading, power-line cycles)
    [limits]       max_volts, compliance_current, compliance_voltage, max_nudge_current,
                   ramp_step, pot_terminal_volts
    [instruments.NAME]  model, address (+ pot banks: channels, r_ab, r_w)
    [sources]      network source -> SMU channel ("smu1" for a 2450, "k26.a", "b29.1")
    [nudges]       output node -> SMU channel that forces the nudge current
    [probe]        channel (an SMU channel forcing 0 A), matrix, [probe.routes] node -> crosspoints
    [pots]         edge -> "bank.channel"
    [amplifiers]   amplifier -> crosspoints that invert it (negative weights behind it)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.router import Crosspoint, RouteMap
from hil.config import ConfigError
from hil.network import Network

SMU_MODELS = {"keithley-2450": (), "keithley-2600b": ("a", "b"), "keysight-b2900": ("1", "2")}
MATRIX_MODELS = ("keithley-707b", "keithley-3706a", "keysight-34980a")
POT_MODELS = ("pot-bridge",)
MODELS = (*SMU_MODELS, *MATRIX_MODELS, *POT_MODELS)

# What an instrument may do at most, whatever the config says (the instruments' own ranges).
HARD_LIMITS = {
    "max_volts": 200.0,
    "compliance_current": 1.0,
    "compliance_voltage": 200.0,
    "max_nudge_current": 0.1,
    "pot_terminal_volts": 5.5,
}

LIMIT_KEYS = (
    "max_volts",
    "compliance_current",
    "compliance_voltage",
    "max_nudge_current",
    "ramp_step",
    "pot_terminal_volts",
)


@dataclass(frozen=True)
class Instrument:
    name: str
    model: str
    address: str
    channels: int = 0  # pot banks
    r_ab: float = 10e3  # Ω, pot end-to-end resistance
    r_w: float = 50.0  # Ω, pot wiper resistance


@dataclass(frozen=True)
class BenchConfig:
    path: Path
    experiment: Path
    emulated: bool
    settle_seconds: float
    nplc: float
    limits: dict[str, float]
    instruments: dict[str, Instrument]
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


def is_bench_config(raw: dict[str, Any]) -> bool:
    return "bench" in raw


def read(path: str | Path) -> BenchConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"bench config {path} not found: give the path to a bench .toml") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc}): fix the syntax at that line") from exc
    return parse(path, raw)


def _table(path: Path, raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{key}] must be a table")
    return value


def _number(path: Path, section: str, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(
            f"{path}: [{section}] {key} = {value!r} is invalid: it must be in [{low:g}, {high:g}]"
        )
    return float(value)


def parse(path: Path, raw: dict[str, Any]) -> BenchConfig:
    known = {"bench", "limits", "instruments", "sources", "nudges", "probe", "pots", "amplifiers"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown section [{unknown[0]}]: known sections are "
            f"{', '.join(f'[{k}]' for k in sorted(known))}"
        )
    bench = _table(path, raw, "bench")
    extra = sorted(set(bench) - {"experiment", "emulated", "settle_seconds", "nplc"})
    if extra:
        raise ConfigError(
            f"{path}: unknown key [bench] {extra[0]}: known keys are experiment, emulated, "
            "settle_seconds, nplc"
        )
    if not isinstance(bench.get("experiment"), str):
        raise ConfigError(f'{path}: [bench] experiment must name an experiment config, e.g. "xor-bench.toml"')
    experiment = (path.parent / bench["experiment"]).resolve()
    emulated = bench.get("emulated", False)
    if not isinstance(emulated, bool):
        raise ConfigError(f"{path}: [bench] emulated must be true or false")
    settle = _number(path, "bench", "settle_seconds", bench.get("settle_seconds", 0.0), 0.0, 60.0)
    nplc = _number(path, "bench", "nplc", bench.get("nplc", 1.0), 0.01, 10.0)

    limits_raw = _table(path, raw, "limits")
    extra = sorted(set(limits_raw) - set(LIMIT_KEYS))
    if extra:
        raise ConfigError(f"{path}: unknown key [limits] {extra[0]}: known keys are {', '.join(LIMIT_KEYS)}")
    missing = [k for k in LIMIT_KEYS if k not in limits_raw]
    if missing:
        raise ConfigError(f"{path}: [limits] {missing[0]} is missing: a bench needs every safety limit set")
    limits = {
        k: _number(path, "limits", k, limits_raw[k], 1e-12, HARD_LIMITS.get(k, 1e3)) for k in LIMIT_KEYS
    }

    instruments: dict[str, Instrument] = {}
    for name, spec in _table(path, raw, "instruments").items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: [instruments.{name}] must be a table")
        model, address = spec.get("model"), spec.get("address")
        if model not in MODELS:
            raise ConfigError(
                f"{path}: [instruments.{name}] model = {model!r} is unknown: use one of {', '.join(MODELS)}"
            )
        if not isinstance(address, str) or not _address_ok(address):
            raise ConfigError(
                f"{path}: [instruments.{name}] address = {address!r} is not a VISA resource "
                "(TCPIP::host::port::SOCKET, ASRL…, GPIB…) or a serial port/URL"
            )
        allowed = {"model", "address"} | ({"channels", "r_ab", "r_w"} if model in POT_MODELS else set())
        extra = sorted(set(spec) - allowed)
        if extra:
            raise ConfigError(f"{path}: unknown key [instruments.{name}] {extra[0]}")
        if model in POT_MODELS:
            channels = spec.get("channels", 6)
            if not isinstance(channels, int) or not 1 <= channels <= 64:
                raise ConfigError(f"{path}: [instruments.{name}] channels = {channels!r} must be 1 to 64")
            instruments[name] = Instrument(
                name,
                model,
                address,
                channels,
                _number(path, f"instruments.{name}", "r_ab", spec.get("r_ab", 10e3), 1.0, 1e7),
                _number(path, f"instruments.{name}", "r_w", spec.get("r_w", 50.0), 0.0, 1e4),
            )
        else:
            instruments[name] = Instrument(name, model, address)

    def channel(section: str, key: str, value: Any) -> str:
        inst, _, ch = str(value).partition(".")
        spec = instruments.get(inst)
        if (
            spec is None
            or spec.model not in SMU_MODELS
            or (ch or "") not in (SMU_MODELS[spec.model] or ("",))
        ):
            raise ConfigError(
                f"{path}: [{section}] {key} = {value!r} is not an SMU channel of this bench "
                '(e.g. "smu1" for a 2450, "k26.a" for a 2600B, "b29.1" for a B2900)'
            )
        return str(value)

    sources = {k: channel("sources", k, v) for k, v in _table(path, raw, "sources").items()}
    nudges = {k: channel("nudges", k, v) for k, v in _table(path, raw, "nudges").items()}
    probe = _table(path, raw, "probe")
    probe_channel = channel("probe", "channel", probe["channel"]) if "channel" in probe else None
    probe_matrix = probe.get("matrix")
    if (
        probe_matrix is not None
        and instruments.get(probe_matrix, Instrument("", "", "")).model not in MATRIX_MODELS
    ):
        raise ConfigError(f"{path}: [probe] matrix = {probe_matrix!r} is not a switch matrix of this bench")
    routes = {str(k): _crosspoints(path, f"probe.routes.{k}", v) for k, v in probe.get("routes", {}).items()}
    pots: dict[str, tuple[str, int]] = {}
    for edge, where in _table(path, raw, "pots").items():
        bank, _, ch = str(where).partition(".")
        spec = instruments.get(bank)
        if (
            spec is None
            or spec.model not in POT_MODELS
            or not ch.isdigit()
            or not 1 <= int(ch) <= spec.channels
        ):
            raise ConfigError(
                f"{path}: [pots] {edge} = {where!r} is not a pot channel of this bench "
                '("bank.channel", channels numbered from 1)'
            )
        pots[edge] = (bank, int(ch))
    amplifiers = {
        k: _crosspoints(path, f"amplifiers.{k}", v) for k, v in _table(path, raw, "amplifiers").items()
    }
    return BenchConfig(
        path,
        experiment,
        emulated,
        settle,
        nplc,
        limits,
        instruments,
        sources,
        nudges,
        probe_channel,
        probe_matrix,
        routes,
        pots,
        amplifiers,
    )


def probe_routes(config: BenchConfig, network: Network) -> RouteMap:
    """The probe's routes for the router: each route joins the probe channel to one node; the
    nodes that sources and nudges hold are off limits to it."""
    probe = config.probe_channel or ""
    crosspoints = {cp: Crosspoint(probe, node) for node, cps in config.probe_routes.items() for cp in cps}
    driven: dict[str, str | None] = {s.node: None for s in network.sources}
    driven.update({node: None for node in config.nudges})
    return RouteMap(dict(config.probe_routes), crosspoints, driven)


def _crosspoints(path: Path, where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
        raise ConfigError(f'{path}: [{where}] must be a list of crosspoint names, e.g. ["1A01"]')
    return value


def _address_ok(address: str) -> bool:
    return bool(
        re.match(r"^(TCPIP\d*::|ASRL|GPIB\d*::|USB\d*::|socket://|rfc2217://|/dev/|COM\d+$)", address)
    )


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
