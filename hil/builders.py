"""Builders: the circuits users train, as `Network` descriptions.

- `seed_xor`: the seed's XOR circuit exactly as its code builds it, flaws included (a baseline).
- `xor`: the same topology, corrected (reciprocal amplifiers, nudge toward the target,
  per-layer compensation A²).
- `layered`: any number of inputs, hidden layers and outputs; per-layer forward and feedback
  gains (seed 004's α_i and β_i); skip connections across layers (seed 004's residuals).
- `complete`: every pair of nodes joined (seed 001's complete graph).
- `energy_factors`: each conductance's compensation derived from the circuit alone.

Why the compensation is what it is. At a free node v, KCL is the derivative of the co-content E
of the elements there. An amplifier of forward gain a (o = a·v) whose CCCS draws b times the
current the output delivers from v (backward gain −b in `Amplifier`) joins two co-contents:
KCL at v is ∂E_v/∂v + b·∂E_o/∂o = 0. The weighted sum F = Σ C·E is stationary exactly at the
circuit's equilibrium when ∂F/∂v = C_v·∂E_v/∂v + C_o·a·∂E_o/∂o is C_v × KCL, that is
C_o/C_v = b/a for every amplifier; a conductance between two free nodes puts both in one term
(ratio 1). The nudge β(t − y) at the outputs adds C_y·β·½‖t − y‖², so EqProp's identity with
β' = C_y·β gives ∂L/∂g = (C_g/C_y)·raw for a conductance in a term of weight C_g:

- reciprocal amplifiers (b = 1/a): A² per amplifier between a layer and the output;
- forward gain a_l, feedback b_l: Π a/b over the stages to the output (a weak feedback b ≪ 1/a
  raises the factor: the nudge reaches early layers weaker, the estimate is scaled back up);
- a skip from layer l into layer m lives in layer m's term (layer m's factor), and its source
  must carry C_m/C_l = Π_{k=l..m−1} b_k/a_k. Layer l's own amplifiers carry b_l/a_l: sharing them
  closes the loop h_l → h_{l+1} → … → h_m → h_l with product Π_{k=l+1..m−1} b_k/a_k ≠ 1 and no
  energy exists (the estimate is then wrong, finite differences show it), so a skip from a hidden
  layer gets its own amplifiers: gain a_l, feedback a_l·Π b_k/a_k. From the inputs (sources) any
  conductance is consistent;
- in the complete graph every free node is joined to every other, so every ratio must be 1.

Exact EqProp needs one weight per free node: around every loop the ratios multiply to 1.
Positive ratios make F convex, an equilibrium the circuit relaxes to. A negative one (the seed's
+1/A CCCS) makes F a saddle: the DC point is stationary and the identity holds with a negative
factor (the seed's −1/A² in layer 1), but a physical circuit need not settle there; the builders
refuse feedback gains ≤ 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hil.network import (
    Amplifier,
    Conductance,
    DiodeClamp,
    DiodeModel,
    Load,
    Network,
    Output,
    VoltageSource,
)

# The seed updates conductance k with the voltage drop it computes k-th, and computes the drops
# grouped by hidden node (1-7, 3-7, 5-7, 2-8, 4-8, 6-8, 9-11, 10-11) while the conductances are
# numbered R1..R8 (1-7, 2-8, 3-7, 4-8, 5-7, 6-8, 9-11, 10-11).
SEED_PAIRING = (0, 2, 4, 1, 3, 5, 6, 7)


def _xor_topology(amplifier_gain: float, reciprocal: bool) -> dict:
    a = amplifier_gain
    sources = [
        VoltageSource("Vx1", "1", input_index=0),
        VoltageSource("Vx2", "2", input_index=0),
        VoltageSource("Vx3", "3", input_index=1),
        VoltageSource("Vx4", "4", input_index=1),
        VoltageSource("Vbias1", "5", value=1.0),
        VoltageSource("Vbias2", "6", value=1.0),
    ]
    conductances = [
        Conductance("R1", "1", "7", 1, "Vx1"),
        Conductance("R2", "2", "8", 1, "Vx2"),
        Conductance("R3", "3", "7", 1, "Vx3"),
        Conductance("R4", "4", "8", 1, "Vx4"),
        Conductance("R5", "5", "7", 1, "Vbias1"),
        Conductance("R6", "6", "8", 1, "Vbias2"),
        Conductance("R7", "9", "11", 2, "X1"),
        Conductance("R8", "10", "11", 2, "X2"),
    ]
    backward = -1.0 / a if reciprocal else 1.0 / a
    amplifiers = [
        Amplifier("X1", "7", "9", a, backward, backward_follows_sign=reciprocal),
        Amplifier("X2", "8", "10", a, backward, backward_follows_sign=reciprocal),
    ]
    return dict(
        conductances=conductances,
        sources=sources,
        clamps=[DiodeClamp("CL7", "7"), DiodeClamp("CL8", "8")],
        amplifiers=amplifiers,
        outputs=[Output("11")],
        diode_model=DiodeModel("dclamp", 1e-6, 2.0, 27.0),
        temperature=25.0,
        n_inputs=2,
    )


def seed_xor(amplifier_gain: float = 4.0, pairing: bool = True) -> Network:
    """The seed circuit as its code builds it: CCCS gain +1/A never flipped, nudge drawn out of
    the output, no compensation, and (unless `pairing` is False) its drop/conductance pairing."""
    return Network(
        name="seed-xor",
        nudge_sign=-1.0,
        estimator_pairing=SEED_PAIRING if pairing else None,
        **_xor_topology(amplifier_gain, reciprocal=False),
    )


def xor(amplifier_gain: float = 4.0) -> Network:
    """The seed topology corrected: reciprocal amplifiers, nudge toward the target, A² on layer 1."""
    return Network(
        name="xor",
        nudge_sign=1.0,
        layer_compensation={1: amplifier_gain**2, 2: 1.0},
        **_xor_topology(amplifier_gain, reciprocal=True),
    )


@dataclass
class _Parts:
    """A network's elements as they are added, layer by layer."""

    sources: list[VoltageSource] = field(default_factory=list)
    conductances: list[Conductance] = field(default_factory=list)
    clamps: list[DiodeClamp] = field(default_factory=list)
    amplifiers: list[Amplifier] = field(default_factory=list)

    def source(self, source: VoltageSource) -> str:
        self.sources.append(source)
        return source.node

    def network(
        self,
        name: str,
        outputs: list[Output],
        out_nodes: list[str],
        output_load: float,
        diode: DiodeModel | None,
        temperature: float,
        n_inputs: int,
        compensation: dict[int, float],
    ) -> Network:
        """The network of these parts, its outputs loaded by `output_load` (S; 0: none)."""
        return Network(
            name=name,
            conductances=self.conductances,
            sources=self.sources,
            clamps=self.clamps,
            amplifiers=self.amplifiers,
            loads=[Load(f"RL_{n}", n, output_load) for n in out_nodes] if output_load > 0 else [],
            outputs=outputs,
            diode_model=diode or DiodeModel(),
            temperature=temperature,
            n_inputs=n_inputs,
            nudge_sign=1.0,
            layer_compensation=compensation,
        )

    def inputs(self, n_inputs: int, duplicate: bool) -> list[str]:
        """Input sources x (and -x): the nodes the first layer connects from."""
        nodes = []
        for i in range(n_inputs):
            nodes.append(self.source(VoltageSource(f"Vx{i}p", f"x{i}p", input_index=i, scale=1.0)))
            if duplicate:
                nodes.append(self.source(VoltageSource(f"Vx{i}n", f"x{i}n", input_index=i, scale=-1.0)))
        return nodes

    def bias(self, layer: int, volts: float, duplicate: bool) -> list[str]:
        nodes = [self.source(VoltageSource(f"Vb{layer}p", f"b{layer}p", value=volts))]
        if duplicate:
            nodes.append(self.source(VoltageSource(f"Vb{layer}n", f"b{layer}n", value=-volts)))
        return nodes

    def connect(self, layer: int, sources: list[str], targets: list[str]) -> None:
        """Every source node to every target node: the trainable conductances of a layer."""
        self.conductances.extend(
            Conductance(f"R{layer}_{t}_{s}", s, t, layer) for t in targets for s in sources
        )

    def clamp(self, name: str, node: str, volts: float) -> None:
        self.clamps.append(DiodeClamp(f"CL{name}", node, volts, -volts))

    def amplify(
        self, name: str, node: str, out: str, gain: float, feedback: float, duplicate: bool
    ) -> list[str]:
        """`node`'s signal through an amplifier of forward gain `gain` and backward current gain
        `feedback` (the CCCS draws `feedback` × the output's current from `node`), and through a
        −gain twin when `duplicate`: the output nodes (+ first)."""
        self.amplifiers.append(Amplifier(f"X{name}p", node, f"{out}p", gain, -feedback))
        if not duplicate:
            return [f"{out}p"]
        self.amplifiers.append(Amplifier(f"X{name}n", node, f"{out}n", -gain, feedback))
        return [f"{out}p", f"{out}n"]

    def hidden(
        self, layer: int, width: int, gain: float, feedback: float, clamp_volts: float, duplicate: bool
    ) -> tuple[list[str], list[str]]:
        """Diode-clamped hidden nodes and their amplifiers: (hidden nodes, amplifier outputs)."""
        nodes = [f"h{layer}_{j}" for j in range(width)]
        outs: list[str] = []
        for j, node in enumerate(nodes):
            self.clamp(f"{layer}_{j}", node, clamp_volts)
            outs += self.amplify(f"{layer}_{j}", node, f"a{layer}_{j}", gain, feedback, duplicate)
        return nodes, outs


