"""Electrical ratings of the parts on a bench, and the worst case a training can put on them.

A digital pot used as a rheostat is damaged by terminal voltages outside its supply rails and by
wiper currents above its rating; `compliance_current` on the SMUs cannot protect it (a 0.2 A
limit is forty times a pot's rating). Three guards use this module:

1. at config load (`drivers.benchconfig.check_experiment`): `worst_case` bounds every node over
   the data set, the whole conductance range, both polarities of every signed source and
   amplifier and every nudge up to `[limits] max_nudge_current`; a config that could exceed a
   rating is refused before a log is written or an instrument touched;
2. before every settle (`drivers.bench.BenchBackend.settle`): the twin predicts the node voltages
   for the levels about to be applied and the believed conductances, and `violations` refuses
   them before any level moves;
3. after every settle: the same check on what was measured, and the gap to the prediction kept
   for the run.

Part ratings (the table below, with sources):

| part   | supply                                     | terminals A, B, W | wiper current           |
|--------|--------------------------------------------|-------------------|-------------------------|
| AD5204 | +2.7…+5.5 V single, or ±2.7 V dual         | VSS … VDD         | ±5 mA cont., ±20 mA pulse |
| AD5206 | the same data sheet, the same ratings      | VSS … VDD         | ±5 mA cont., ±20 mA pulse |

- Supply: AD5204/AD5206 data sheet (Analog Devices, Rev. D), Features: "+2.7 V to +5.5 V
  single-supply operation; ±2.7 V dual-supply operation".
- Terminals within VSS … VDD: the family's rule, stated by Analog Devices (EngineerZone DOC-13114,
  on the AD5222: "V_a,b,w can go from Vss to Vdd"; terminals beyond the rails forward-bias the
  ESD diodes, whose current must stay below 5 mA).
- Wiper current: the data sheet gives no number; its ADI siblings do (AD8400/AD8402/AD8403 data
  sheet Rev. E, Table 5: I_WB, I_WA pulsed ±20 mA, continuous ±5 mA; AD5245 Rev. B, Table 4:
  terminal current pulsed ±20 mA, continuous ±5 mA), and the same EngineerZone answer limits the
  wiper at code 0 (R_W alone) to 20 mA. A settle holds its levels for whole readings, so the
  continuous figure is the one every guard applies.

Why `worst_case` is a guarantee, not a sample (the argument its tests check by brute force):

- Scaled coordinates. Give every node a gain scale S: 1 at the sources, |A|·S(in) at an
  amplifier's output, and the same S at both ends of a conductance (`gain_scales` refuses a
  network where that is impossible). With W = V/S and currents J = I/S, a conductance g between
  two nodes of one scale still carries g·ΔW; a reciprocal amplifier (VCVS out = A·in, CCCS drawing
  I_out/A from its input: backward gain −1/A, flipped with A) becomes an ideal 1:±1 transformer
  (W_out = ±W_in, J_in = ±J_out); a diode clamp stays a monotone two-terminal element towards its
  offset v/S; a nudge I becomes I/S. The circuit is then passive, its equilibrium minimises a
  convex energy (conductances' g·ΔW², the diodes' co-contents, minus the nudges' J·W).
- No nudge: replacing every free W by its clip to [−M, M], M the largest |fixed potential|
  (sources' |V|, clamps' |v|/S, ground), lowers no term: clipping is odd and 1-Lipschitz, so
  each |W_a ∓ W_b| can only shrink, the transformer constraints survive, and each diode's
  co-content decreases towards its minimum inside [−M, M]. The unique minimiser therefore lies in
  [−M, M]: every node's |V| ≤ S·M, for any conductances, any source signs and any polarities.
- Nudges: dW/dJ = H⁻¹ with H the signed Laplacian of the transformed circuit plus the diodes'
  non-negative incremental conductances. Its inverse is bounded entry-wise by the unsigned
  version's (Neumann series), whose column i peaks at i, and whose diagonal only grows when
  diodes are removed and conductances lowered to g_min (Rayleigh monotonicity). So
  |ΔW_j| ≤ Σ_i R_ii·|I_i|/S_i with R the resistance matrix of the transformed graph at g_min.
- A pot between nodes a and b then sees terminals within ±B_a, ±B_b and a wiper current at most
  g_max·(B_a + B_b).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hil.network import GROUND, Network


class RatingError(ValueError):
    """A part would be, or was, taken beyond a rating; or no bound can be given."""


@dataclass(frozen=True)
class PartRatings:
    """A pot part's datasheet ratings (see the module's table and sources)."""

    part: str
    min_span: float  # V, VDD − VSS at least
    max_span: float  # V, VDD − VSS at most
    max_vdd: float  # V
    min_vss: float  # V (dual supply)
    continuous_current: float  # A, through the wiper
    pulsed_current: float  # A
    source: str


_AD520X = dict(
    min_span=2.7,
    max_span=5.5,
    max_vdd=5.5,
    min_vss=-2.75,  # dual ±2.7 V operation (a little margin for a ±2.75 V pair of regulators)
    continuous_current=5e-3,
    pulsed_current=20e-3,
    source="AD5204/AD5206 Rev. D (supply); AD8400 Rev. E Table 5, AD5245 Rev. B Table 4 (wiper current)",
)
PARTS: dict[str, PartRatings] = {
    "ad5204": PartRatings("ad5204", **_AD520X),  # type: ignore[arg-type]
    "ad5206": PartRatings("ad5206", **_AD520X),  # type: ignore[arg-type]
}


@dataclass(frozen=True)
class PotRatings:
    """What one bank's pots may see: terminals within [v_low, v_high], |wiper current| ≤ current."""

    v_low: float
    v_high: float
    current: float


