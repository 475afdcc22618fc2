"""Equilibrium Propagation through the backend interface: phases, estimators, finite differences.

Every estimator returns the *raw* formula per conductance, with respect to |g| (the physical
conductance); `compensated` turns it into the gradient the trainer applies (per-layer factor).

- VDM, positive nudge:   raw = s·(ΔV_β² − ΔV_0²) / (2β)
- VDM, centered:         raw = s·(ΔV_+β² − ΔV_−β²) / (4β)
- PCM (the seed's power computation, a biased baseline):
                         raw = −s·(D_nudged − D_free) / (2β),  D = (P(|g_k|·(1+ε)) − P) / (ε·|g_k|)
with s = the network's nudge sign (+1 toward the target; −1 for the seed's reversed wiring) and
P the power absorbed by every element but the independent sources.

β is one strength for every sample, or (a constant-current nudge, `nudge_current` = I0) chosen per
sample after its free phase: β = I0/‖t − y‖, so every nudge's current vector has norm I0 whatever
the sample's error. Each sample's formula divides by its own β: the estimate of each sample's
gradient is the same formula at that sample's β, so it stays unbiased to the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hil.interface import Backend, BackendError, ConvergenceError, State
from hil.network import Network


@dataclass(frozen=True)
class Measurement:
    """One sample's estimate: the free phase it started from and the raw formula per edge."""

    free: State
    outputs: np.ndarray
    loss: float  # ½·Σ(t − y)²
    raw: np.ndarray


def outputs(network: Network, state: State) -> np.ndarray:
    return network.output_voltages(state.voltages)


def loss(targets: np.ndarray, y: np.ndarray) -> float:
    return 0.5 * float(np.sum((np.asarray(targets) - y) ** 2))


def drops(network: Network, state: State) -> np.ndarray:
    """Voltage across every conductance, V(a) − V(b)."""
    a, b = network.edge_endpoints
    # np.take, not fancy indexing on the last axis: ten times faster on a batch [samples, nodes].
    return np.take(state.voltages, a, axis=-1) - np.take(state.voltages, b, axis=-1)


def absorbed_power(network: Network, state: State, conductances: np.ndarray) -> float:
    """Power absorbed by resistors, clamp diodes and amplifiers (independent sources excluded),
    as the seed's PCM computes it: from branch currents and node voltages, with its pairing of
    conductances and drops."""
    v = state.voltages
    resistors = float((np.abs(conductances) * drops(network, state)[network.pairing] ** 2).sum())
    node, v_high, v_low = network.clamp_map
    vn = v[node]
    diodes = float(
        (state.clamp_currents[:, 0] * (vn - v_high) + state.clamp_currents[:, 1] * (vn - v_low)).sum()
    )
    _, back = network.amplifier_gains(conductances)
    amp_in, amp_out = network.amplifier_nodes
    amps = float(((v[amp_out] + v[amp_in] * back) * state.amplifier_currents).sum())
    return resistors + diodes + amps


def settle(backend: Backend, inputs: np.ndarray, nudges: dict[str, float] | None, phase: str) -> State:
    """One phase; a failure says which phase it was."""
    try:
        return backend.settle(inputs, nudges)
    except BackendError as exc:
        raise type(exc)(f"{phase} phase: {exc}") from exc


def settle_batch(backend: Backend, inputs: np.ndarray, nudges: np.ndarray | None, phase: str) -> State:
    """One phase of a batch of samples; a failure says which phase it was."""
    try:
        return backend.settle_batch(inputs, nudges)
    except BackendError as exc:
        raise type(exc)(f"{phase} phase: {exc}") from exc


def nudged(backend: Backend, inputs: np.ndarray, targets: np.ndarray, y: np.ndarray, beta: float) -> State:
    nudges = backend.network.nudge_currents(targets, y, beta)
    return settle(backend, inputs, nudges, f"nudged (beta {beta:+g} A/V)")


Strength = float | np.ndarray  # β: one for all samples, or one per sample ([samples])


def _shown(beta: Strength) -> str:
    """β for a phase's name: the one value, or the range of a batch's per-sample values."""
    b = np.asarray(beta, dtype=float)
    if b.ndim == 0 or b.min() == b.max():
        return f"beta {float(b.flat[0]):+g} A/V"
    return f"beta {b.min():+g} … {b.max():+g} A/V"


