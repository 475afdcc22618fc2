"""The bench backend: the one interface (`program`, `settle`, `safe_state`, `close`, `identity`)
on SMUs, a switch matrix and digital potentiometers.

- program: |g| through each pot's calibration, one bulk write; negative weights by source sign
  (the SMU's level) or by an amplifier's inverting relay. Returns the realised conductances.
- settle: source levels (ramped), nudge currents, the settling wait, then every node the
  estimators need: source and nudge nodes read by their own SMUs, the rest through the probe SMU
  routed by the matrix, break-before-make.
- safety: limits checked before anything is touched and before every level is set; compliance
  before output on; a trip (seen as a source that cannot hold its level, or a probe at its voltage
  limit) or an instrument error stops the run with the instrument's words.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers import benchconfig
from drivers.benchconfig import BenchConfig
from drivers.instrument import Instrument, InstrumentError
from drivers.models import MATRIX, MODELS
from drivers.pots import PotBridge
from drivers.roles import SourceMeter, SwitchMatrix
from drivers.router import Router
from drivers.transport import SerialTransport, Traffic, TransportError, VisaTransport
from hil.interface import BackendError, Identity, State, settle_each
from hil.network import Network


class BenchSafetyError(BackendError):
    """A limit would be or was exceeded; the bench has been (or will be) left safe."""


@dataclass
class Instruments:
    """Connected drivers, by the bench config's names."""

    smus: dict[str, SourceMeter] = field(default_factory=dict)  # channel key -> channel
    matrices: dict[str, SwitchMatrix] = field(default_factory=dict)
    pots: dict[str, PotBridge] = field(default_factory=dict)
    sessions: dict[str, Instrument] = field(default_factory=dict)  # instrument name -> driver (idn, close)
    addresses: dict[str, str] = field(default_factory=dict)

    def traffic(self) -> Traffic:
        total = Traffic()
        for driver in self.sessions.values():
            total.writes += driver.transport.traffic.writes
            total.queries += driver.transport.traffic.queries
        return total


