"""The numerical twin: the circuit's DC equilibrium by Newton on the nodal equations.

Same devices as ngspice (ideal sources, VCVS/CCCS, resistors, ngspice's level-1 diode with GMIN),
solved to machine precision. Nodes driven by a voltage source or a VCVS are eliminated, so the
unknowns are only the free nodes u: V = T·u + c. The residual is Kirchhoff's current law at every
free node, where the CCCS of an amplifier adds backward_gain × (current the VCVS delivers):
F(u) = A·u + r0 + (diode currents), with A = M·Gn·T the conductances seen from the free nodes.

Sizes. Nothing is conductances × nodes: `program` scatters the conductances (O(edges), one sparse
product) into A (free × free), P (free × fixed nodes, what the sources push into the free nodes)
and H (driven × free, what the sources and amplifiers deliver), all dense because each is small,
and the driven × fixed part (a source's own degree). Every diode sits on one free unknown, so
Newton's Jacobian is A plus a diagonal: the free nodes that A does not couple to each other (in a
layered network the clamped hidden layers and the outputs, alternately) are eliminated by their
diagonal, and a small dense Schur system is solved for the rest (in a deep network each
eliminated layer adds its share over its neighbour layers only). A pivot too small for that
elimination sends the sample to a dense LU with partial pivoting instead. Below a few dozen free
nodes one sample is solved by a dense LU directly (numpy's per-call cost decides there).

Batches. `settle_batch` runs Newton on all samples together; each sample stops when it has
converged (so its answer is its own, to rounding), and one that fails goes through the fallbacks
alone (cold start, gmin stepping, source stepping), as `settle` does. A batch whose per-sample
matrices would not fit in 64 MB is settled in chunks.

Warm starts. Each sample's last free-phase equilibrium, keyed by a digest of its inputs, starts its
next Newton (the nudged phases start from their free phase). `solver_state` hands them to a
checkpoint in the network's node order, so a resumed training continues bit for bit. A warm start
from before the last updates first has each eliminated unknown solved alone with the kept ones
held (`_relax`; clamped nodes start where their clamps now put them). Nudged phases right after
their free phase, at the same programming, go by a chord iteration on the free equilibrium's
Jacobian (`_chord`): one factorization per inputs serves both +β and −β and every step.

Open switches. A conductance of exactly 0 is no element (a pruned edge). A free node that is then
left with no DC path (no conductance, clamp or load reaching a source) has no defined voltage,
as in ngspice, where the matrix is singular: settling raises a ConvergenceError naming it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dgesv, dgetrf  # type: ignore[import-untyped]
from scipy.sparse import csr_matrix  # type: ignore[import-untyped]

from hil.interface import ConvergenceError, Identity, State
from hil.network import Network
from sim.devices import DEFAULT_GMIN, DiodeAtTemperature

MAX_ITERATIONS = 200
CONVERGED_STEP = 1e-9  # V
MAX_STEP = 1e6  # V: a Newton step this large means the circuit has no sensible equilibrium
# An LU pivot this far below the largest (a few dozen rounding errors) means a singular matrix.
SINGULAR = 1e-14
TINY = float(np.finfo(float).tiny)
# Eliminating a free node by its diagonal multiplies its couplings by 1/pivot. Beyond this growth
# (against A's largest entry) the elimination could lose digits: that sample takes the dense LU.
MAX_GROWTH = 1e4
# Below this many free nodes one dense LU costs less than the elimination's extra steps: for one
# sample (numpy's per-call cost dominates) and for a batch (the arithmetic does). Measured.
DENSE_ONE = 48
DENSE_BATCH = 12
# Up to this many diodes a plain loop beats numpy's per-call cost (one sample at a time).
SCALAR_DIODES = 32
# Driven × fixed couplings (mostly each source's own degree) kept dense up to this many entries.
DENSE_FIXED = 1 << 14
# Eliminated nodes' outer products of couplings kept up to this many entries (32 MB); beyond, each
# Schur matrix is built by scaling the couplings instead (the same arithmetic, more passes).
MAX_OUTER = 1 << 22
MAX_GROUPS = 32  # more groups of eliminated unknowns than this: the dense product instead
SPARSE_FROM = 1024  # block entries from which programming is one sparse matrix product
# Entries of the per-sample matrices a batch holds at once (64 MB): larger batches go in chunks.
BATCH_ENTRIES = 1 << 23
# Warm starts kept: at least this many samples, more while they fit in WARM_BYTES.
# The chord (`_chord`): steps allowed, the largest step (in thermal voltages: beyond it Newton's
# junction limiting could act, so Newton takes over), and the error it leaves (V).
# The predictor (`_relax`): Newton steps on each eliminated unknown's own equation.
RELAX_STEPS = 4
RELAX_FROM = 1e-6  # V: a warm start nearer its equilibrium than this goes to Newton as it is
CHORD_ITERATIONS = 6
CHORD_REACH = 0.1
CHORD_ERROR = 1e-15
WARM_SAMPLES = 4096
WARM_BYTES = 1 << 25
_CLAMP_SIGN = np.array([1.0, -1.0])


def _key(inputs: np.ndarray) -> bytes:
    """A sample's warm-start key: a digest of its inputs (784 inputs would be 6 kB a key)."""
    return hashlib.blake2b(np.ascontiguousarray(inputs, dtype=float).tobytes(), digest_size=16).digest()


