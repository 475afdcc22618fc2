"""The twin's batched solver against its one-sample solver and against answers known another way:
batches, warm starts, fallbacks, the elimination's guard, open switches (pruned edges)."""

import numpy as np
import pytest

from hil import builders, eqprop
from hil.interface import ConvergenceError, stack
from hil.network import Network
from hil.studies import gradcheck
from sim import twin as twin_module
from sim.twin import TwinBackend

# Layered (one and two hidden layers, skips), the complete graph and the seed's XOR: the batch
# solver eliminates (from 12 free nodes) where the one-sample solver uses a dense LU (below 48).
NETWORKS = {
    "layered 6-8-3": lambda: builders.layered(6, [8], 3),
    "layered 5-6-5-2": lambda: builders.layered(5, [6, 5], 2),
    "layered 4-5-4-3-2 skips": lambda: builders.layered(4, [5, 4, 3], 2, skips=2),
    "complete 2-4-2": lambda: builders.complete(2, 4, 2),
    "complete 2-3-1 A=2": lambda: builders.complete(2, 3, 1, amplifier_gain=2.0),
    "xor": builders.xor,
    "seed xor": builders.seed_xor,
}


def _conductances(net: Network, rng: np.random.Generator) -> np.ndarray:
    g = rng.uniform(1e-3, 5e-2, len(net.conductances))
    return np.where(net.signed & (rng.random(len(g)) < 0.3), -g, g)


def _samples(net: Network, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-2.0, 2.0, (count, net.n_inputs))
    return x, rng.normal(0.0, 1e-4, (count, len(net.nudge_nodes)))


def _one_by_one(twin: TwinBackend, x: np.ndarray, nudges: np.ndarray | None):
    nodes = twin.network.nudge_nodes
    return stack(
        [
            twin.settle(row, None if nudges is None else dict(zip(nodes, nudges[k], strict=True)))
            for k, row in enumerate(x)
        ]
    )


def _assert_same(a, b, volts=1e-12):
    np.testing.assert_allclose(a.voltages, b.voltages, rtol=0, atol=volts)
    for x, y in (
        (a.source_currents, b.source_currents),
        (a.clamp_currents, b.clamp_currents),
        (a.amplifier_currents, b.amplifier_currents),
    ):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", NETWORKS)
def test_a_batch_settles_as_its_samples_do_one_by_one(name):
    net = NETWORKS[name]()
    rng = np.random.default_rng(11)
    g = _conductances(net, rng)
    x, nudges = _samples(net, rng, 9)
    batch, single = TwinBackend(net), TwinBackend(net)
    for backend in (batch, single):
        backend.program(g)
    _assert_same(batch.settle_batch(x), _one_by_one(single, x, None))
    _assert_same(batch.settle_batch(x, nudges), _one_by_one(single, x, nudges))
    # Warm started now, after the conductances moved a little.
    g2 = g * (1.0 + 0.01 * rng.standard_normal(len(g)))
    batch.program(g2)
    single.program(g2)
    _assert_same(batch.settle_batch(x, nudges), _one_by_one(single, x, nudges))


def test_a_sample_converges_on_its_own_whatever_its_batch():
    net = builders.layered(8, [16], 3)
    rng = np.random.default_rng(2)
    g = _conductances(net, rng)
    x, nudges = _samples(net, rng, 12)
    whole = TwinBackend(net)
    whole.program(g)
    full = whole.settle_batch(x, nudges).voltages
    order = rng.permutation(12)
    part = TwinBackend(net)
    part.program(g)
    shuffled = part.settle_batch(x[order[:5]], nudges[order[:5]]).voltages
    np.testing.assert_allclose(shuffled, full[order[:5]], rtol=0, atol=1e-13)


