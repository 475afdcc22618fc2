"""The ngspice backend: libngspice in shared mode through PySpice's binding.

How a settle runs. The circuit is loaded once, with a DC sweep of a spare source on a node of its
own (`.dc VHIL_STEP 0 1e9 1`): ngspice's `step` solves the sweep's next point and pauses there,
and that point is the settle. Between two points `alter` changes inputs, nudges and
conductances in the paused analysis, and the next `step` continues it (`CKTdoJob` without a
reset): the circuit is not set up again, and its sparse matrix keeps the pivot order of the
run's first factorisation. `op`, as this backend used it before, set the circuit up and
reordered the matrix on every solve (twice: its MODEINITJCT iteration asks for it, and so does
the one after). Newton starts each point from the one before.

Values reach ngspice only through `alter` commands, joined with ';' into lines of less than
`COMMAND_BYTES` (ngspice copies a command into a 1024-byte buffer), so an update of every
resistor costs one Python call per ~30 resistors. ngspice 39's `alter` takes one parameter per
command ("Only a single param - value pair supported", frontend/device.c), and `altermod` goes
the same way per model parameter, so there is no cheaper command. Measured: ~2.1 µs of ngspice
per `alter`; loading the netlist again costs more (1.0 ms for the 252 conductances of 5-10-3
against 0.55 ms of alters; 20 ms against 14 ms for 64-32-10), ends the run, and goes through
ngspice's netlist parser, which rounds 36 % of 17-digit resistances differently from its command
parser (the command parser gave back Python's double in every case tried). So netlist text only
gives ngspice the circuit's structure: right after a load every value is set again with
`alter`, and ngspice holds exactly the doubles this module computed.

A point's values arrive through PySpice's SendData callback, one value per vector, read in one
pass (no vector is looked up by name). Each point stays in the sweep's plot, so a run is ended
and its plot destroyed after `RUN_DOUBLES` values (and, by default, at every `program`).

Why a resumed run on ngspice could differ in the last bits, and why it does not. A solve's last
bits depend on the pivot order (Markowitz picks it at the first factorisation of a run, from the
values the matrix holds then, and keeps it while no pivot is exactly zero) and on where Newton
started (the point before). Both are history: a training resumed in another process starts a
new run at its checkpoint, the uninterrupted one would have carried on, and after enough
chaotic epochs the two part visibly. So by default every `program` ends the run: the next settle
starts a new one, ordered from the programmed values, with Newton started cold: nothing of the
solver's state outlives a `program`. Checkpoints are taken between an update and the next
settle, so a resumed ngspice training repeats the very same runs and is bit-identical (`make
bench` kills and resumes one). The price is one setup and ordering per `program` instead of
per solve; `fresh_runs=False` keeps one run across updates for networks where an ordering is
dear (tests/perf/spice_scale.py measures both). `op`, as used before, ordered anew from every
solve's values, yet a resumed run could still differ: it read its conductances from netlist
text, which ngspice rounds differently from the `alter` that set them in the uninterrupted run.

A conductance of exactly 0 is an open switch (a pruned edge): its resistor's multiplier `m` is
set to 0, so ngspice stamps exact zeros and the answer is the network's without that resistor
(to 1.4e-16 V on 5-10-3 with 30 % of the edges open; 1e9, 1e12, 1e15 Ω instead leave 2e-7,
2e-10, 2e-13 V of leak, 1e30 Ω none visible). Unlike any resistance, it lets a node that only
open switches reach be refused as floating (a huge resistance hands it the leaks' average
voltage, which the real open circuit does not have). Setting the conductance again restores
`m = 1`; the resistor stays in the matrix's structure, so pruning costs an `alter`, not a reload.
"""

from __future__ import annotations

import math
import threading
from typing import Any, ClassVar

import numpy as np

from hil.interface import BackendError, ConvergenceError, Identity, State
from hil.network import Network
from sim.netlist import SimulatorOptions, netlist, nudge_source

