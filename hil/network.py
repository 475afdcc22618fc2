"""The network description: a small, backend-neutral picture of a trainable circuit.

Every backend (ngspice, the numerical twin, a bench) realises the same `Network`. Node names are
strings; "0" is ground. Sources and amplifiers are ground-referenced, as on every circuit the
builders make and on a bench, where SMUs share a common low terminal.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

GROUND = "0"
# ‖t − y‖ below which a constant-current nudge's β stops growing, V: far below any reading's
# resolution, so only a sample exactly at its target (no nudge at all) meets it.
NUDGE_FLOOR = 1e-15
# A block of fewer edges than this is summed edge by edge: a matrix product's per-call cost is more.
MIN_BLOCK_EDGES = 256
_NODE = re.compile(r"[a-z0-9_]+")
_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _frozen(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Memoised results are shared between callers: make them read-only."""
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


@dataclass(frozen=True)
class EdgeBlock:
    """Conductances joining every node of `rows` to every node of `cols` once: edges[i, j] is the
    conductance with a = rows[i] and b = cols[j] (node indices, as `Network.edge_endpoints`)."""

    rows: np.ndarray
    cols: np.ndarray
    edges: np.ndarray  # [len(rows), len(cols)]


@dataclass(frozen=True)
class DiodeModel:
    """Level-1 junction diode, named as in a SPICE `.model` card."""

    name: str = "dclamp"
    saturation_current: float = 1e-6  # IS, A
    emission_coefficient: float = 2.0  # N
    nominal_temperature: float = 27.0  # TNOM, degrees C (ngspice's default)


@dataclass(frozen=True)
class Conductance:
    """A trainable two-terminal conductance between nodes `a` and `b`.

    `signed_by` names a voltage source or amplifier whose sign follows the sign of this
    conductance: the seed's trick for negative weights (a negative layer-1 weight flips its input
    source, a negative layer-2 weight flips its amplifier's gain). None: the conductance is
    always positive.
    """

    name: str
    a: str
    b: str
    layer: int
    signed_by: str | None = None


@dataclass(frozen=True)
class VoltageSource:
    """A ground-referenced voltage source: an input (sample value × `scale`) or a fixed bias."""

    name: str
    node: str
    value: float = 0.0  # volts, used when input_index is None
    input_index: int | None = None
    scale: float = 1.0  # for duplicated inputs (x, -x)


@dataclass(frozen=True)
class DiodeClamp:
    """Two antiparallel diodes to offset sources: conducts above `v_high`, below `v_low`."""

    name: str
    node: str
    v_high: float = 0.3
    v_low: float = -0.3


@dataclass(frozen=True)
class Amplifier:
    """Bidirectional amplifier: VCVS out = gain·V(in); CCCS at `in` driven by the VCVS current.

    The CCCS sinks `backward_gain`·I(E) from `node_in` (SPICE `F in 0 E backward_gain`, I(E) the
    current into the VCVS's + terminal). Reciprocal (energy-based): backward_gain = -1/gain.
    `backward_follows_sign`: when the amplifier's gain is flipped for a negative weight, flip the
    backward gain too (reciprocal circuits do; the seed does not).
    """

    name: str
    node_in: str
    node_out: str
    gain: float
    backward_gain: float
    backward_follows_sign: bool = True


@dataclass(frozen=True)
class Load:
    """A fixed conductance from a node to ground."""

    name: str
    node: str
    conductance: float


@dataclass(frozen=True)
class Output:
    """An output y = V(plus) - V(minus); `minus` None means a single-ended output."""

    plus: str
    minus: str | None = None