def _outputs(n_outputs: int, doubled: bool) -> tuple[list[Output], list[str]]:
    outputs: list[Output] = []
    nodes: list[str] = []
    for k in range(n_outputs):
        outputs.append(Output(f"y{k}p", f"y{k}n") if doubled else Output(f"y{k}p"))
        nodes += [f"y{k}p", f"y{k}n"] if doubled else [f"y{k}p"]
    return outputs, nodes


def _per_layer(value: float | Sequence[float], layers: int, what: str) -> list[float]:
    values = [float(value)] * layers if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != layers:
        raise ValueError(f"{len(values)} {what} for {layers} hidden layers: give one per hidden layer")
    if not all(math.isfinite(v) and v > 0 for v in values):
        # A negative feedback gain is the seed's +1/A CCCS: positive feedback, an energy saddle the
        # circuit need not settle at; zero cuts the layers apart.
        raise ValueError(f"{what} {values} must all be > 0 (the − amplifiers get the opposite signs)")
    return values


def stage_gains(
    n_hidden: int, amplifier_gain: float | Sequence[float], feedback_gain: float | Sequence[float] | None
) -> tuple[list[float], list[float]]:
    """Per hidden layer, (forward gains a, backward current gains b); b = 1/a (reciprocal) when
    `feedback_gain` is None."""
    forward = _per_layer(amplifier_gain, n_hidden, "amplifier gains")
    if feedback_gain is None:
        return forward, [1.0 / a for a in forward]
    return forward, _per_layer(feedback_gain, n_hidden, "feedback gains")