class BenchBackend:
    def __init__(self, network: Network, config: BenchConfig, instruments: Instruments) -> None:
        self.network = network
        self.config = config
        self.hw = instruments
        self.limits = config.limits
        self._levels: dict[str, float] = {}  # SMU channel -> level it holds now
        self._inverted: set[str] = set()
        self._g = np.zeros(len(network.conductances))
        self.on_close: list[Callable[[], None]] = []  # extra shutdown steps (a virtual bench to stop)
        index = network.node_index
        self._source_nodes = [index[s.node] for s in network.sources]
        self._nudge_nodes = [(node, index[node]) for node in config.nudges]
        self._probe_nodes = [(node, index[node]) for node in config.probe_routes if node in index]
        self._router = (
            Router(instruments.matrices[config.probe_matrix], benchconfig.probe_routes(config, network))
            if config.probe_matrix in instruments.matrices
            else None
        )

    # ------------------------------------------------------------------ interface
    def program(self, conductances: np.ndarray) -> np.ndarray:
        g = np.asarray(conductances, dtype=float)
        realised = np.empty_like(g)
        per_bank: dict[str, dict[int, float]] = {}
        for k, edge in enumerate(self.network.conductances):
            bank, channel = self.config.pots[edge.name]
            per_bank.setdefault(bank, {})[channel] = abs(float(g[k]))
        got: dict[tuple[str, int], float] = {}
        for bank, wanted in per_bank.items():
            for channel, value in self._guard(self.hw.pots[bank].program, wanted).items():
                got[(bank, channel)] = value
        for k, edge in enumerate(self.network.conductances):
            realised[k] = np.sign(g[k]) * got[self.config.pots[edge.name]]
        _, amp_sign = self.network.sign_multipliers(g)
        wanted_inverted = {a.name for a, s in zip(self.network.amplifiers, amp_sign, strict=True) if s < 0}
        if wanted_inverted != self._inverted:
            self._set_inversions(wanted_inverted)
        self._g = realised
        return realised

    def settle(self, inputs: np.ndarray, nudge_currents: dict[str, float] | None = None) -> State:
        net, lim = self.network, self.limits
        src_sign, _ = net.sign_multipliers(self._g)
        levels = net.source_values(inputs) * src_sign
        worst = float(np.max(np.abs(levels), initial=0.0))
        if worst > lim["max_volts"]:
            raise BenchSafetyError(
                f"a source would be set to {worst:g} V, above max_volts = {lim['max_volts']:g}"
            )
        nudges = nudge_currents or {}
        unknown = set(nudges) - set(self.config.nudges)
        if unknown:
            raise BackendError(f"nudge at {sorted(unknown)}: only output nodes can be nudged")
        big = max((abs(i) for i in nudges.values()), default=0.0)
        if big > lim["max_nudge_current"]:
            raise BenchSafetyError(
                f"a nudge of {big:g} A exceeds max_nudge_current = {lim['max_nudge_current']:g}"
            )
        for s, level in zip(net.sources, levels, strict=True):
            self._ramp(self.config.sources[s.name], float(level))
        for node, key in self.config.nudges.items():
            self._set(key, float(nudges.get(node, 0.0)))
        if self.config.settle_seconds:
            time.sleep(self.config.settle_seconds)
        v = np.zeros(len(net.nodes))
        for s, i, level in zip(net.sources, self._source_nodes, levels, strict=True):
            v[i] = self._read(self.config.sources[s.name])
            if abs(v[i] - level) > 1e-3 * max(1.0, abs(level)):
                raise BenchSafetyError(
                    f"source {s.name} on {self.config.sources[s.name]} holds {v[i]:g} V instead "
                    f"of {level:g} V: it is in current compliance (check the board for a short)"
                )
        for node, i in self._nudge_nodes:
            v[i] = self._read(self.config.nudges[node])
            self._check_probe_limit(node, v[i])
        for node, i in self._probe_nodes:
            self._route_probe(node)
            v[i] = self._read(self.config.probe_channel or "")
            self._check_probe_limit(node, v[i])
        terminal = float(np.max(np.abs(v), initial=0.0))
        if terminal > lim["pot_terminal_volts"]:
            raise BenchSafetyError(
                f"a pot terminal reached {terminal:g} V, above pot_terminal_volts = "
                f"{lim['pot_terminal_volts']:g}"
            )
        return State(v, None)

    def settle_batch(self, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
        return settle_each(self, inputs, nudges)

    def safe_state(self) -> None:
        """Every output to 0 and off, every relay open; tries everything even if one step fails."""
        problems: list[str] = []
        for key, smu in self.hw.smus.items():
            try:
                smu.safe()
                self._levels[key] = 0.0
            except Exception as exc:  # keep going: the other outputs must still go off
                problems.append(f"{key}: {exc}")
        for name, matrix in self.hw.matrices.items():
            try:
                matrix.open_all()
            except Exception as exc:
                problems.append(f"{name}: {exc}")
        if self._router is not None:
            self._router.connected.clear()
        self._inverted = set()
        if problems:
            raise BenchSafetyError("could not leave everything safe: " + "; ".join(problems))

    def close(self) -> None:
        try:
            self.safe_state()
        finally:
            for driver in self.hw.sessions.values():
                try:
                    driver.close()
                except Exception:  # a dead session cannot be closed more
                    pass
            for step in self.on_close:
                step()
            self.on_close = []

    def solver_state(self) -> dict[str, np.ndarray]:
        return {}  # instruments measure; nothing is solved here

    def restore_solver_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def identity(self) -> Identity:
        instruments = [
            {
                "name": name,
                "model": self.config.instruments[name].model,
                "address": self.hw.addresses.get(name, ""),
                "idn": getattr(driver, "idn", ""),
            }
            for name, driver in self.hw.sessions.items()
        ]
        kind = "virtual bench" if self.config.emulated else "bench"
        return Identity(
            kind="bench", description=f"{kind} from {self.config.path.name}", instruments=instruments
        )

    def check(self) -> None:
        """Every instrument's error queue, and every SMU's compliance flag."""
        for key, smu in self.hw.smus.items():
            if self._guard(smu.tripped):
                raise BenchSafetyError(f"{key} is in compliance: check the board and the [limits]")
        for driver in self.hw.sessions.values():
            self._guard(driver.check_errors)

    # ------------------------------------------------------------------ steps
    def _guard(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except (InstrumentError, TransportError) as exc:
            raise BackendError(str(exc)) from exc

    def _set(self, key: str, level: float) -> None:
        if self._levels.get(key) != level:
            self._guard(self.hw.smus[key].set_level, level)
            self._levels[key] = level

    def _ramp(self, key: str, level: float) -> None:
        start = self._levels.get(key, 0.0)
        steps = int(np.ceil(abs(level - start) / self.limits["ramp_step"]))
        for k in range(1, steps):
            self._set(key, start + (level - start) * k / steps)
        self._set(key, level)

    def _read(self, key: str) -> float:
        return float(self._guard(self.hw.smus[key].measure_voltage))

    def _check_probe_limit(self, node: str, volts: float) -> None:
        if abs(volts) >= 0.999 * self.limits["compliance_voltage"]:
            raise BenchSafetyError(
                f"node {node} reads {volts:g} V, at the probe's voltage limit: a node is "
                "floating or over range"
            )

    def _route_probe(self, node: str) -> None:
        """Break before make, checked against shorts, waited for (*OPC?) before the reading."""
        if self._router is None:
            raise BenchSafetyError("the bench has probe routes but no switch matrix for them")
        if self._router.connected != [node]:
            self._guard(self._router.connect, node)

    def _set_inversions(self, wanted: set[str]) -> None:
        matrix = self.hw.matrices[self.config.probe_matrix or next(iter(self.hw.matrices))]
        opening = [c for name in self._inverted - wanted for c in self.config.amplifiers[name]]
        closing = [c for name in wanted - self._inverted for c in self.config.amplifiers[name]]
        if opening:
            self._guard(matrix.open_channels, opening)
        if closing:
            self._guard(matrix.close_channels, closing)
        self._guard(matrix.wait_complete)
        self._inverted = set(wanted)


# ---------------------------------------------------------------------------------------- opening
# Starts whatever serves the bench's instruments elsewhere (a virtual bench on local ports): returns
# their addresses and how to stop it.
Serve = Callable[[], tuple[dict[str, str], Callable[[], None]]]


def open_bench(
    config: BenchConfig, network: Network, method: str, inputs: np.ndarray, serve: Serve | None = None
) -> BenchBackend:
    """Check the config against the network, connect, identify, configure; leave every output at
    0 V (compliance set first) and every relay open. Nothing is energised, and nothing is served,
    before all checks pass. With `serve`, the instruments are at the addresses it returns."""
    benchconfig.check_against(config, network, method, benchconfig.max_source_volts(network, inputs))
    addresses = {name: spec.address for name, spec in config.instruments.items()}
    stop: Callable[[], None] | None = None
    if serve is not None:
        addresses, stop = serve()
    try:
        hw = connect(config, addresses)
    except Exception:
        if stop is not None:
            stop()
        raise
    backend = BenchBackend(network, config, hw)
    if stop is not None:
        backend.on_close.append(stop)
    try:
        configure(backend)
    except Exception:
        backend.close()
        raise
    return backend


def connect(config: BenchConfig, addresses: dict[str, str]) -> Instruments:
    """Open every session and check every identity; touches no output."""
    hw = Instruments(addresses=dict(addresses))
    try:
        for name, spec in config.instruments.items():
            model = MODELS[spec.model]
            if model.serial:
                bank = PotBridge(SerialTransport(addresses[name], PotBridge.line), name, spec.pot_model())
                hw.pots[name] = bank
                driver: Instrument = bank
            else:
                driver = model.driver(VisaTransport(addresses[name], model.driver.line), name)
                if model.role == MATRIX:
                    hw.matrices[name] = driver  # type: ignore[assignment]
            hw.sessions[name] = driver
            driver.identify()
        for key in config.smu_channels():
            inst, _, ch = key.partition(".")
            session: Any = hw.sessions[inst]
            hw.smus[key] = session.channel(ch) if ch else session
    except (InstrumentError, TransportError) as exc:
        for driver in hw.sessions.values():
            driver.close()
        raise BackendError(str(exc)) from exc
    return hw


def configure(backend: BenchBackend) -> None:
    cfg, lim, hw = backend.config, backend.limits, backend.hw
    for matrix in hw.matrices.values():
        backend._guard(matrix.open_all)
    for bank in hw.pots.values():
        backend._guard(bank.reset)
    for key in cfg.sources.values():
        backend._guard(hw.smus[key].source_voltage, lim["compliance_current"])
    for key in [*cfg.nudges.values(), *([cfg.probe_channel] if cfg.probe_channel else [])]:
        backend._guard(hw.smus[key].source_current, lim["compliance_voltage"])
    for key, smu in hw.smus.items():
        backend._guard(smu.integrate, cfg.nplc)
        backend._guard(smu.output, True)
        backend._levels[key] = 0.0
    for driver in hw.sessions.values():
        backend._guard(driver.check_errors)
