"""Estimators against finite-difference gradients of the same backend."""

import numpy as np
import pytest
from conftest import loopback_bench

from drivers.bench import BenchSafetyError
from hil import builders, config, eqprop, open_backend
from hil.studies import gradcheck
from sim.spice import SpiceBackend
from sim.twin import TwinBackend

XOR_01 = (np.array([-2.0, 2.0]), np.array([1.0]))


def _report(backend, g, method, beta, sample=XOR_01):
    x, t = sample
    return gradcheck.edge_report(gradcheck.check(backend, g, x, t, [method], [beta]), backend.network, t)


def _ratios(report):
    return np.array([e["estimate"] / e["finite_difference"] for e in report["edges"]])


def test_centered_vdm_matches_finite_differences_on_the_corrected_circuit(configs):
    e = config.load(configs / "xor.toml")
    backend = open_backend(e)
    g = e.initial_conductances(8)
    data = e.dataset()
    for i in range(len(data)):
        report = _report(backend, g, "vdm-centered", 1e-6, (data.inputs[i], data.targets[i]))
        for layer in report["layers"]:
            assert layer["relative_error"] <= 1e-3, (i, layer)
            assert layer["cosine"] >= 1 - 1e-6
    backend.close()


def test_compensation_is_the_product_of_downstream_gains_squared():
    """Two hidden layers with different gains: layer 1 sits behind A1 and A2, layer 2 behind A2."""
    net = builders.layered(2, [3, 2], 1, amplifier_gain=[2.0, 3.0])
    backend = TwinBackend(net)
    rng = np.random.default_rng(5)
    g = rng.uniform(1e-3, 2e-2, len(net.conductances))
    report = _report(backend, g, "vdm-centered", 1e-7, (np.array([0.7, -0.4]), np.array([0.3])))
    errors = {layer["layer"]: layer["relative_error"] for layer in report["layers"]}
    assert max(errors.values()) <= 1e-3, errors
    raw_ratio = np.array([e["raw"] / e["finite_difference"] for e in report["edges"]])
    for layer, factor in ((1, 36.0), (2, 9.0), (3, 1.0)):
        np.testing.assert_allclose(raw_ratio[net.layers == layer], 1 / factor, rtol=1e-3)


def test_positive_nudge_bias_is_first_order_and_centered_second_order():
    net = builders.xor()
    backend = TwinBackend(net)
    g = np.random.default_rng(1).uniform(1e-3, 0.1, 8)

    def err(method, beta):
        return max(layer["relative_error"] for layer in _report(backend, g, method, beta)["layers"])

    positive = err("vdm", 1e-3) / err("vdm", 1e-4)
    centered = err("vdm-centered", 1e-2) / err("vdm-centered", 1e-3)
    assert 5 < positive < 20  # O(β): ten times the nudge, ten times the error
    assert 50 < centered < 200  # O(β²)


def test_seed_amplifier_sign_flaw_gives_minus_one_sixteenth_in_layer_one():
    """With the seed's CCCS gain +1/A, VDM's layer-1 estimate behind a positive-gain amplifier is
    −1/A² = −1/16 of the true gradient; layer 2 is right."""
    g = np.random.RandomState(18).uniform(1e-4, 0.1, 9)[1:]
    backend = SpiceBackend(builders.seed_xor(pairing=False))
    ratios = _ratios(_report(backend, g, "vdm", 1e-7))
    np.testing.assert_allclose(ratios[:6], -1 / 16, rtol=1e-3)
    np.testing.assert_allclose(ratios[6:], 1.0, rtol=1e-3)
    # With its drop/conductance pairing, only the edges paired with themselves keep the ratio.
    paired = _ratios(_report(SpiceBackend(builders.seed_xor()), g, "vdm", 1e-7))
    np.testing.assert_allclose(paired[[0, 5]], -1 / 16, rtol=1e-3)
    assert not np.allclose(paired[1:5], -1 / 16, rtol=0.1)
    backend.close()


def test_reciprocal_amplifier_fixes_the_sign_flaw():
    g = np.random.RandomState(18).uniform(1e-4, 0.1, 9)[1:]
    ratios = _ratios(_report(TwinBackend(builders.xor()), g, "vdm", 1e-7))
    np.testing.assert_allclose(ratios, 1.0, rtol=1e-3)