def layer_compensation(gains: Sequence[float], feedback: Sequence[float] | None = None) -> dict[int, float]:
    """Per layer, the product of a/b over the amplifiers between it and the output (A² each when
    reciprocal, b = 1/a); layer len(gains) + 1, the output layer, has none."""
    back = [1.0 / a for a in gains] if feedback is None else list(feedback)
    compensation: dict[int, float] = {len(gains) + 1: 1.0}
    factor = 1.0
    for layer in range(len(gains), 0, -1):
        factor *= gains[layer - 1] / back[layer - 1]
        compensation[layer] = factor
    return compensation


def skip_pairs(skips: int | Sequence[Sequence[int]], n_hidden: int) -> list[tuple[int, int]]:
    """Skip connections as (from, to) layer pairs: 0 is the inputs, 1..n_hidden the hidden layers,
    n_hidden + 1 the outputs. An integer k ≥ 2 is every (l, l + k); 0 is none."""
    last = n_hidden + 1
    layers = f"{n_hidden} hidden layers make layers 0 (inputs) to {last} (outputs)"
    if isinstance(skips, int):
        if skips != 0 and not 2 <= skips <= last:
            raise ValueError(f"skips = {skips} does not fit: {layers}; give 0 (none) or 2 to {last}")
        return [(f, f + skips) for f in range(0, last - skips + 1)] if skips else []
    pairs = [(int(p[0]), int(p[1])) if len(p) == 2 else (-1, -1) for p in skips]
    for p, given in zip(pairs, skips, strict=True):
        if not (0 <= p[0] and p[0] + 2 <= p[1] <= last):
            raise ValueError(
                f"skips pair {list(given)} does not fit: {layers}; give [from, to] with from + 2 ≤ to ≤ "
                f"{last} (adjacent layers are joined already)"
            )
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"skips {[list(p) for p in pairs]} name a pair twice: give each pair once")
    return pairs


