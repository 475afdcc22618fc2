"""The training loop: epochs of free/nudged measure-and-update through one backend."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hil import eqprop
from hil.datasets import Confusion, Dataset
from hil.interface import Backend, BackendError
from hil.optimisers import SGD, Clip, Optimiser, Pruning, Schedule, shrink


class Interrupted(Exception):
    """SIGTERM or Ctrl-C asked the run to stop: raised between two samples (or two sweep tasks),
    so no phase, update or log write is cut in half."""


@dataclass(frozen=True)
class Hyper:
    """What the trainer needs to know; everything else is in the network and the backend."""

    method: str = "vdm-centered"
    beta: float = 1e-6  # A/V
    # > 0: a constant-current nudge of this norm, A (β = nudge_current/‖t − y‖ per sample; `beta`
    # is then not used). 0: every sample nudged with `beta`.
    nudge_current: float = 0.0
    learning_rate: float = 2e-4
    layer_learning_rates: dict[int, float] = field(default_factory=dict)  # multipliers per layer
    epochs: int = 50
    batch_size: int = 1  # 1: online, one update per sample
    g_min: float = 1e-4
    g_max: float = 0.1
    pcm_perturbation: float = 0.01
    shuffle: bool = False  # False: the dataset's order every epoch (the seed's)
    seed: int = 0
    # How an estimate becomes a step (hil.optimisers); the defaults are plain SGD.
    optimiser: Optimiser = field(default_factory=SGD)
    schedule: Schedule = field(default_factory=Schedule)
    clip: Clip = field(default_factory=Clip)
    l1: float = 0.0  # S per update toward 0, × the schedule's factor (as AdamW's decay)
    pruning: Pruning | None = None

    def __post_init__(self) -> None:
        """Refuse what a config would refuse, for scripts that build a `Hyper` themselves: without a
        nudge the estimate divides by zero, an empty device range freezes every conductance, and a
        batch of no samples never updates."""
        if self.method not in eqprop.ESTIMATORS:
            eqprop.check_methods([self.method])
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta = {self.beta!r} A/V: the nudge must be > 0")
        if not (math.isfinite(self.nudge_current) and self.nudge_current >= 0):
            raise ValueError(
                f"nudge_current = {self.nudge_current!r} A: give a current > 0 (or 0: nudge with beta)"
            )
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
        if not (math.isfinite(self.l1) and self.l1 >= 0):
            raise ValueError(f"l1 = {self.l1!r} S: it must be >= 0")
        if self.pruning is not None and self.pruning.below <= self.g_min:
            raise ValueError(
                f"prune_below = {self.pruning.below!r} S is not above g_min = {self.g_min!r} S: no "
                "conductance is ever below it; raise it above g_min"
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
    mask: np.ndarray | None = None  # per edge, True where pruned (an open switch); None: none
    # On the data set's test samples (a truth table's are its own rows), same conductances.
    test_accuracy: float = math.nan
    confusion: Confusion | None = None

    @property
    def pruned(self) -> int:
        """Edges open at the end of the epoch."""
        return 0 if self.mask is None else int(np.count_nonzero(self.mask))


EVALUATION_CHUNK = 256  # samples per settle_batch when a data set is judged


def free_outputs(backend: Backend, inputs: np.ndarray) -> np.ndarray:
    """Outputs [samples, outputs] of free phases at the programmed conductances: `settle_batch`
    over chunks of the samples, so a backend that solves a batch together does."""
    net = backend.network
    chunks = [
        eqprop.outputs(net, eqprop.settle_batch(backend, inputs[k : k + EVALUATION_CHUNK], None, "free"))
        for k in range(0, len(inputs), EVALUATION_CHUNK)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, len(net.outputs)))


def evaluate(backend: Backend, conductances: np.ndarray, data: Dataset) -> tuple[float, np.ndarray]:
    """Accuracy and per-sample squared error on the training samples with fixed conductances
    (free phases only)."""
    backend.program(conductances)
    y = free_outputs(backend, data.inputs)
    return data.accuracy(y), np.mean((data.targets - y) ** 2, axis=1)


@dataclass(frozen=True)
class Evaluation:
    """How a data set is answered at fixed conductances."""

    accuracy: float  # on the training samples
    test_accuracy: float  # on the test samples (a truth table: its own rows)
    confusion: Confusion  # on the test samples


def judge(backend: Backend, conductances: np.ndarray, data: Dataset) -> Evaluation:
    """Training and test accuracy and the test set's confusion, free phases only; a data set that
    is its own test set is settled once."""
    backend.program(conductances)
    y = free_outputs(backend, data.inputs)
    test = data.test()
    y_test = y if test is data else free_outputs(backend, test.inputs)
    return Evaluation(data.accuracy(y), test.accuracy(y_test), test.confusion(y_test))


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
    optimiser_state: dict[str, np.ndarray] = field(default_factory=dict)  # `Optimiser.step`'s
    # Per edge, True where pruned: programmed as 0 S. Empty: none pruned (a checkpoint from before).
    mask: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    prune_rng_state: dict[str, Any] = field(default_factory=dict)  # the pruning draws' generator

    def programmed(self) -> np.ndarray:
        """The conductances the backend is asked for: pruned edges at exactly 0 S."""
        if not self.mask.any():
            return self.conductances
        return np.where(self.mask, 0.0, self.conductances)


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
    # Pruning draws from its own stream, so turning it on leaves the shuffle as it was.
    prune_rng = np.random.default_rng([hyper.seed, 1])
    n = len(net.conductances)
    if start is None:
        # `g` accumulates every update at full precision; `realised` is what the backend could set
        # (a digital pot's nearest step). Updates smaller than a step add up instead of vanishing.
        g = eqprop.clip_conductances(np.asarray(g0, float), net.signed, hyper.g_min, hyper.g_max)
        p = Progress(0, 0, g, backend.program(g), dict(rng.bit_generator.state), np.zeros(len(data)), [])
        p.optimiser_state = hyper.optimiser.start(n)
        p.mask = np.zeros(n, dtype=bool)
        p.prune_rng_state = dict(prune_rng.bit_generator.state)
    else:
        p = start
        _check_resumable(p, hyper, n)
        if not p.prune_rng_state:
            p.prune_rng_state = dict(prune_rng.bit_generator.state)
        realised = backend.program(p.programmed())
        if not np.array_equal(realised, p.realised):
            raise BackendError(
                "the backend realises the checkpoint's conductances differently: resume on the same bench"
            )
    records: list[EpochRecord] = []
    while p.epoch < hyper.epochs:
        rng.bit_generator.state = p.rng_state
        order = rng.permutation(len(data)) if hyper.shuffle else np.arange(len(data))
        factor = hyper.schedule.factor(p.epoch, hyper.epochs)
        epoch_rates = rates if factor == 1.0 else rates * factor
        while p.position < len(order):
            chunk = order[p.position : p.position + hyper.batch_size]
            _step(backend, data, chunk, hyper, epoch_rates, hyper.l1 * factor, p)
            p.position += len(chunk)
            for _ in chunk:
                on_sample()
            if on_checkpoint is not None and p.position < len(order) and checkpoint_due():
                on_checkpoint(p)
        mean = float(np.mean(p.sample_losses))
        if hyper.pruning is not None and hyper.pruning.due(p.epoch + 1):
            _prune(backend, hyper.pruning, hyper.optimiser, p)
        try:
            judged = judge(backend, p.programmed(), data)
        except BackendError as exc:
            raise type(exc)(f"epoch {p.epoch + 1}, evaluation, {exc}") from exc
        p.epoch += 1
        record = EpochRecord(
            p.epoch,
            mean,
            10 * np.log10(mean) if mean > 0 else -np.inf,
            judged.accuracy,
            p.realised.copy(),
            float(np.mean(p.norms)),
            p.sample_losses,
            p.mask.copy(),
            test_accuracy=judged.test_accuracy,
            confusion=judged.confusion,
        )
        records.append(record)
        p.position, p.rng_state = 0, dict(rng.bit_generator.state)
        p.sample_losses, p.norms = np.zeros(len(data)), []
        on_epoch(record)
        if on_checkpoint is not None:
            on_checkpoint(p)
    return records


def _step(
    backend: Backend,
    data: Dataset,
    chunk: np.ndarray,
    hyper: Hyper,
    rates: np.ndarray,
    l1: float,
    p: Progress,
) -> None:
    """One update: measure the samples of `chunk` at the same conductances (one sample online; a
    mini-batch settled together), then step along the mean of their estimates."""
    net = backend.network
    try:
        if len(chunk) == 1:
            i = int(chunk[0])
            m = eqprop.measure(
                backend,
                p.programmed(),
                data.inputs[i],
                data.targets[i],
                hyper.method,
                hyper.beta,
                hyper.pcm_perturbation,
                hyper.nudge_current,
            )
            mean, y = m.raw, m.outputs[None, :]
        else:
            b = eqprop.measure_batch(
                backend,
                p.programmed(),
                data.inputs[chunk],
                data.targets[chunk],
                hyper.method,
                hyper.beta,
                hyper.pcm_perturbation,
                hyper.nudge_current,
                per_sample=False,
            )
            mean, y = b.mean, b.outputs
    except BackendError as exc:
        where = (
            f"sample {int(chunk[0])}" if len(chunk) == 1 else f"samples {', '.join(map(str, chunk.tolist()))}"
        )
        raise type(exc)(f"epoch {p.epoch + 1}, {where}, {exc}") from exc
    p.sample_losses[chunk] = np.mean((data.targets[chunk] - y) ** 2, axis=1)
    gradient = eqprop.compensated(net, mean)
    regrow = hyper.pruning is not None and hyper.pruning.regrow
    pruned = p.mask.any()
    if pruned and not regrow:  # an open switch is not trained: it must not weigh in a clip's norm either
        gradient = np.where(p.mask, 0.0, gradient)
    gradient = hyper.clip.apply(gradient)
    direction, p.optimiser_state = hyper.optimiser.step(gradient, p.optimiser_state)
    new = eqprop.apply_update(net, p.conductances, direction, rates, hyper.g_min, hyper.g_max)
    if l1 > 0:
        new = shrink(new, l1, net.signed, hyper.g_min, hyper.g_max)
    if pruned:
        if regrow:
            assert hyper.pruning is not None
            p.mask = p.mask & (np.abs(new) < hyper.pruning.below)
        else:
            new = np.where(p.mask, 0.0, new)
    p.norms.append(float(np.linalg.norm(new - p.conductances)))
    p.conductances = new
    p.realised = backend.program(p.programmed())


def _prune(backend: Backend, pruning: Pruning, optimiser: Optimiser, p: Progress) -> None:
    """One pruning round: open the edges `pruning` selects, forget their optimiser state and
    program them as 0 S."""
    rng = np.random.default_rng()
    rng.bit_generator.state = p.prune_rng_state
    _, into = backend.network.edge_endpoints
    mask = pruning.select(np.abs(p.conductances), into, p.mask, rng)
    p.prune_rng_state = dict(rng.bit_generator.state)
    opened = mask & ~p.mask
    if not opened.any():
        return
    p.mask = mask
    p.optimiser_state = optimiser.forget(p.optimiser_state, opened)
    if not pruning.regrow:
        p.conductances = np.where(mask, 0.0, p.conductances)
    p.realised = backend.program(p.programmed())


def _check_resumable(p: Progress, hyper: Hyper, edges: int) -> None:
    """A checkpoint written before optimiser state and masks were kept resumes with none (plain
    SGD needs none); one whose state does not fit this optimiser is refused."""
    if p.mask.size == 0:
        p.mask = np.zeros(edges, dtype=bool)
    fresh = hyper.optimiser.start(edges)
    if set(p.optimiser_state) != set(fresh) or any(
        np.shape(p.optimiser_state[k]) != np.shape(v) for k, v in fresh.items()
    ):
        raise ValueError(
            f"the checkpoint's optimiser state ({', '.join(sorted(p.optimiser_state)) or 'none'}) does not "
            f"fit the config's optimiser ({', '.join(sorted(fresh)) or 'none'}): resume with the config it "
            "was written with"
        )