def supply_refusal(part: str, supply: object) -> str | None:
    """Why `supply` ([VSS, VDD] in V) is not one this part runs on, or None."""
    ratings = PARTS[part]
    if (
        not isinstance(supply, list)
        or len(supply) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in supply)
        or not all(np.isfinite(float(v)) for v in supply)
    ):
        return "a list [VSS, VDD] of two numbers in V, e.g. [0, 5] (single) or [-2.5, 2.5] (dual)"
    vss, vdd = float(supply[0]), float(supply[1])
    span = vdd - vss
    if not (ratings.min_vss <= vss <= 0.0 < vdd <= ratings.max_vdd) or not (
        ratings.min_span <= span <= ratings.max_span
    ):
        return (
            f"[VSS, VDD] with VSS from {ratings.min_vss:g} to 0 V, VDD up to {ratings.max_vdd:g} V and "
            f"VDD − VSS from {ratings.min_span:g} to {ratings.max_span:g} V ({ratings.part}: +2.7…+5.5 V "
            "single or ±2.7 V dual)"
        )
    return None


def pot_ratings(part: str, supply: Sequence[float], wiper_current: float = 0.0) -> PotRatings:
    """A bank's ratings: terminals inside its supply, the part's continuous wiper current unless
    the config gives a (checked) one."""
    ratings = PARTS[part]
    return PotRatings(float(supply[0]), float(supply[1]), wiper_current or ratings.continuous_current)


# ---------------------------------------------------------------------------------------- stress
@dataclass(frozen=True)
class PotStress:
    """Terminal voltages and wiper current of every pot (network edge order)."""

    v_a: np.ndarray
    v_b: np.ndarray
    current: np.ndarray  # A, from a to b


def stress(network: Network, volts: np.ndarray, conductances: np.ndarray) -> PotStress:
    """Every pot's terminals and current for node voltages `volts` (network order) and the
    conductances the pots hold (signs are the sources' and amplifiers', not the pots')."""
    a, b = network.edge_endpoints
    v_a, v_b = np.asarray(volts, float)[a], np.asarray(volts, float)[b]
    return PotStress(v_a, v_b, np.abs(np.asarray(conductances, float)) * (v_a - v_b))


def violations(
    network: Network,
    pots: Mapping[str, tuple[str, int]],
    ratings: Mapping[str, PotRatings],
    found: PotStress,
    what: str,
) -> list[str]:
    """One line per pot beyond a rating in `found` ("predicted", "measured"): pot, node, value, rating."""
    out: list[str] = []
    for k, edge in enumerate(network.conductances):
        bank, channel = pots[edge.name]
        r = ratings[bank]
        for node, v in ((edge.a, found.v_a[k]), (edge.b, found.v_b[k])):
            if not r.v_low <= v <= r.v_high:
                out.append(
                    f"pot {edge.name} ({bank}.{channel}): {what} {v:.4g} V at node {node}, outside its "
                    f"supply [{r.v_low:g}, {r.v_high:g}] V"
                )
        i = float(found.current[k])
        if abs(i) > r.current:
            out.append(
                f"pot {edge.name} ({bank}.{channel}): {what} wiper current {i:.4g} A between nodes "
                f"{edge.a} and {edge.b}, above its rating {r.current:g} A"
            )
    return out