IMPLAUSIBLE_VOLTS = 1e6
# Newton started warm stops at the first iterate within RELTOL × |V| of the one before, and that
# is about as close as it gets: on the seed's XOR, settles continuing a run were off by up to
# 5e-10 V at RELTOL 1e-9 (3e-13 V at 1e-11, for 0.2 more iterations a settle), 5e-7 V at 1e-6,
# 1e-4 V at 1e-3. Started cold, Newton takes more steps and happens to end much closer (1e-15 V at
# 1e-9, 3.5e-7 V at 1e-3). Nudged-minus-free differences are ~1e-4 V at β = 1e-6, so with a
# looser RELTOL than this (the seed's configs run with ngspice's defaults) every settle starts a
# run of its own, cold and ordered anew, as `op` did.
WARM_RELTOL = 1e-9
COMMAND_BYTES = 1000
RUN_DOUBLES = 1_000_000  # values kept in a run's plot before the run is ended (8 MB)
CONTROL_RESET = 1000  # commands between two frees of ngspice's per-command control blocks
SWEEP_STOP = 1e9  # points in a run's sweep: more than any run reaches
# What ngspice says on stderr when all went well: a run started, a step paused.
_ROUTINE = ("Note: run starting", "doAnalyses: pause requested", "simulation interrupted")
_lock = threading.Lock()
_sessions: list[_Session] = []


class _Session:
    """The one libngspice of this process: whose circuit it holds, and its paused run."""

    def __init__(self, ng: Any, ffi: Any) -> None:
        self.ng = ng
        self.ffi = ffi
        self.lib = ng._ngspice_shared
        self.owner: object | None = None
        self.running = False  # a run is paused at a point, waiting for the next `step`
        self.points = 0  # points solved in the current run
        self.sweep = ""  # the sweep source of the circuit loaded now
        self.plot = ""  # the paused run's plot
        self._commands = 0

    def command(self, line: str, check: bool = True) -> None:
        """Run one command line (commands joined by ';'). `check`: an error ngspice reports
        (an unknown element, a bad value) raises."""
        if len(line) > COMMAND_BYTES + 24:
            raise BackendError(f"internal: ngspice command of {len(line)} bytes")
        self.ng.clear_output()
        rc = self.lib.ngSpice_Command(line.encode())
        self._commands += 1
        if self._commands >= CONTROL_RESET:
            # ngspice keeps a control block per command it ran; NULL frees them (what PySpice's
            # exec_command does every 10,000 commands).
            self.lib.ngSpice_Command(self.ffi.NULL)
            self._commands = 0
        if rc != 0 or (check and self.errors()):
            raise BackendError(f"ngspice '{line[:60]}' failed: {self.said()}")

    def errors(self) -> bool:
        return any(ln.lstrip().lower().startswith("error") for ln in self.ng._stderr)

    def said(self) -> str:
        """What ngspice wrote on stderr since the last command, routine notes left out."""
        lines = [ln for ln in self.ng._stderr if not any(ln.startswith(r) for r in _ROUTINE)]
        return " ".join(" ".join(lines).split())[-300:] or "no operating point"

    def end_run(self) -> None:
        """End the paused run, if any, and free every plot: memory back where it started."""
        # Past the sweep's stop, the analysis ends at its next check without solving.
        finish = f"alter {self.sweep} dc = {2 * SWEEP_STOP!r};step;" if self.running else ""
        self.running = False
        self.points = 0
        self.ng.points.clear()
        self.command(finish + "destroy all")