def test_a_batch_with_a_sample_newton_cannot_start_finds_it_by_gmin_stepping():
    """The seed circuit at conductances where Newton from the cold start diverges on one input
    (test_physics checks that sample against ngspice): in a batch the others converge at once
    and that one takes the fallbacks alone, to the answer it has on its own."""
    net = builders.seed_xor()
    g = np.array(
        [0.07345657, 0.06400883, 0.0095789, 0.04171624, 0.06023807, 0.02721446, 0.22526885, 0.16839478]
    )
    x = np.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
    batch, single = TwinBackend(net), TwinBackend(net)
    batch.program(g)
    single.program(g)
    calls = []
    real = TwinBackend._gmin_stepping

    def counted(self, r0, d0):
        calls.append(1)
        return real(self, r0, d0)

    TwinBackend._gmin_stepping = counted  # type: ignore[method-assign]
    try:
        alone = _one_by_one(single, x, None)
        needed = len(calls)
        _assert_same(batch.settle_batch(x), alone)
    finally:
        TwinBackend._gmin_stepping = real  # type: ignore[method-assign]
    assert needed == 1  # alone, one sample of the four needs it
    # In the batch, at most that sample goes on alone (whether the batched Newton already finds
    # it from the cold start depends on the CPU's rounding): never the three that converge.
    assert len(calls) - needed <= 1


def test_the_elimination_hands_a_vanishing_pivot_to_the_dense_lu():
    net = builders.layered(6, [12], 3)
    twin = TwinBackend(net)
    rng = np.random.default_rng(4)
    twin.program(_conductances(net, rng))
    twin._schur_blocks()
    nf, nd = twin._nf, twin._nd
    diag = rng.uniform(0.0, 1e-2, (4, nf))
    rhs = rng.standard_normal((4, nf))
    diag[1, 3] = -twin._aD[3]  # a pivot of exactly 0: the elimination would divide by it
    diag[2, 5] = -twin._aD[5] + 1e-13  # one so small that the couplings would grow 1e10-fold
    dense = twin._lu_batch(diag, rhs)
    np.testing.assert_allclose(twin._step_batch(diag, rhs), dense, rtol=1e-9, atol=1e-12)
    for k in range(4):
        np.testing.assert_allclose(twin._step(diag[k], rhs[k]), dense[k], rtol=1e-9, atol=1e-12)
    assert nd == 12  # the hidden layer is what gets eliminated


def test_the_elimination_and_the_dense_lu_agree(monkeypatch):
    """The same batch settled through the Schur system and, with the growth guard at 0, through
    the dense LU for every sample."""
    net = builders.layered(5, [7, 6], 4, skips=2)
    rng = np.random.default_rng(9)
    g = _conductances(net, rng)
    x, nudges = _samples(net, rng, 6)
    schur = TwinBackend(net)
    schur.program(g)
    expected = schur.settle_batch(x, nudges)
    monkeypatch.setattr(twin_module, "MAX_GROWTH", 1e-300)
    dense = TwinBackend(net)
    dense.program(g)
    _assert_same(dense.settle_batch(x, nudges), expected)


def test_warm_starts_survive_a_checkpoint_bit_for_bit():
    net = builders.layered(6, [14], 3)
    rng = np.random.default_rng(6)
    g = _conductances(net, rng)
    x, nudges = _samples(net, rng, 8)
    first = TwinBackend(net)
    first.program(g)
    first.settle_batch(x)
    first.settle(x[0])
    state = first.solver_state()
    assert state["warm_free_voltages"].shape == (8, len(first._free))
    g2 = g * 1.02
    first.program(g2)
    expected = first.settle_batch(x, nudges)
    resumed = TwinBackend(net)
    resumed.restore_solver_state({k: np.array(v) for k, v in state.items()})
    resumed.program(g2)
    got = resumed.settle_batch(x, nudges)
    np.testing.assert_array_equal(got.voltages, expected.voltages)
    np.testing.assert_array_equal(got.source_currents, expected.source_currents)
    # Without them the answer is the same equilibrium, but not the same bits' path: prove the
    # state mattered by the iterations it saved.
    cold = TwinBackend(net)
    cold.program(g2)
    np.testing.assert_allclose(cold.settle_batch(x, nudges).voltages, expected.voltages, atol=1e-12)