# ---------------------------------------------------------------------------------------- worst case
def gain_scales(network: Network) -> dict[str, float]:
    """Each free node's gain scale S (see the module): |A|·S(in) behind an amplifier, equal across
    a conductance between free nodes, 1 at the start of each chain (a source is a fixed potential:
    it fits any scale, so a bias may feed any layer). Raises `RatingError` when the network has no
    such scales or an amplifier is not reciprocal: no bound is then given, and a bench refuses it."""
    sources = {s.node for s in network.sources}
    for amp in network.amplifiers:
        if not amp.backward_follows_sign or abs(amp.backward_gain * amp.gain + 1.0) > 1e-9:
            raise RatingError(
                f"network '{network.name}': amplifier {amp.name} is not reciprocal (backward gain "
                f"{amp.backward_gain:g} with forward gain {amp.gain:g}): no worst case can be bounded on a "
                "bench; train the corrected circuit (builder xor, not seed-xor)"
            )
        if amp.node_in in sources:
            raise RatingError(
                f"network '{network.name}': amplifier {amp.name} amplifies a source's node {amp.node_in}: "
                "no worst case is bounded for that on a bench"
            )
    links: list[tuple[str, str, float, str]] = [
        (c.a, c.b, 1.0, c.name) for c in network.conductances if not {c.a, c.b} & (sources | {GROUND})
    ]
    links += [(a.node_in, a.node_out, abs(a.gain), a.name) for a in network.amplifiers]
    neighbours: dict[str, list[tuple[str, float, str]]] = {}
    for x, y, factor, name in links:
        neighbours.setdefault(x, []).append((y, factor, name))
        neighbours.setdefault(y, []).append((x, 1.0 / factor, name))
    scale: dict[str, float] = {}
    for start in network.nodes:
        if start in sources or start in scale:
            continue
        scale[start] = 1.0
        group, frontier = [start], [start]
        while frontier:
            here = frontier.pop()
            for there, factor, name in neighbours.get(here, []):
                want = scale[here] * factor
                if there not in scale:
                    scale[there] = want
                    group.append(there)
                    frontier.append(there)
                elif not np.isclose(scale[there], want, rtol=1e-9):
                    raise RatingError(
                        f"network '{network.name}': {name} joins nodes of different amplifier gains "
                        f"({here}, {there}): no worst case can be bounded on a bench"
                    )
        least = min(scale[n] for n in group)  # the chain's first layer at scale 1
        for n in group:
            scale[n] /= least
    return scale


def worst_case(
    network: Network, max_source_volts: float, g_low: float, max_nudge: float, g_high: float | None = None
) -> dict[str, float]:
    """The largest |V| any node can reach (see the module's argument): any conductances of at
    least `g_low` (S), sources up to ±`max_source_volts`, either polarity of every amplifier, and
    nudges of at most `max_nudge` (A) at every nudge node at once. With `g_high` (S), the most
    any conductance can be, the clamps tighten it (`_clamp_bound`)."""
    scale = gain_scales(network)
    sources = {s.node for s in network.sources}
    volts = abs(max_source_volts)
    fixed = [0.0]  # ground, and the loads' far end
    for c in network.conductances:  # a source seen from the free node it feeds
        for here, there in ((c.a, c.b), (c.b, c.a)):
            if here in sources and there in scale:
                fixed.append(volts / scale[there])
    for clamp in network.clamps:
        fixed += [abs(clamp.v_high) / scale[clamp.node], abs(clamp.v_low) / scale[clamp.node]]
    m = max(fixed)
    if g_high is not None:
        m = min(m, _clamp_bound(network, scale, sources, m, g_high))
    widening = _nudge_widening(network, g_low, max_nudge, scale)
    bounds = {node: scale[node] * (m + widening) for node in scale}
    return bounds | {node: volts for node in sources}