def _session() -> _Session:
    if _sessions:
        return _sessions[0]
    import logging

    logging.getLogger("PySpice").setLevel(logging.CRITICAL)
    from PySpice.Spice.NgSpice.Shared import NgSpiceShared, ffi

    class LeanNgSpice(NgSpiceShared):
        """PySpice's binding with callbacks that do no more than this backend needs: output lines
        kept (PySpice also logs each), each point's values kept as one list (PySpice builds a
        dict of complex numbers keyed by decoded names)."""

        _instances: ClassVar[dict[int, Any]] = {}

        def __init__(self, **_: Any) -> None:
            self.points: list[list[float]] = []
            self.vectors: Any = None  # the current run's vector list (valid until the next run)
            self._stdout: list[str] = []
            self._stderr: list[str] = []
            self._error_in_stdout = self._error_in_stderr = False
            super().__init__(ngspice_id=0, send_data=True)

        @staticmethod
        def _send_char(message: Any, ngspice_id: int, user_data: Any) -> int:
            self = ffi.from_handle(user_data)
            stream, _, content = ffi.string(message).decode("utf-8", "replace").partition(" ")
            if stream == "stderr":
                self._stderr.append(content)
                self._error_in_stderr = self._error_in_stderr or not content.startswith("Warning:")
            else:
                self._stdout.append(content)
                self._error_in_stdout = self._error_in_stdout or "error" in content.lower()
            return 0

        @staticmethod
        def _send_stat(message: Any, ngspice_id: int, user_data: Any) -> int:
            return 0

        @staticmethod
        def _send_init_data(data: Any, ngspice_id: int, user_data: Any) -> int:
            ffi.from_handle(user_data).vectors = data
            return 0

        @staticmethod
        def _send_data(data: Any, count: int, ngspice_id: int, user_data: Any) -> int:
            values = data.vecsa
            ffi.from_handle(user_data).points.append([values[i].creal for i in range(count)])
            return 0

    if NgSpiceShared._instances:
        raise BackendError(
            "libngspice was already started through PySpice's own binding in this process: "
            "open the ngspice backend before any other PySpice use"
        )
    try:
        ng = LeanNgSpice.new_instance(send_data=True)
    except OSError as exc:  # the shared library is missing
        raise BackendError(
            f"cannot load libngspice ({exc}): install ngspice (make setup does it: "
            "apt-get install ngspice libngspice0 libngspice0-dev)"
        ) from exc
    _sessions.append(_Session(ng, ffi))
    return _sessions[0]