def test_a_pruned_conductance_is_the_edge_removed():
    """Conductance 0 is an open switch: the same node voltages as the network without that edge."""
    net = builders.layered(5, [6], 2)
    rng = np.random.default_rng(8)
    g = _conductances(net, rng)
    pruned = rng.random(len(g)) < 0.4
    g[pruned] = 0.0
    kept = Network(
        name="kept",
        conductances=[c for c, p in zip(net.conductances, pruned, strict=True) if not p],
        sources=net.sources,
        clamps=net.clamps,
        amplifiers=net.amplifiers,
        outputs=net.outputs,
        n_inputs=net.n_inputs,
    )
    x, nudges = _samples(net, rng, 5)
    a, b = TwinBackend(net), TwinBackend(kept)
    a.program(g)
    b.program(g[~pruned])
    index = [kept.node_index[n] for n in net.nodes]
    for got, want in (
        (a.settle_batch(x, nudges), b.settle_batch(x, nudges)),
        (a.settle(x[0]), b.settle(x[0])),
    ):
        np.testing.assert_allclose(got.voltages, want.voltages[..., index], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.source_currents, want.source_currents, rtol=1e-9, atol=1e-15)


def test_a_node_left_without_any_conductance_is_a_clear_convergence_error():
    net = builders.layered(3, [4], 2)
    twin = TwinBackend(net)
    g = np.full(len(net.conductances), 1e-2)
    into_y1p = np.array([c.b == "y1p" for c in net.conductances])
    g[into_y1p] = 0.0
    twin.program(g)
    with pytest.raises(ConvergenceError, match=r"node\(s\) y1p have no DC path"):
        twin.settle(np.zeros(3))
    with pytest.raises(ConvergenceError, match="y1p"):
        twin.settle_batch(np.zeros((2, 3)))
    g[np.flatnonzero(into_y1p)[0]] = 1e-2  # one switch closed again: a path, an equilibrium
    twin.program(g)
    assert np.all(np.isfinite(twin.settle(np.zeros(3)).voltages))
    # A clamped hidden node keeps its diodes to the offset sources: cut off, it still settles.
    g[:] = 1e-2
    g[np.array([c.b == "h1_0" for c in net.conductances])] = 0.0
    twin.program(g)
    assert np.all(np.isfinite(twin.settle(np.zeros(3)).voltages))


def test_programming_refuses_what_is_not_one_finite_conductance_per_edge():
    twin = TwinBackend(builders.xor())
    for bad in (np.full(7, 1e-3), np.array([np.nan] + [1e-3] * 7), np.array([np.inf] + [1e-3] * 7)):
        with pytest.raises(ValueError, match="one per edge"):
            twin.program(bad)


def test_centered_vdm_matches_finite_differences_through_the_elimination():
    """Two hidden layers and a skip, 56 free nodes: one-sample settles go through the Schur
    system too. Every layer's centered-VDM estimate within 1e-3 of finite differences."""
    net = builders.layered(6, [30, 20], 3, skips=2)
    twin = TwinBackend(net)
    assert len(twin._free) >= twin_module.DENSE_ONE
    rng = np.random.default_rng(12)
    g = rng.uniform(2e-3, 2e-2, len(net.conductances))
    x, t = rng.uniform(-1.0, 1.0, 6), rng.uniform(-0.2, 0.2, 3)
    check = gradcheck.check(twin, g, x, t, ["vdm-centered"], [1e-7])
    assert np.all(check.relative_error["vdm-centered"] <= 1e-3), check.relative_error
    # The batch path (two samples: the batched elimination) gives the same estimate, to the
    # formula's own floor (rounding of V, about 1e-16 V, over 2β).
    twin.program(g)
    batch = eqprop.measure_batch(twin, g, np.array([x, -x]), np.array([t, t]), "vdm-centered", 1e-7)
    one = eqprop.measure(twin, g, x, t, "vdm-centered", 1e-7)
    np.testing.assert_allclose(batch.raw[0], one.raw, rtol=1e-6, atol=1e-7 * np.abs(one.raw).max())


