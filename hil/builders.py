"""Builders: the circuits users train, as `Network` descriptions.

- `seed_xor`: the seed's XOR circuit exactly as its code builds it, flaws included (a baseline).
- `xor`: the same topology, corrected (reciprocal amplifiers, nudge toward the target,
  per-layer compensation A²).
- `layered`: any number of inputs, hidden layers and outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

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

    sources: list[VoltageSource] = []
    conductances: list[Conductance] = []
    clamps: list[DiodeClamp] = []
    amplifiers: list[Amplifier] = []

    prev: list[str] = []
    for i in range(n_inputs):
        sources.append(VoltageSource(f"Vx{i}p", f"x{i}p", input_index=i, scale=1.0))
        prev.append(f"x{i}p")
        if duplicate_inputs:
            sources.append(VoltageSource(f"Vx{i}n", f"x{i}n", input_index=i, scale=-1.0))
            prev.append(f"x{i}n")

    def bias_nodes(layer: int) -> list[str]:
        nodes = [f"b{layer}p"]
        sources.append(VoltageSource(f"Vb{layer}p", f"b{layer}p", value=bias_volts))
        if duplicate_inputs:
            nodes.append(f"b{layer}n")
            sources.append(VoltageSource(f"Vb{layer}n", f"b{layer}n", value=-bias_volts))
        return nodes

    def connect(layer: int, sources_nodes: list[str], targets: list[str]) -> None:
        for t in targets:
            for s in sources_nodes:
                conductances.append(Conductance(f"R{layer}_{t}_{s}", s, t, layer))

    for li, (width, gain) in enumerate(zip(hidden, gains, strict=True), start=1):
        nodes = [f"h{li}_{j}" for j in range(width)]
        connect(li, prev + bias_nodes(li), nodes)
        outs: list[str] = []
        for j, node in enumerate(nodes):
            clamps.append(DiodeClamp(f"CL{li}_{j}", node, clamp_volts, -clamp_volts))
            amplifiers.append(Amplifier(f"X{li}_{j}p", node, f"a{li}_{j}p", gain, -1.0 / gain))
            outs.append(f"a{li}_{j}p")
            if duplicate_hidden:
                amplifiers.append(Amplifier(f"X{li}_{j}n", node, f"a{li}_{j}n", -gain, 1.0 / gain))
                outs.append(f"a{li}_{j}n")
        prev = outs

    last = len(hidden) + 1
    outputs: list[Output] = []
    out_nodes: list[str] = []
    for k in range(n_outputs):
        if doubled_outputs:
            outputs.append(Output(f"y{k}p", f"y{k}n"))
            out_nodes += [f"y{k}p", f"y{k}n"]
        else:
            outputs.append(Output(f"y{k}p"))
            out_nodes.append(f"y{k}p")
    connect(last, prev + bias_nodes(last), out_nodes)
    loads = [Load(f"RL_{n}", n, output_load) for n in out_nodes] if output_load > 0 else []

    compensation: dict[int, float] = {last: 1.0}
    factor = 1.0
    for li in range(len(hidden), 0, -1):
        factor *= gains[li - 1] ** 2
        compensation[li] = factor
    return Network(
        name=f"layered-{n_inputs}-{'-'.join(map(str, hidden))}-{n_outputs}",
        conductances=conductances,
        sources=sources,
        clamps=clamps,
        amplifiers=amplifiers,
        loads=loads,
        outputs=outputs,
        diode_model=diode or DiodeModel(),
        temperature=temperature,
        n_inputs=n_inputs,
        nudge_sign=1.0,
        layer_compensation=compensation,
    )