def layered(
    n_inputs: int,
    hidden: Sequence[int],
    n_outputs: int,
    amplifier_gain: float | Sequence[float] = 4.0,
    duplicate_inputs: bool = True,
    duplicate_hidden: bool = True,
    doubled_outputs: bool = True,
    bias_volts: float = 1.0,
    output_load: float = 0.0,
    clamp_volts: float = 0.3,
    diode: DiodeModel | None = None,
    temperature: float = 27.0,
    feedback_gain: float | Sequence[float] | None = None,
    skips: int | Sequence[Sequence[int]] = 0,
) -> Network:
    """A layered network: inputs → [diode-clamped hidden layer → amplifier]* → outputs.

    Negative weights come from duplicated signals, as on a bench of positive conductances:
    inputs as (x, -x), amplifiers as a (+a, -a) pair, outputs doubled (y = V+ - V-). Every layer
    also sees a bias source (and its negative when duplicated). Layer l holds the conductances into
    hidden layer l; the last layer those into the outputs.

    Hidden layer l's amplifiers have forward gain a_l (`amplifier_gain`, one or one per layer) and
    backward current gain b_l (`feedback_gain`; None: 1/a_l, reciprocal). Layer l's estimate is
    compensated by the product of a/b from l to the output (see the module's docstring).

    `skips` (see `skip_pairs`) adds conductances from layer `from`'s signals (the inputs, or the
    hidden nodes through their own amplifiers of gain a_from and backward gain a_from·Π b/a over the
    stages skipped) into every node of layer `to`; they belong to layer `to` and are numbered after
    every other conductance, so a network with skips starts its other conductances where the same
    network without them does.
    """
    if n_inputs < 1 or n_outputs < 1 or any(h < 1 for h in hidden):
        raise ValueError("layer sizes must be at least 1")
    gains, feedback = stage_gains(len(hidden), amplifier_gain, feedback_gain)
    pairs = skip_pairs(skips, len(hidden))
    compensation = layer_compensation(gains, feedback)

    parts = _Parts()
    signals = [parts.inputs(n_inputs, duplicate_inputs)]  # what each layer sends on: inputs first
    nodes_of: list[list[str]] = [[]]
    for layer, (width, gain, back) in enumerate(zip(hidden, gains, feedback, strict=True), start=1):
        nodes, outs = parts.hidden(layer, width, gain, back, clamp_volts, duplicate_hidden)
        parts.connect(layer, signals[-1] + parts.bias(layer, bias_volts, duplicate_inputs), nodes)
        signals.append(outs)
        nodes_of.append(nodes)
    last = len(hidden) + 1
    outputs, out_nodes = _outputs(n_outputs, doubled_outputs)
    parts.connect(last, signals[-1] + parts.bias(last, bias_volts, duplicate_inputs), out_nodes)
    nodes_of.append(out_nodes)
    for f, t in pairs:
        sent = signals[0]
        if f > 0:
            # The energy weight of layer t over layer f's: C_t / C_f = Π b/a over the stages skipped.
            ratio = compensation[t] / compensation[f]
            sent = []
            for j, node in enumerate(nodes_of[f]):
                name, out = f"S{f}_{t}_{j}", f"s{f}_{t}_{j}"
                sent += parts.amplify(name, node, out, gains[f - 1], gains[f - 1] * ratio, duplicate_hidden)
        parts.connect(t, sent, nodes_of[t])
    joined = "".join(f"-s{f}.{t}" for f, t in pairs)
    name = f"layered-{n_inputs}-{'-'.join(map(str, hidden))}-{n_outputs}{joined}"
    return parts.network(name, outputs, out_nodes, output_load, diode, temperature, n_inputs, compensation)