def strength(
    network: Network, targets: np.ndarray, y: np.ndarray, beta: float, nudge_current: float
) -> Strength:
    """The β each sample is nudged with: `beta`, or for a constant-current nudge (`nudge_current`
    > 0, A) I0/‖t − y‖ from the sample's free-phase outputs."""
    if nudge_current > 0:
        return network.constant_current_beta(targets, y, nudge_current)
    return beta


@dataclass(frozen=True)
class Sample:
    """What an estimator works from: one sample, or a batch of them (arrays with a leading sample
    axis), at programmed conductances, and its free phase."""

    backend: Backend
    conductances: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray
    free: State
    outputs: np.ndarray

    @property
    def batched(self) -> bool:
        return self.inputs.ndim == 2

    def nudged(self, beta: Strength) -> State:
        if not self.batched:
            return nudged(self.backend, self.inputs, self.targets, self.outputs, float(beta))
        net = self.backend.network
        return settle_batch(
            self.backend,
            self.inputs,
            net.nudge_matrix(self.targets, self.outputs, beta),
            f"nudged ({_shown(beta)})",
        )


def _vdm(s: Sample, beta: Strength, eps: float) -> np.ndarray:
    net = s.backend.network
    return _difference_of_squares(net, s.nudged(beta), s.free, 2 * np.asarray(beta, dtype=float))


def _vdm_centered(s: Sample, beta: Strength, eps: float) -> np.ndarray:
    net = s.backend.network
    plus, minus = _centered_phases(s, beta)
    raw = _difference_of_squares(net, plus, minus, 4 * np.atleast_1d(np.asarray(beta, dtype=float)))
    return raw if s.batched else raw[0]


def _centered_phases(s: Sample, beta: Strength) -> tuple[State, State]:
    """The +β and −β phases ([samples, nodes] voltages each)."""
    # +β and −β of the same inputs in one settle_batch (rows k and n + k; one sample: a batch of
    # two): half the backend's per-call cost, and a bench reads each node's pair back to back.
    net = s.backend.network
    inputs, targets, y = np.atleast_2d(s.inputs), np.atleast_2d(s.targets), np.atleast_2d(s.outputs)
    b = np.atleast_1d(np.asarray(beta, dtype=float))
    n = len(inputs)
    nudges = np.concatenate([net.nudge_matrix(targets, y, b), net.nudge_matrix(targets, y, -b)])
    both = settle_batch(
        s.backend,
        np.concatenate([inputs, inputs]),
        nudges,
        f"nudged ({_shown(beta)}, then {_shown(-np.asarray(beta))})",
    )
    return State(both.voltages[:n], None), State(both.voltages[n:], None)


def _difference_of_squares(net: Network, first: State, second: State, scale: Strength) -> np.ndarray:
    """s·(ΔV_first² − ΔV_second²)/scale per edge (paired as the network says), computed as
    (ΔV_first − ΔV_second)(ΔV_first + ΔV_second): the drops of the nodes' difference and sum, no
    squares that cancel, two passes over [samples, edges] fewer."""
    across = drops(net, State(first.voltages - second.voltages, None))
    along = drops(net, State(first.voltages + second.voltages, None))
    raw = across * along
    if net.estimator_pairing is not None:
        raw = raw[..., net.pairing]
    scale = np.asarray(scale, dtype=float)
    raw *= net.nudge_sign / (scale[:, None] if scale.ndim else scale)
    return raw


def _mean_difference_of_squares(net: Network, first: State, second: State, scale: Strength) -> np.ndarray:
    """The batch mean of `_difference_of_squares`, per edge. Over a complete bipartite block
    (`Network.edge_blocks`) the mean of w_k·(d_a − d_b)(s_a − s_b), d and s the nodes' difference
    and sum, is Σw·d_a·s_a + Σw·d_b·s_b − Σw·d_a·s_b − Σw·d_b·s_a: two matrix products over the
    block's nodes instead of gathers over [samples, edges]. Other edges are gathered."""
    d = np.atleast_2d(first.voltages - second.voltages)
    s = np.atleast_2d(first.voltages + second.voltages)
    w = np.broadcast_to(net.nudge_sign / np.asarray(scale, dtype=float), (len(d),)) / len(d)
    wd = d * w[:, None]
    own = np.einsum("kn,kn->n", wd, s)  # Σ_k w·d·s per node
    blocks, rest = net.edge_blocks
    mean = np.empty(len(net.conductances))
    for block in blocks:
        rows, cols = block.rows, block.cols
        cross = wd[:, rows].T @ s[:, cols]
        cross += s[:, rows].T @ wd[:, cols]
        mean[block.edges] = own[rows][:, None] + own[cols][None, :] - cross
    if len(rest):
        a, b = (end[rest] for end in net.edge_endpoints)
        mean[rest] = np.einsum("k,ke,ke->e", w, d[:, a] - d[:, b], s[:, a] - s[:, b])
    return mean[net.pairing] if net.estimator_pairing is not None else mean