class SpiceBackend:
    """`Backend` implemented by ngspice."""

    def __init__(
        self, network: Network, options: SimulatorOptions = SimulatorOptions(), fresh_runs: bool = True
    ) -> None:
        """`fresh_runs`: every `program` starts a new run (see the module's notes): settles depend
        on nothing but what was programmed and settled since, and a resumed training is
        bit-identical, for one setup and ordering of the matrix per update (a run's first settle
        costs 0.3 ms more than the next at 5-10-3, 5 ms at 64-32-10, 4 s at 784-100-10). False
        keeps one run across updates: no reordering at all, last bits that depend on the history
        of solves."""
        self.network = network
        self.options = options
        self._fresh_runs = fresh_runs
        self._session = _session()
        self._ng = self._session.ng
        net = network
        self._g = np.full(len(net.conductances), 1e-3)
        self._open = np.zeros(len(net.conductances), dtype=bool)
        self._new_run = True  # the next settle starts a new run
        self._pending = True  # programmed values that ngspice does not hold yet
        self._held: np.ndarray | None = None  # what ngspice holds, in `_prefix` order; None: not loaded
        self._index: dict[str, np.ndarray] = {}
        self._vector_count = 0
        self._names = self._element_names()
        self._sweep_node, self._sweep = self._spare_names()
        # Every value set by `alter`: resistances, their multipliers m (0 open, 1 closed), the
        # amplifiers' forward and backward gains, the sources, the nudges. `_prefix[i]` + value
        # is the command that sets value i.
        r = [c.name.lower() for c in net.conductances]
        a = [x.name.lower() for x in net.amplifiers]
        self._prefix = (
            [f"alter {n} = " for n in r]
            + [f"alter {n} m = " for n in r]
            + [f"alter e{n} gain = " for n in a]
            + [f"alter f{n} gain = " for n in a]
            + [f"alter {s.name.lower()} dc = " for s in net.sources]
            + [f"alter {nudge_source(n).lower()} dc = " for n in net.nudge_nodes]
        )
        n_r, n_a, n_s = len(r), len(a), len(net.sources)
        self._programmed_end = 2 * n_r + 2 * n_a  # values that change only with `program`
        self._sources = slice(self._programmed_end, self._programmed_end + n_s)
        self._nudges = slice(self._sources.stop, len(self._prefix))
        self._src_sign = np.ones(n_s)
        self._max_points = 64
        self._cold = options.reltol > WARM_RELTOL

    # ------------------------------------------------------------------ interface
    def program(self, conductances: np.ndarray) -> np.ndarray:
        g = np.array(conductances, dtype=float)
        if g.shape != self._g.shape or not np.all(np.isfinite(g)):
            raise ValueError("conductances must be finite, one per edge (0 for an open switch)")
        is_open = g == 0
        if is_open.any() and not np.array_equal(is_open, self._open):
            floating = _floating_nodes(self.network, ~is_open)
            if floating:
                raise ValueError(
                    f"open switches (conductance 0) leave nodes {floating} with no DC path: "
                    "keep at least one conductance to each of them"
                )
        self._g, self._open = g, is_open
        self._src_sign, _ = self.network.sign_multipliers(g)
        self._pending = True
        self._new_run = self._new_run or self._fresh_runs
        return g.copy()

    def settle(self, inputs: np.ndarray, nudge_currents: dict[str, float] | None = None) -> State:
        net = self.network
        sources = net.source_values(np.asarray(inputs, dtype=float))
        nudges = np.zeros(len(net.nudge_nodes))
        if nudge_currents:
            unknown = set(nudge_currents) - set(net.nudge_nodes)
            if unknown:
                raise BackendError(f"nudge at {sorted(unknown)}: only output nodes can be nudged")
            nudges = np.array([float(nudge_currents.get(n, 0.0)) for n in net.nudge_nodes])
        with _lock:
            points = self._solve(sources[None, :], nudges[None, :])
        return self._state(points[0])

    def settle_batch(self, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
        net = self.network
        x = np.asarray(inputs, dtype=float)
        if x.ndim != 2:
            raise ValueError(f"inputs must be [samples, {net.n_inputs}], got shape {x.shape}")
        sources = np.array([net.source_values(row) for row in x]).reshape(len(x), len(net.sources))
        shape = (len(x), len(net.nudge_nodes))
        pushed = np.zeros(shape) if nudges is None else np.asarray(nudges, dtype=float)
        if pushed.shape != shape:
            raise ValueError(
                f"nudges must be [samples, nudge nodes] = {list(shape)}, got {list(pushed.shape)}"
            )
        with _lock:
            points = self._solve(sources, pushed)
        states = [self._state(p, f"sample {k}: ") for k, p in enumerate(points)]
        n = len(states)
        return State(
            np.array([s.voltages for s in states]).reshape(n, len(net.nodes)),
            np.array([s.source_currents for s in states]).reshape(n, len(net.sources)),
            np.array([s.clamp_currents for s in states]).reshape(n, len(net.clamps), 2),
            np.array([s.amplifier_currents for s in states]).reshape(n, len(net.amplifiers)),
        )

    def safe_state(self) -> None:
        pass

    def close(self) -> None:
        s = self._session
        with _lock:
            if s.owner is self:
                s.end_run()
                s.command("remcirc")
                s.command("destroy all")
                s.owner = None
            self._held = None

    def solver_state(self) -> dict[str, np.ndarray]:
        return {}  # every program starts a new run: nothing carries over (see the module's notes)

    def restore_solver_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def identity(self) -> Identity:
        return Identity(
            kind="spice",
            description=f"ngspice {self._ng.ngspice_version} (shared library) via PySpice",
            versions={"ngspice": str(self._ng.ngspice_version)},
        )

    # ------------------------------------------------------------------ ngspice plumbing
    def _solve(self, sources: np.ndarray, nudges: np.ndarray) -> list[np.ndarray]:
        """One point per row: the values of every vector, in the run's order."""
        s = self._session
        self._ensure_loaded()
        assert self._held is not None
        points = []
        for k in range(len(sources)):
            commands: list[str] = []
            if self._new_run or s.points >= self._max_points or self._cold:
                s.end_run()
                self._new_run = False
            if self._pending:
                commands += self._changes(0, self._programmed_end, self._programmed_values())
                self._pending = False
            commands += self._changes(self._sources.start, self._sources.stop, sources[k] * self._src_sign)
            commands += self._changes(self._nudges.start, self._nudges.stop, nudges[k])
            points.append(self._step(commands))
        return points

    def _programmed_values(self) -> np.ndarray:
        """Resistances, multipliers and amplifier gains for the programmed conductances."""
        assert self._held is not None
        g, is_open = self._g, self._open
        n = len(g)
        held_r = self._held[:n]
        # An open resistor keeps whatever resistance it holds (1 Ω if none yet): m = 0 voids it.
        r = np.where(
            is_open, np.where(np.isnan(held_r), 1.0, held_r), 1.0 / np.where(is_open, 1.0, np.abs(g))
        )
        gain, back = self.network.amplifier_gains(g)
        return np.concatenate([r, np.where(is_open, 0.0, 1.0), gain, back])

    def _changes(self, start: int, stop: int, wanted: np.ndarray) -> list[str]:
        """`alter` commands for the values in [start, stop) that ngspice does not hold yet."""
        assert self._held is not None
        held = self._held[start:stop]
        changed = np.flatnonzero(wanted != held)  # NaN (unknown) differs from everything
        if not len(changed):
            return []
        values = wanted[changed]
        held[changed] = values
        prefix = self._prefix
        return list(
            map(str.__add__, [prefix[start + i] for i in changed.tolist()], map(repr, values.tolist()))
        )

    def _step(self, commands: list[str]) -> np.ndarray:
        """Apply `commands`, solve the next point, return its values."""
        s = self._session
        # The current plot gets a vector per `alter` (its value); in a paused run's plot of
        # hundreds of vectors that costs several times the alter itself. The run's plot must be
        # current again when it steps: SendData reads the current plot.
        if s.running:
            commands = ["setplot const", *commands, f"setplot {s.plot}", "step"]
        else:
            commands = [*commands, "step"]
        lines = _joined(commands)
        before = len(s.ng.points)
        for ln in lines[:-1]:
            s.command(ln)
        s.command(lines[-1], check=False)
        got = len(s.ng.points) - before
        if got == 1 and s.errors():
            raise BackendError(f"ngspice '{lines[-1][:60]}' failed: {s.said()}")
        if got != 1:
            said = s.said()
            s.running = False  # a failed point ends ngspice's run
            s.end_run()
            raise ConvergenceError(f"ngspice found no operating point: {said}")
        if not s.running:  # a new run: its plot, its vectors (maybe in a new order)
            s.running = True
            s.plot = s.ffi.string(s.ng.vectors.type).decode()
            self._read_vectors()
        s.points += 1
        return np.array(s.ng.points.pop())

    def _read_vectors(self) -> None:
        vectors = self._session.ng.vectors
        count = int(vectors.veccount)
        if count == self._vector_count and self._index:
            return  # the same circuit lists the same vectors in the same order
        ffi = self._session.ffi
        position = {ffi.string(vectors.vecs[i].vecname).decode().lower(): i for i in range(count)}
        net = self.network

        def find(names: list[str]) -> np.ndarray:
            missing = [n for n in names if n not in position]
            if missing:
                raise BackendError(f"ngspice returned no vector {missing[0]!r}")
            return np.array([position[n] for n in names], dtype=int)

        # ngspice names a numeric node's vector v(7) and any other node's plainly.
        nodes = [f"v({n})" if f"v({n})" in position else n for n in (m.lower() for m in net.nodes)]
        self._index = {
            "nodes": find(nodes),
            "sources": find([f"{x.name.lower()}#branch" for x in net.sources]),
            "clamps": find([f"v{c.name.lower()}{side}#branch" for c in net.clamps for side in "hl"]),
            "amplifiers": find([f"e{a.name.lower()}#branch" for a in net.amplifiers]),
        }
        self._vector_count = count
        self._max_points = max(16, RUN_DOUBLES // count)

    def _state(self, point: np.ndarray, where: str = "") -> State:
        i = self._index
        v = point[i["nodes"]]
        src = point[i["sources"]]
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(src))):
            raise ConvergenceError(f"{where}ngspice returned non-finite values")
        # A singular circuit (amplifier feedback of exactly unity) comes back "converged" at ~1e16 V.
        if np.max(np.abs(v), initial=0.0) > IMPLAUSIBLE_VOLTS:
            raise ConvergenceError(
                f"{where}ngspice returned {np.max(np.abs(v)):.3g} V: the circuit has no sensible "
                "equilibrium at these conductances"
            )
        return State(v, src, point[i["clamps"]].reshape(-1, 2), point[i["amplifiers"]])

    def _ensure_loaded(self) -> None:
        s = self._session
        if s.owner is self and self._held is not None:
            return
        if s.owner is not None:
            s.end_run()
            s.command("remcirc")
            if isinstance(s.owner, SpiceBackend):
                s.owner._held = None
            s.owner = None
        s.end_run()
        # Structure only: every value is set by `alter` before the first point (see above).
        closed = np.where(self._open, 1.0, self._g)
        text = netlist(
            self.network, closed, np.zeros(self.network.n_inputs), None, self.options, analysis=False
        )
        text = text.replace(
            "\n.end\n",
            f"\n{self._sweep} {self._sweep_node} 0 dc 0\n.dc {self._sweep} 0 {SWEEP_STOP!r} 1\n.end\n",
        )
        try:
            s.ng.load_circuit(text)
        except Exception as exc:  # PySpice raises bare NameError/its own errors here
            detail = " ".join((s.ng.stdout + " " + s.ng.stderr).split())[-300:]
            raise BackendError(f"ngspice rejected the netlist: {detail}") from exc
        s.owner, s.sweep = self, self._sweep.lower()
        self._held = np.full(len(self._prefix), math.nan)
        self._pending = self._new_run = True
        self._vector_count = 0

    def _element_names(self) -> set[str]:
        net = self.network
        names = {x.name.lower() for x in net.conductances} | {x.name.lower() for x in net.sources}
        names |= {x.name.lower() for x in net.loads}
        for c in net.clamps:
            names |= {
                f"d{c.name}h".lower(),
                f"d{c.name}l".lower(),
                f"v{c.name}h".lower(),
                f"v{c.name}l".lower(),
            }
        names |= {f"{p}{a.name}".lower() for a in net.amplifiers for p in "ef"}
        return names | {nudge_source(n).lower() for n in net.nudge_nodes}

    def _spare_names(self) -> tuple[str, str]:
        """A node and a source name of the sweep that nothing in the network uses."""
        nodes = set(self.network.nodes) | {
            f"{c.name.lower()}_{side}" for c in self.network.clamps for side in "hl"
        }
        node, source = "hil_step", "VHIL_STEP"
        while node in nodes or source.lower() in self._names:
            node, source = node + "_", source + "_"
        return node, source


