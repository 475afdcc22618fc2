"""How an estimated gradient becomes a change of conductance: optimisers, learning-rate schedules,
gradient clipping, L1 regularisation and stochastic pruning.

Each piece is a small frozen dataclass the trainer composes (`hil.train.Hyper` holds one of each);
none of them measures anything or touches a backend. The trainer, per update:

    gradient  = mean compensated estimate, ∂L/∂|g| per edge (0 for pruned edges)
    gradient  = clip.apply(gradient)
    direction, state = optimiser.step(gradient, state)
    g         ← clip_to_device_range(g − η·schedule(epoch)·layer_rate·sign(g)·direction)
    |g|       ← max(|g| − l1, g_min)                                  (when l1 > 0)
and, at the end of an epoch, `pruning.select` opens some weak conductances for good.

The optimiser works on the magnitudes |g| (what the estimators measure); a signed edge keeps
its sign through `sign(g)`. Its state is a dict of arrays, so a run log's checkpoint holds it and
a resumed training continues bit for bit. The defaults (plain SGD, constant rate, no clipping, no
L1, no pruning) leave the estimate untouched: a training with them is bit-identical to one
written before these pieces existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

State = dict[str, np.ndarray]

OPTIMISERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "exponential", "cosine")


class Optimiser(Protocol):
    """Turns one update's gradient into the direction the trainer steps along (scaled by the
    learning rates), keeping whatever it remembers between updates in `state`."""

    def start(self, edges: int) -> State:
        """The state before the first update."""
        ...

    def step(self, gradient: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """(direction, the state after this update); `state` itself is left as it was."""
        ...

    def forget(self, state: State, edges: np.ndarray) -> State:
        """The state with what it remembers of `edges` (a boolean mask) cleared: a pruned edge's
        momentum must not move it when it comes back."""
        ...


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent, with heavy-ball momentum μ (and Nesterov's variant), as
    torch.optim.SGD without dampening: v ← μ·v + ∇, direction v (Nesterov: ∇ + μ·v). With μ = 0 the
    direction is the gradient itself, untouched."""

    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum = {self.momentum!r}: it must be >= 0 and < 1")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov = true needs a momentum > 0: give momentum (e.g. 0.9)")

    def start(self, edges: int) -> State:
        return {} if self.momentum == 0 else {"velocity": np.zeros(edges)}

    def step(self, gradient: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        if self.momentum == 0:
            return gradient, state
        velocity = self.momentum * state["velocity"] + gradient
        direction = gradient + self.momentum * velocity if self.nesterov else velocity
        return direction, {"velocity": velocity}

    def forget(self, state: State, edges: np.ndarray) -> State:
        return {name: np.where(edges, 0.0, value) for name, value in state.items()}


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba), bias-corrected: direction m̂/(√v̂ + ε). The direction is about ±1 per
    edge whatever the gradient's scale, so with Adam the learning rate is the step in S (about
    1e-3 S for the shipped 1e-4–0.1 S device range), not SGD's S²/V²."""

    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8  # in the gradient's units, V²/S

    def __post_init__(self) -> None:
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value < 1):
                raise ValueError(f"adam {name} = {value!r}: it must be >= 0 and < 1")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"adam epsilon = {self.epsilon!r}: it must be > 0")

    def start(self, edges: int) -> State:
        # `steps` is one number, kept as an array of one so the checkpoint stores it like the rest.
        return {"m": np.zeros(edges), "v": np.zeros(edges), "steps": np.zeros(1)}

    def step(self, gradient: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        steps = state["steps"] + 1.0
        m = self.beta1 * state["m"] + (1 - self.beta1) * gradient
        v = self.beta2 * state["v"] + (1 - self.beta2) * gradient**2
        t = float(steps[0])
        m_hat = m / (1 - self.beta1**t)
        v_hat = v / (1 - self.beta2**t)
        return m_hat / (np.sqrt(v_hat) + self.epsilon), {"m": m, "v": v, "steps": steps}

    def forget(self, state: State, edges: np.ndarray) -> State:
        return {
            "m": np.where(edges, 0.0, state["m"]),
            "v": np.where(edges, 0.0, state["v"]),
            "steps": state["steps"],
        }


def optimiser(
    name: str,
    momentum: float = 0.0,
    nesterov: bool = False,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
) -> Optimiser:
    """An optimiser by its config name."""
    if name == "sgd":
        return SGD(momentum, nesterov)
    if name == "adam":
        return Adam(beta1, beta2, epsilon)
    raise ValueError(f"unknown optimiser {name!r}: use one of {', '.join(OPTIMISERS)}")


@dataclass(frozen=True)
class Schedule:
    """The learning rate's factor for each epoch (counted from 0), constant within the epoch:

    - constant:     1
    - step:         decay^⌊epoch / step_epochs⌋
    - exponential:  decay^epoch
    - cosine:       floor + (1 − floor)·(1 + cos(π·epoch / epochs))/2, from 1 down toward `floor`
                    at the last epoch (`epochs`: the run's, as configured)
    """

    kind: str = "constant"
    decay: float = 0.5
    step_epochs: int = 10
    floor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}: use one of {', '.join(SCHEDULES)}")
        if not (math.isfinite(self.decay) and 0 < self.decay <= 1):
            raise ValueError(f"schedule decay = {self.decay!r}: it must be > 0 and <= 1")
        if self.step_epochs < 1:
            raise ValueError(f"schedule step_epochs = {self.step_epochs!r}: it must be >= 1")
        if not (math.isfinite(self.floor) and 0 <= self.floor <= 1):
            raise ValueError(f"schedule floor = {self.floor!r}: it must be from 0 to 1")

    def factor(self, epoch: int, epochs: int) -> float:
        if self.kind == "step":
            return float(self.decay ** (epoch // self.step_epochs))
        if self.kind == "exponential":
            return float(self.decay**epoch)
        if self.kind == "cosine":
            return self.floor + (1 - self.floor) * (1 + math.cos(math.pi * epoch / max(epochs, 1))) / 2
        return 1.0


@dataclass(frozen=True)
class Clip:
    """Gradient clipping before the optimiser: every element into ±`value`, then the whole vector
    scaled down to a Euclidean norm of at most `norm` (V²/S; 0 leaves either out)."""

    norm: float = 0.0
    value: float = 0.0

    def __post_init__(self) -> None:
        for name in ("norm", "value"):
            x = getattr(self, name)
            if not (math.isfinite(x) and x >= 0):
                raise ValueError(f"clip {name} = {x!r}: it must be >= 0 (0: no clipping)")

    def apply(self, gradient: np.ndarray) -> np.ndarray:
        if self.value > 0:
            gradient = np.clip(gradient, -self.value, self.value)
        if self.norm > 0:
            size = float(np.linalg.norm(gradient))
            if size > self.norm:
                gradient = gradient * (self.norm / size)
        return gradient


def shrink(g: np.ndarray, l1: float, signed: np.ndarray, g_min: float, g_max: float) -> np.ndarray:
    """L1 regularisation as seed 001 applies it (W += dt_W·dW − reg_W·sign(W)): after the gradient
    step every |g| moves `l1` S toward 0, whatever the optimiser: the proximal step of
    l1·Σ|g|, stopped at the device's g_min (a conductance reaches 0 only by being pruned)."""
    sign = np.where(signed & (g < 0), -1.0, 1.0)
    return sign * np.clip(np.abs(g) - l1, g_min, g_max)


@dataclass(frozen=True)
class Pruning:
    """Seed 001's stochastic sparsification, with a pruned conductance an open switch.

    At the end of every epoch from `from_epoch` to `until_epoch` (0: to the last), each live edge
    with |g| < `below` may be opened: with the live edges into the same node (an edge's node `b`,
    the node it feeds in a layered network) it gets the Boltzmann probability
    p = exp(−|g|/T) / Σ exp(−|g'|/T), and it is opened when p exceeds a uniform draw (the seed's
    `probs > random`). Edges at or above `below` are never opened, nor a node's last live edge (a
    node left with none would float: no equilibrium). An opened edge is programmed as exactly 0 S
    from then on; with `regrow`, its full-precision magnitude keeps following the updates
    (measured at the open switch) and the edge closes again once it climbs back to `below`."""

    below: float  # S
    temperature: float  # S
    from_epoch: int = 1
    until_epoch: int = 0  # 0: no last epoch
    regrow: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.below) and self.below > 0):
            raise ValueError(f"prune_below = {self.below!r} S: it must be > 0")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"prune_temperature = {self.temperature!r} S: it must be > 0")
        if self.from_epoch < 1:
            raise ValueError(f"prune_from = {self.from_epoch!r}: epochs count from 1")
        if self.until_epoch != 0 and self.until_epoch < self.from_epoch:
            raise ValueError(
                f"prune_until = {self.until_epoch!r} is before prune_from = {self.from_epoch!r}: "
                "give a later epoch, or 0 (to the last)"
            )

    def due(self, epoch: int) -> bool:
        """Whether pruning follows epoch `epoch` (counted from 1)."""
        return epoch >= self.from_epoch and (self.until_epoch == 0 or epoch <= self.until_epoch)

    def select(
        self, magnitudes: np.ndarray, groups: np.ndarray, pruned: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """The pruned mask after one pruning round: `pruned` plus the edges this round opens.
        `groups`: per edge, the node whose incoming edges its probability is normalised over.
        Draws one uniform number per edge, whatever the mask, so the generator advances alike."""
        live = ~pruned
        # Subtracting each group's smallest live |g| first keeps exp() from underflowing when
        # T is small next to the conductances; the normalised probabilities are unchanged.
        shift = np.full(int(groups.max(initial=-1)) + 1, np.inf)
        np.minimum.at(shift, groups[live], magnitudes[live])
        weight = np.zeros(len(magnitudes))
        weight[live] = np.exp(-(magnitudes[live] - shift[groups[live]]) / self.temperature)
        total = np.bincount(groups, weights=weight, minlength=len(shift))  # >= 1 where any edge lives
        probability = np.zeros(len(magnitudes))
        probability[live] = weight[live] / total[groups[live]]
        candidate = live & (magnitudes < self.below)
        draws = rng.random(len(magnitudes))
        opened = candidate & (probability > draws)
        left = np.bincount(groups[live & ~opened], minlength=len(shift))
        for group in np.flatnonzero((left == 0) & (np.bincount(groups[opened], minlength=len(shift)) > 0)):
            # Every live edge into this node was drawn: the strongest of them stays.
            drawn = np.flatnonzero(opened & (groups == group))
            opened[drawn[np.argmax(magnitudes[drawn])]] = False
        return pruned | opened
