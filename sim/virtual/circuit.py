"""The emulated crossbar: the network's fixed parts (clamps, amplifiers, loads) wired to the
instruments' state, solved by the numerical twin whenever an instrument is read after a change.

What an SMU forces and reads depends on the relays closed and the pot codes written: an SMU
reaches a node only through its hard-wired connection or a closed crosspoint; a trainable
conductance is the conductance of its pot channel at the written code; an amplifier's polarity
follows its inverting relay. Compliance is modelled as a flag plus a folded-back reading (a
voltage source over its current limit reads a voltage scaled down by limit/|I|), enough for the
bench to see a trip; the circuit is not re-solved at the limit.

With an SMU error model (`sim.noise.BenchErrors`, from the bench config's `[bench] noise`), every
reading is a moment of the bench's model time (each takes its channel's NPLC): the forcing
channels' levels carry their source errors and noise at that moment, the circuit is solved again
for it, and the value read goes through the reading channel's measure errors.

Every solve is also what the pots see at that moment: each pot's terminal voltages and wiper
current are recorded (`pots`), so tests can hold a whole run to the parts' ratings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hil.network import Network
from sim.noise import BenchErrors
from sim.twin import TwinBackend
from sim.virtual.state import BenchState, SmuState


@dataclass(frozen=True)
class Wiring:
    """How the instruments meet the board."""

    hardwired: dict[str, str] = field(default_factory=dict)  # SMU channel key -> node
    # (matrix, crosspoint) -> ("smu", channel key, node) or ("invert", amplifier name, "")
    crosspoints: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)
    pots: dict[str, tuple[str, int]] = field(default_factory=dict)  # edge -> (bank, channel)
    pot_conductance: Callable[[str, int, int], float] = lambda bank, channel, code: 1e-3


# Solves recorded per run at most (a few hundred bytes each); beyond, only the extremes are kept.
MAX_POT_RECORDS = 100_000


@dataclass
class PotRecord:
    """Every pot at every solve: terminal voltages at ends a and b and the current a → b (rows:
    solves; columns: the network's edges), and the extremes over all solves, kept past the cap."""

    v_a: list[np.ndarray] = field(default_factory=list)
    v_b: list[np.ndarray] = field(default_factory=list)
    current: list[np.ndarray] = field(default_factory=list)
    solves: int = 0
    largest_volts: float = 0.0
    largest_current: float = 0.0

    def add(self, v_a: np.ndarray, v_b: np.ndarray, current: np.ndarray) -> None:
        self.solves += 1
        self.largest_volts = max(self.largest_volts, float(np.max(np.abs([v_a, v_b]), initial=0.0)))
        self.largest_current = max(self.largest_current, float(np.max(np.abs(current), initial=0.0)))
        if len(self.v_a) < MAX_POT_RECORDS:
            self.v_a.append(v_a)
            self.v_b.append(v_b)
            self.current.append(current)


class EmulatedCircuit:
    def __init__(
        self, network: Network, wiring: Wiring, bench: BenchState, errors: BenchErrors | None = None
    ) -> None:
        self.network = network
        self.wiring = wiring
        self.bench = bench
        self.errors = errors
        self._solved_version = -1
        self._readings: dict[str, tuple[float, float, bool]] = {}
        self._twins: dict[tuple, tuple[TwinBackend, list[str]]] = {}
        self.solves = 0
        self.pots = PotRecord()

    def reading(self, key: str) -> tuple[float, float, bool]:
        """(V at the channel's terminal, current out of it into the board, in compliance)."""
        with self.bench.lock:
            if self.errors is not None:
                return self._noisy_reading(key)
            if self.bench.version != self._solved_version:
                self._solve()
                self._solved_version = self.bench.version
            return self._readings.get(key, (0.0, 0.0, False))

    def _noisy_reading(self, key: str) -> tuple[float, float, bool]:
        """One reading at the next moment of model time: the sources' noise has moved since the
        last one, so the circuit is solved again."""
        assert self.errors is not None
        smu = self.bench.smus.get(key, SmuState())
        # A reading returns both quantities (the emulator answers one): each at its function's NPLC.
        nplc_i = float(getattr(smu, "current_nplc", smu.nplc))
        self.errors.clock += self.errors.reading_seconds(smu.nplc)
        self._solve()
        self._solved_version = -1  # the next exact reading must not take this noisy solve
        v, i, over = self._readings.get(key, (0.0, 0.0, False))
        channel = self.errors.channel(key)
        if channel is None:
            return v, i, over
        return (
            float(channel.measure("V", np.array(v), smu.nplc, 1)),
            float(channel.measure("A", np.array(i), nplc_i, 1)),
            over,
        )

    def _forced(self, key: str, unit: str, level: float) -> float:
        """What channel `key` forces when set to `level`, errors and noise included."""
        channel = None if self.errors is None else self.errors.channel(key)
        if channel is None or self.errors is None:
            return level
        return float(channel.source(unit, np.array([level]), np.array([self.errors.clock]))[0])

    # ------------------------------------------------------------------ solving
    def _connections(self) -> tuple[dict[str, str], set[str]]:
        attached = dict(self.wiring.hardwired)
        inverted: set[str] = set()
        for matrix, relays in self.bench.relays.items():
            for channel in relays.closed:
                kind, what, node = self.wiring.crosspoints.get((matrix, channel), ("", "", ""))
                if kind == "smu":
                    attached[what] = node
                elif kind == "invert":
                    inverted.add(what)
        return attached, inverted

    def _conductances(self) -> np.ndarray:
        out = np.empty(len(self.network.conductances))
        for k, edge in enumerate(self.network.conductances):
            bank, channel = self.wiring.pots[edge.name]
            code = self.bench.pots[bank].codes[channel - 1]  # channels count from 1
            out[k] = self.wiring.pot_conductance(bank, channel, code)
        return out

    def _twin(self, driven: tuple[str, ...], inverted: frozenset[str]) -> tuple[TwinBackend, list[str]]:
        key = (driven, inverted)
        if key not in self._twins:
            board = self.network.rewired(
                f"{self.network.name} on the bench",
                [(f"VSMU{k}", node) for k, node in enumerate(driven)],
                inverted,
            )
            self._twins[key] = (TwinBackend(board), board.nodes)
        return self._twins[key]

    def _solve(self) -> None:
        attached, inverted = self._connections()
        smus = self.bench.smus
        forcing_v = {k: n for k, n in attached.items() if smus[k].output and smus[k].function == "V"}
        injected: dict[str, float] = {}
        for k, node in attached.items():
            if smus[k].output and smus[k].function == "I":
                injected[node] = injected.get(node, 0.0) + self._forced(k, "A", smus[k].level)
        # An off output in a 0 V off state (a 2600B's normal one) holds its node at 0 V up to its
        # limit; past it (or against an amplifier's output, which it cannot pull) it sinks the limit.
        amplified = {a.node_out for a in self.network.amplifiers}
        held_off = {k: n for k, n in attached.items() if not smus[k].output and smus[k].off_limit is not None}
        held = {k: n for k, n in held_off.items() if n not in amplified}
        # A voltage source on an amplifier's output (an SMU reset to its default voltage function
        # while routed there) fights the amplifier: it cannot move the node and runs at its limit.
        fighting = {k: n for k, n in forcing_v.items() if n in amplified}
        forcing_v = {k: n for k, n in forcing_v.items() if k not in fighting}
        g = self._conductances()
        solved = self._settle(forcing_v, held, injected, inverted, g)
        sinking: dict[str, float] = {}
        for k, node in fighting.items():
            pull = self._forced(k, "V", smus[k].level) - solved[0][node]
            sinking[k] = float(np.sign(pull)) * smus[k].current_limit
            held_off[k] = node
        for k, node in held_off.items():
            if k in fighting:
                continue
            limit = float(smus[k].off_limit or 0.0)
            current = solved[2].get(node, 0.0) if k in held else -solved[0][node]
            if k not in held or abs(current) > limit:
                sinking[k] = float(np.sign(current)) * limit
        if sinking:
            extra = dict(injected)
            for k, amps in sinking.items():
                extra[held_off[k]] = extra.get(held_off[k], 0.0) + amps
            held = {k: n for k, n in held.items() if k not in sinking}
            solved = self._settle(forcing_v, held, extra, inverted, g)
        volts, levels, delivered = solved
        self.solves += 1
        ends = [(volts.get(c.a, 0.0), volts.get(c.b, 0.0)) for c in self.network.conductances]
        v_a, v_b = np.array([e[0] for e in ends]), np.array([e[1] for e in ends])
        self.pots.add(v_a, v_b, g * (v_a - v_b))
        readings: dict[str, tuple[float, float, bool]] = {}
        for k, s in smus.items():
            on = attached.get(k)
            if on is None:
                readings[k] = (0.0, 0.0, False)
            elif k in sinking:
                readings[k] = (volts[on], sinking[k], True)  # at its off-state limit
            elif not s.output and s.off_limit is None:
                readings[k] = (volts[on], 0.0, False)  # output relay open: draws nothing, reads the node
            elif s.function == "V" or not s.output:
                limit = s.current_limit if s.output else float(s.off_limit or 0.0)
                shorted = len(set(levels[on])) > 1  # two sources fighting on one node
                current = delivered[on] / len(levels[on])
                over = shorted or abs(current) > limit
                v = volts[on] * (limit / abs(current) if over and current else 1.0)
                readings[k] = (v, float(np.clip(current, -limit, limit)), over)
            else:
                over = abs(volts[on]) > s.voltage_limit
                v = float(np.clip(volts[on], -s.voltage_limit, s.voltage_limit))
                readings[k] = (v, s.level, over)
        self._readings = readings

    def _settle(
        self,
        forcing_v: dict[str, str],
        held: dict[str, str],
        injected: dict[str, float],
        inverted: set[str],
        g: np.ndarray,
    ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, float]]:
        """Node voltages, the levels forced on each driven node, and the current each driven node's
        sources deliver, with `held` channels at 0 V."""
        smus = self.bench.smus
        driven = tuple(sorted(set(forcing_v.values()) | set(held.values())))
        levels: dict[str, list[float]] = {}
        for k, node in forcing_v.items():
            levels.setdefault(node, []).append(self._forced(k, "V", smus[k].level))
        for k, node in held.items():
            levels.setdefault(node, []).append(self._forced(k, "V", 0.0))
        twin, nodes = self._twin(driven, frozenset(inverted))
        twin.program(g)
        state = twin.settle(np.array([levels[n][0] for n in driven]), injected)
        assert state.source_currents is not None  # the twin reports every source's current
        volts = dict(zip(nodes, state.voltages.tolist(), strict=True))
        delivered = {n: -i for n, i in zip(driven, state.source_currents.tolist(), strict=True)}
        return volts, levels, delivered
