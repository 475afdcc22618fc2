"""A backend whose conductances can only take the values a bench can realise: any backend, with
`program` rounded through a quantiser (e.g. each edge's digital pot). For dry runs of a bench and
for comparing a bench with the twin step for step."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hil.interface import Identity, State
from hil.network import Network


class QuantisedBackend:
    def __init__(self, backend: object, quantise: Callable[[np.ndarray], np.ndarray]) -> None:
        self.inner = backend
        self.quantise = quantise
        self.network: Network = backend.network  # type: ignore[attr-defined]

    def program(self, conductances: np.ndarray) -> np.ndarray:
        return self.inner.program(self.quantise(np.asarray(conductances, dtype=float)))  # type: ignore[attr-defined]

    def settle(self, inputs: np.ndarray, nudge_currents: dict[str, float] | None = None) -> State:
        return self.inner.settle(inputs, nudge_currents)  # type: ignore[attr-defined]

    def safe_state(self) -> None:
        self.inner.safe_state()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.inner.close()  # type: ignore[attr-defined]

    def identity(self) -> Identity:
        inner: Identity = self.inner.identity()  # type: ignore[attr-defined]
        return Identity(inner.kind, f"{inner.description}, quantised", inner.versions, inner.instruments)


def pot_quantiser(config: object, network: Network) -> Callable[[np.ndarray], np.ndarray]:
    """Round each edge's |g| to its pot's nearest step, as a bench config's pot banks would."""
    from drivers.benchconfig import BenchConfig
    from drivers.pots import AD5206Model

    assert isinstance(config, BenchConfig)
    models = {
        name: AD5206Model(r_ab=spec.r_ab, r_w=spec.r_w, channels=spec.channels)
        for name, spec in config.instruments.items()
        if spec.channels
    }
    where = [config.pots[edge.name] for edge in network.conductances]

    def quantise(g: np.ndarray) -> np.ndarray:
        return np.array(
            [
                np.sign(x) * models[bank].conductance(ch, models[bank].code_for(ch, abs(x)))
                for x, (bank, ch) in zip(g, where, strict=True)
            ]
        )

    return quantise