# The complete graph's layers, for per-layer learning rates: which kinds of node each joins.
COMPLETE_LAYERS = {
    1: "inputs and biases to hidden nodes",
    2: "hidden to hidden",
    3: "hidden to outputs",
    4: "inputs and biases to outputs",
    5: "outputs to outputs",
}


def complete(
    n_inputs: int,
    n_hidden: int,
    n_outputs: int,
    amplifier_gain: float = 1.0,
    duplicate_inputs: bool = True,
    duplicate_hidden: bool = True,
    doubled_outputs: bool = True,
    bias_volts: float = 1.0,
    output_load: float = 0.0,
    clamp_volts: float = 0.3,
    diode: DiodeModel | None = None,
    temperature: float = 27.0,
) -> Network:
    """The complete graph (seed 001's DEEP model as a circuit): every pair of nodes joined by a
    trainable conductance — each input and bias source (with its negative when
    `duplicate_inputs`) to every hidden and output node, and every pair of hidden and output
    nodes (each output doubled into V+ and V− when `doubled_outputs`). Hidden nodes are diode
    clamped, outputs are not. Two driven nodes are not joined: no current between sources moves a
    node.

    A free node sends its signal through an amplifier of gain +A (for A = 1 the node itself) and,
    when `duplicate_hidden`, one of gain −A, so a pair of free nodes is joined twice: a positive
    and a negative coupling, from the earlier node (hidden before outputs) into the later. The
    loops between free nodes leave a single energy only when every amplifier's backward current
    gain equals its forward gain (ratio 1, module docstring): the amplifiers here are built so, and
    every layer's compensation is 1. Layers: `COMPLETE_LAYERS`.
    """
    if n_inputs < 1 or n_hidden < 1 or n_outputs < 1:
        raise ValueError("the complete graph needs at least 1 input, 1 hidden node and 1 output")
    gain = float(amplifier_gain)
    if not (math.isfinite(gain) and gain > 0):
        raise ValueError(f"amplifier gain {gain} must be > 0")
    parts = _Parts()
    driven = parts.inputs(n_inputs, duplicate_inputs) + parts.bias(1, bias_volts, duplicate_inputs)
    hidden = [f"h{j}" for j in range(n_hidden)]
    for j, node in enumerate(hidden):
        parts.clamp(str(j), node, clamp_volts)
    outputs, out_nodes = _outputs(n_outputs, doubled_outputs)

    def sent(node: str) -> list[str]:
        """The signals a free node sends on: +A (the node itself when A = 1: a unity follower whose
        CCCS returns its output's current is a wire), then −A when duplicated."""
        out = [node]
        if gain != 1.0:
            parts.amplifiers.append(Amplifier(f"X{node}_p", node, f"a_{node}_p", gain, -gain))
            out = [f"a_{node}_p"]
        if duplicate_hidden:
            parts.amplifiers.append(Amplifier(f"X{node}_n", node, f"a_{node}_n", -gain, gain))
            out.append(f"a_{node}_n")
        return out

    signals = {node: sent(node) for node in hidden + out_nodes}
    parts.connect(1, driven, hidden)
    for k, target in enumerate(hidden):
        parts.connect(2, [s for node in hidden[:k] for s in signals[node]], [target])
    parts.connect(3, [s for node in hidden for s in signals[node]], out_nodes)
    parts.connect(4, driven, out_nodes)
    for k, target in enumerate(out_nodes):
        parts.connect(5, [s for node in out_nodes[:k] for s in signals[node]], [target])
    name = f"complete-{n_inputs}-{n_hidden}-{n_outputs}"
    compensation = dict.fromkeys(COMPLETE_LAYERS, 1.0)
    return parts.network(name, outputs, out_nodes, output_load, diode, temperature, n_inputs, compensation)