def test_the_clamp_shortcut_and_the_general_scatter_agree():
    """Diodes summed onto their unknowns by one slice add (clamps as the builders make them) or by
    the general segment sum: the same batch, the same answers."""
    net = builders.layered(6, [10], 3)
    rng = np.random.default_rng(13)
    g = _conductances(net, rng)
    x, nudges = _samples(net, rng, 5)
    shortcut, general = TwinBackend(net), TwinBackend(net)
    assert shortcut._d_paired is not None
    general._d_paired = None
    for backend in (shortcut, general):
        backend.program(g)
    _assert_same(shortcut.settle_batch(x, nudges), general.settle_batch(x, nudges), volts=1e-13)


@pytest.mark.parametrize("skips", [0, 2])
def test_the_schur_matrix_by_layer_groups_equals_the_dense_product(monkeypatch, skips):
    """A deep network's eliminated layers each add one dense product over their neighbour layers;
    with the grouping off, one product over every pair of kept unknowns: the same answers."""
    net = builders.layered(5, [14, 12, 14, 10], 2, skips=skips)  # 54 free: one sample eliminates too
    rng = np.random.default_rng(14)
    g = _conductances(net, rng)
    x, nudges = _samples(net, rng, 5)
    grouped = TwinBackend(net)
    assert grouped._groups is not None and len(grouped._groups) >= 2
    monkeypatch.setattr(twin_module, "MAX_GROUPS", 0)
    dense = TwinBackend(net)
    assert dense._groups is None
    for backend in (grouped, dense):
        backend.program(g)
    _assert_same(grouped.settle_batch(x, nudges), dense.settle_batch(x, nudges), volts=1e-13)
    for k in range(2):
        pushed = dict(zip(net.nudge_nodes, nudges[k], strict=True))
        _assert_same(grouped.settle(x[k], pushed), dense.settle(x[k], pushed), volts=1e-13)


def test_a_checkpoint_holds_the_free_nodes_voltages_in_the_networks_order():
    """What `solver_state` keeps is readable without the solver's elimination order: each warm
    start is the free nodes' voltages of that sample, in `Network.nodes` order."""
    net = builders.layered(4, [6, 5], 2)
    twin = TwinBackend(net)
    rng = np.random.default_rng(15)
    twin.program(_conductances(net, rng))
    x = rng.uniform(-2.0, 2.0, (3, 4))
    voltages = twin.settle_batch(x).voltages
    state = twin.solver_state()
    driven = {s.node for s in net.sources} | {a.node_out for a in net.amplifiers}
    free = [k for k, node in enumerate(net.nodes) if node not in driven]
    np.testing.assert_array_equal(state["warm_free_voltages"], voltages[:, free])


def test_a_batch_too_big_for_memory_at_once_goes_in_chunks(monkeypatch):
    net = builders.layered(6, [12], 3)
    rng = np.random.default_rng(16)
    g = _conductances(net, rng)
    x, nudges = _samples(net, rng, 7)
    whole = TwinBackend(net)
    whole.program(g)
    expected = whole.settle_batch(x, nudges)
    monkeypatch.setattr(twin_module, "BATCH_ENTRIES", 2 * (6 * 6 + 4 * 18))  # two samples a chunk
    chunked = TwinBackend(net)
    chunked.program(g)
    sizes = []
    phase = TwinBackend._phase
    monkeypatch.setattr(TwinBackend, "_phase", lambda self, x, *a: sizes.append(len(x)) or phase(self, x, *a))
    _assert_same(chunked.settle_batch(x, nudges), expected, volts=1e-13)
    assert sizes == [2, 2, 2, 1]
    assert len(chunked.solver_state()["warm_keys"]) == 0  # nudged phases keep no warm start
    chunked.settle_batch(x)
    assert len(chunked.solver_state()["warm_keys"]) == 7


