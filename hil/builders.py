"""Builders: the circuits users train, as `Network` descriptions.

- `seed_xor`: the seed's XOR circuit exactly as its code builds it, flaws included (a baseline).
- `xor`: the same topology, corrected (reciprocal amplifiers, nudge toward the target,
  per-layer compensation A²).
- `layered`: any number of inputs, hidden layers and outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
    """A layered network's elements as they are added, layer by layer."""

    sources: list[VoltageSource] = field(default_factory=list)
    conductances: list[Conductance] = field(default_factory=list)
    clamps: list[DiodeClamp] = field(default_factory=list)
    amplifiers: list[Amplifier] = field(default_factory=list)

    def source(self, source: VoltageSource) -> str:
        self.sources.append(source)
        return source.node

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
        for t in targets:
            for s in sources:
                self.conductances.append(Conductance(f"R{layer}_{t}_{s}", s, t, layer))

    def hidden(
        self, layer: int, width: int, gain: float, clamp_volts: float, duplicate: bool
    ) -> tuple[list[str], list[str]]:
        """Diode-clamped hidden nodes and their amplifiers: (hidden nodes, amplifier outputs)."""
        nodes = [f"h{layer}_{j}" for j in range(width)]
        outs: list[str] = []
        for j, node in enumerate(nodes):
            self.clamps.append(DiodeClamp(f"CL{layer}_{j}", node, clamp_volts, -clamp_volts))
            self.amplifiers.append(Amplifier(f"X{layer}_{j}p", node, f"a{layer}_{j}p", gain, -1.0 / gain))
            outs.append(f"a{layer}_{j}p")
            if duplicate:
                self.amplifiers.append(Amplifier(f"X{layer}_{j}n", node, f"a{layer}_{j}n", -gain, 1.0 / gain))
                outs.append(f"a{layer}_{j}n")
        return nodes, outs


def _outputs(n_outputs: int, doubled: bool) -> tuple[list[Output], list[str]]:
    outputs: list[Output] = []
    nodes: list[str] = []
    for k in range(n_outputs):
        outputs.append(Output(f"y{k}p", f"y{k}n") if doubled else Output(f"y{k}p"))
        nodes += [f"y{k}p", f"y{k}n"] if doubled else [f"y{k}p"]
    return outputs, nodes


def layer_compensation(gains: Sequence[float]) -> dict[int, float]:
    """Per layer, the product of A² over the amplifiers between it and the output (layer
    len(gains) + 1, the output layer, has none)."""
    compensation: dict[int, float] = {len(gains) + 1: 1.0}
    factor = 1.0
    for layer in range(len(gains), 0, -1):
        factor *= gains[layer - 1] ** 2
        compensation[layer] = factor
    return compensation


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
) -> Network:
    """A layered network: inputs → [diode-clamped hidden layer → amplifier]* → outputs.

    Negative weights come from duplicated signals, as on a bench of positive conductances:
    inputs as (x, -x), amplifiers as a (+A, -A) pair, outputs doubled (y = V+ - V-). Every layer
    also sees a bias source (and its negative when duplicated). Layer l holds the conductances into
    hidden layer l; the last layer those into the outputs.
    """
    gains = (
        [float(amplifier_gain)] * len(hidden)
        if isinstance(amplifier_gain, int | float)
        else [float(g) for g in amplifier_gain]
    )
    if len(gains) != len(hidden):
        raise ValueError(f"{len(gains)} amplifier gains for {len(hidden)} hidden layers")
    if n_inputs < 1 or n_outputs < 1 or any(h < 1 for h in hidden):
        raise ValueError("layer sizes must be at least 1")

    parts = _Parts()
    prev = parts.inputs(n_inputs, duplicate_inputs)
    for layer, (width, gain) in enumerate(zip(hidden, gains, strict=True), start=1):
        nodes, outs = parts.hidden(layer, width, gain, clamp_volts, duplicate_hidden)
        parts.connect(layer, prev + parts.bias(layer, bias_volts, duplicate_inputs), nodes)
        prev = outs
    last = len(hidden) + 1
    outputs, out_nodes = _outputs(n_outputs, doubled_outputs)
    parts.connect(last, prev + parts.bias(last, bias_volts, duplicate_inputs), out_nodes)
    loads = [Load(f"RL_{n}", n, output_load) for n in out_nodes] if output_load > 0 else []
    return Network(
        name=f"layered-{n_inputs}-{'-'.join(map(str, hidden))}-{n_outputs}",
        conductances=parts.conductances,
        sources=parts.sources,
        clamps=parts.clamps,
        amplifiers=parts.amplifiers,
        loads=loads,
        outputs=outputs,
        diode_model=diode or DiodeModel(),
        temperature=temperature,
        n_inputs=n_inputs,
        nudge_sign=1.0,
        layer_compensation=layer_compensation(gains),
    )
