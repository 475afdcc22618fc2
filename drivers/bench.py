"""The bench backend: the one interface (`program`, `settle`, `safe_state`, `close`, `identity`)
on SMUs, a switch matrix and digital potentiometers.

- program: |g| through each pot's calibration, one bulk write; negative weights by source sign
  (the SMU's level) or by an amplifier's inverting relay. Returns the realised conductances.
- settle: source levels (ramped), nudge currents, the settling wait, then every node the
  estimators need: source and nudge nodes read by their own SMUs, the rest through the probe SMU
  routed by the matrix, break-before-make.
- safety: limits checked before anything is touched and before every level is set; compliance
  before output on; before a settle moves any level, the twin (`predict`, which `sim.factory` hands
  the bench: `drivers` may not import `sim`) predicts every pot's terminals and wiper current for
  the levels, nudges and believed conductances, and a pot beyond its ratings (`drivers.ratings`)
  is refused with nothing applied; after the settle the same check runs on what was read, and the
  largest gap to the prediction is kept (`rating_record`); a trip (seen as a source that cannot
  hold its level, or a probe at its voltage limit) or an instrument error stops the run with the
  instrument's words.
- faults: every failure is one line that starts with the instrument's name. Every
  `VERIFY_EVERY` settles, and before the bench is made safe, the instruments are asked whether
  they still hold what the run set (outputs on, none at a limit, the relays and pot codes it
  wrote): a reset, a power glitch or another client shows there rather than in wrong numbers.
- no hot switching: the probe's relays open while it forces 0 A (no current through them), and it
  is switched off while the next route closes; it goes on again once the matrix reports the
  relays settled (`*OPC?`). Its off state (`choose_probe_off`) is its model's 0 A source with the
  output relay closed (no wear on that relay) where the model has one whose voltage limit is
  provably above every node the probe can land on (`probe_worst_case`), else high impedance
  (output relay open); each settle's prediction and each reading are held to that limit. Before an
  amplifier's inverting relay moves (`program`), every source and nudge goes to 0 (ramped,
  `*OPC?`); the next settle ramps them back. Levels ramp in `ramp_step` steps `ramp_delay` apart.
- error queues: `verify` also reads every instrument's error queue, so a refused command stops
  the run within `VERIFY_EVERY` settles instead of passing silently.
- safe state (`safe_state`, and `make_safe` for `hil safe`): every output to 0 and off, every
  relay open, every pot at the safe code, all read back; a session that fails is opened again
  once, and what still is not safe is named.
- locks: a process that drives an instrument holds an flock'ed file named after its address
  (`InstrumentLock`), so a second run, or `hil safe`, on a bench in use is refused with who holds it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fcntl
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from drivers import benchconfig, ratings
from drivers.benchconfig import BenchConfig, InstrumentSpec
from drivers.firmware.potbridge import SAFE_CODE
from drivers.instrument import Instrument, InstrumentError
from drivers.models import MATRIX, MODELS, POTS, SMU
from drivers.pots import PotBridge
from drivers.roles import SourceMeter, SwitchMatrix
from drivers.router import Router
from drivers.smu import SmuRole
from drivers.switch import Keysight34980A, parse_states
from drivers.transport import SerialTransport, Traffic, Transport, TransportError, VisaTransport, one_line
from hil.interface import BackendError, Identity, State, settle_each
from hil.network import Network

# How long every instrument gets to answer, s; None keeps each model's own (its LineFormat). A
# virtual bench answers in milliseconds: tests shorten this so a stalled emulator costs little.
ANSWER_TIMEOUT_S: float | None = None
# Settles between two checks that the instruments still hold what the run set (`verify`).
VERIFY_EVERY = 64
# What a driver may raise about its instrument: it failed, the line failed, or an answer or a
# value was refused.
FAULTS = (InstrumentError, TransportError, ValueError)
# A node may come no closer than this fraction of the probe's 0 A off-state voltage limit (the
# SMU's own limit accuracy, and the twin's gap to the board, stay well inside 5 %).
OFF_LIMIT_MARGIN = 0.95
# The applied settings' entry for the probe's off state (a name no instrument can have).
PROBE_OFF = "[probe]"
# The probe's settings a run changes (the rest `verify` holds it to).
PROBE_LEVELS = ("voltage", "current", "output_state")


# The twin's node voltages (network order) for source levels (network order, signs applied), nudge
# currents by node, the pots' conductances (|g| per edge) and the amplifiers the bench inverts.
Predict = Callable[[np.ndarray, dict[str, float], np.ndarray, frozenset[str]], np.ndarray]


class BenchSafetyError(BackendError):
    """A limit would be or was exceeded; the bench has been (or will be) left safe."""


class BenchBusy(BackendError):
    """Another process drives an instrument of this bench."""


# ---------------------------------------------------------------------------------------- locks
def lock_dir() -> Path:
    """Where instrument locks live: the user's runtime directory, else the temporary one."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "eqprop-hil"
    return Path(tempfile.gettempdir()) / f"eqprop-hil-{os.getuid()}"