def test_pcm_matches_the_seed_definition_by_hand():
    """PCM's raw value for one edge, recomputed here from four operating points."""
    net = builders.seed_xor()
    backend = TwinBackend(net)
    g = np.random.RandomState(18).uniform(1e-4, 0.1, 9)[1:]
    x, t = XOR_01
    beta, eps, k = 1e-6, 0.01, 6
    backend.program(g)
    raw = eqprop.measure(backend, g, x, t, "pcm", beta, eps).raw

    def phase_powers(gv):
        backend.program(gv)
        free = backend.settle(x)
        y = net.output_voltages(free.voltages)[0]
        # The seed's nudge: β(t − y) drawn out of node 11.
        nudged = backend.settle(x, {"11": -beta * (t[0] - y)})
        return eqprop.absorbed_power(net, free, gv), eqprop.absorbed_power(net, nudged, gv)

    pf, pn = phase_powers(g)
    gk = g.copy()
    gk[k] *= 1 + eps
    pf_k, pn_k = phase_powers(gk)
    dp_free, dp_nudged = (pf - pf_k) / (eps * g[k]), (pn - pn_k) / (eps * g[k])
    seed_step = (5e-3 / beta) * (dp_nudged - dp_free)  # the seed's G += (alpha/beta)(dP_n − dP_f)
    # ours: G −= η·raw with η = 2·alpha. PCM subtracts powers of ~1 W that differ by ~1e-10 W, so
    # rounding in the solves (1e-16) already moves it by ~1e-6: agreement to 1e-5 is the floor.
    assert -1e-2 * raw[k] == pytest.approx(seed_step, rel=1e-5)
    assert -1e-2 * raw[k] != pytest.approx(-seed_step, rel=1e-5)


def test_absorbed_power_balances_the_power_the_sources_deliver():
    """Tellegen: what the elements absorb equals what the independent sources deliver."""
    net = builders.seed_xor()
    backend = TwinBackend(net)
    g = np.random.default_rng(2).uniform(1e-3, 0.1, 8)
    backend.program(g)
    state = backend.settle(np.array([2.0, -2.0]))
    index = {n: i for i, n in enumerate(net.nodes)}
    v = state.voltages
    delivered = -sum(v[index[s.node]] * i for s, i in zip(net.sources, state.source_currents, strict=True))
    delivered -= sum(
        c.v_high * ih + c.v_low * il for c, (ih, il) in zip(net.clamps, state.clamp_currents, strict=True)
    )
    unpaired = builders.seed_xor(pairing=False)
    assert eqprop.absorbed_power(unpaired, state, g) == pytest.approx(delivered, rel=1e-10)


def test_updates_respect_the_device_range_and_keep_signs():
    net = builders.xor()
    g = np.array([0.05, -0.05, 2e-4, 0.09, 3e-4, 0.05, 0.05, 0.05])
    step = np.array([0.0, 0.0, 1.0, -1.0, 3.5e-3, 0.0, 0.0, 0.0])
    new = eqprop.apply_update(net, g, step, np.full(8, 0.1), 1e-4, 0.1)
    assert new[1] == -0.05 and new[3] == 0.1  # a negative weight stays negative; |g| ≤ g_max
    assert new[2] == pytest.approx(-0.0998)  # a signed weight may cross zero: its source flips
    assert new[4] == pytest.approx(-1e-4)  # and lands no nearer zero than g_min
    unsigned = builders.layered(1, [1], 1)
    h = np.full(len(unsigned.conductances), 1e-3)
    clipped = eqprop.apply_update(unsigned, h, np.full(len(h), 1.0), np.full(len(h), 1.0), 1e-4, 0.1)
    assert np.all(clipped == 1e-4)


# -------------------------------------------------------------------------------- the nudge on a bench
def test_a_nudge_is_held_to_max_nudge_current_not_to_the_compliance_current(configs):
    backend, virtual, experiment = loopback_bench(
        configs, {"max_nudge_current": 1e-3, "compliance_current": 0.2}
    )
    nudger = virtual.state.smus[backend.config.nudges["11"]]
    x = experiment.dataset().inputs[1]
    for limit in (1e-3, -1e-3):  # the limit itself is applied, either way round
        backend.settle(x, {"11": limit})
        assert nudger.function == "I" and nudger.level == limit
    for beyond in (np.nextafter(1e-3, 1.0), -np.nextafter(1e-3, 1.0), 0.1):  # all well inside 0.2 A
        with pytest.raises(BenchSafetyError, match=r"exceeds max_nudge_current = 0\.001"):
            backend.settle(x, {"11": float(beyond)})
        assert nudger.level == -1e-3  # refused before it reached the SMU
    backend.close()


def test_an_estimators_nudge_beyond_the_bench_limit_stops_the_phase(configs):
    backend, virtual, experiment = loopback_bench(
        configs, {"max_nudge_current": 1e-3, "compliance_current": 0.2}
    )
    data = experiment.dataset()
    x, t = data.inputs[1], data.targets[1]
    y = eqprop.outputs(backend.network, backend.settle(x))
    beta = 5e-3 / float(abs(t[0] - y[0]))  # a 5 mA nudge: over the nudge limit, under compliance
    with pytest.raises(BenchSafetyError, match=r"nudged \(beta \+.* phase: a nudge of 0\.005 A exceeds"):
        eqprop.measure(backend, experiment.start_conductances(), x, t, "vdm-centered", beta)
    backend.close()
    assert not any(s.output for s in virtual.state.smus.values())