def _joined(commands: list[str]) -> list[str]:
    """`commands` joined by ';' into as few lines of less than COMMAND_BYTES as they fit."""
    if sum(map(len, commands)) + len(commands) < COMMAND_BYTES:
        return [";".join(commands)]
    ends = np.cumsum([len(c) + 1 for c in commands])
    lines, start, base = [], 0, 0
    while start < len(commands):
        stop = max(start + 1, int(np.searchsorted(ends, base + COMMAND_BYTES, side="right")))
        lines.append(";".join(commands[start:stop]))
        start, base = stop, int(ends[stop - 1])
    return lines


def _floating_nodes(network: Network, closed: np.ndarray) -> list[str]:
    """Nodes that no closed conductance, source, clamp, amplifier or load ties to a potential."""
    neighbours: dict[str, list[str]] = {n: [] for n in network.nodes}
    for edge, is_closed in zip(network.conductances, closed.tolist(), strict=True):
        if is_closed:
            neighbours[edge.a].append(edge.b)
            neighbours[edge.b].append(edge.a)
    anchored = {x.node for x in network.sources} | {a.node_out for a in network.amplifiers}
    anchored |= {c.node for c in network.clamps} | {ld.node for ld in network.loads}
    reached, frontier = set(anchored), list(anchored)
    while frontier:
        for n in neighbours.get(frontier.pop(), []):
            if n not in reached:
                reached.add(n)
                frontier.append(n)
    return sorted(set(network.nodes) - reached)
