"""The training loop: epochs of free/nudged measure-and-update through one backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hil import eqprop
from hil.datasets import Dataset
from hil.interface import Backend, BackendError


class Interrupted(Exception):
    """SIGTERM or Ctrl-C asked the run to stop: raised between two samples (or two sweep tasks),
    so no phase, update or log write is cut in half."""


@dataclass(frozen=True)
class Hyper:
    """What the trainer needs to know; everything else is in the network and the backend."""

    method: str = "vdm-centered"
    beta: float = 1e-6  # A/V
    learning_rate: float = 2e-4
    layer_learning_rates: dict[int, float] = field(default_factory=dict)  # multipliers per layer
    epochs: int = 50
    batch_size: int = 1  # 1: online, one update per sample
    g_min: float = 1e-4
    g_max: float = 0.1
    pcm_perturbation: float = 0.01
    shuffle: bool = False  # False: the dataset's order every epoch (the seed's)
    seed: int = 0


@dataclass
class EpochRecord:
    epoch: int
    loss: float  # running mean of (t − y)², each recorded before that sample's update
    error_db: float
    accuracy: float  # with the epoch's final conductances, fixed
    conductances: np.ndarray  # as realised by the backend (a bench quantises them)
    update_norm: float
    sample_losses: np.ndarray


def evaluate(backend: Backend, conductances: np.ndarray, data: Dataset) -> tuple[float, np.ndarray]:
    """Accuracy and per-sample squared error with fixed conductances (free phases only)."""
    backend.program(conductances)
    errors = np.zeros(len(data))
    right = 0
    for i in range(len(data)):
        y = eqprop.outputs(backend.network, backend.settle(data.inputs[i]))
        errors[i] = float(np.mean((data.targets[i] - y) ** 2))
        right += data.correct(y, i)
    return right / len(data), errors


def train(
    backend: Backend,
    data: Dataset,
    g0: np.ndarray,
    hyper: Hyper,
    on_epoch: Callable[[EpochRecord], object] = lambda record: None,
    on_sample: Callable[[], object] = lambda: None,
) -> list[EpochRecord]:
    net = backend.network
    rates = hyper.learning_rate * np.array(
        [hyper.layer_learning_rates.get(c.layer, 1.0) for c in net.conductances]
    )
    rng = np.random.default_rng(hyper.seed)
    # `g` accumulates every update at full precision; `realised` is what the backend could set
    # (a digital pot's nearest step). Updates smaller than a step add up instead of vanishing.
    g = eqprop.clip_conductances(np.asarray(g0, float), net.signed, hyper.g_min, hyper.g_max)
    realised = backend.program(g)
    records: list[EpochRecord] = []
    for epoch in range(1, hyper.epochs + 1):
        order = rng.permutation(len(data)) if hyper.shuffle else np.arange(len(data))
        sample_losses = np.zeros(len(data))
        batch: list[np.ndarray] = []
        norms: list[float] = []
        for position, i in enumerate(order):
            try:
                m = eqprop.measure(
                    backend,
                    g,
                    data.inputs[i],
                    data.targets[i],
                    hyper.method,
                    hyper.beta,
                    hyper.pcm_perturbation,
                )
            except BackendError as exc:
                raise type(exc)(f"epoch {epoch}, sample {i}, {exc}") from exc
            sample_losses[i] = float(np.mean((data.targets[i] - m.outputs) ** 2))
            batch.append(eqprop.compensated(net, m.raw))
            if len(batch) == hyper.batch_size or position == len(order) - 1:
                new = eqprop.apply_update(net, g, np.mean(batch, axis=0), rates, hyper.g_min, hyper.g_max)
                norms.append(float(np.linalg.norm(new - g)))
                g = new
                realised = backend.program(g)
                batch = []
            on_sample()
        mean = float(np.mean(sample_losses))
        accuracy, _ = evaluate(backend, g, data)
        record = EpochRecord(
            epoch,
            mean,
            10 * np.log10(mean) if mean > 0 else -np.inf,
            accuracy,
            realised.copy(),
            float(np.mean(norms)),
            sample_losses,
        )
        records.append(record)
        on_epoch(record)
    return records
