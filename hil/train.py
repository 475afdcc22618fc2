"""The training loop: epochs of free/nudged measure-and-update through one backend."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

    def __post_init__(self) -> None:
        """Refuse what a config would refuse, for scripts that build a `Hyper` themselves: without a
        nudge the estimate divides by zero, an empty device range freezes every conductance, and a
        batch of no samples never updates."""
        if self.method not in eqprop.ESTIMATORS:
            eqprop.check_methods([self.method])
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta = {self.beta!r} A/V: the nudge must be > 0")
        if not (math.isfinite(self.g_max) and 0 < self.g_min < self.g_max):
            raise ValueError(
                f"device range g_min = {self.g_min!r} S, g_max = {self.g_max!r} S: "
                "it must be 0 < g_min < g_max"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise ValueError(f"learning_rate = {self.learning_rate!r}: it must be >= 0")
        if self.batch_size < 1 or self.epochs < 0:
            raise ValueError(
                f"batch_size = {self.batch_size}, epochs = {self.epochs}: "
                "a batch holds >= 1 sample, epochs >= 0"
            )


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


@dataclass
class Progress:
    """Where a training stands, exactly: enough to continue it bit for bit (a checkpoint).

    Taken between two updates. `rng_state` is the shuffling generator's state at the start of the
    current epoch (the epoch's order is drawn again from it)."""

    epoch: int  # epochs finished
    position: int  # samples of the current epoch finished
    conductances: np.ndarray  # full precision, what the updates accumulate into
    realised: np.ndarray  # what the backend set (a bench quantises)
    rng_state: dict[str, Any]
    sample_losses: np.ndarray  # of the current epoch, so far
    norms: list[float]  # update norms of the current epoch, so far


def train(
    backend: Backend,
    data: Dataset,
    g0: np.ndarray,
    hyper: Hyper,
    on_epoch: Callable[[EpochRecord], object] = lambda record: None,
    on_sample: Callable[[], object] = lambda: None,
    start: Progress | None = None,
    on_checkpoint: Callable[[Progress], object] | None = None,
    checkpoint_due: Callable[[], bool] = lambda: False,
) -> list[EpochRecord]:
    """Train for `hyper.epochs` epochs (those after `start` when resuming).

    `on_checkpoint` receives the progress after every epoch (after `on_epoch`) and between samples
    whenever `checkpoint_due()` says so; `start` continues from such a progress."""
    net = backend.network
    rates = hyper.learning_rate * np.array(
        [hyper.layer_learning_rates.get(c.layer, 1.0) for c in net.conductances]
    )
    rng = np.random.default_rng(hyper.seed)
    if start is None:
        # `g` accumulates every update at full precision; `realised` is what the backend could set
        # (a digital pot's nearest step). Updates smaller than a step add up instead of vanishing.
        g = eqprop.clip_conductances(np.asarray(g0, float), net.signed, hyper.g_min, hyper.g_max)
        p = Progress(0, 0, g, backend.program(g), dict(rng.bit_generator.state), np.zeros(len(data)), [])
    else:
        p = start
        realised = backend.program(p.conductances)
        if not np.array_equal(realised, p.realised):
            raise BackendError(
                "the backend realises the checkpoint's conductances differently: resume on the same bench"
            )
    records: list[EpochRecord] = []
    while p.epoch < hyper.epochs:
        rng.bit_generator.state = p.rng_state
        order = rng.permutation(len(data)) if hyper.shuffle else np.arange(len(data))
        while p.position < len(order):
            chunk = order[p.position : p.position + hyper.batch_size]
            _step(backend, data, chunk, hyper, rates, p)
            p.position += len(chunk)
            for _ in chunk:
                on_sample()
            if on_checkpoint is not None and p.position < len(order) and checkpoint_due():
                on_checkpoint(p)
        mean = float(np.mean(p.sample_losses))
        accuracy, _ = evaluate(backend, p.conductances, data)
        p.epoch += 1
        record = EpochRecord(
            p.epoch,
            mean,
            10 * np.log10(mean) if mean > 0 else -np.inf,
            accuracy,
            p.realised.copy(),
            float(np.mean(p.norms)),
            p.sample_losses,
        )
        records.append(record)
        p.position, p.rng_state = 0, dict(rng.bit_generator.state)
        p.sample_losses, p.norms = np.zeros(len(data)), []
        on_epoch(record)
        if on_checkpoint is not None:
            on_checkpoint(p)
    return records


def _step(
    backend: Backend, data: Dataset, chunk: np.ndarray, hyper: Hyper, rates: np.ndarray, p: Progress
) -> None:
    """One update: measure the samples of `chunk` at the same conductances (one sample online; a
    mini-batch settled together), then step along the mean of their estimates."""
    net = backend.network
    try:
        if len(chunk) == 1:
            i = int(chunk[0])
            m = eqprop.measure(
                backend,
                p.conductances,
                data.inputs[i],
                data.targets[i],
                hyper.method,
                hyper.beta,
                hyper.pcm_perturbation,
            )
            raw, y = m.raw[None, :], m.outputs[None, :]
        else:
            b = eqprop.measure_batch(
                backend,
                p.conductances,
                data.inputs[chunk],
                data.targets[chunk],
                hyper.method,
                hyper.beta,
                hyper.pcm_perturbation,
            )
            raw, y = b.raw, b.outputs
    except BackendError as exc:
        where = (
            f"sample {int(chunk[0])}" if len(chunk) == 1 else f"samples {', '.join(map(str, chunk.tolist()))}"
        )
        raise type(exc)(f"epoch {p.epoch + 1}, {where}, {exc}") from exc
    p.sample_losses[chunk] = np.mean((data.targets[chunk] - y) ** 2, axis=1)
    estimate = eqprop.compensated(net, raw).mean(axis=0)
    new = eqprop.apply_update(net, p.conductances, estimate, rates, hyper.g_min, hyper.g_max)
    p.norms.append(float(np.linalg.norm(new - p.conductances)))
    p.conductances = new
    p.realised = backend.program(new)