def test_the_vectorised_diode_is_the_scalar_one_term_for_term():
    """Batches use `currents`/`limits` on arrays; one sample with few diodes uses the plain loops
    `current`/`limit` (ngspice's dioload.c and DEVpnjlim): both agree in every regime (cubic
    reverse region, exponential, limited steps up from below and above 0, the floor)."""
    from hil.network import DiodeModel
    from sim.devices import DiodeAtTemperature

    diode = DiodeAtTemperature.at(DiodeModel(), 25.0)
    rng = np.random.default_rng(17)
    v = np.concatenate([rng.uniform(-3.0, 1.2, 400), [-3 * diode.vte, 0.0, diode.vcrit, 30.0]])
    cd, gd = diode.currents(v)
    cd1, gd1 = diode.current(v)
    np.testing.assert_allclose(cd, cd1, rtol=1e-13, atol=1e-25)
    np.testing.assert_allclose(gd, gd1, rtol=1e-13, atol=0)
    old = np.concatenate([rng.uniform(-2.0, 1.0, 400), [0.5, -0.2, 0.7, 0.0]])
    limited, which = diode.limits(v, old)
    expected = diode.limit(v, old)
    np.testing.assert_allclose(limited, expected, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(which, expected != v)
    assert which.sum() > 50 and (~which).sum() > 50  # both kinds of step were checked


def _spy(monkeypatch, name: str) -> list:
    """Record what TwinBackend.`name` returns (None: it declined)."""
    found: list = []
    real = getattr(TwinBackend, name)

    def spied(self, *args):
        out = real(self, *args)
        found.append(out)
        return out

    monkeypatch.setattr(TwinBackend, name, spied)
    return found


ELIMINATING = ["layered 6-8-3", "layered 5-6-5-2", "layered 4-5-4-3-2 skips"]  # 14-16 free nodes


@pytest.mark.parametrize("name", ELIMINATING)
def test_nudged_phases_by_the_chord_are_newtons_answers(name, monkeypatch):
    """After the free phase at the same programming, the +β and −β rows (sharing each sample's
    Jacobian) go by the chord: Newton's answers (the chord off) to 1e-13 V. A nudge too large for
    the chord's reach, or warm starts from another programming, go by Newton."""
    net = NETWORKS[name]()
    rng = np.random.default_rng(21)
    g = _conductances(net, rng)
    x, nudges = _samples(net, rng, 6)
    twice, both = np.concatenate([x, x]), np.concatenate([nudges, -nudges])
    chord, newton = TwinBackend(net), TwinBackend(net)
    for backend in (chord, newton):
        backend.program(g)
        backend.settle_batch(x)
    used = _spy(monkeypatch, "_chord")
    got = chord.settle_batch(twice, both)
    far = chord.settle_batch(twice, 1e4 * both)  # amperes: junctions move far past the reach
    chord.program(g * 1.01)
    chord.settle_batch(twice, both)
    assert used[0] is not None and used[1] is None and len(used) == 2
    monkeypatch.setattr(twin_module, "CHORD_ITERATIONS", 0)
    _assert_same(got, newton.settle_batch(twice, both), volts=1e-13)
    _assert_same(far, newton.settle_batch(twice, 1e4 * both))


@pytest.mark.parametrize("name", ELIMINATING)
def test_a_stale_warm_start_relaxed_still_finds_the_cold_starts_answer(name, monkeypatch):
    """After the conductances moved far, each eliminated unknown is first solved alone (the kept
    ones held at their warm values); Newton goes on from there to the root a cold start finds."""
    net = NETWORKS[name]()
    rng = np.random.default_rng(22)
    g = _conductances(net, rng)
    x, _ = _samples(net, rng, 7)
    warm = TwinBackend(net)
    warm.program(g)
    warm.settle_batch(3.0 * x)
    moved = g * rng.uniform(0.2, 5.0, len(g))
    warm.program(moved)
    relaxed = _spy(monkeypatch, "_relax")
    got = warm.settle_batch(3.0 * x)
    assert len(relaxed) == 1 and relaxed[0] is not None
    cold = TwinBackend(net)
    cold.program(moved)
    expected = cold.settle_batch(3.0 * x)
    _assert_same(got, expected)
    assert len(relaxed) == 1  # a cold start is ngspice's, not relaxed
    one = TwinBackend(net)  # one sample at a time: the same
    one.program(g)
    one.settle(3.0 * x[0])
    one.program(moved)
    np.testing.assert_allclose(one.settle(3.0 * x[0]).voltages, expected.voltages[0], rtol=0, atol=1e-12)
    assert len(relaxed) == 2 and relaxed[1] is not None