# The other limits the bench holds each phase to (siblings of the nudge's: the right number, the
# bound itself allowed). Their checks are the bench backend's; the phases here are the estimators'.
def test_a_source_level_is_held_to_max_volts(configs):
    backend, virtual, experiment = loopback_bench(configs, {"max_volts": 2.0})  # the inputs are ±2 V
    sources = [virtual.state.smus[key] for key in backend.config.sources.values()]
    x = experiment.dataset().inputs[1]
    backend.settle(x)  # exactly at the limit
    levels = [s.level for s in sources]
    assert max(abs(level) for level in levels) == 2.0
    with pytest.raises(BenchSafetyError, match=r"set to 2\S* V, above max_volts = 2"):
        backend.settle(x * float(np.nextafter(1.0, 2.0)))
    assert [s.level for s in sources] == levels  # refused before any level moved
    backend.close()


def test_a_phase_that_puts_more_than_pot_terminal_volts_on_a_pot_is_refused(configs):
    backend, _, experiment = loopback_bench(configs)
    x = experiment.dataset().inputs[1]
    terminal = float(np.max(np.abs(backend.settle(x).voltages)))
    backend.limits["pot_terminal_volts"] = terminal
    backend.settle(x)  # exactly at the rating
    backend.limits["pot_terminal_volts"] = float(np.nextafter(terminal, 0.0))
    with pytest.raises(BenchSafetyError, match="above pot_terminal_volts"):
        backend.settle(x)
    backend.close()


@pytest.mark.parametrize("min_block", [1, 256, 1 << 30])
@pytest.mark.parametrize(
    "build",
    [
        lambda: builders.layered(16, [16, 16], 4, skips=2),
        lambda: builders.complete(3, 5, 2),
        lambda: builders.seed_xor(),  # its drop/conductance pairing and reversed nudge
    ],
)
def test_the_batch_mean_path_is_the_mean_of_the_per_sample_estimates(build, min_block, monkeypatch):
    """Edge blocks summed as matrix products (every edge in a block, the default split, every
    edge gathered), a fixed β and one β per sample: the same mean to rounding."""
    from hil import network as network_module

    monkeypatch.setattr(network_module, "MIN_BLOCK_EDGES", min_block)
    net = build()
    rng = np.random.default_rng(3)
    g = rng.uniform(1e-3, 2e-2, len(net.conductances)) * np.where(
        net.signed, rng.choice([-1, 1], len(net.signed)), 1
    )
    x = rng.uniform(-2.0, 2.0, (6, net.n_inputs))
    t = rng.uniform(0.0, 0.5, (6, len(net.outputs)))
    for method in ("vdm", "vdm-centered"):
        for beta, current in ((1e-5, 0.0), (1.0, 2e-6)):
            found = []
            for per_sample in (True, False):
                backend = TwinBackend(net)  # both from the same cold start: the same voltages
                backend.program(g)
                found.append(
                    eqprop.measure_batch(
                        backend, g, x, t, method, beta, nudge_current=current, per_sample=per_sample
                    )
                )
            per, mean = found
            assert per.raw is not None and mean.raw is None
            expected = per.raw.mean(axis=0)
            assert np.abs(expected).max() > 0
            np.testing.assert_allclose(mean.mean, expected, rtol=0, atol=1e-12 * np.abs(per.raw).max())
            np.testing.assert_array_equal(per.mean, expected)


def test_finite_differences_over_sampled_edges_are_the_full_ones_there_and_nan_elsewhere():
    """`hil gradcheck --edges N`: N edges of each layer (all of a smaller layer), drawn with a fixed
    seed; their differences are exactly the full check's, the rest NaN, and the per-layer figures
    are taken over the differenced edges only."""
    net = builders.layered(6, [5], 2)
    twin = TwinBackend(net)
    rng = np.random.default_rng(3)
    g = rng.uniform(1e-4, 1e-3, len(net.conductances))
    x, t = rng.uniform(-2, 2, net.n_inputs), np.array([0.3, 0.1])
    full = gradcheck.check(twin, g, x, t, ["vdm-centered"], [1e-6])
    part = gradcheck.check(twin, g, x, t, ["vdm-centered"], [1e-6], edges_per_layer=4)
    picked = np.isfinite(part.finite_difference)
    counts = {level: int(np.sum(picked & (net.layers == level))) for level in set(net.layers.tolist())}
    assert counts == {level: min(4, int(np.sum(net.layers == level))) for level in counts}
    np.testing.assert_array_equal(part.finite_difference[picked], full.finite_difference[picked])
    assert gradcheck.sample_edges(net.layers, 4) == np.flatnonzero(picked).tolist()  # seeded: the same
    for j, (_, sel) in enumerate(gradcheck.layer_selections(net.layers, part.finite_difference)):
        rel, _ = gradcheck.layer_agreement(
            part.estimates["vdm-centered"][0, sel], full.finite_difference[sel]
        )
        assert part.relative_error["vdm-centered"][0, j] == pytest.approx(rel, rel=1e-12)
        assert part.relative_error["vdm-centered"][0, j] <= 1e-3
    report = gradcheck.edge_report(part, net, t)
    assert len(report["edges"]) == int(picked.sum()) and [
        layer["edges"] for layer in report["layers"]
    ] == list(counts.values())
    with pytest.raises(ValueError, match="0 edges per layer: give at least 1"):
        gradcheck.sample_edges(net.layers, 0)