@dataclass
class Network:
    """A circuit to train. Build one with `hil.builders`; never mutate a built network."""

    name: str
    conductances: list[Conductance]
    sources: list[VoltageSource]
    clamps: list[DiodeClamp] = field(default_factory=list)
    amplifiers: list[Amplifier] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    diode_model: DiodeModel = field(default_factory=DiodeModel)
    temperature: float = 27.0  # circuit temperature, degrees C
    n_inputs: int = 0
    # +1: the nudge current is injected toward the target (EqProp). -1: the seed's wiring,
    # which draws it out of the output and pushes y away from the target.
    nudge_sign: float = 1.0
    # Per-layer factor that turns the raw estimator into the gradient: the product of A² over the
    # reciprocal amplifiers between a layer and the output. {} means 1 for every layer.
    layer_compensation: dict[int, float] = field(default_factory=dict)
    # Seed flaw, reproduced only in the seed-faithful circuit: conductance k is updated with the
    # voltage drop of conductance estimator_pairing[k]. None means the identity.
    estimator_pairing: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self._check()

    # ------------------------------------------------------------------ derived views
    # Cached: a built network is never mutated, and the training loop asks for these per solve.
    @cached_property
    def nodes(self) -> list[str]:
        """Every non-ground node, in a fixed order: the order of State.voltages."""
        seen: dict[str, None] = {}
        for s in self.sources:
            seen[s.node] = None
        for g in self.conductances:
            seen[g.a] = None
            seen[g.b] = None
        for c in self.clamps:
            seen[c.node] = None
        for a in self.amplifiers:
            seen[a.node_in] = None
            seen[a.node_out] = None
        for load in self.loads:
            seen[load.node] = None
        for o in self.outputs:
            seen[o.plus] = None
            if o.minus is not None:
                seen[o.minus] = None
        seen.pop(GROUND, None)
        return list(seen)

    @cached_property
    def node_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.nodes)}

    @cached_property
    def edge_endpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices into `nodes` of every conductance's (a, b)."""
        idx = self.node_index
        return (
            np.array([idx[g.a] for g in self.conductances], dtype=int),
            np.array([idx[g.b] for g in self.conductances], dtype=int),
        )

    @cached_property
    def clamp_map(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per clamp: node index, v_high, v_low."""
        return (
            np.array([self.node_index[c.node] for c in self.clamps], dtype=int),
            np.array([c.v_high for c in self.clamps]),
            np.array([c.v_low for c in self.clamps]),
        )

    @cached_property
    def amplifier_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """Per amplifier: indices of its input and output nodes."""
        return (
            np.array([self.node_index[a.node_in] for a in self.amplifiers], dtype=int),
            np.array([self.node_index[a.node_out] for a in self.amplifiers], dtype=int),
        )

    @cached_property
    def _signers(self) -> tuple[np.ndarray, np.ndarray]:
        """Per edge, the index of the source (or amplifier) its sign flips, else -1."""
        src = {s.name: i for i, s in enumerate(self.sources)}
        amp = {a.name: i for i, a in enumerate(self.amplifiers)}
        return (
            np.array([src.get(g.signed_by or "", -1) for g in self.conductances], dtype=int),
            np.array([amp.get(g.signed_by or "", -1) for g in self.conductances], dtype=int),
        )

    @cached_property
    def signed(self) -> np.ndarray:
        """Which conductances may be negative (their sign flips a source or an amplifier)."""
        return np.array([g.signed_by is not None for g in self.conductances], dtype=bool)

    @property
    def edge_names(self) -> list[str]:
        return [g.name for g in self.conductances]

    @property
    def layers(self) -> np.ndarray:
        return np.array([g.layer for g in self.conductances], dtype=int)

    @property
    def nudge_nodes(self) -> list[str]:
        """Nodes that can receive a nudge current: every output terminal."""
        out: list[str] = []
        for o in self.outputs:
            out.append(o.plus)
            if o.minus is not None:
                out.append(o.minus)
        return out

    def compensation(self) -> np.ndarray:
        """Per-edge factor from raw estimator to gradient."""
        return self._compensation

    @cached_property
    def _compensation(self) -> np.ndarray:
        # Asked for on every update: built once (a Python loop over 161,040 edges costs 20 ms).
        factors = np.array([self.layer_compensation.get(g.layer, 1.0) for g in self.conductances])
        factors.setflags(write=False)
        return factors

    @cached_property
    def edge_blocks(self) -> tuple[list[EdgeBlock], np.ndarray]:
        """The conductances as complete bipartite blocks (every `a` of a set of nodes joined once to
        every `b` of another: a layer and its sources) and the rest (edge indices). Sums over the
        edges of a block are matrix products over its nodes instead of gathers over its edges."""
        a, b = self.edge_endpoints
        order = np.lexsort((b, a))
        a_sorted, b_sorted = a[order], b[order]
        starts = np.flatnonzero(np.r_[True, a_sorted[1:] != a_sorted[:-1]]) if len(a) else order
        ends = np.r_[starts[1:], len(a)]
        groups: dict[bytes, list[int]] = {}
        rest: list[np.ndarray] = []
        width = dict(zip(starts.tolist(), (ends - starts).tolist(), strict=True))
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            cols = b_sorted[start:end]
            if np.any(cols[1:] == cols[:-1]):  # parallel edges: no block has room for them
                rest.append(order[start:end])
            else:
                groups.setdefault(cols.tobytes(), []).append(start)
        blocks: list[EdgeBlock] = []
        for first in groups.values():
            size = width[first[0]]
            if len(first) * size < MIN_BLOCK_EDGES:
                rest.extend(order[s : s + size] for s in first)
                continue
            edges = np.stack([order[s : s + size] for s in first])
            blocks.append(EdgeBlock(a_sorted[first], b_sorted[first[0] : first[0] + size], edges))
        left = np.sort(np.concatenate(rest)) if rest else np.zeros(0, dtype=int)
        return blocks, left

    @cached_property
    def pairing(self) -> np.ndarray:
        """Per conductance, the conductance whose voltage drop its estimate uses."""
        n = len(self.conductances)
        return np.arange(n) if self.estimator_pairing is None else np.array(self.estimator_pairing)

    @cached_property
    def _source_map(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source voltage = fixed + scale·inputs[index] (index 0 and scale 0 for biases)."""
        fixed = np.array([s.value if s.input_index is None else 0.0 for s in self.sources])
        index = np.array([s.input_index or 0 for s in self.sources], dtype=int)
        scale = np.array([0.0 if s.input_index is None else s.scale for s in self.sources])
        return fixed, index, scale

    def source_values(self, inputs: np.ndarray) -> np.ndarray:
        """Source voltages for one sample, before any sign flips from signed conductances."""
        inputs = np.asarray(inputs, dtype=float)
        if inputs.shape != (self.n_inputs,):
            raise ValueError(
                f"sample has {inputs.shape[0] if inputs.ndim else 0} inputs, network "
                f"'{self.name}' takes {self.n_inputs}: check the dataset against the circuit"
            )
        fixed, index, scale = self._source_map
        return fixed + scale * inputs[index] if self.n_inputs else fixed.copy()

    @property
    def source_map(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per source (constant, input index, scale): voltage = constant + scale·inputs[index] before
        sign flips, for computing many samples at once."""
        return self._source_map

    def sign_multipliers(self, conductances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per-source, per-amplifier) multipliers ±1 from the signs of signed conductances."""
        negative = np.asarray(conductances) < 0
        key = negative.tobytes()
        if key in self._sign_memo:  # the training loop asks for the same signs thousands of times
            return self._sign_memo[key]
        by_src, by_amp = self._signers
        # Each negative weight flips its element once: the sign is the parity of the flips.
        flips_src = np.bincount(by_src[negative & (by_src >= 0)], minlength=len(self.sources))
        flips_amp = np.bincount(by_amp[negative & (by_amp >= 0)], minlength=len(self.amplifiers))
        result = _frozen(1.0 - 2.0 * (flips_src % 2), 1.0 - 2.0 * (flips_amp % 2))
        if len(self._sign_memo) < 1024:
            self._sign_memo[key] = result
        return result

    @cached_property
    def _sign_memo(self) -> dict[bytes, tuple[np.ndarray, np.ndarray]]:
        return {}

    def amplifier_gains(self, conductances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(forward, backward) gains of every amplifier for these (signed) conductances."""
        key = (np.asarray(conductances) < 0).tobytes()
        if key not in self._gain_memo:
            _, amp_sign = self.sign_multipliers(conductances)
            gain, backward, follows = self._amplifier_table
            if len(self._gain_memo) >= 1024:
                self._gain_memo.clear()
            self._gain_memo[key] = _frozen(gain * amp_sign, backward * np.where(follows, amp_sign, 1.0))
        return self._gain_memo[key]

    @cached_property
    def _gain_memo(self) -> dict[bytes, tuple[np.ndarray, np.ndarray]]:
        return {}

    @cached_property
    def _amplifier_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.array([a.gain for a in self.amplifiers], dtype=float),
            np.array([a.backward_gain for a in self.amplifiers], dtype=float),
            np.array([a.backward_follows_sign for a in self.amplifiers], dtype=bool),
        )

    @cached_property
    def _output_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.node_index
        plus = np.array([idx[o.plus] for o in self.outputs], dtype=int)
        minus = np.array([idx[o.minus] if o.minus is not None else 0 for o in self.outputs], dtype=int)
        doubled = np.array([o.minus is not None for o in self.outputs], dtype=float)
        return plus, minus, doubled

    def output_voltages(self, voltages: np.ndarray) -> np.ndarray:
        """Outputs y from node voltages [..., nodes] (one sample, or a batch)."""
        plus, minus, doubled = self._output_index
        return voltages[..., plus] - doubled * voltages[..., minus]

    @cached_property
    def _nudge_map(self) -> np.ndarray:
        """[outputs, nudge nodes]: +1 into V+, −1 out of V− (doubled outputs)."""
        index = {node: k for k, node in enumerate(self.nudge_nodes)}
        m = np.zeros((len(self.outputs), len(index)))
        for j, o in enumerate(self.outputs):
            m[j, index[o.plus]] += 1.0
            if o.minus is not None:
                m[j, index[o.minus]] -= 1.0
        return m

    def nudge_matrix(self, targets: np.ndarray, outputs: np.ndarray, beta: float | np.ndarray) -> np.ndarray:
        """`nudge_currents` for a batch: [samples, nudge nodes] in `nudge_nodes` order. `beta` is
        one strength for every sample, or one per sample ([samples], a constant-current nudge's)."""
        b = np.asarray(beta, dtype=float)
        drive = (
            self.nudge_sign
            * (b[:, None] if b.ndim else b)
            * (np.asarray(targets, float) - np.asarray(outputs, float))
        )
        return drive @ self._nudge_map

    def constant_current_beta(
        self, targets: np.ndarray, outputs: np.ndarray, current: float
    ) -> float | np.ndarray:
        """β that makes the nudge's current vector (one current per output, β·(t − y)) have norm
        `current` (A): β = current/‖t − y‖, per sample for a batch ([samples]).

        A sample exactly at its target gets no nudge whatever β is; its β is taken at
        ‖t − y‖ = `NUDGE_FLOOR` so it stays finite (its estimate is then ~0, as its gradient)."""
        error = np.asarray(targets, float) - np.asarray(outputs, float)
        norm = np.maximum(np.linalg.norm(error, axis=-1), NUDGE_FLOOR)
        beta = current / norm
        return float(beta) if np.ndim(beta) == 0 else beta

    def largest_nudge(self, drives: np.ndarray) -> float:
        """The largest current any nudge node carries when each output's nudge current is at most
        `drives` [outputs] in size (A), whatever their signs: a node's current is a signed sum of
        outputs' currents (V+ in, V− out)."""
        return float(np.max(np.abs(self._nudge_map).T @ np.asarray(drives, float), initial=0.0))

    def nudge_peak(self, current: float) -> float:
        """The largest current any nudge node carries when the outputs' nudge currents have norm
        `current`: each node's current is a signed sum of outputs' currents (V+ in, V− out), at
        most the norm times that node's column norm (Cauchy–Schwarz)."""
        return current * float(np.max(np.linalg.norm(self._nudge_map, axis=0), initial=0.0))

    def nudge_currents(self, targets: np.ndarray, outputs: np.ndarray, beta: float) -> dict[str, float]:
        """Currents injected at the output terminals for nudge strength `beta` (A/V).

        beta·(t - y)·nudge_sign into V+, and the same drawn from V- for doubled outputs.
        """
        drive = self.nudge_sign * beta * (np.asarray(targets, float) - np.asarray(outputs, float))
        currents: dict[str, float] = {}
        for o, i in zip(self.outputs, drive, strict=True):
            currents[o.plus] = currents.get(o.plus, 0.0) + float(i)
            if o.minus is not None:
                currents[o.minus] = currents.get(o.minus, 0.0) - float(i)
        return currents

    # ------------------------------------------------------------------ validation
    def rewired(self, name: str, driven: list[tuple[str, str]], inverted: frozenset[str]) -> Network:
        """The same parts with a voltage source (name, node) on each `driven` node, input k the
        level of the k-th, and the named amplifiers inverted (their backward gain with them where
        it follows the sign): the board as a bench wires it, for a twin to solve."""
        amplifiers = []
        for a in self.amplifiers:
            sign = -1.0 if a.name in inverted else 1.0
            back = a.backward_gain * (sign if a.backward_follows_sign else 1.0)
            amplifiers.append(
                Amplifier(a.name, a.node_in, a.node_out, a.gain * sign, back, a.backward_follows_sign)
            )
        return Network(
            name=name,
            conductances=[Conductance(c.name, c.a, c.b, c.layer) for c in self.conductances],
            sources=[VoltageSource(source, node, input_index=k) for k, (source, node) in enumerate(driven)],
            clamps=self.clamps,
            amplifiers=amplifiers,
            loads=self.loads,
            outputs=self.outputs,
            diode_model=self.diode_model,
            temperature=self.temperature,
            n_inputs=len(driven),
        )

    def _check(self) -> None:
        elements: list[Conductance | VoltageSource | DiodeClamp | Amplifier | Load] = [
            *self.conductances,
            *self.sources,
            *self.clamps,
            *self.amplifiers,
            *self.loads,
        ]
        dupes = sorted(n for n, count in Counter(x.name for x in elements).items() if count > 1)
        if dupes:
            raise ValueError(f"network '{self.name}': element names used twice: {dupes}")
        driven = Counter([s.node for s in self.sources] + [a.node_out for a in self.amplifiers])
        clash = sorted(n for n, count in driven.items() if count > 1 or n == GROUND)
        if clash:
            raise ValueError(f"network '{self.name}': nodes driven by two sources: {clash}")
        bad = [n for n in self.nodes if not _NODE.fullmatch(n)]
        if bad:
            raise ValueError(f"network '{self.name}': node names must be lower-case [a-z0-9_]: {bad}")
        named: list[tuple[Conductance | VoltageSource | Load, str]] = [
            *((g, "R") for g in self.conductances),
            *((s, "V") for s in self.sources),
            *((ld, "R") for ld in self.loads),
        ]
        for x, prefix in named:
            if not (x.name[:1].upper() == prefix and _ELEMENT.fullmatch(x.name)):
                raise ValueError(f"element name {x.name!r} must start with {prefix} and use [A-Za-z0-9_]")
        signers = {s.name for s in self.sources} | {a.name for a in self.amplifiers}
        for g in self.conductances:
            if g.a == g.b:
                raise ValueError(f"conductance {g.name} connects node {g.a} to itself")
            if g.signed_by is not None and g.signed_by not in signers:
                raise ValueError(f"conductance {g.name} is signed by unknown element {g.signed_by}")
        for i in range(self.n_inputs):
            if not any(s.input_index == i for s in self.sources):
                raise ValueError(f"network '{self.name}': input {i} drives no source")
        if self.estimator_pairing is not None and sorted(self.estimator_pairing) != list(
            range(len(self.conductances))
        ):
            raise ValueError("estimator_pairing must be a permutation of the conductances")
        if not self.outputs:
            raise ValueError(f"network '{self.name}' has no output")
        floating = self._floating_nodes()
        if floating:
            raise ValueError(
                f"network '{self.name}': nodes {floating} have no DC path to ground or a source: connect them"
            )

    def _floating_nodes(self) -> list[str]:
        """Nodes that nothing ties to a fixed potential: their voltage would be undefined."""
        neighbours: dict[str, set[str]] = {n: set() for n in self.nodes}
        for g in self.conductances:
            neighbours[g.a].add(g.b)
            neighbours[g.b].add(g.a)
        anchored = {s.node for s in self.sources} | {a.node_out for a in self.amplifiers}
        anchored |= {c.node for c in self.clamps} | {ld.node for ld in self.loads}
        reached, frontier = set(anchored), list(anchored)
        while frontier:
            for n in neighbours[frontier.pop()] - reached:
                reached.add(n)
                frontier.append(n)
        return sorted(set(self.nodes) - reached)