def _segments(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For summing columns by target position: (order, segment starts, position of each segment)."""
    order = np.argsort(positions, kind="stable")
    sorted_pos = positions[order]
    starts = np.flatnonzero(np.r_[True, sorted_pos[1:] != sorted_pos[:-1]]) if len(order) else order
    return order, starts, sorted_pos[starts]


def _compact(index: np.ndarray) -> slice | np.ndarray:
    """An index array as a slice where it is evenly spaced (slicing makes no copy)."""
    if len(index) < 2:
        return slice(int(index[0]), int(index[0]) + 1) if len(index) else index
    step = int(index[1] - index[0])
    if step > 0 and np.array_equal(np.diff(index), np.full(len(index) - 1, step)):
        return slice(int(index[0]), int(index[-1]) + 1, step)
    return index


def _lines(free: np.ndarray, amp_in: np.ndarray, amp_out: np.ndarray, n: int) -> np.ndarray:
    """Per node, its unknown (-1 for none): a free node's own; an amplifier output following a free
    input, its input's (the row where M adds its current through the CCCS, the column where T
    puts gain × the input)."""
    line = np.full(n, -1, dtype=np.int64)
    line[free] = np.arange(len(free))
    follows = line[amp_in] >= 0
    line[amp_out[follows]] = line[amp_in[follows]]
    return line


def _independent(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """A greedy independent set of the graph whose edges are the (row, col) pairs (entries < 0
    ignored), fewest neighbours first: in a layered network, alternate layers."""
    real = (rows >= 0) & (cols >= 0) & (rows != cols)
    pairs = np.unique(rows[real] * max(n, 1) + cols[real])
    first, second = pairs // max(n, 1), pairs % max(n, 1)
    degree = np.bincount(first, minlength=n)
    starts = np.r_[0, np.cumsum(degree)]
    taken = np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)
    for k in np.argsort(degree, kind="stable").tolist():
        if not blocked[k]:
            taken[k] = True
            blocked[second[starts[k] : starts[k + 1]]] = True
    return taken


def _neighbour_groups(
    rows: np.ndarray, cols: np.ndarray, nd: int, nf: int
) -> list[tuple[slice | np.ndarray, slice | np.ndarray]]:
    """The eliminated unknowns (first `nd`) grouped by the kept unknowns they couple to (in either
    direction), as (group, neighbours) index pairs (slices where contiguous; neighbours counted
    from the first kept one). In a deep layered network a group is a layer and its neighbours the
    layers around it: each group's share of the Schur matrix is one small dense product instead
    of a pass over every pair of kept unknowns."""
    kept = max(nf - nd, 1)
    out_ = (rows < nd) & (cols >= nd)
    in_ = (rows >= nd) & (cols < nd)
    d = np.r_[rows[out_], cols[in_]]
    k = np.r_[cols[out_], rows[in_]] - nd
    pairs = np.unique(d * kept + k)
    neighbours: dict[int, list[int]] = {}
    for dd, kk in zip((pairs // kept).tolist(), (pairs % kept).tolist(), strict=True):
        neighbours.setdefault(dd, []).append(kk)
    grouped: dict[tuple[int, ...], list[int]] = {}
    for dd in range(nd):
        grouped.setdefault(tuple(neighbours.get(dd, ())), []).append(dd)

    def compact(index: list[int]) -> slice | np.ndarray:
        run = index[-1] - index[0] + 1 == len(index)
        return slice(index[0], index[-1] + 1) if run else np.array(index)

    return [(compact(members), compact(list(ks))) for ks, members in grouped.items() if ks]


@dataclass
class _Block:
    """One block of the nodal matrix as Laplacian entries scattered into it: entry j adds
    coef[j]·|g|[source[j]] at flat position flat[j]. The coefficient is the entry's sign times
    the gain-dependent scales of its row node (M) and column node (T)."""

    flat: np.ndarray
    source: np.ndarray
    sign: np.ndarray
    row_node: np.ndarray
    col_node: np.ndarray
    shape: tuple[int, int]
    coef: np.ndarray

    @classmethod
    def of(
        cls,
        take: np.ndarray,
        at: tuple[np.ndarray, np.ndarray],
        nodes: tuple[np.ndarray, np.ndarray],
        sign: np.ndarray,
        source: np.ndarray,
        shape: tuple[int, int],
    ) -> _Block:
        index = np.int64 if shape[0] * shape[1] >= 2**31 else np.int32
        flat = (at[0][take].astype(np.int64) * shape[1] + at[1][take]).astype(index)
        small = np.int32 if len(sign) < 2**31 else np.int64
        return cls(
            flat,
            source[take].astype(small),
            sign[take].astype(np.int8),
            nodes[0][take].astype(np.int32),
            nodes[1][take].astype(np.int32),
            shape,
            np.zeros(0),
        )


@dataclass
class _Phase:
    """What one settle of a batch works from: every sample's constant terms."""

    r0: np.ndarray  # [samples, free]: KCL residual at u = 0 (sources, nudges, nothing else)
    d0: np.ndarray  # [samples, diodes]: junction voltages at u = 0
    fixed: np.ndarray  # [samples, fixed nodes]: source and source-driven amplifier voltages
    inj_nodes: np.ndarray  # nodes receiving a current
    inj: np.ndarray  # [samples, len(inj_nodes)]