def _vdm_mean(s: Sample, beta: Strength, eps: float) -> np.ndarray:
    net = s.backend.network
    return _mean_difference_of_squares(net, s.nudged(beta), s.free, 2 * np.asarray(beta, dtype=float))


def _vdm_centered_mean(s: Sample, beta: Strength, eps: float) -> np.ndarray:
    net = s.backend.network
    plus, minus = _centered_phases(s, beta)
    return _mean_difference_of_squares(net, plus, minus, 4 * np.asarray(beta, dtype=float))


def _pcm_mean(s: Sample, beta: Strength, eps: float) -> np.ndarray:
    return np.atleast_2d(_pcm(s, beta, eps)).mean(axis=0)


def _pcm(s: Sample, beta: Strength, eps: float) -> np.ndarray:
    if s.batched:  # the seed's PCM re-solves per perturbed conductance: one sample at a time
        betas = np.broadcast_to(np.asarray(beta, dtype=float), len(s.inputs))
        return np.array(
            [
                _pcm(
                    Sample(s.backend, s.conductances, x, t, s.free.row(k), s.outputs[k]),
                    float(betas[k]),
                    eps,
                )
                for k, (x, t) in enumerate(zip(s.inputs, s.targets, strict=True))
            ]
        )
    beta = float(beta)
    backend, g, net = s.backend, s.conductances, s.backend.network
    p_free = absorbed_power(net, s.free, g)
    p_nudged = absorbed_power(net, s.nudged(beta), g)
    d_free = np.zeros(len(g))
    d_nudged = np.zeros(len(g))
    for k in range(len(g)):
        gk = g.copy()
        gk[k] = g[k] * (1.0 + eps)  # |g_k| grows by eps, its sign is kept
        backend.program(gk)
        f = settle(backend, s.inputs, None, f"free (|{net.conductances[k].name}| + {eps:g})")
        n = nudged(backend, s.inputs, s.targets, outputs(net, f), beta)
        step = eps * abs(g[k])
        d_free[k] = (absorbed_power(net, f, gk) - p_free) / step
        d_nudged[k] = (absorbed_power(net, n, gk) - p_nudged) / step
    backend.program(g)
    return -net.nudge_sign * (d_nudged - d_free) / (2 * beta)


# The estimators by name: each turns a sample's free phase into the raw formula per edge, running
# whatever nudged phases (and, for PCM, perturbed re-solves) it needs. `eps` is PCM's perturbation.
ESTIMATORS: dict[str, Callable[[Sample, Strength, float], np.ndarray]] = {
    "vdm": _vdm,
    "vdm-centered": _vdm_centered,
    "pcm": _pcm,
}
METHODS = tuple(ESTIMATORS)
# The same, as the batch mean of the per-sample formula (what a mini-batch update steps along).
MEAN_ESTIMATORS: dict[str, Callable[[Sample, Strength, float], np.ndarray]] = {
    "vdm": _vdm_mean,
    "vdm-centered": _vdm_centered_mean,
    "pcm": _pcm_mean,
}


def check_methods(methods: Sequence[str]) -> list[str]:
    """Refuse an unknown or repeated method name."""
    chosen = list(methods)
    unknown = [m for m in chosen if m not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}: use one of {', '.join(METHODS)}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"methods {','.join(chosen)} name a method twice: give each once")
    return chosen


def measure(
    backend: Backend,
    conductances: np.ndarray,
    inputs: np.ndarray,
    targets: np.ndarray,
    method: str,
    beta: float,
    pcm_perturbation: float = 0.01,
    nudge_current: float = 0.0,
) -> Measurement:
    """Free phase, nudged phase(s) and the raw estimate for one sample at `conductances`
    (already programmed into the backend). `nudge_current` > 0 (A): a constant-current nudge,
    β = nudge_current/‖t − y‖ (`beta` is then not used)."""
    if method not in ESTIMATORS:
        check_methods([method])
    free = settle(backend, inputs, None, "free")
    y = outputs(backend.network, free)
    sample = Sample(backend, conductances, inputs, targets, free, y)
    b = strength(backend.network, targets, y, beta, nudge_current)
    return Measurement(free, y, loss(targets, y), ESTIMATORS[method](sample, b, pcm_perturbation))


