"""A backend whose conductances can only take the values a bench can realise: any backend, with
`program` rounded through a quantiser (e.g. each edge's digital pot). For dry runs of a bench and
for comparing a bench with the twin step for step."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from drivers.benchconfig import BenchConfig
from drivers.models import POTS
from hil.interface import Backend, Identity, State
from hil.network import Network


class QuantisedBackend:
    def __init__(self, backend: Backend, quantise: Callable[[np.ndarray], np.ndarray]) -> None:
        self.inner = backend
        self.quantise = quantise
        self.network: Network = backend.network

    def program(self, conductances: np.ndarray) -> np.ndarray:
        return self.inner.program(self.quantise(np.asarray(conductances, dtype=float)))

    def settle(self, inputs: np.ndarray, nudge_currents: dict[str, float] | None = None) -> State:
        return self.inner.settle(inputs, nudge_currents)

    def settle_batch(self, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
        return self.inner.settle_batch(inputs, nudges)

    def safe_state(self) -> None:
        self.inner.safe_state()

    def close(self) -> None:
        self.inner.close()

    def solver_state(self) -> dict[str, np.ndarray]:
        return self.inner.solver_state()

    def restore_solver_state(self, state: dict[str, np.ndarray]) -> None:
        self.inner.restore_solver_state(state)

    def identity(self) -> Identity:
        inner = self.inner.identity()
        return Identity(inner.kind, f"{inner.description}, quantised", inner.versions, inner.instruments)


def pot_quantiser(config: BenchConfig, network: Network) -> Callable[[np.ndarray], np.ndarray]:
    """Round each edge's |g| to its pot's nearest step, as a bench config's pot banks would."""
    models = {name: spec.pot_model() for name, spec in config.of_role(POTS).items()}
    where = [config.pots[edge.name] for edge in network.conductances]

    def quantise(g: np.ndarray) -> np.ndarray:
        return np.array(
            [
                np.sign(x) * models[bank].conductance(ch, models[bank].code_for(ch, abs(x)))
                for x, (bank, ch) in zip(g, where, strict=True)
            ]
        )

    return quantise