def _clamp_bound(
    network: Network, scale: dict[str, float], sources: set[str], m: float, g_high: float
) -> float:
    """A bound below m on every free |W| when the sources feed only clamped nodes (H3's bench
    circuit: the hidden nodes hold the amplifiers' inputs near ±0.7 V, so |A|·m overstates the
    amplifier outputs). Without nudges, take the free node of largest |W| = W* > every clamp's
    |offset|. KCL there: its conductances to free nodes carry current towards it (they sit at
    most at W*), its diode draws I_D(W* − offset) away, so if it is not clamped all its
    neighbours sit at W* too; following them, a free group with no clamp would reach a source at
    W* (≤ m, nothing to gain) unless every free node a source feeds is clamped. So the largest
    |W| is at a clamped node k (or its amplifier's output, tied to it), where
    I_D(W* − offset) ≤ G_k·(m − W*), G_k = g_high × the conductances from k to sources: W* is
    at most the root of I_D(W − offset) = G_k·(m − W). The diode is taken at half the model's IS
    (its temperature scaling) and the clamp's weaker side. The nudge widening adds as before."""
    fed = {
        c.b if c.a in sources else c.a for c in network.conductances if (c.a in sources) != (c.b in sources)
    }
    clamps = {c.node: min(abs(c.v_high), abs(c.v_low)) for c in network.clamps}
    if not fed or not fed <= set(clamps) or any(scale[n] != 1.0 for n in fed):
        return m
    model = network.diode_model
    thermal = 1.380649e-23 * (network.temperature + 273.15) / 1.602176634e-19
    slope = model.emission_coefficient * thermal
    worst = 0.0
    for node in fed:
        g = g_high * sum(
            (c.a == node and c.b in sources) or (c.b == node and c.a in sources) for c in network.conductances
        )
        low, high = clamps[node], m
        for _ in range(200):  # bisection: the diode's current rises, the feed's falls with W
            mid = 0.5 * (low + high)
            diode = 0.5 * model.saturation_current * np.expm1(min((mid - clamps[node]) / slope, 700.0))
            low, high = (mid, high) if diode < g * (m - mid) else (low, mid)
        worst = max(worst, high)
    return worst


def _nudge_widening(network: Network, g_low: float, max_nudge: float, scale: dict[str, float]) -> float:
    """What the nudges can add to any node's |W|: Σ_i R_ii·max_nudge/S_i over the nudge nodes i,
    R of the transformed graph (amplifier ends merged, sources and ground fixed) with every
    trainable conductance at `g_low`, the loads as they are and no diodes."""
    parent = {n: n for n in network.nodes}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for amp in network.amplifiers:
        parent[root(amp.node_out)] = root(amp.node_in)
    fixed = {root(s.node) for s in network.sources}
    free = sorted({root(n) for n in network.nodes} - fixed)
    where = {n: k for k, n in enumerate(free)}
    lap = np.zeros((len(free), len(free)))

    def join(x: str | None, y: str | None, g: float) -> None:
        i = where.get(x) if x is not None else None
        j = where.get(y) if y is not None else None
        if i is not None:
            lap[i, i] += g
        if j is not None:
            lap[j, j] += g
        if i is not None and j is not None:
            lap[i, j] -= g
            lap[j, i] -= g

    for c in network.conductances:
        ends = [None if n == GROUND else root(n) for n in (c.a, c.b)]
        join(ends[0], ends[1], g_low)
    for load in network.loads:
        join(root(load.node), None, load.conductance)
    if not free or max_nudge == 0.0:
        return 0.0
    try:
        resistance = np.diag(np.linalg.inv(lap))
    except np.linalg.LinAlgError:
        raise RatingError(
            f"network '{network.name}': a part of it reaches no source but through diodes: no worst case "
            "can be bounded for a nudge there on a bench"
        ) from None
    total = sum(
        float(resistance[where[root(n)]]) * max_nudge / scale[n]
        for n in network.nudge_nodes
        if root(n) in where
    )
    return total


def worst_case_violations(
    network: Network,
    pots: Mapping[str, tuple[str, int]],
    ratings: Mapping[str, PotRatings],
    bounds: Mapping[str, float],
    g_high: Mapping[str, float],
) -> list[str]:
    """One line per pot whose worst case (`bounds` per node, `g_high` per edge) exceeds a rating."""
    out: list[str] = []
    for edge in network.conductances:
        bank, channel = pots[edge.name]
        r = ratings[bank]
        b_a, b_b = (0.0 if n == GROUND else bounds[n] for n in (edge.a, edge.b))
        for node, b in ((edge.a, b_a), (edge.b, b_b)):
            if -b < r.v_low or b > r.v_high:
                out.append(
                    f"pot {edge.name} ({bank}.{channel}) can see ±{b:.3g} V at node {node}, outside its "
                    f"supply [{r.v_low:g}, {r.v_high:g}] V"
                )
        worst = g_high[edge.name] * (b_a + b_b)
        if worst > r.current:
            out.append(
                f"pot {edge.name} ({bank}.{channel}) can carry {worst:.3g} A (g_max "
                f"{g_high[edge.name]:.3g} S × {b_a + b_b:.3g} V between nodes {edge.a} and {edge.b}), above "
                f"its rating {r.current:g} A"
            )
    return out