class TwinBackend:
    """`Backend` implemented by the numerical twin."""

    def __init__(self, network: Network, gmin: float = DEFAULT_GMIN) -> None:
        self.network = network
        self.diode = DiodeAtTemperature.at(network.diode_model, network.temperature, gmin)
        n = len(network.nodes)
        idx = network.node_index
        src = np.array([idx[s.node] for s in network.sources], dtype=np.int64)
        amp_in, amp_out = (np.asarray(a, dtype=np.int64) for a in network.amplifier_nodes)
        if set(amp_in.tolist()) & set(amp_out.tolist()):
            raise ValueError("the twin does not chain amplifiers output-to-input directly")
        driven = np.zeros(n, dtype=bool)
        driven[src] = True
        driven[amp_out] = True
        # Laplacian entries of every conductance (a–b) and load (node–ground).
        a, b = (np.asarray(e, dtype=np.int64) for e in network.edge_endpoints)
        n_edges = len(a)
        load_nodes = np.array([idx[ld.node] for ld in network.loads], dtype=np.int64)
        self._load_g = np.array([ld.conductance for ld in network.loads], dtype=float)
        rows = np.r_[a, b, a, b, load_nodes]
        cols = np.r_[a, b, b, a, load_nodes]
        sign = np.r_[np.ones(2 * n_edges), -np.ones(2 * n_edges), np.ones(len(load_nodes))]
        edge = np.r_[np.tile(np.arange(n_edges), 4), n_edges + np.arange(len(load_nodes))]
        # The unknowns, ordered for the elimination: first the free nodes that A does not couple
        # to each other (eliminated by their diagonal), then the rest (the dense Schur system).
        free = np.flatnonzero(~driven)
        line = _lines(free, amp_in, amp_out, n)
        eliminated = _independent(line[rows], line[cols], len(free))
        self._free = free[np.r_[np.flatnonzero(eliminated), np.flatnonzero(~eliminated)]]
        # Checkpoints keep the free nodes' voltages in the network's order, whatever this order.
        self._to_nodes_order = np.argsort(self._free, kind="stable")
        self._from_nodes_order = np.argsort(self._to_nodes_order, kind="stable")
        nf = len(self._free)
        self._nd = int(eliminated.sum())
        # Rows of M (KCL at free nodes; an amplifier output's current lands on its input's row
        # through the CCCS) and columns of T (free nodes, and amplifier outputs following one).
        line = _lines(self._free, amp_in, amp_out, n)
        self._line = line
        # An amplifier whose input is free: its output is gain·u; one driven by a source is fixed.
        self._amp_follows = line[amp_in] >= 0
        self._amp_out = amp_out
        # Fixed nodes: voltages known per sample (sources, amplifiers driven by a source).
        fixed = np.r_[src, amp_out[~self._amp_follows]]
        self._fixed_nodes = fixed
        xpos = np.full(n, -1, dtype=np.int64)
        xpos[fixed] = np.arange(len(fixed))
        # Driven nodes: where the State reports a current (sources, every amplifier output).
        ypos = np.full(n, -1, dtype=np.int64)
        ypos[src] = np.arange(len(src))
        ypos[amp_out] = len(src) + np.arange(len(amp_out))
        self._ypos, self._src, self._n, self._nf = ypos, src, n, nf
        self._n_driven = len(src) + len(amp_out)
        lr, lc, xc, yr = line[rows], line[cols], xpos[cols], ypos[rows]
        nx = len(fixed)
        takes = {
            "A": (lr >= 0) & (lc >= 0),
            "P": (lr >= 0) & (xc >= 0),
            "H": (yr >= 0) & (lc >= 0),
        }
        nodes = (rows, cols)
        self._blocks = {
            "A": _Block.of(takes["A"], (lr, lc), nodes, sign, edge, (nf, nf)),
            "P": _Block.of(takes["P"], (lr, xc), nodes, sign, edge, (nf, nx)),
            "H": _Block.of(takes["H"], (yr, lc), nodes, sign, edge, (self._n_driven, nf)),
        }
        # Driven × fixed: mostly each source's own degree (and the rare edge between two fixed
        # nodes): dense when small, else one entry per (row, column) pair that occurs.
        zt = (yr >= 0) & (xc >= 0)
        pair = yr[zt] * max(nx, 1) + xc[zt]
        self._z_pairs, z_of_entry = np.unique(pair, return_inverse=True)
        self._z_rows, self._z_cols = self._z_pairs // max(nx, 1), self._z_pairs % max(nx, 1)
        self._z_unique = len(np.unique(self._z_rows)) == len(self._z_rows)
        self._z_is_dense = self._n_driven * nx <= DENSE_FIXED
        if self._z_is_dense:
            self._blocks["Z"] = _Block.of(zt, (yr, xc), nodes, sign, edge, (self._n_driven, nx))
        else:
            z_at = (np.full(len(rows), -1, dtype=np.int64), np.zeros(len(rows), dtype=np.int64))
            z_at[0][zt] = z_of_entry.ravel()
            self._blocks["Z"] = _Block.of(zt, z_at, nodes, sign, edge, (len(self._z_pairs), 1))
        # Endpoints kept for the DC-path check of pruned networks.
        self._a, self._b = a, b
        self._load_nodes = load_nodes
        # Diodes: two per clamp, vd = s·V(node) + offset; the high one conducts node → v_high.
        cl_node, v_high, v_low = network.clamp_map
        cl_node = np.asarray(cl_node, dtype=np.int64)
        self._d_node = np.repeat(cl_node, 2)
        self._d_sign = np.tile([1.0, -1.0], len(cl_node))
        self._d_off = np.ravel(np.column_stack([-np.asarray(v_high), np.asarray(v_low)]))
        self._d_pos = line[self._d_node]
        self._d_x = xpos[self._d_node]
        self._d_on_u = self._d_pos >= 0
        self._d_all_on_u = bool(self._d_on_u.all())
        self._d_pos_u = self._d_pos[self._d_on_u]
        self._d_at_fixed = self._d_x >= 0
        self._d_any_fixed = bool(self._d_at_fixed.any())
        self._d_order, self._d_starts, self._d_targets = _segments(self._d_pos_u)
        # Clamps as the builders make them: a high and a low diode per node, on distinct unknowns
        # that follow each other. Then summing onto the unknowns is one add into a slice.
        pos_u = self._d_pos_u
        self._d_paired: slice | None = None
        if (
            self._d_all_on_u
            and len(pos_u)
            and np.array_equal(pos_u[0::2], pos_u[1::2])
            and np.array_equal(pos_u[0::2], np.arange(pos_u[0], pos_u[0] + len(pos_u) // 2))
        ):
            self._d_paired = slice(int(pos_u[0]), int(pos_u[0]) + len(pos_u) // 2)
        # The predictor (`_relax`) solves each eliminated unknown alone: those with diodes have a
        # clamp pair, a high diode (vd = offset + u) and a low one (vd = offset − u), as the
        # builders make them; then which pairs sit on eliminated unknowns, and on which.
        self._relax_at: tuple[slice | np.ndarray, slice | np.ndarray, slice | np.ndarray] | None = None
        first = pos_u[0::2]
        if (
            self._d_all_on_u
            and len(pos_u) % 2 == 0
            and np.array_equal(first, pos_u[1::2])
            and len(np.unique(first)) == len(first)
            and np.array_equal(self._d_sign, np.tile([1.0, -1.0], len(first)))
            and not driven[self._d_node].any()  # on free nodes (an amplifier's output scales u)
        ):
            pairs = np.flatnonzero(first < self._nd)
            self._relax_at = (_compact(first[pairs]), _compact(2 * pairs), _compact(2 * pairs + 1))
        self._d_y = ypos[self._d_node]
        self._d_on_y = self._d_y >= 0
        self._d_any_y = bool(self._d_on_y.any())
        self._injections: dict[bytes, tuple[np.ndarray, np.ndarray | None]] = {}
        follows = self._amp_follows
        self._n_amp_fixed = int((~follows).sum())
        self._amp_fixed_src = ypos[amp_in[~follows]]  # index of the driving source
        self._amp_out_follow = amp_out[follows]
        self._amp_in_line = line[amp_in[follows]]
        self._dense_one, self._dense_batch = nf < DENSE_ONE, nf < DENSE_BATCH
        self._groups = self._grouping(takes["A"], lr, lc)
        self._g = np.zeros(n_edges)
        self._gains_key: bytes | None = None
        self._signs_key: bytes | None = None
        self._open_key: bytes | None = None
        self._floating: list[str] = []
        # Warm starts: the last equilibrium per sample's inputs. Weights change little between
        # visits, so Newton starts a few steps from the answer.
        self._warm: dict[bytes, np.ndarray] = {}
        # The warm starts found at the current programming: a nudged phase starts at its free
        # equilibrium, where Newton's Jacobian is known (`_chord`).
        self._fresh: set[bytes] = set()
        self._last_keys: tuple[bytes, tuple[int, ...], list[bytes]] = (b"", (-1,), [])
        self._warm_cap = max(WARM_SAMPLES, WARM_BYTES // max(8 * nf, 1))
        self.program(np.full(n_edges, 1e-3))

    # ------------------------------------------------------------------ interface
    def program(self, conductances: np.ndarray) -> np.ndarray:
        g = np.array(conductances, dtype=float)
        if g.shape != self._g.shape or not np.all(np.isfinite(g)):
            raise ValueError("conductances must be finite, one per edge (0: an open switch)")
        net = self.network
        self._fresh = set()
        self._g = g
        signs = (g < 0).tobytes()
        if signs != self._signs_key:  # sources and amplifiers change only when a weight changes sign
            self._signs_key = signs
            src_sign, _ = net.sign_multipliers(g)
            # Source voltages = constant + scale·inputs[index], signs applied.
            constant, self._src_index, scale = net.source_map
            self._src_constant, self._src_scale = constant * src_sign, scale * src_sign
            gain, back = net.amplifier_gains(g)
            key = np.concatenate([gain, back]).tobytes()
            if key != self._gains_key:
                self._gains_key = key
                self._gain, self._back = np.asarray(gain, dtype=float), np.asarray(back, dtype=float)
                self._coefficients()
        open_key = (g == 0).tobytes()
        if open_key != self._open_key:
            self._open_key = open_key
            self._floating = self._unreached(g != 0)
        magnitude = np.concatenate([np.abs(g), self._load_g]) if len(self._load_g) else np.abs(g)
        # Every block in one product (or one weighted count when small): numpy's and scipy's
        # per-call cost is most of a small network's programming.
        if self._map is not None:
            entries = np.asarray(self._map @ magnitude)
        else:
            entries = np.bincount(
                self._map_flat, self._map_coef * magnitude[self._map_source], self._map_size
            )
        views = {
            key: entries[start : start + block.shape[0] * block.shape[1]].reshape(block.shape)
            for key, block, start in zip(self._blocks, self._blocks.values(), self._map_starts, strict=True)
        }
        self._A, self._P, self._H = views["A"], views["P"], views["H"]
        self._z_dense = views["Z"] if self._z_is_dense else None
        self._z = views["Z"].ravel()
        self._schur_ready = False
        return g

    def _grouping(
        self, take: np.ndarray, rows: np.ndarray, cols: np.ndarray
    ) -> list[tuple[slice | np.ndarray, slice | np.ndarray]] | None:
        """Groups of eliminated unknowns when they make the Schur matrix markedly cheaper than
        the dense product (deep layered networks), else None."""
        nd, nk = self._nd, self._nf - self._nd
        if not nd or not nk:
            return None
        groups = _neighbour_groups(rows[take], cols[take], nd, self._nf)

        def size(index: slice | np.ndarray) -> int:
            return index.stop - index.start if isinstance(index, slice) else len(index)

        cost = sum(size(g) * size(n) ** 2 for g, n in groups)
        if len(groups) < 2 or len(groups) > MAX_GROUPS or cost > 0.6 * nd * nk * nk:
            return None
        return groups

    def _schur_blocks(self) -> None:
        """A split for the elimination (once per programming, when a solve first needs it): the
        eliminated block's diagonal, the couplings, and each eliminated node's outer product of
        couplings, so that every sample's Schur matrix is one matrix product away."""
        a, nd = self._A, self._nd
        self._aD = np.diag(a)[:nd].copy()
        self._A_DK, self._A_KD, self._A_KK = a[:nd, nd:], a[nd:, :nd], a[nd:, nd:]
        nk = self._nf - nd
        self._outer = None
        self._group_blocks = []
        if self._groups is not None:
            for g, n in self._groups:
                n_rows = n if isinstance(n, slice) else n[:, None]
                g_rows = g if isinstance(g, slice) else g[:, None]
                self._group_blocks.append((g, n, self._A_KD[n_rows, g], self._A_DK[g_rows, n]))
        elif nd * nk * nk <= MAX_OUTER:
            self._outer = (self._A_KD.T[:, :, None] * self._A_DK[:, None, :]).reshape(nd, nk * nk)
        reach = np.abs(self._A_KD).max(axis=0, initial=0.0) * np.abs(self._A_DK).max(axis=1, initial=0.0)
        # The smallest pivot each eliminated node may have: its couplings' product over it may
        # grow MAX_GROWTH-fold past A's largest entry, no more (and never a pivot of 0).
        scale = max(float(np.abs(a).max(initial=0.0)), TINY)
        self._least_pivot = np.maximum(reach / (MAX_GROWTH * scale), TINY)
        self._schur_ready = True

    def _injection(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Currents injected at `nodes` as matrices: onto the KCL rows of the free nodes, and onto
        the driven nodes (None when none is driven). Cached: the nudge nodes are always the same."""
        key = nodes.tobytes()
        if key not in self._injections:
            line = self._line[nodes]
            on = np.flatnonzero(line >= 0)
            to_free = np.zeros((len(nodes), self._nf))
            np.add.at(to_free, (on, line[on]), self._row[nodes[on]])
            y = self._ypos[nodes]
            at = np.flatnonzero(y >= 0)
            to_driven = None
            if len(at):
                to_driven = np.zeros((len(nodes), self._n_driven))
                to_driven[at, y[at]] = 1.0
            if len(self._injections) > 16:
                self._injections.clear()
            self._injections[key] = (to_free, to_driven)
        return self._injections[key]

    def _coefficients(self) -> None:
        """Gain-dependent scales: M's rows (−backward gain on an amplifier output's row) and T's
        columns (gain on an amplifier output's column)."""
        n = self._n
        row = np.zeros(n)
        col = np.zeros(n)
        row[self._free] = 1.0
        col[self._free] = 1.0
        follows = self._amp_follows
        row[self._amp_out[follows]] = -self._back[follows]
        col[self._amp_out[follows]] = self._gain[follows]
        self._row = row
        self._injections = {}
        self._gain_follow = self._gain[follows]
        self._amp_fixed_gain = self._gain[~follows]
        for key, block in self._blocks.items():
            r, c = block.row_node, block.col_node
            scale = {"A": row[r] * col[c], "P": row[r], "H": col[c], "Z": 1.0}[key]
            block.coef = block.sign * scale
        # The blocks one after another: one map from the magnitudes to all their entries.
        sizes = [b.shape[0] * b.shape[1] for b in self._blocks.values()]
        self._map_starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
        self._map_size = int(sum(sizes))
        self._map_flat = np.concatenate(
            [
                b.flat.astype(np.int64) + start
                for b, start in zip(self._blocks.values(), self._map_starts, strict=True)
            ]
        )
        self._map_source = np.concatenate([b.source for b in self._blocks.values()])
        self._map_coef = np.concatenate([b.coef for b in self._blocks.values()])
        self._map = None
        if len(self._map_coef) >= SPARSE_FROM:
            self._map = csr_matrix(
                (self._map_coef, (self._map_flat, self._map_source)),
                shape=(self._map_size, len(self._g) + len(self._load_g)),
            )
            self._map.sum_duplicates()
        on = self._d_on_u
        self._d_row = row[self._d_node]
        self._d_col = col[self._d_node]
        # Per diode on an unknown: its Jacobian weight r·c on the diagonal, r·s on the residual,
        # s·c in the junction voltage.
        self._d_jac = (self._d_row * self._d_col)[on]
        self._d_res = (self._d_row * self._d_sign)[on]
        self._d_vd = (self._d_sign * self._d_col)[on]

    def _unreached(self, closed: np.ndarray) -> list[str]:
        """Nodes with no DC path to a source, an amplifier output, a clamp or a load through the
        conductances that are not open switches."""
        reached = np.zeros(self._n, dtype=bool)
        reached[self._src] = True
        reached[self._amp_out] = True
        reached[self._d_node] = True
        reached[self._load_nodes[self._load_g > 0]] = True
        a, b = self._a[closed], self._b[closed]
        while True:
            grow = np.zeros(self._n, dtype=bool)
            grow[b[reached[a] & ~reached[b]]] = True
            grow[a[reached[b] & ~reached[a]]] = True
            if not grow.any():
                break
            reached |= grow
        nodes = self.network.nodes
        return [nodes[i] for i in np.flatnonzero(~reached)]

    def settle(self, inputs: np.ndarray, nudge_currents: dict[str, float] | None = None) -> State:
        x = np.asarray(inputs, dtype=float)
        if x.shape != (self.network.n_inputs,):
            self.network.source_values(x)  # refuses it, naming the fix
        index = self.network.node_index
        nudges = nudge_currents or {}
        nodes = np.array([index[k] for k in nudges], dtype=np.int64)
        values = np.array([list(nudges.values())], dtype=float).reshape(1, len(nodes))
        state = self._settle(x[None, :], nodes, values, store=not nudge_currents)
        return state.row(0)

    def settle_batch(self, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
        net = self.network
        x = np.asarray(inputs, dtype=float)
        if x.ndim != 2 or x.shape[1] != net.n_inputs:
            raise ValueError(
                f"inputs of shape {x.shape}: network '{net.name}' takes [samples, {net.n_inputs}]"
            )
        index = net.node_index
        nodes = np.array([index[k] for k in net.nudge_nodes], dtype=np.int64)
        if nudges is None:
            return self._settle(x, nodes[:0], np.zeros((len(x), 0)), store=True)
        values = np.asarray(nudges, dtype=float)
        if values.shape != (len(x), len(nodes)):
            raise ValueError(
                f"nudges of shape {values.shape}: expected [samples, nudge nodes] = {(len(x), len(nodes))}"
            )
        return self._settle(x, nodes, values, store=False)

    def safe_state(self) -> None:
        self._warm.clear()
        self._fresh = set()

    def close(self) -> None:
        self._warm.clear()
        self._fresh = set()

    def solver_state(self) -> dict[str, np.ndarray]:
        """The warm starts: each sample's input digest and the voltages Newton last found at the
        free nodes, in `Network.nodes` order (not the solver's elimination order)."""
        keys = list(self._warm)
        digests = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16)
        found = np.array([self._warm[k] for k in keys]).reshape(len(keys), self._nf)
        return {"warm_keys": digests, "warm_free_voltages": found[:, self._to_nodes_order]}

    def restore_solver_state(self, state: dict[str, np.ndarray]) -> None:
        if "warm_inputs" in state:  # checkpoints written before the keys were digests
            keys = [_key(x) for x in state["warm_inputs"]]
        else:
            keys = [bytes(np.asarray(k, dtype=np.uint8)) for k in state.get("warm_keys", ())]
        found = np.asarray(state.get("warm_free_voltages", np.zeros((0, self._nf))), dtype=float)
        found = found.reshape(len(found), self._nf)[:, self._from_nodes_order]
        self._warm = {k: u.copy() for k, u in zip(keys, found, strict=True)}
        self._fresh = set()

    def identity(self) -> Identity:
        return Identity(
            kind="numeric",
            description="numerical twin: Newton on the nodal equations, ngspice 39 device models",
        )

    # ------------------------------------------------------------------ one batch
    def _settle(self, x: np.ndarray, inj_nodes: np.ndarray, inj: np.ndarray, store: bool) -> State:
        if self._floating:
            shown = ", ".join(self._floating[:8]) + (", ..." if len(self._floating) > 8 else "")
            raise ConvergenceError(
                f"node(s) {shown} have no DC path left (every conductance to them is an open switch, 0 S): "
                "their voltage is undefined; keep at least one conductance to each"
            )
        nk = self._nf - self._nd
        chunk = max(1, BATCH_ENTRIES // (nk * nk + 4 * self._nf))
        if len(x) > chunk:  # a whole data set at once: its Schur matrices would not fit
            parts = [
                self._settle(x[k : k + chunk], inj_nodes, inj[k : k + chunk], store)
                for k in range(0, len(x), chunk)
            ]
            return State(
                *(
                    np.concatenate([getattr(p, f) for p in parts])
                    for f in ("voltages", "source_currents", "clamp_currents", "amplifier_currents")
                )
            )
        phase = self._phase(x, inj_nodes, inj)
        keys = self._keys(x)
        u = None
        if not store and len(keys) > 1 and self._fresh.issuperset(keys):
            u = self._chord(phase, keys)
        if u is None:
            u = self._solve(phase, [self._warm.get(k) for k in keys])
        if store:
            if len(self._warm) + len(keys) > self._warm_cap:
                self._warm.clear()
                self._fresh = set()
            for k, row in zip(keys, u, strict=True):
                self._warm[k] = row.copy()
            self._fresh.update(keys)
        return self._state(phase, u)

    def _keys(self, x: np.ndarray) -> list[bytes]:
        """Each sample's warm-start key; the phases of one measurement share the inputs, so the
        last batch's keys are kept."""
        # The bytes (-0.0 is not 0.0 in a key) and the shape (a network without inputs has none).
        rows, shape = np.ascontiguousarray(x, dtype=float).tobytes(), x.shape
        last_rows, last_shape, last_keys = self._last_keys
        if rows == last_rows and shape == last_shape:
            return last_keys
        # Centered VDM's +β and −β rows: the last batch's inputs twice over.
        if shape == (2 * last_shape[0], *last_shape[1:]) and rows == last_rows + last_rows:
            return last_keys + last_keys
        keys = [_key(row) for row in x]
        self._last_keys = (rows, shape, keys)
        return keys

    def _phase(self, x: np.ndarray, inj_nodes: np.ndarray, inj: np.ndarray) -> _Phase:
        samples = len(x)
        if self.network.n_inputs:
            fixed = self._src_constant + self._src_scale * x[:, self._src_index]
        else:
            fixed = np.tile(self._src_constant, (samples, 1))
        if self._n_amp_fixed:  # an amplifier driven by a source: gain × that source's voltage
            fixed = np.concatenate([fixed, fixed[:, self._amp_fixed_src] * self._amp_fixed_gain], axis=1)
        r0 = fixed @ self._P.T if fixed.shape[1] else np.zeros((samples, self._nf))
        if len(inj_nodes):
            to_free, _ = self._injection(inj_nodes)
            r0 -= inj @ to_free
        d0 = np.tile(self._d_off, (samples, 1))
        if self._d_any_fixed:
            at = self._d_at_fixed
            d0[:, at] += self._d_sign[at] * fixed[:, self._d_x[at]]
        return _Phase(r0, d0, fixed, inj_nodes, inj)

    def _state(self, phase: _Phase, u: np.ndarray) -> State:
        samples = len(u)
        v = np.empty((samples, self._n))
        v[:, self._free] = u
        v[:, self._amp_out_follow] = u[:, self._amp_in_line] * self._gain_follow
        v[:, self._fixed_nodes] = phase.fixed
        vd = self._d_sign * v[:, self._d_node] + self._d_off
        if vd.size <= SCALAR_DIODES:
            cd = self.diode.current(vd.ravel())[0].reshape(vd.shape)
        else:
            cd = self.diode.currents(vd)[0]
        # Current leaving each driven node into the conductances, loads and clamps, less injections.
        leaving = u @ self._H.T if self._nf else np.zeros((samples, self._n_driven))
        if self._z_dense is not None:
            leaving += phase.fixed @ self._z_dense.T
        elif len(self._z_pairs):
            through = self._z * phase.fixed[:, self._z_cols]
            if self._z_unique:
                leaving[:, self._z_rows] += through
            else:
                np.add.at(leaving.T, self._z_rows, through.T)
        if self._d_any_y:
            on = self._d_on_y
            np.add.at(leaving.T, self._d_y[on], (self._d_sign[on] * cd[:, on]).T)
        if len(phase.inj_nodes):
            _, to_driven = self._injection(phase.inj_nodes)
            if to_driven is not None:
                leaving -= phase.inj @ to_driven
        n_src = len(self._src)
        amp_current = -leaving[:, n_src:]  # into the VCVS's + terminal
        src_total = leaving[:, :n_src]
        # A CCCS sinks backward_gain × I(E) from its input node: from a source, if that is its input.
        if self._n_amp_fixed:
            on_src = ~self._amp_follows
            np.add.at(src_total.T, self._amp_fixed_src, (self._back[on_src] * amp_current[:, on_src]).T)
        clamp = cd.reshape(samples, len(self._d_node) // 2, 2) * _CLAMP_SIGN
        return State(v, -src_total, clamp, amp_current)

    # ------------------------------------------------------------------ solver
    def _solve(self, phase: _Phase, warm: list[np.ndarray | None]) -> np.ndarray:
        """Newton from each sample's warm start (relaxed first, `_relax`), else ngspice's cold
        start, all samples at once; a sample that fails goes on alone: cold start, gmin
        stepping, source stepping."""
        r0, d0 = phase.r0, phase.d0
        if len(warm) == 1:
            return self._solve_one(r0[0], d0[0], warm[0])[None, :]
        samples, nf = len(warm), self._nf
        has = np.array([w is not None for w in warm], dtype=bool)
        u0 = np.zeros((samples, nf))
        vd0 = np.full(d0.shape, self.diode.vcrit)
        if has.any():
            u0[has] = np.array([w for w in warm if w is not None])
            # Cold samples keep ngspice's cold start: where a circuit has several equilibria, the
            # start decides which one is found.
            relaxed = self._relax(r0[has], d0[has], u0[has])
            if relaxed is not None:
                u0[has] = relaxed
            vd0[has] = self._junctions(u0[has], d0[has])
        u, done = self._newton_batch(r0, d0, u0, vd0, has)
        for i in np.flatnonzero(~done).tolist():
            u[i] = self._solve_one(r0[i], d0[i], None)
        return u

    def _relax(self, r0: np.ndarray, d0: np.ndarray, u: np.ndarray) -> np.ndarray | None:
        """A better start than the warm one: each eliminated unknown solved for alone, with the
        kept ones held at their warm values (one half-step of block Gauss-Seidel; the eliminated
        unknowns couple only to kept ones). A warm start from before the last updates has its
        clamped nodes up to ~0.5 V off, which Newton's junction limiting crosses in several
        steps; from here Newton takes ~3 steps instead of ~6 (digits, 64-64-10). Only a start:
        Newton still solves the whole system, to the same root. A warm start already within
        RELAX_FROM of its equilibrium (by a Jacobi estimate of Newton's step) is kept bit for bit:
        the choice depends only on the numbers, so a resumed training takes the same path. None
        where nothing is relaxed, a pivot is not positive (each unknown's equation must have one
        root) or the clamps are not in pairs."""
        if self._relax_at is None or not self._nd:
            return None
        if not self._schur_ready:
            self._schur_blocks()
        nd, a = self._nd, self._aD
        if not (a > 0).all():
            return None
        cd, gd = self.diode.currents(self._junctions(u, d0))
        residual = u @ self._A.T + r0 + self._scatter(self._d_res * cd)
        move = np.abs(residual) / (np.diag(self._A) + self._scatter(self._d_jac * gd))
        far = move.max(axis=1) > RELAX_FROM
        if not far.any():
            return None
        if not far.all():
            relaxed = u.copy()
            part = self._relax(r0[far], d0[far], u[far])
            assert part is not None
            relaxed[far] = part
            return relaxed
        nodes, at_high, at_low = self._relax_at
        c = r0[:, :nd] + u[:, nd:] @ self._A_DK.T
        u = u.copy()
        u[:, :nd] = -c / a  # without diodes, linear: exact
        diode, a, c = self.diode, a[nodes], c[:, nodes]
        high, low = d0[:, at_high], d0[:, at_low]  # junctions: high + u, low − u
        mid = 0.5 * (low - high)  # where both junctions are equal: their currents cancel
        linear = -c / a  # past mid, the diodes' current only pulls back from it: a bound
        drive = a * mid + c  # < 0: the root lies above mid (the high diode conducts)
        # The conducting diode alone carrying what the linear part pushes at mid: near the root
        # when that diode takes most of the current.
        on = diode.vte * np.log1p(np.abs(drive) / diode.saturation_current)
        above = drive < 0
        lo = np.where(above, mid, linear)
        hi = np.where(above, linear, mid)
        v = np.clip(np.where(above, on - high, low - on), lo, hi)
        isat, vte, gmin, cap = diode.saturation_current, diode.vte, diode.gmin, 60.0 * diode.vte
        for _ in range(RELAX_STEPS):
            eh = np.exp(np.minimum(high + v, cap) / vte)
            el = np.exp(np.minimum(low - v, cap) / vte)
            f = a * v + c + isat * (eh - el) + gmin * (high - low + 2.0 * v)
            slope = a + (isat / vte) * (eh + el) + 2.0 * gmin
            v = np.clip(v - f / slope, lo, hi)
        u[:, nodes] = v
        return u

    def _solve_one(self, r0: np.ndarray, d0: np.ndarray, warm: np.ndarray | None) -> np.ndarray:
        """One sample: Newton from the warm start (relaxed first), else from ngspice's cold
        start, else by gmin stepping, else by source stepping."""
        if warm is not None:
            relaxed = self._relax(r0[None], d0[None], warm[None])
            start = warm if relaxed is None else relaxed[0]
            u = self._newton(r0, d0, start, self._junctions(start, d0), consistent=True)
            if u is not None:
                return u
        u = self._newton(r0, d0, np.zeros(self._nf), np.full(len(d0), self.diode.vcrit), consistent=False)
        if u is not None:
            return u
        u = self._gmin_stepping(r0, d0)
        if u is not None:
            return u
        return self._source_stepping(r0, d0)

    def _junctions(self, u: np.ndarray, d0: np.ndarray) -> np.ndarray:
        """Junction voltages for free-node voltages `u` (one sample or a batch)."""
        if self._d_all_on_u:
            return d0 + self._d_vd * u[..., self._d_pos_u]
        vd = d0.copy()
        vd[..., self._d_on_u] += self._d_vd * u[..., self._d_pos_u]
        return vd

    def _newton(
        self,
        r0: np.ndarray,
        d0: np.ndarray,
        u: np.ndarray,
        vd_at: np.ndarray,
        consistent: bool,
        shunt: float = 0.0,
    ) -> np.ndarray | None:
        """SPICE's Newton for one sample: each diode is linearised at a (limited) junction voltage,
        and the linear system gives the next node voltages. `shunt` ties every free node to ground
        (gmin stepping). None when it does not converge."""
        diode, nf = self.diode, self._nf
        scalar = len(vd_at) <= SCALAR_DIODES  # numpy's per-call cost dominates a few diodes
        pos, jac, res, on = self._d_pos_u, self._d_jac, self._d_res, self._d_on_u
        everywhere = self._d_all_on_u
        for _ in range(MAX_ITERATIONS):
            cd, gd = diode.current(vd_at) if scalar else diode.currents(vd_at)
            linear = cd + gd * (d0 - vd_at)
            if not everywhere:
                gd, linear = gd[on], linear[on]
            diag = np.bincount(pos, jac * gd, minlength=nf) + shunt
            u_new = self._step(diag, -(r0 + np.bincount(pos, res * linear, minlength=nf)))
            step = float(np.abs(u_new - u).max()) if nf else 0.0
            u = u_new
            if not step < MAX_STEP:  # also catches NaN
                self._refuse_singular(diag)
                return None
            # After a full Newton step s the error is about s²/(2·vte): 1e-17 V for s = 1 nV.
            if consistent and step <= CONVERGED_STEP:
                return u
            vd = self._junctions(u, d0)
            if scalar:
                vd_at = diode.limit(vd, vd_at)
                consistent = vd_at is vd
            else:
                vd_at, limited = diode.limits(vd, vd_at)
                consistent = not limited.any()
        return None

    def _step(self, diag: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """Solve (A + diag)·u = rhs for one sample."""
        if not self._dense_one:
            if not self._schur_ready:
                self._schur_blocks()
            nd, nk = self._nd, self._nf - self._nd
            pivot = self._aD + diag[:nd]
            if (np.abs(pivot) >= self._least_pivot).all():
                w = 1.0 / pivot
                r_d = w * rhs[:nd]
                if not nk:
                    return r_d
                if self._group_blocks:
                    s = self._A_KK.copy()
                    for g, n, a_ng, a_gn in self._group_blocks:
                        square = (n, n) if isinstance(n, slice) else (n[:, None], n[None, :])
                        s[square] -= (a_ng * w[g]) @ a_gn
                elif self._outer is not None:
                    s = (self._A_KK.ravel() - w @ self._outer).reshape(nk, nk)
                else:
                    s = self._A_KK - (self._A_KD * w) @ self._A_DK
                s.flat[:: nk + 1] += diag[nd:]
                u_k = self._solve_dense(s, rhs[nd:] - self._A_KD @ r_d)
                return np.concatenate([r_d - w * (self._A_DK @ u_k), u_k])
        j = self._A.copy()
        j.flat[:: self._nf + 1] += diag
        return self._solve_dense(j, rhs)

    def _refuse_singular(self, diag: np.ndarray) -> None:
        """After a step that blew up: a Jacobian singular to rounding (exact unity feedback) has
        no equilibrium to step towards, whatever the fallbacks try. Only then is it factored."""
        lu, _, info = dgetrf(self._A + np.diag(diag))
        pivots = np.abs(np.diag(lu))
        if info > 0 or (len(pivots) and pivots.min() <= SINGULAR * pivots.max()):
            raise ConvergenceError(
                "singular nodal matrix: the circuit has no unique equilibrium (amplifier feedback of "
                "exactly unity?)"
            )

    @staticmethod
    def _solve_dense(j: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """Dense LU with partial pivoting: one system (LAPACK's dgesv directly, a few µs less per
        Newton step than numpy's checks), or a stack of them."""
        if j.ndim == 2:
            _, _, u, info = dgesv(j, rhs)
            if info == 0:
                return np.asarray(u)
            singular: Exception = np.linalg.LinAlgError("singular")
        else:
            try:
                return np.linalg.solve(j, rhs[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError as exc:
                singular = exc
        raise ConvergenceError(
            "singular nodal matrix: the circuit has no unique equilibrium (amplifier feedback of "
            "exactly unity?)"
        ) from singular

    def _newton_batch(
        self, r0: np.ndarray, d0: np.ndarray, u: np.ndarray, vd_at: np.ndarray, consistent: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`_newton` for every sample at once: (voltages, which samples converged). A sample stops
        as soon as it has converged (or diverged), so its answer is its own."""
        u, vd_at, consistent = u.copy(), vd_at.copy(), consistent.copy()
        done = np.zeros(len(u), dtype=bool)
        active = np.arange(len(u))
        every: slice | np.ndarray = slice(None)  # which samples still iterate: all of them, at first
        for _ in range(MAX_ITERATIONS):
            if not len(active):
                break
            u_new = self._step_batch(*self._linearised(r0[every], d0[every], vd_at[every]))
            step = np.abs(u_new - u[every]).max(axis=1, initial=0.0)
            u[every] = u_new
            # After a full Newton step s the error is about s²/(2·vte): 1e-17 V for s = 1 nV.
            converged = consistent[every] & (step <= CONVERGED_STEP)
            finished = converged | ~(step < MAX_STEP)  # converged, or diverged (NaN too)
            if finished.any():
                done[active[converged & (step < MAX_STEP)]] = True
                going = ~finished
                active, u_new = active[going], u_new[going]
                every = active
            vd_at[every], limited = self.diode.limits(self._junctions(u_new, d0[every]), vd_at[every])
            consistent[every] = ~limited.any(axis=1)
        return u, done

    def _linearised(self, r0: np.ndarray, d0: np.ndarray, vd_at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each diode linearised at `vd_at`: (Jacobian diagonal, right-hand side) for a batch."""
        cd, gd = self.diode.currents(vd_at)
        linear = cd + gd * (d0 - vd_at)
        if not self._d_all_on_u:
            gd, linear = gd[:, self._d_on_u], linear[:, self._d_on_u]
        return self._scatter(self._d_jac * gd), -(r0 + self._scatter(self._d_res * linear))

    def _scatter(self, values: np.ndarray) -> np.ndarray:
        """Per-diode values [samples, diodes on unknowns] summed onto their free nodes."""
        out = np.zeros((len(values), self._nf))
        if self._d_paired is not None:
            np.add(values[:, 0::2], values[:, 1::2], out=out[:, self._d_paired])
        elif len(self._d_order):
            out[:, self._d_targets] = np.add.reduceat(values[:, self._d_order], self._d_starts, axis=1)
        return out

    def _step_batch(self, diag: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """Solve (A + diag_s)·u_s = rhs_s for every sample s."""
        if self._dense_batch:
            return self._lu_batch(diag, rhs)
        if not self._schur_ready:
            self._schur_blocks()
        pivot = self._aD + diag[:, : self._nd]
        safe = (np.abs(pivot) >= self._least_pivot).all(axis=1)  # NaN is not safe either
        if safe.all():
            return self._schur_batch(diag, rhs, 1.0 / pivot)
        out = np.empty_like(rhs)
        out[~safe] = self._lu_batch(diag[~safe], rhs[~safe])
        if safe.any():
            out[safe] = self._schur_batch(diag[safe], rhs[safe], 1.0 / pivot[safe])
        return out

    def _schur_batch(self, diag: np.ndarray, rhs: np.ndarray, w: np.ndarray) -> np.ndarray:
        nd, nk = self._nd, self._nf - self._nd
        r_d = w * rhs[:, :nd]
        if not nk:
            return r_d
        s = self._schur_matrices(diag, w)
        u = np.empty_like(rhs)
        u_k = self._solve_dense(s, rhs[:, nd:] - r_d @ self._A_KD.T)
        u[:, nd:] = u_k
        u[:, :nd] = r_d - w * (u_k @ self._A_DK.T)
        return u

    def _schur_matrices(self, diag: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Every sample's Schur matrix [samples, kept, kept], for eliminated pivots 1/w."""
        samples, nd, nk = len(diag), self._nd, self._nf - self._nd
        if self._group_blocks:
            s = np.repeat(self._A_KK[None], samples, axis=0)
            for g, n, a_ng, a_gn in self._group_blocks:
                size_n, size_g = a_gn.shape[1], a_gn.shape[0]
                scaled = (a_ng[None, :, :] * w[:, None, g]).reshape(samples * size_n, size_g)
                square = (
                    (slice(None), n, n) if isinstance(n, slice) else (slice(None), n[:, None], n[None, :])
                )
                s[square] -= (scaled @ a_gn).reshape(samples, size_n, size_n)
        elif self._outer is not None:
            s = (self._A_KK.ravel() - w @ self._outer).reshape(samples, nk, nk)
        else:
            scaled = (self._A_KD[None, :, :] * w[:, None, :]).reshape(samples * nk, nd)
            s = self._A_KK - (scaled @ self._A_DK).reshape(samples, nk, nk)
        s.reshape(samples, nk * nk)[:, :: nk + 1] += diag[:, nd:]
        return s

    def _chord(self, phase: _Phase, keys: list[bytes]) -> np.ndarray | None:
        """A batch whose warm starts are equilibria at the current programming (the nudged phases
        after their free phase): Newton's Jacobian at the warm start, factored once per distinct
        inputs (a sample's +β and −β share it), for every step: a chord iteration, which
        converges to the same root, here ~1e-4 closer per step (the nudge moves each junction by
        ~1e-5 V, its conductance by as little). None (Newton instead) when the network has no
        Schur split, a pivot is unsafe, a step leaves the chord's reach or it does not converge."""
        nd, nk = self._nd, self._nf - self._nd
        if self._dense_batch or not nd or not nk:
            return None
        if not self._schur_ready:
            self._schur_blocks()
        distinct: dict[bytes, int] = {}
        owner = np.array([distinct.setdefault(k, len(distinct)) for k in keys])
        first = np.unique(owner, return_index=True)[1]
        u0 = np.array([self._warm[k] for k in distinct])
        d0 = phase.d0
        cd0, gd = self.diode.currents(self._junctions(u0, d0[first]))
        if not self._d_all_on_u:
            cd0, gd = cd0[:, self._d_on_u], gd[:, self._d_on_u]
        diag = self._scatter(self._d_jac * gd)
        pivot = self._aD + diag[:, :nd]
        if not (np.abs(pivot) >= self._least_pivot).all():
            return None
        w0 = 1.0 / pivot
        try:
            inverse = np.linalg.inv(self._schur_matrices(diag, w0))[owner]
        except np.linalg.LinAlgError:
            return None
        w, u = w0[owner], u0[owner]
        done = np.zeros(len(u), dtype=bool)
        last = np.full(len(u), np.inf)
        at: slice | np.ndarray = slice(None)  # the samples still iterating: all, at first
        reach = CHORD_REACH * self.diode.vte
        for k in range(CHORD_ITERATIONS):
            u_at, w_at = u[at], w[at]
            if k:
                cd, _ = self.diode.currents(self._junctions(u_at, d0[at]))
                if not self._d_all_on_u:
                    cd = cd[:, self._d_on_u]
            else:  # at the warm start: the currents its Jacobian came with
                cd = cd0[owner]
            residual = u_at @ self._A.T + phase.r0[at] + self._scatter(self._d_res * cd)
            r_d = -w_at * residual[:, :nd]
            step = np.empty_like(residual)
            step[:, nd:] = np.einsum("sij,sj->si", inverse[at], -residual[:, nd:] - r_d @ self._A_KD.T)
            step[:, :nd] = r_d - w_at * (step[:, nd:] @ self._A_DK.T)
            size = np.abs(step).max(axis=1)
            if not (size < reach).all():  # NaN too
                return None
            u[at] = u_at + step
            # The error left after a step s is about s·(s / the step before): the contraction.
            converged = (size <= CONVERGED_STEP) & (size * size <= CHORD_ERROR * last[at])
            last[at] = size
            if converged.any():
                done[np.arange(len(u))[at][converged]] = True
                if done.all():
                    return u
                at = np.flatnonzero(~done)
        return None

    def _lu_batch(self, diag: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        nf = self._nf
        chunk = max(1, BATCH_ENTRIES // max(nf * nf, 1))
        if len(rhs) > chunk:
            return np.concatenate(
                [self._lu_batch(diag[k : k + chunk], rhs[k : k + chunk]) for k in range(0, len(rhs), chunk)]
            )
        j = np.repeat(self._A[None], len(rhs), axis=0)
        j[:, np.arange(nf), np.arange(nf)] += diag
        return self._solve_dense(j, rhs)

    def _gmin_stepping(self, r0: np.ndarray, d0: np.ndarray) -> np.ndarray | None:
        """As ngspice does: a large conductance from every free node to ground makes the circuit
        easy; it is lowered step by step (bigger steps after successes, smaller after failures),
        each solve warm started from the last, then removed."""
        scale = float(np.max(np.abs(np.diag(self._A)), initial=1.0))
        shunt = 100.0 * scale
        u = self._newton(r0, d0, np.zeros(self._nf), np.full(len(d0), self.diode.vcrit), False, shunt)
        factor = 10.0
        while u is not None and shunt > 0.0:
            lower = shunt / factor if shunt / factor > 1e-14 * scale else 0.0
            found = self._newton(r0, d0, u, self._junctions(u, d0), True, lower)
            if found is not None:
                u, shunt, factor = found, lower, min(factor * 3.0, 1e3)
            else:
                factor = np.sqrt(factor)
                if factor < 1.001:
                    return None
        return u

    def _source_stepping(self, r0: np.ndarray, d0: np.ndarray) -> np.ndarray:
        """Every source (inputs, clamp offsets, nudges) scaled from 0 to full, each step warm
        started from the last; a step that fails is halved. At 0 the answer is all zeros."""
        u = np.zeros(self._nf)
        done, step = 0.0, 0.1
        while done < 1.0:
            scale = min(1.0, done + step)
            found = self._newton(scale * r0, scale * d0, u, self._junctions(u, scale * d0), consistent=True)
            if found is None:
                step /= 2
                if step < 1e-6:
                    break
                continue
            u, done, step = found, scale, min(2 * step, 0.25)
        if done < 1.0:
            raise ConvergenceError(
                f"Newton did not converge ({MAX_ITERATIONS} iterations; warm, cold, gmin and source "
                f"stepping to {done:.0%}): the circuit may have no equilibrium at these conductances"
            )
        return u