# ---------------------------------------------------------------------------------------- energy
def energy_factors(network: Network, conductances: np.ndarray | None = None) -> np.ndarray:
    """Per conductance, the factor that turns its raw estimate into ∂L/∂|g|, derived from the
    circuit alone (module docstring): each free node's energy weight C follows from C_out/C_in =
    b/a across every amplifier and C equal across every conductance between free nodes; a
    conductance's factor is its term's weight over the outputs'. `conductances` give the signs
    (flipped amplifiers); all positive by default.

    ValueError when the circuit has no such energy: a loop whose ratios multiply to anything but
    1, or outputs at different weights. Then no per-conductance factor makes EqProp exact."""
    g = np.ones(len(network.conductances)) if conductances is None else np.asarray(conductances, float)
    n = len(network.nodes)
    index = network.node_index
    gain, back = network.amplifier_gains(g)
    amp_in, amp_out = network.amplifier_nodes
    free = np.ones(n, dtype=bool)
    free[[index[s.node] for s in network.sources]] = False
    free[amp_out] = False
    # Each node's term weight is C[anchor]·factor: a free node is its own anchor; an amplifier's
    # output is anchored to its input, at the ratio −backward/forward; a source has none (-1).
    anchor = np.where(free, np.arange(n), -1)
    factor = np.ones(n)
    driven_in = free[amp_in]
    anchor[amp_out[driven_in]] = amp_in[driven_in]
    factor[amp_out] = np.where(driven_in, -back / gain, 1.0)
    a, b = network.edge_endpoints
    pa, pb, fa, fb = anchor[a], anchor[b], factor[a], factor[b]
    both = (pa >= 0) & (pb >= 0)
    u, v, ratio = pa[both], pb[both], fa[both] / fb[both]  # C[v] = C[u]·ratio
    weight = np.full(n, np.nan)
    out_nodes = [index[x] for x in network.nudge_nodes]
    if any(anchor[x] != x for x in out_nodes):
        raise ValueError(f"network '{network.name}': an output is not a free node; it has no energy weight")
    weight[out_nodes[0]] = 1.0
    while True:
        # Spread known weights across the constraints (a pass per step of graph distance);
        # when nothing spreads, seed a part the outputs do not reach (its gradient is 0) at 1.
        forward = np.isfinite(weight[u]) & np.isnan(weight[v])
        backward = np.isfinite(weight[v]) & np.isnan(weight[u])
        if forward.any() or backward.any():
            weight[v[forward]] = weight[u[forward]] * ratio[forward]
            weight[u[backward]] = weight[v[backward]] / ratio[backward]
            continue
        unset = np.flatnonzero(free & np.isnan(weight))
        if not len(unset):
            break
        weight[unset[0]] = 1.0
    mismatch = np.abs(weight[v] - weight[u] * ratio) > 1e-9 * np.abs(weight[v])
    if mismatch.any():
        k = int(np.flatnonzero(both)[np.argmax(mismatch)])
        raise ValueError(
            f"network '{network.name}' has no energy: conductance {network.conductances[k].name} closes "
            "a loop whose amplifier ratios (backward current gain / forward gain) do not multiply to 1, "
            "so no factor makes EqProp's estimate the gradient: give the loop's amplifiers matching ratios"
        )
    outs = weight[out_nodes]
    if not np.allclose(outs, outs[0], rtol=1e-9, atol=0.0):
        raise ValueError(f"network '{network.name}': its outputs sit at different energy weights {outs}")
    term = np.where(pa >= 0, weight[np.maximum(pa, 0)] * fa, weight[np.maximum(pb, 0)] * fb)
    # Between two driven nodes a conductance moves nothing: its gradient is 0, any factor will do.
    return np.where((pa >= 0) | (pb >= 0), term, 1.0)


def energy_compensation(network: Network, conductances: np.ndarray | None = None) -> dict[int, float]:
    """`energy_factors` per layer; ValueError when a layer mixes factors (no per-layer
    compensation is then exact)."""
    factors = energy_factors(network, conductances)
    layers = network.layers
    out: dict[int, float] = {}
    for layer in sorted(set(layers.tolist())):
        values = factors[layers == layer]
        if not np.allclose(values, values[0], rtol=1e-9, atol=0.0):
            raise ValueError(
                f"network '{network.name}': layer {layer} mixes energy factors from {values.min():g} to "
                f"{values.max():g}: give its conductances one factor (or separate layers)"
            )
        out[layer] = float(values[0])
    return out