class InstrumentLock:
    """One process's claim on one instrument: an flock'ed file named after its address, holding
    who took it (pid, host, command, since). The kernel drops the claim when the process dies,
    kill -9 included, so a claim that is held belongs to a live process."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        key = re.sub(r"[^a-z0-9.]+", "_", address.lower()).strip("_")
        self.path = lock_dir() / f"{key}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise BenchBusy(
                    f"{self.name} ({self.address}) is in use by {who}: wait for that run to end or stop it"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            # The holder before us released (and removed) the file between our open and our lock.
            os.close(fd)
        os.ftruncate(fd, 0)
        since = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        who = f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)}), since {since}"
        os.write(fd, who.encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked: a waiting opener sees the change
            os.close(self._fd)
            self._fd = None


def claim(config: BenchConfig, addresses: dict[str, str]) -> list[InstrumentLock]:
    """Lock every instrument of the bench, or none: `BenchBusy` names the first one in use."""
    locks: list[InstrumentLock] = []
    # One lock per address: two names at one address are one instrument (identify tells them apart).
    every = [InstrumentLock(name, addresses[name]) for name in config.instruments]
    wanted = {lock.path: lock for lock in reversed(every)}  # the first name of each address
    try:
        for path in sorted(wanted):  # one order for every process
            wanted[path].acquire()
            locks.append(wanted[path])
    except BaseException:
        release(locks)
        raise
    return locks


def release(locks: Iterable[InstrumentLock]) -> None:
    for lock in locks:
        lock.release()


@dataclass
class Instruments:
    """Connected drivers, by the bench config's names."""

    smus: dict[str, SourceMeter] = field(default_factory=dict)  # channel key -> channel
    matrices: dict[str, SwitchMatrix] = field(default_factory=dict)
    pots: dict[str, PotBridge] = field(default_factory=dict)
    sessions: dict[str, Instrument] = field(default_factory=dict)  # instrument name -> driver (idn, close)
    addresses: dict[str, str] = field(default_factory=dict)
    links: dict[str, Callable[[], Transport]] = field(default_factory=dict)  # name -> a new session

    def traffic(self) -> Traffic:
        total = Traffic()
        for driver in self.sessions.values():
            total.writes += driver.transport.traffic.writes
            total.queries += driver.transport.traffic.queries
        return total


