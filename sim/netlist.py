"""The network as ngspice netlist text: what the ngspice backend loads and `hil netlist` prints.

Element names: trainable conductances are the resistors named exactly as the edges; amplifier X
is the pair E<X> (VCVS) and F<X> (CCCS); clamp C is diodes D<C>H, D<C>L with offset sources
V<C>H, V<C>L; the nudge into node n is the current source INUDGE_<n> (0 when free). A
conductance of exactly 0 is an open switch (a pruned edge): its resistor is left out, and a
comment line says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hil.network import Network


@dataclass(frozen=True)
class SimulatorOptions:
    """ngspice `.options`. The defaults are tight: nudged-minus-free differences are tiny."""

    reltol: float = 1e-9
    vntol: float = 1e-12
    abstol: float = 1e-15
    gmin: float = 1e-12


def clamp_node(clamp_name: str, side: str) -> str:
    return f"{clamp_name.lower()}_{side}"


def nudge_source(node: str) -> str:
    return f"INUDGE_{node}"


def _num(x: float) -> str:
    return repr(float(x))


def netlist(
    network: Network,
    conductances: np.ndarray,
    inputs: np.ndarray,
    nudge_currents: dict[str, float] | None = None,
    options: SimulatorOptions = SimulatorOptions(),
    analysis: bool = True,
) -> str:
    """A complete netlist for one sample and phase; `analysis` adds `.op` for `ngspice -b`."""
    g = np.asarray(conductances, dtype=float)
    src_sign, _ = network.sign_multipliers(g)
    values = network.source_values(inputs) * src_sign
    gain, back = network.amplifier_gains(g)
    m = network.diode_model
    lines = [
        f"* eqprop-hil network '{network.name}'",
        f".options temp={_num(network.temperature)} reltol={_num(options.reltol)} "
        f"vntol={_num(options.vntol)} abstol={_num(options.abstol)} gmin={_num(options.gmin)}",
        f".model {m.name} D(is={_num(m.saturation_current)} n={_num(m.emission_coefficient)} "
        f"tnom={_num(m.nominal_temperature)})",
    ]
    for s, v in zip(network.sources, values, strict=True):
        lines.append(f"{s.name} {s.node} 0 dc {_num(v)}")
    for e, value in zip(network.conductances, g, strict=True):
        if value == 0:
            lines.append(f"* {e.name} {e.a} {e.b} open (conductance 0: a pruned edge)")
        else:
            lines.append(f"{e.name} {e.a} {e.b} {_num(1.0 / abs(value))}")
    for c in network.clamps:
        hi, lo = clamp_node(c.name, "h"), clamp_node(c.name, "l")
        lines += [
            f"D{c.name}H {c.node} {hi} {m.name}",
            f"V{c.name}H {hi} 0 dc {_num(c.v_high)}",
            f"D{c.name}L {lo} {c.node} {m.name}",
            f"V{c.name}L {lo} 0 dc {_num(c.v_low)}",
        ]
    for a, ga, gb in zip(network.amplifiers, gain, back, strict=True):
        lines += [
            f"E{a.name} {a.node_out} 0 {a.node_in} 0 {_num(ga)}",
            f"F{a.name} {a.node_in} 0 E{a.name} {_num(gb)}",
        ]
    for load in network.loads:
        lines.append(f"{load.name} {load.node} 0 {_num(1.0 / load.conductance)}")
    nudges = nudge_currents or {}
    for node in network.nudge_nodes:
        # Current flows from the first node through the source to the second: this injects.
        lines.append(f"{nudge_source(node)} 0 {node} dc {_num(nudges.get(node, 0.0))}")
    if analysis:
        lines.append(".op")
    lines.append(".end")
    return "\n".join(lines) + "\n"