@dataclass(frozen=True)
class BatchMeasurement:
    """A batch's estimates: the free phases, the raw formula per sample and edge (None when only
    the mean was asked for) and its batch mean per edge."""

    free: State  # batched
    outputs: np.ndarray  # [samples, outputs]
    losses: np.ndarray  # [samples], ½·Σ(t − y)² each
    raw: np.ndarray | None  # [samples, edges]
    mean: np.ndarray  # [edges]


def measure_batch(
    backend: Backend,
    conductances: np.ndarray,
    inputs: np.ndarray,
    targets: np.ndarray,
    method: str,
    beta: float,
    pcm_perturbation: float = 0.01,
    nudge_current: float = 0.0,
    per_sample: bool = True,
) -> BatchMeasurement:
    """`measure` for many samples at once, at the same programmed conductances: each phase is
    one `settle_batch`, which a backend may solve together. With `nudge_current` each sample has
    its own β. `per_sample` False: only the batch mean of the raw formula (`raw` None), summed
    over the network's edge blocks as matrix products (an update needs no more)."""
    if method not in ESTIMATORS:
        check_methods([method])
    inputs, targets = np.asarray(inputs, dtype=float), np.asarray(targets, dtype=float)
    free = settle_batch(backend, inputs, None, "free")
    y = outputs(backend.network, free)
    sample = Sample(backend, conductances, inputs, targets, free, y)
    b = strength(backend.network, targets, y, beta, nudge_current)
    losses = 0.5 * np.sum((targets - y) ** 2, axis=1)
    if not per_sample:
        return BatchMeasurement(free, y, losses, None, MEAN_ESTIMATORS[method](sample, b, pcm_perturbation))
    raw = ESTIMATORS[method](sample, b, pcm_perturbation)
    return BatchMeasurement(free, y, losses, raw, raw.mean(axis=0))


def compensated(network: Network, raw: np.ndarray) -> np.ndarray:
    """The gradient estimate the trainer applies: raw × the per-layer compensation."""
    return raw * network.compensation()


def loss_at(backend: Backend, conductances: np.ndarray, inputs: np.ndarray, targets: np.ndarray) -> float:
    backend.program(conductances)
    return loss(targets, outputs(backend.network, backend.settle(inputs)))


def finite_difference(
    backend: Backend,
    conductances: np.ndarray,
    inputs: np.ndarray,
    targets: np.ndarray,
    relative_step: float = 1e-5,
    edges: Sequence[int] | None = None,
) -> np.ndarray:
    """∂L/∂|g_k| by central differences through the same backend: every edge, or only `edges`
    (NaN elsewhere; two settles an edge is too many for a network of 100,000 conductances)."""
    g = np.asarray(conductances, dtype=float)
    grad = np.zeros(len(g)) if edges is None else np.full(len(g), np.nan)
    for k in range(len(g)) if edges is None else edges:
        h = relative_step * abs(g[k])
        up, down = g.copy(), g.copy()
        up[k] = np.sign(g[k]) * (abs(g[k]) + h)
        down[k] = np.sign(g[k]) * (abs(g[k]) - h)
        grad[k] = (loss_at(backend, up, inputs, targets) - loss_at(backend, down, inputs, targets)) / (2 * h)
    backend.program(g)
    return grad


def clip_conductances(g: np.ndarray, signed: np.ndarray, g_min: float, g_max: float) -> np.ndarray:
    """|g| into [g_min, g_max]; a signed edge keeps its (possibly new) sign, others stay positive."""
    sign = np.where(signed, np.where(g < 0, -1.0, 1.0), 1.0)
    magnitude = np.where(signed, np.abs(g), g)
    return sign * np.clip(magnitude, g_min, g_max)


def apply_update(
    network: Network,
    g: np.ndarray,
    estimate: np.ndarray,
    learning_rates: np.ndarray,
    g_min: float,
    g_max: float,
) -> np.ndarray:
    """g ← clip(g − η_layer·∂L/∂g). `estimate` is with respect to |g|; ∂L/∂g = sign(g)·estimate."""
    if not np.all(np.isfinite(estimate)):
        raise ConvergenceError(
            "the gradient estimate is not finite: check the circuit and the solver tolerances"
        )
    return clip_conductances(g - learning_rates * np.sign(g) * estimate, network.signed, g_min, g_max)