class BenchBackend:
    def __init__(
        self,
        network: Network,
        config: BenchConfig,
        instruments: Instruments,
        predict: Predict | None = None,
    ) -> None:
        self.network = network
        self.predict = predict
        self._ratings = {name: spec.pot_ratings() for name, spec in config.of_role(POTS).items()}
        # Per run: settles checked, the largest |measured − predicted| on a pot terminal (V) and the
        # largest measured |V| on a terminal and wiper current (A): for the run's record.
        self.rating_record = {
            "settles": 0,
            "largest_gap_volts": 0.0,
            "largest_terminal_volts": 0.0,
            "largest_wiper_current": 0.0,
        }
        self.config = config
        self.hw = instruments
        self.limits = config.limits
        self._levels: dict[str, float] = {}  # SMU channel -> level it holds now
        self._inverted: set[str] = set()
        self._g = np.zeros(len(network.conductances))
        self.on_close: list[Callable[[], None]] = []  # extra shutdown steps (a virtual bench to stop)
        self.emulator: Any = None  # what serves a virtual bench (its circuit), for tests to inspect
        self._live = False  # configured: outputs on, the run's settings in place
        self._made_safe = False  # safe_state ran: outputs are off until the bench is opened again
        self._fault: str | None = None  # the first failure seen; the bench is not what the run set
        # What each instrument and SMU channel answered for its settings once configured.
        self._applied: dict[str, dict[str, Any]] = {}
        # The probe's 0 A output-off voltage limit, V, when that is its off state (None: high
        # impedance, or no probe): every probed node is held below OFF_LIMIT_MARGIN of it.
        self._probe_off_limit: float | None = None
        self._settles = 0
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
        self._check_open()
        g = np.asarray(conductances, dtype=float)
        opened = np.flatnonzero(g == 0)
        if opened.size:
            # 0 S is an open switch (a pruned conductance): a pot's largest resistance still conducts,
            # and no bench config yet describes a relay or route that takes a pot out of the circuit.
            names = ", ".join(self.network.conductances[k].name for k in opened[:3])
            raise BenchSafetyError(
                f"conductance {names}{' and more' if opened.size > 3 else ''} asked to open (0 S, pruned): "
                "this bench cannot disconnect a pot; train it without pruning ([training] prune_below = 0)"
            )
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
        self._check_open()
        self._settles += 1
        if self._settles % VERIFY_EVERY == 0:
            self.verify()
        src_sign, _ = self.network.sign_multipliers(self._g)
        return self._apply(self.network.source_values(inputs) * src_sign, nudge_currents)

    def settle_levels(
        self, levels: dict[str, float], nudge_currents: dict[str, float] | None = None
    ) -> tuple[State, dict[str, float]]:
        """Each named source at its own level (the rest at 0 V), with the same checks as `settle`;
        returns the state and every source's current out of its SMU into the board, which
        `hil calibrate-pots` needs (a data set's inputs tie several sources together)."""
        self._check_open()
        unknown = sorted(set(levels) - {s.name for s in self.network.sources})
        if unknown:
            raise BackendError(f"no source {unknown[0]} in network '{self.network.name}'")
        array = np.array([float(levels.get(s.name, 0.0)) for s in self.network.sources])
        state = self._apply(array, nudge_currents)
        currents = {
            s.name: float(self._guard(self.hw.smus[self.config.sources[s.name]].measure_current))
            for s in self.network.sources
        }
        return state, currents

    def program_codes(self, codes: dict[str, int]) -> np.ndarray:
        """Edges' pots set to raw codes (calibration); the bench believes each at its part's
        conductance for that code (nominal, or the loaded calibration). Returns those beliefs."""
        self._check_open()
        per_bank: dict[str, dict[int, int]] = {}
        for edge, code in codes.items():
            if edge not in self.config.pots:
                raise BackendError(f"no pot for edge {edge} in this bench config")
            bank, channel = self.config.pots[edge]
            per_bank.setdefault(bank, {})[channel] = code
        for bank, wanted in per_bank.items():
            self._guard(self.hw.pots[bank].write_codes, wanted)
        for k, edge_ in enumerate(self.network.conductances):
            bank, channel = self.config.pots[edge_.name]
            pots = self.hw.pots[bank]
            # a channel not written since the reset is at the firmware's safe code
            self._g[k] = pots.pot.conductance(channel, pots.written.get(channel, SAFE_CODE))
        if self._inverted:
            self._set_inversions(set())  # raw codes are positive weights
        return self._g.copy()

    def _apply(self, levels: np.ndarray, nudge_currents: dict[str, float] | None) -> State:
        """Source levels (network order) and nudges applied, every node read back."""
        net, lim = self.network, self.limits
        nudges = nudge_currents or {}
        self._refuse_levels(levels, nudges)
        predicted = self._predicted(levels, nudges)
        for s, level in zip(net.sources, levels, strict=True):
            self._ramp(self.config.sources[s.name], float(level))
        self._apply_nudges(nudges)
        v = np.zeros(len(net.nodes))
        self._read_held(levels, v)
        for node, i in self._probe_nodes:
            self._route_probe(node)
            v[i] = self._read(self.config.probe_channel or "")
            self._check_probe_limit(node, v[i])
        terminal = float(np.max(np.abs(v), initial=0.0))
        if terminal > lim["pot_terminal_volts"]:
            raise self._stop(
                f"a pot terminal reached {terminal:g} V, above pot_terminal_volts = "
                f"{lim['pot_terminal_volts']:g}"
            )
        self._check_measured(v, predicted)
        return State(v, None)

    def settle_batch(self, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
        """Samples of the same inputs (the centered estimator's +β and −β rows) settle together:
        the sources set once, then node by node the probe is routed once and read under each
        sample's nudge in turn (+β, then −β), so the slow drift and flicker of the sources and the
        probe are nearly the same in both readings and cancel in their difference. Each reading is
        taken with its own sample's levels applied, as a settle of its own would take it; the relays
        move once per node and group instead of once per node and sample. Samples whose inputs
        appear once settle one by one (`settle`)."""
        self._check_open()
        inputs = np.atleast_2d(np.asarray(inputs, dtype=float))
        groups = _same_inputs(inputs)
        if all(len(group) == 1 for group in groups):
            return settle_each(self, inputs, nudges)
        nodes = self.network.nudge_nodes
        per_row = [
            None if nudges is None else dict(zip(nodes, map(float, nudges[k]), strict=True))
            for k in range(len(inputs))
        ]
        v = np.zeros((len(inputs), len(self.network.nodes)))
        for group in groups:
            if len(group) == 1:
                v[group[0]] = self.settle(inputs[group[0]], per_row[group[0]]).voltages
            else:
                v[group] = self._settle_group(inputs[group[0]], [per_row[k] for k in group])
        return State(v, None)

    def _settle_group(self, inputs: np.ndarray, nudges: list[dict[str, float] | None]) -> np.ndarray:
        """[members, nodes]: one input vector under several nudges, read node by node (see
        `settle_batch`). Every member's levels are checked before anything moves."""
        net, lim = self.network, self.limits
        src_sign, _ = net.sign_multipliers(self._g)
        levels = net.source_values(inputs) * src_sign
        predicted = []
        for member in nudges:
            self._refuse_levels(levels, member or {})
            predicted.append(self._predicted(levels, member or {}))
        for _ in nudges:  # each member is a settle for the periodic check, as `settle` counts it
            self._settles += 1
            if self._settles % VERIFY_EVERY == 0:
                self.verify()
        for s, level in zip(net.sources, levels, strict=True):
            self._ramp(self.config.sources[s.name], float(level))
        v = np.zeros((len(nudges), len(net.nodes)))
        probed: list[tuple[str, int] | None] = [*self._probe_nodes] or [None]
        for step, where in enumerate(probed):
            if where is not None:
                self._route_probe(where[0])
            for m, member in enumerate(nudges):
                self._apply_nudges(member or {})
                if step == 0:  # the channels that hold their own nodes: read once per member
                    self._read_held(levels, v[m])
                if where is not None:
                    v[m, where[1]] = self._read(self.config.probe_channel or "")
                    self._check_probe_limit(where[0], v[m, where[1]])
        terminal = float(np.max(np.abs(v), initial=0.0))
        if terminal > lim["pot_terminal_volts"]:
            raise self._stop(
                f"a pot terminal reached {terminal:g} V, above pot_terminal_volts = "
                f"{lim['pot_terminal_volts']:g}"
            )
        for reading, prediction in zip(v, predicted, strict=True):
            self._check_measured(reading, prediction)
        return v

    def _refuse_levels(self, levels: np.ndarray, nudges: dict[str, float]) -> None:
        """`settle`'s checks of the levels it is about to apply, before anything is touched."""
        lim = self.limits
        worst = float(np.max(np.abs(levels), initial=0.0))
        if worst > lim["max_volts"]:
            raise BenchSafetyError(
                f"a source would be set to {worst:g} V, above max_volts = {lim['max_volts']:g}"
            )
        unknown = set(nudges) - set(self.config.nudges)
        if unknown:
            raise BackendError(f"nudge at {sorted(unknown)}: only output nodes can be nudged")
        big = max((abs(i) for i in nudges.values()), default=0.0)
        if big > lim["max_nudge_current"]:
            raise BenchSafetyError(
                f"a nudge of {big:g} A exceeds max_nudge_current = {lim['max_nudge_current']:g}"
            )

    def _apply_nudges(self, nudges: dict[str, float]) -> None:
        """Every nudge channel to its current (0 A where none is asked), then the settling wait."""
        for node, key in self.config.nudges.items():
            self._set(key, float(nudges.get(node, 0.0)))
        if self.config.settle_seconds:
            time.sleep(self.config.settle_seconds)

    def _read_held(self, levels: np.ndarray, v: np.ndarray) -> None:
        """Source nodes and nudged nodes, each read by its own SMU, into `v` (as `settle` reads
        them, with the same checks)."""
        for s, i, level in zip(self.network.sources, self._source_nodes, levels, strict=True):
            v[i] = self._read(self.config.sources[s.name])
            if abs(v[i] - level) > 1e-3 * max(1.0, abs(level)):
                raise self._stop(self._not_holding(self.config.sources[s.name], s.name, v[i], level))
        for node, i in self._nudge_nodes:
            v[i] = self._read(self.config.nudges[node])
            self._check_probe_limit(node, v[i])

    def safe_state(self) -> None:
        """Every output to 0 and off, every relay open, every pot at its safe code, all read back.

        Before that, a bench that ran without a fault is checked once more (`verify`), so a reset
        in the last settles is not taken for a clean run. Every instrument is made safe even if
        another fails; a session that fails is opened again once (a dropped link, a session out
        of step). Raises `BenchSafetyError` naming what the check found and what is still not safe.
        """
        found = ""
        if self._live and self._fault is None:
            try:
                self.verify()
            except BackendError as exc:
                found = str(exc)
        self._live, self._made_safe = False, True
        unsafe: list[str] = []
        for name in _safe_order(self.config):
            if name not in self.hw.sessions:
                continue
            try:
                _with_retry(self.hw, name, partial(make_instrument_safe, self.config, name, self.hw))
            except FAULTS as exc:
                unsafe.append(one_line(exc))
        for key in self._levels:
            self._levels[key] = 0.0
        if self._router is not None:
            self._router.connected.clear()
        self._inverted = set()
        if unsafe:
            how = "" if self.config.emulated else f": run `hil safe {self.config.path}` once it answers"
            found = f"{found}; " if found else ""
            raise BenchSafetyError(f"{found}NOT SAFE: {'; '.join(unsafe)}{how}")
        if found:
            raise BenchSafetyError(found)

    def close(self) -> None:
        try:
            if not self._made_safe:
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
            kind="bench",
            description=f"{kind} from {self.config.path.name}",
            instruments=instruments,
            settings=self.applied_settings(),
        )

    def run_record(self) -> dict[str, float]:
        """The ratings record of the settles so far (`rating_record`), for the run log's close."""
        return {name: float(value) for name, value in self.rating_record.items()}

    def applied_settings(self) -> dict[str, dict[str, Any]]:
        """What every instrument, and every SMU channel (by its key, `k26a.b`), answered for the
        settings the run relies on, read back once the bench was configured: for the run log."""
        return {name: dict(values) for name, values in self._applied.items()}

    def check(self) -> None:
        """Every instrument's error queue, and every SMU's compliance flag."""
        for key, smu in self.hw.smus.items():
            if self._guard(smu.tripped):
                raise self._stop(f"{key} is in compliance: check the board and the [limits]")
        for driver in self.hw.sessions.values():
            self._guard(driver.check_errors)

    def verify(self) -> None:
        """The instruments still hold what the run set: every output on and none at its limit,
        the relays the run closed (and no other), the pot codes it wrote. A reset, a power glitch
        or another client changes these without a word on the line."""
        for key, smu in self.hw.smus.items():
            if not self._guard(lambda smu=smu: _smu(smu).output_state):
                raise self._stop(
                    f"{key}: output off although the run holds it on: the instrument was reset (a power "
                    "glitch, its front panel or another client)",
                    BenchSafetyError,
                )
            if self._guard(smu.tripped):
                raise self._stop(
                    f"{key}: in compliance: check the board for a short and the [limits]", BenchSafetyError
                )
        self._check_probe_settings()
        for name, matrix in self.hw.matrices.items():
            closed, expected = self._guard(matrix.closed_channels), self._closed_by_the_run(name)
            if closed != expected:
                raise self._stop(
                    f"{name}: relays {sorted(closed)} closed where the run closed {sorted(expected)}: the "
                    "matrix was reset or switched by another client",
                    BenchSafetyError,
                )
        for driver in self.hw.sessions.values():
            self._guard(driver.check_errors)  # a refused command shows here, not in wrong numbers
        for name, bank in self.hw.pots.items():
            for channel, code in sorted(bank.written.items()):
                now = self._guard(bank.read_code, channel)
                if now != code:
                    raise self._stop(
                        f"{name}: pot {channel} holds code {now} where the run wrote {code}: the bridge "
                        "restarted or another client wrote to it",
                        BenchSafetyError,
                    )

    def _check_probe_settings(self) -> None:
        """The probe channel holds every setting it was configured with but its levels and output
        state. The other SMUs stay on through a run, so a reset shows as an output off; the probe
        goes off and on at every move, and is made a 0 A source again before each, so its reset
        would not show: it would go off in the normal 0 V state (pulling each node a route lands
        on) at default limits."""
        key = self.config.probe_channel
        if key is None:
            return
        probe = self.hw.smus[key]
        now = self._guard(probe.applied_settings)
        for name, value in self._applied.get(probe.name, {}).items():
            if name not in PROBE_LEVELS and now[name] != value:
                raise self._stop(
                    f"{probe.name}: {name} reads {now[name]!r} where the run set {value!r}: the instrument "
                    "was reset (a power glitch, its front panel or another client)",
                    BenchSafetyError,
                )

    # ------------------------------------------------------------------ steps
    def _check_open(self) -> None:
        if self._made_safe:
            raise BackendError("the bench was made safe (outputs off): open it again to measure")

    def _stop(self, message: str, kind: type[BackendError] = BenchSafetyError) -> BackendError:
        """The run cannot go on: remember the first fault (the bench is not what the run set)."""
        if self._fault is None:
            self._fault = message
        return kind(message)

    def _guard(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except FAULTS as exc:
            raise self._stop(_named(call, exc), BackendError) from exc

    def _not_holding(self, key: str, source: str, volts: float, level: float) -> str:
        """Why a source does not hold its level: its output went off (a reset), else compliance."""
        if not self._guard(lambda: _smu(self.hw.smus[key]).output_state):
            return (
                f"{key}: output off while source {source} should hold {level:g} V: the instrument was "
                "reset (a power glitch, its front panel or another client)"
            )
        return (
            f"{key}: source {source} holds {volts:g} V instead of {level:g} V: it is in current "
            "compliance (check the board for a short)"
        )

    def _closed_by_the_run(self, name: str) -> set[str]:
        closed: set[str] = set()
        if self._router is not None and name == self.config.probe_matrix:
            for node in self._router.connected:
                closed.update(self.config.probe_routes[node])
        if name == self._inversion_matrix():
            for amplifier in self._inverted:
                closed.update(self.config.amplifiers[amplifier])
        return closed

    def _inversion_matrix(self) -> str:
        return self.config.probe_matrix or next(iter(self.hw.matrices), "")

    def _set(self, key: str, level: float) -> None:
        if self._levels.get(key) != level:
            self._guard(self.hw.smus[key].set_level, level)
            self._levels[key] = level

    def _ramp(self, key: str, level: float) -> None:
        """Steps of at most `ramp_step`, each held `ramp_delay` before the next: the board's
        capacitances follow a ramp, not a jump."""
        start = self._levels.get(key, 0.0)
        steps = int(np.ceil(abs(level - start) / self.limits["ramp_step"]))
        delay = self.limits.get("ramp_delay", 0.0)
        for k in range(1, steps):
            self._set(key, start + (level - start) * k / steps)
            if delay:
                time.sleep(delay)
        self._set(key, level)

    def _to_zero(self) -> None:
        """Every source ramped and every nudge set to 0, and each SMU done with it (*OPC?) before
        this returns: the instruments are separate, so a relay may move only once each has said so."""
        held = [key for key in self.config.sources.values() if self._levels.get(key, 0.0) != 0.0]
        nudging = [key for key in self.config.nudges.values() if self._levels.get(key, 0.0) != 0.0]
        if not held and not nudging:
            return
        for key in nudging:  # first: the sources alone are the free phase, a state every settle passes
            self._set(key, 0.0)
        for key in held:
            self._ramp(key, 0.0)
        for name in sorted({key.partition(".")[0] for key in [*held, *nudging]}):
            self._guard(self.hw.sessions[name].wait_complete)

    def _predicted(self, levels: np.ndarray, nudges: dict[str, float]) -> np.ndarray:
        """The twin's node voltages for what is about to be applied; refuses (nothing applied yet)
        a settle that would take a pot beyond a rating."""
        if self.predict is None:
            raise BenchSafetyError(
                "this bench has no twin to predict what a settle puts on its pots: open it through "
                "sim.factory (hil train, hil run), which hands it one"
            )
        volts = self.predict(levels, nudges, np.abs(self._g), frozenset(self._inverted))
        found = ratings.violations(
            self.network,
            self.config.pots,
            self._ratings,
            ratings.stress(self.network, volts, self._g),
            "predicted",
        )
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise BenchSafetyError(f"refused before any level was applied: {found[0]}{more}")
        for node, i in self._probe_nodes:
            beyond = self._beyond_probe_off_limit(node, float(volts[i]), "predicted at")
            if beyond:
                raise BenchSafetyError(f"refused before any level was applied: {beyond}")
        return volts

    def _check_measured(self, volts: np.ndarray, predicted: np.ndarray) -> None:
        """What was read against the ratings (stop, safe state, if beyond one) and against the
        prediction (the largest gap kept for the run)."""
        found = ratings.stress(self.network, volts, self._g)
        record = self.rating_record
        record["settles"] += 1
        a, b = self.network.edge_endpoints
        terminals = np.union1d(a, b)
        if terminals.size:
            gap = float(np.max(np.abs(volts[terminals] - predicted[terminals])))
            record["largest_gap_volts"] = max(record["largest_gap_volts"], gap)
            record["largest_terminal_volts"] = max(
                record["largest_terminal_volts"], float(np.max(np.abs(volts[terminals])))
            )
        record["largest_wiper_current"] = max(
            record["largest_wiper_current"], float(np.max(np.abs(found.current), initial=0.0))
        )
        beyond = ratings.violations(self.network, self.config.pots, self._ratings, found, "measured")
        if beyond:
            more = f" (and {len(beyond) - 1} more)" if len(beyond) > 1 else ""
            raise self._stop(f"{beyond[0]}{more}: the bench differs from its twin; stopped")

    def _read(self, key: str) -> float:
        """One node's voltage: the mean of `[bench] averages` readings."""
        smu = self.hw.smus[key]
        if self.config.averages == 1:
            return float(self._guard(smu.measure_voltage))
        return float(np.mean([self._guard(smu.measure_voltage) for _ in range(self.config.averages)]))

    def _check_probe_limit(self, node: str, volts: float) -> None:
        if abs(volts) >= 0.999 * self.limits["compliance_voltage"]:
            raise self._stop(
                f"node {node} reads {volts:g} V, at the probe's voltage limit: a node is "
                "floating or over range"
            )
        beyond = self._beyond_probe_off_limit(node, volts, "reads")
        if beyond:
            raise self._stop(beyond)

    def _beyond_probe_off_limit(self, node: str, volts: float, how: str) -> str:
        """Why a probed node at `volts` is too close to the probe's 0 A off-state limit ("": it is
        not, or the probe's off state is high impedance): the off probe would clamp it there and
        the next route would break or make that current."""
        limit = self._probe_off_limit
        if limit is None or node not in self.config.probe_routes or abs(volts) < OFF_LIMIT_MARGIN * limit:
            return ""
        return (
            f"node {node} {how} {volts:.4g} V, within {100 * (1 - OFF_LIMIT_MARGIN):g} % of the probe's 0 A "
            f"output-off voltage limit {limit:g} V: its relays would switch under current"
        )

    def _route_probe(self, node: str) -> None:
        """Break before make, checked against shorts, and no hot switching (707B reference manual,
        channel.connectrule: hot switching can dry-weld reed relays): the old route opens while the
        probe forces 0 A, so no current flows through it, and is waited for (*OPC?); the probe
        output goes off before the new route closes, in the high-impedance output-off state
        `configure` chose (`choose_probe_off`: 0 A with the output relay closed, or high impedance;
        never the normal 0 V state, which would pull the node the route lands on); on again once
        the matrix reports it settled (*OPC?), before the reading."""
        if self._router is None:
            raise BenchSafetyError("the bench has probe routes but no switch matrix for them")
        if self._router.connected == [node]:
            return
        key = self.config.probe_channel or ""
        probe, session = self.hw.smus[key], self.hw.sessions[key.partition(".")[0]]
        for route in list(self._router.connected):
            self._guard(self._router.disconnect, route)
        self._guard(probe.output, False)
        # The SMU and the matrix are separate instruments: the output is off before a relay moves
        # only once the SMU says so.
        self._guard(session.wait_complete)
        self._guard(self._router.connect, node)
        # Writes only (no round trip): an instrument reset since the last check would turn the
        # output on as a 0 V voltage source, shorting whatever drives the node (an amplifier).
        self._guard(probe.source_current, self.limits["compliance_voltage"])
        self._guard(probe.output, True)

    def _set_inversions(self, wanted: set[str]) -> None:
        """The amplifiers' inverting relays to `wanted`, never hot: every source and nudge is
        brought to 0 first (ramped, and confirmed by each SMU's *OPC?), so no relay makes or breaks
        a current; the next settle ramps the levels back."""
        matrix = self.hw.matrices[self._inversion_matrix()]
        opening = [c for name in self._inverted - wanted for c in self.config.amplifiers[name]]
        closing = [c for name in wanted - self._inverted for c in self.config.amplifiers[name]]
        self._to_zero()
        if opening:
            self._guard(matrix.open_channels, opening)
        if closing:
            self._guard(matrix.close_channels, closing)
        self._guard(matrix.wait_complete)
        self._inverted = set(wanted)


def _same_inputs(inputs: np.ndarray) -> list[list[int]]:
    """Row indices grouped by identical input rows, groups in order of first appearance."""
    groups: dict[bytes, list[int]] = {}
    for k, row in enumerate(inputs):
        groups.setdefault(np.ascontiguousarray(row).tobytes(), []).append(k)
    return list(groups.values())


def _smu(channel: SourceMeter) -> SmuRole:
    """The SMU drivers' shared controls (output state, levels) behind the role."""
    if not isinstance(channel, SmuRole):
        raise InstrumentError(f"{channel.name}: not an SMU driver this bench can read back")
    return channel


def _named(call: Any, exc: BaseException) -> str:
    """The failure on one line, starting with the instrument's name (a validator's or a router's
    refusal does not say whose it is)."""
    text = one_line(exc)
    owner = getattr(call, "__self__", None)
    name = getattr(owner, "name", None) or getattr(getattr(owner, "matrix", None), "name", "")
    if name and not text.startswith(name.split(".")[0]):
        text = f"{name}: {text}"
    return text


# ---------------------------------------------------------------------------------------- safe state
def _safe_order(config: BenchConfig) -> list[str]:
    """Outputs off before any relay moves (no relay opens under current), pots last."""
    rank = {SMU: 0, MATRIX: 1, POTS: 2}
    return sorted(config.instruments, key=lambda name: rank[config.instruments[name].role])


def _with_retry(hw: Instruments, name: str, action: Callable[[], str]) -> str:
    """`action`, and once more on a new session when the first one fails: a dropped link or a
    session out of step (a late answer, garbage) is then no reason to leave an output on."""
    try:
        return action()
    except FAULTS:
        driver = hw.sessions[name]
        try:
            driver.transport.close()
        except Exception:  # it is broken: that is why it is replaced
            pass
        driver.transport = hw.links[name]()
        driver.identify()
        return action()


def smu_channels(spec: InstrumentSpec, driver: Instrument) -> dict[str, SmuRole]:
    """Every channel of an SMU (also those the bench config does not use), by channel key."""
    session: Any = driver
    names = MODELS[spec.model].channels
    if not names:
        return {spec.name: _smu(session)}
    return {f"{spec.name}.{ch}": _smu(session.channel(ch)) for ch in names}


def crosspoints_on(config: BenchConfig, matrix: str) -> set[str]:
    """Every crosspoint the bench config names on a matrix (probe routes, inverting relays)."""
    found: set[str] = set()
    if matrix == config.probe_matrix:
        for channels in config.probe_routes.values():
            found.update(channels)
    if matrix == (config.probe_matrix or next(iter(config.of_role(MATRIX)), "")):
        for channels in config.amplifiers.values():
            found.update(channels)
    return found


def closed_relays(matrix: SwitchMatrix, known: set[str]) -> set[str]:
    """The relays closed now, asked of the instrument. A 34980A cannot list them: it is asked
    about every crosspoint the bench config names."""
    if not isinstance(matrix, Keysight34980A):
        return matrix.closed_channels()
    if not known:
        return set()
    asked = sorted(known)
    query = matrix.STATE_QUERY.format(channels=",".join(asked))
    states = parse_states(matrix.ask(query))
    if len(states) != len(asked):
        raise InstrumentError(f"{matrix.name}: {query} gave {len(states)} states for {len(asked)} channels")
    return {channel for channel, closed in zip(asked, states, strict=True) if closed}


def make_instrument_safe(config: BenchConfig, name: str, hw: Instruments) -> str:
    """One instrument to its safe state, read back: SMU channels at level 0 with the output off,
    every relay open, every pot at the safe code. Returns what was read back; raises (naming the
    instrument) what could not be done or does not read back safe."""
    spec, driver = config.instruments[name], hw.sessions[name]
    if spec.role == SMU:
        channels = smu_channels(spec, driver)
        for key, smu in channels.items():
            # The instrument's own source function, not what this session believed: a reset or
            # another client may have changed it, and a level is set in the function's units.
            smu.mode = "V" if smu.function == smu.VOLTS else "I"
            smu.safe()
            if smu.output_state:
                raise InstrumentError(f"{key}: output still on after it was switched off")
            level = smu.voltage if smu.mode == "V" else smu.current
            if level != 0.0:
                raise InstrumentError(f"{key}: level reads {level:g} after it was set to 0")
        return f"{len(channels)} output{'s' * (len(channels) > 1)} off at 0"
    if spec.role == MATRIX:
        matrix = hw.matrices[name]
        matrix.open_all()
        matrix.wait_complete()
        closed = closed_relays(matrix, crosspoints_on(config, name))
        if closed:
            raise InstrumentError(f"{name}: relays {sorted(closed)} still closed after opening every one")
        return "every relay open"
    bank = hw.pots[name]
    bank.reset()
    codes = {channel: bank.read_code(channel) for channel in range(1, bank.channels + 1)}
    off = {channel: code for channel, code in codes.items() if code != SAFE_CODE}
    if off:
        raise InstrumentError(f"{name}: pots read {off} after *RST, not the safe code {SAFE_CODE}")
    return f"{bank.channels} pots at the safe code {SAFE_CODE}"


@dataclass(frozen=True)
class SafeReport:
    """What `make_safe` did to one instrument."""

    name: str
    model: str
    address: str
    safe: bool
    detail: str  # what was read back, or what went wrong


def make_safe(config: BenchConfig) -> list[SafeReport]:
    """Bring a bench to its safe state from a fresh process (after the one driving it died):
    refuse if any instrument is locked by a live process, else connect and identify each one,
    make it safe and read it back. An instrument that fails does not stop the others."""
    addresses = {name: spec.address for name, spec in config.instruments.items()}
    locks = claim(config, addresses)
    reports: list[SafeReport] = []
    try:
        for name in _safe_order(config):
            spec = config.instruments[name]
            hw = Instruments(addresses=dict(addresses))
            try:
                _open(hw, spec, addresses[name])
                detail = _with_retry(hw, name, partial(make_instrument_safe, config, name, hw))
                reports.append(SafeReport(name, spec.model, addresses[name], True, detail))
            except FAULTS as exc:
                reports.append(SafeReport(name, spec.model, addresses[name], False, one_line(exc)))
            finally:
                for driver in hw.sessions.values():
                    try:
                        driver.close()
                    except Exception:  # a dead session cannot be closed more
                        pass
    finally:
        release(locks)
    return reports


# ---------------------------------------------------------------------------------------- opening
# Starts whatever serves the bench's instruments elsewhere (a virtual bench on local ports): returns
# their addresses and how to stop it.
Serve = Callable[[], tuple[dict[str, str], Callable[[], None]]]


def open_bench(
    config: BenchConfig,
    network: Network,
    method: str,
    inputs: np.ndarray,
    serve: Serve | None = None,
    predict: Predict | None = None,
) -> BenchBackend:
    """Check the config against the network, claim every instrument, connect, identify,
    configure; leave every output at 0 V (compliance set first) and every relay open. Nothing is
    energised, and nothing is served, before all checks pass. With `serve`, the instruments are
    at the addresses it returns; `predict` is the twin every settle is checked with beforehand
    (without it the bench opens, but refuses to settle)."""
    benchconfig.check_against(config, network, method, benchconfig.max_source_volts(network, inputs))
    addresses = {name: spec.address for name, spec in config.instruments.items()}
    stop: Callable[[], None] | None = None
    if serve is not None:
        addresses, stop = serve()
    locks: list[InstrumentLock] = []
    try:
        locks = claim(config, addresses)
        hw = connect(config, addresses)
    except BaseException:
        release(locks)
        if stop is not None:
            stop()
        raise
    backend = BenchBackend(network, config, hw, predict)
    if stop is not None:
        backend.on_close.append(stop)
    backend.on_close.append(lambda: release(locks))
    try:
        configure(backend)
    except BaseException:
        backend.close()
        raise
    return backend


def _open(hw: Instruments, spec: InstrumentSpec, address: str) -> Instrument:
    """A session with one instrument, identified; touches no output."""
    model = MODELS[spec.model]
    line = model.driver.line
    if ANSWER_TIMEOUT_S is not None:
        line = dataclasses.replace(line, timeout_s=ANSWER_TIMEOUT_S)
    if model.serial:
        # A socket:// bridge (a virtual bench, a serial server) has no DTR line to reset a board.
        boot = 0.0 if address.startswith("socket://") else spec.boot_seconds
        hw.links[spec.name] = lambda: SerialTransport(address, line, boot_seconds=boot)
        bank = PotBridge(hw.links[spec.name](), spec.name, spec.pot_model())
        hw.pots[spec.name] = bank
        driver: Instrument = bank
    else:
        hw.links[spec.name] = lambda: VisaTransport(address, line)
        driver = model.driver(hw.links[spec.name](), spec.name)
        if model.role == MATRIX:
            hw.matrices[spec.name] = driver  # type: ignore[assignment]
    hw.sessions[spec.name] = driver
    driver.identify()
    return driver


def connect(config: BenchConfig, addresses: dict[str, str]) -> Instruments:
    """Open every session and check every identity; touches no output."""
    hw = Instruments(addresses=dict(addresses))
    try:
        for name, spec in config.instruments.items():
            _open(hw, spec, addresses[name])
        for key in config.smu_channels():
            inst, _, ch = key.partition(".")
            session: Any = hw.sessions[inst]
            hw.smus[key] = session.channel(ch) if ch else session
    except FAULTS as exc:
        for driver in hw.sessions.values():
            try:
                driver.close()
            except Exception:  # a session that failed may not close cleanly
                pass
        raise BackendError(one_line(exc)) from exc
    return hw


def configure(backend: BenchBackend) -> None:
    cfg, lim, hw = backend.config, backend.limits, backend.hw
    # A known state whatever the front panel or the last client left: each instrument reset with
    # an empty error queue, then every mode the bench relies on set explicitly (drivers' `prepare`).
    for name, driver in hw.sessions.items():
        backend._guard(driver.reset_and_clear)
        backend._guard(driver.prepare)
        for channel in _channels_of(cfg, name, driver):
            backend._guard(channel.prepare)
    for matrix in hw.matrices.values():
        backend._guard(matrix.open_all)
    for bank in hw.pots.values():
        backend._guard(bank.reset)
    for key in cfg.sources.values():
        backend._guard(hw.smus[key].source_voltage, lim["compliance_current"])
    for key in [*cfg.nudges.values(), *([cfg.probe_channel] if cfg.probe_channel else [])]:
        backend._guard(hw.smus[key].source_current, lim["compliance_voltage"])
    probe_off: dict[str, Any] = {}
    if cfg.probe_channel:
        # The probe is off whenever a route closes: in an SMU's normal off state it would hold 0 V
        # at a current limit and pull the node it lands on.
        probe_off = backend._guard(choose_probe_off, backend)
    for key, smu in hw.smus.items():
        backend._guard(smu.integrate, cfg.nplc)
        backend._guard(smu.output, True)
        backend._levels[key] = 0.0
    backend._applied = {}
    for name, driver in hw.sessions.items():
        backend._applied[name] = backend._guard(driver.applied_settings)
        for channel in _channels_of(cfg, name, driver):
            backend._applied[channel.name] = backend._guard(channel.applied_settings)
    if probe_off:
        backend._applied[PROBE_OFF] = probe_off
    for driver in hw.sessions.values():
        backend._guard(driver.check_errors)
    backend._live = True


def probe_worst_case(config: BenchConfig, network: Network) -> float:
    """The largest |V| any node the probe can be routed to can reach, whatever the bench is asked
    (`drivers.ratings.worst_case`, a bound): sources up to `[limits] max_volts` (the bench refuses
    more), every pot anywhere in the range its calibration realises (any code), either polarity of
    every amplifier, every nudge up to `max_nudge_current`. Raises `ratings.RatingError` when the
    network has no bound."""
    tables = [config.instruments[bank].pot_model().calibration(ch) for bank, ch in config.pots.values()]
    if not tables:
        raise ratings.RatingError("the bench config has no pots to bound the conductances by")
    bounds = ratings.worst_case(
        network,
        config.limits["max_volts"],
        min(t.g_min for t in tables),
        config.limits["max_nudge_current"],
        max(t.g_max for t in tables),
    )
    return max((bounds.get(node, 0.0) for node in config.probe_routes), default=0.0)


def choose_probe_off(backend: BenchBackend) -> dict[str, Any]:
    """The probe's output-off state, set on its SMU, and why (for the applied settings).

    Its model's 0 A source with the output relay closed (no relay wear: the probe goes off and on
    at every route) when the model has one whose voltage limit, asked for `compliance_voltage`
    (the probe's own limit while on), is above every node the probe can land on by the margin
    (`probe_worst_case`): an off probe then draws nothing and the routes switch cold. Otherwise
    high impedance (the output relay opens), as where a node could pass the limit the off probe
    would clamp it and the route's relays would make and break that current."""
    cfg, network = backend.config, backend.network
    probe = _smu(backend.hw.smus[cfg.probe_channel or ""])
    wanted = backend.limits["compliance_voltage"]
    held = probe.zero_amp_off_limit(wanted)
    try:
        worst: float | None = probe_worst_case(cfg, network)
    except ratings.RatingError as exc:
        worst, why = None, f"no worst case bounds the probed nodes ({exc})"
    if held is None:
        why = f"{type(probe).__name__} has no 0 A output-off state that keeps its output relay closed"
    elif worst is not None and worst >= OFF_LIMIT_MARGIN * held:
        why = (
            f"a probed node can reach {worst:.4g} V, not below {OFF_LIMIT_MARGIN:g} × the 0 A off state's "
            f"voltage limit {held:g} V"
        )
    elif worst is not None:
        probe.zero_amp_off(held)
        backend._probe_off_limit = held
        return {
            "channel": probe.name,
            "off_state": "0 A, output relay closed",
            "off_voltage_limit": held,
            "worst_case_volts": worst,
            "why": f"every probed node stays within {worst:.4g} V, below {OFF_LIMIT_MARGIN:g} × {held:g} V",
        }
    probe.high_impedance_off()
    backend._probe_off_limit = None
    return {
        "channel": probe.name,
        "off_state": "high impedance, output relay open",
        "off_voltage_limit": None,
        "worst_case_volts": worst,
        "why": why,
    }


def _channels_of(config: BenchConfig, name: str, driver: Instrument) -> list[Any]:
    """Every channel of a multi-channel SMU (the unused ones too: a B2900 channel left to switch
    itself on at a reading is no safer for being unused); none for other instruments."""
    spec = config.instruments[name]
    if spec.role != SMU or not MODELS[spec.model].channels:
        return []
    session: Any = driver
    return [session.channel(ch) for ch in getattr(session, "channel_names", MODELS[spec.model].channels)]
