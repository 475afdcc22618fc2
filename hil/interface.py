"""The one interface every backend implements, and what it returns.

`hil` drives training through `Backend` only; it never asks which backend it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hil.network import Network


class BackendError(RuntimeError):
    """A backend could not do what it was asked (bad circuit, instrument fault)."""


class ConvergenceError(BackendError):
    """No equilibrium was found: the solver did not converge."""


@dataclass(frozen=True)
class State:
    """An equilibrium: node voltages (in `Network.nodes` order) and the currents into the +
    terminal of every voltage source (in `Network.sources` order), SPICE's sign convention. A
    bench measures voltages only: its currents are None (and its clamp and amplifier currents
    empty), which is why PCM is not offered on a bench.

    From `settle_batch`, every array has a leading axis of samples ([samples, nodes], ...)."""

    voltages: np.ndarray
    source_currents: np.ndarray | None
    # Currents into the + terminal of each clamp's (high, low) offset source and each amplifier's
    # VCVS: what a power computation needs.
    clamp_currents: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    amplifier_currents: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def row(self, k: int) -> State:
        """Sample k of a batched State."""
        return State(
            self.voltages[k],
            None if self.source_currents is None else self.source_currents[k],
            self.clamp_currents[k],
            self.amplifier_currents[k],
        )


@dataclass(frozen=True)
class Identity:
    """What a backend is, for the run log."""

    kind: str  # "spice", "numeric", "bench"
    description: str
    versions: dict[str, str] = field(default_factory=dict)
    instruments: list[dict[str, str]] = field(default_factory=list)
    # A bench's settings as its instruments answered them once configured, by instrument and SMU
    # channel: setting name -> value (JSON types).
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    network: Network

    def program(self, conductances: np.ndarray) -> np.ndarray:
        """Set every trainable conductance (signed, in S); return what was realised."""
        ...

    def settle(self, inputs: np.ndarray, nudge_currents: dict[str, float] | None = None) -> State:
        """Apply one sample's inputs (and nudge currents, A into each node) and return the
        equilibrium."""
        ...

    def settle_batch(self, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
        """Equilibria of many samples at the programmed conductances: `inputs` [samples, inputs],
        `nudges` [samples, nudge nodes] (A into each of `Network.nudge_nodes`, in that order) or
        None for free phases. A State whose arrays lead with the sample axis. Backends that
        cannot do better settle the samples one after another (`settle_each`)."""
        ...

    def safe_state(self) -> None:
        """Outputs off, relays open; harmless in simulation."""
        ...

    def close(self) -> None: ...

    def identity(self) -> Identity: ...

    def solver_state(self) -> dict[str, np.ndarray]:
        """What the backend remembers between settles that can move the last bits of its next
        answer (the twin's warm starts); {} for one that remembers nothing. Checkpoints keep it,
        so a resumed training continues bit for bit."""
        ...

    def restore_solver_state(self, state: dict[str, np.ndarray]) -> None:
        """Remember again what `solver_state` returned (in another process)."""
        ...


def run_record(backend: Backend) -> dict[str, float]:
    """What a backend kept over the run for its log (a bench: the largest pot terminal voltage
    and wiper current it read, and the largest gap to its twin's prediction); {} for a simulator.
    A backend offers it as a `run_record()` method: the simulators need none."""
    method = getattr(backend, "run_record", None)
    return {} if method is None else {str(k): float(v) for k, v in method().items()}


def settle_each(backend: Backend, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
    """`settle_batch` by one `settle` per sample: for backends that settle one sample at a time."""
    nodes = backend.network.nudge_nodes
    states = [
        backend.settle(x, None if nudges is None else dict(zip(nodes, map(float, nudges[k]), strict=True)))
        for k, x in enumerate(np.asarray(inputs, dtype=float))
    ]
    return stack(states)


def stack(states: list[State]) -> State:
    """One batched State from per-sample States."""
    currents = (
        None
        if any(s.source_currents is None for s in states)
        else np.array([s.source_currents for s in states])
    )
    return State(
        np.array([s.voltages for s in states]),
        currents,
        np.array([s.clamp_currents for s in states]),
        np.array([s.amplifier_currents for s in states]),
    )
