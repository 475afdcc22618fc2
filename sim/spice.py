"""The ngspice backend: libngspice in shared mode through PySpice's thin binding.

One netlist is loaded per backend and then changed with `alter` (weights, inputs, nudges); each
operating point's plot is destroyed after it is read, so memory stays flat. PySpice's own
`operating_point()` is not used: it loads a new circuit per call and never unloads it.
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

from hil.interface import BackendError, ConvergenceError, Identity, State, settle_each
from hil.network import Network
from sim.netlist import SimulatorOptions, netlist, nudge_source

IMPLAUSIBLE_VOLTS = 1e6
_lock = threading.Lock()
_owner: list[object | None] = [None]  # the backend whose circuit ngspice holds now


def _ngspice():  # noqa: ANN202 - PySpice has no types
    logging.getLogger("PySpice").setLevel(logging.CRITICAL)
    from PySpice.Spice.NgSpice.Shared import NgSpiceShared

    try:
        return NgSpiceShared.new_instance()
    except OSError as exc:  # the shared library is missing
        raise BackendError(
            f"cannot load libngspice ({exc}): install ngspice (make setup does it: "
            "apt-get install ngspice libngspice0 libngspice0-dev)"
        ) from exc


class SpiceBackend:
    """`Backend` implemented by ngspice."""

    def __init__(self, network: Network, options: SimulatorOptions = SimulatorOptions()) -> None:
        self.network = network
        self.options = options
        self._ng = _ngspice()
        self._ffi = __import__("PySpice.Spice.NgSpice.Shared", fromlist=["ffi"]).ffi
        self._lib = self._ng._ngspice_shared
        self._g = np.full(len(network.conductances), 1e-3)
        self._inputs = np.zeros(network.n_inputs)
        self._applied: dict[str, float] = {}  # element -> value ngspice holds now
        nodes = network.nodes
        self._nodes_lower = [n.lower() for n in nodes]

    # ------------------------------------------------------------------ interface
    def program(self, conductances: np.ndarray) -> np.ndarray:
        g = np.asarray(conductances, dtype=float).copy()
        if g.shape != self._g.shape or not np.all(np.isfinite(g)) or np.any(g == 0):
            raise ValueError("conductances must be finite, non-zero, one per edge")
        self._g = g
        return g

    def settle(self, inputs: np.ndarray, nudge_currents: dict[str, float] | None = None) -> State:
        net = self.network
        inputs = np.asarray(inputs, dtype=float)
        with _lock:
            self._ensure_loaded()
            self._apply(self._wanted(inputs, nudge_currents or {}))
            values = self._run_op()
        try:
            # ngspice names a numeric node's vector v(7) and any other node's plainly.
            v = np.array([values.get(f"v({n})", values.get(n, math.nan)) for n in self._nodes_lower])
            src = np.array([values[f"{s.name.lower()}#branch"] for s in net.sources])
            clamp = np.array(
                [
                    [values[f"v{c.name.lower()}h#branch"], values[f"v{c.name.lower()}l#branch"]]
                    for c in net.clamps
                ]
            ).reshape(-1, 2)
            amp = np.array([values[f"e{a.name.lower()}#branch"] for a in net.amplifiers])
        except KeyError as exc:
            raise BackendError(f"ngspice returned no vector {exc}") from exc
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(src))):
            raise ConvergenceError("ngspice returned non-finite values")
        # A singular circuit (amplifier feedback of exactly unity) comes back "converged" at ~1e16 V.
        if np.max(np.abs(v), initial=0.0) > IMPLAUSIBLE_VOLTS:
            raise ConvergenceError(
                f"ngspice returned {np.max(np.abs(v)):.3g} V: the circuit has no sensible "
                "equilibrium at these conductances"
            )
        return State(v, src, clamp, amp)

    def settle_batch(self, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
        return settle_each(self, inputs, nudges)

    def safe_state(self) -> None:
        pass

    def close(self) -> None:
        with _lock:
            if _owner[0] is self:
                self._command("remcirc")
                self._command("destroy all")
                _owner[0] = None

    def solver_state(self) -> dict[str, np.ndarray]:
        return {}  # every settle starts afresh

    def restore_solver_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def identity(self) -> Identity:
        return Identity(
            kind="spice",
            description=f"ngspice {self._ng.ngspice_version} (shared library) via PySpice",
            versions={"ngspice": str(self._ng.ngspice_version)},
        )

    # ------------------------------------------------------------------ ngspice plumbing
    def _wanted(self, inputs: np.ndarray, nudges: dict[str, float]) -> dict[str, float]:
        net = self.network
        src_sign, _ = net.sign_multipliers(self._g)
        gain, back = net.amplifier_gains(self._g)
        wanted: dict[str, float] = {}
        for s, value in zip(net.sources, net.source_values(inputs) * src_sign, strict=True):
            wanted[s.name] = float(value)
        for e, value in zip(net.conductances, self._g, strict=True):
            wanted[e.name] = 1.0 / abs(float(value))
        for a, ga, gb in zip(net.amplifiers, gain, back, strict=True):
            wanted[f"E{a.name}"] = float(ga)
            wanted[f"F{a.name}"] = float(gb)
        unknown = set(nudges) - set(net.nudge_nodes)
        if unknown:
            raise BackendError(f"nudge at {sorted(unknown)}: only output nodes can be nudged")
        for node in net.nudge_nodes:
            wanted[nudge_source(node)] = float(nudges.get(node, 0.0))
        return wanted

    def _ensure_loaded(self) -> None:
        if _owner[0] is self:
            return
        if _owner[0] is not None:
            self._command("remcirc")
        self._command("destroy all")
        text = netlist(self.network, self._g, self._inputs, None, self.options, analysis=False)
        try:
            self._ng.load_circuit(text)
        except Exception as exc:  # PySpice raises bare NameError/its own errors here
            raise BackendError(f"ngspice rejected the netlist: {self._ng.stdout.strip()[-300:]}") from exc
        _owner[0] = self
        self._applied = self._wanted(self._inputs, {})

    def _apply(self, wanted: dict[str, float]) -> None:
        for name, value in wanted.items():
            if self._applied.get(name) == value:
                continue
            kind = name[0].upper()
            if kind == "R":
                self._command(f"alter {name} = {value!r}")
            elif kind in "EF":
                self._command(f"alter {name} gain = {value!r}")
            else:
                self._command(f"alter {name} dc = {value!r}")
            self._applied[name] = value

    def _run_op(self) -> dict[str, float]:
        # Called directly: PySpice's exec_command takes any stderr line that is not a "Warning:"
        # for a failure, and ngspice writes "Note:" lines there when gmin stepping rescues a solve.
        # Success is an operating-point plot; failure leaves none.
        ffi, lib = self._ffi, self._lib
        self._ng.clear_output()
        rc = lib.ngSpice_Command(b"op")
        plot = ffi.string(lib.ngSpice_CurPlot()).decode()
        if rc != 0 or not plot.startswith("op"):
            said = " ".join(self._ng.stderr.split())[-300:] or "no operating point"
            raise ConvergenceError(f"ngspice operating point failed: {said}")
        names = lib.ngSpice_AllVecs(plot.encode())
        values: dict[str, float] = {}
        i = 0
        while names[i] != ffi.NULL:
            name = ffi.string(names[i]).decode()
            info = lib.ngGet_Vec_Info(f"{plot}.{name}".encode())
            values[name.lower()] = info.v_realdata[0] if info.v_length else math.nan
            i += 1
        self._command("destroy all")
        return values

    def _command(self, command: str) -> str:
        try:
            return self._ng.exec_command(command)
        except Exception as exc:  # PySpice signals ngspice's errors with several types
            detail = " ".join((self._ng.stderr or self._ng.stdout or str(exc)).split())[-300:]
            raise BackendError(f"ngspice '{command}' failed: {detail}") from exc
