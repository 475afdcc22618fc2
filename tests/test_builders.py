"""The topologies: deep layered networks, per-layer forward and feedback gains, skip connections and
the complete graph, each held to the references that do not trust the builders: finite differences
of the loss through the same circuit (the gradient EqProp must match), ngspice against the twin,
and the energy each circuit has (or has not), derived from its elements by `energy_factors`."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from hil import builders, config
from hil.network import Network
from hil.studies import gradcheck
from hil.train import train
from sim.netlist import SimulatorOptions
from sim.spice import SpiceBackend
from sim.twin import TwinBackend

SAMPLE = (np.array([0.0, 4.0]), np.array([1.0]))


def _errors(backend, beta: float = 1e-3, sample=SAMPLE, seed: int = 3) -> dict[int, float]:
    """Centered VDM's relative error per layer against finite differences, at a random start."""
    net = backend.network
    g = np.random.default_rng(seed).uniform(1e-3, 0.1, len(net.conductances))
    x, t = sample
    t = np.resize(t, len(net.outputs))
    result = gradcheck.check(backend, g, x, t, ["vdm-centered"], [beta])
    return dict(zip(result.layers.tolist(), result.relative_error["vdm-centered"][0].tolist(), strict=True))


def _shared_skips(net: Network) -> Network:
    """The same network with every skip from a hidden layer hung on that layer's own amplifier
    outputs (s{f}_{t}_{j}± → a{f}_{j}±) and the skip amplifiers removed."""
    moved = [replace(c, a=re.sub(r"^s(\d+)_\d+_(\d+)([pn])$", r"a\1_\2\3", c.a)) for c in net.conductances]
    renamed = [
        replace(c, name=f"{c.name}x") if c.a != old.a else c
        for c, old in zip(moved, net.conductances, strict=True)
    ]
    return replace(
        net,
        name=f"{net.name}-shared",
        conductances=renamed,
        amplifiers=[a for a in net.amplifiers if not a.name.startswith("XS")],
    )


# ---------------------------------------------------------------------------------------- energy
@pytest.mark.parametrize(
    "net",
    [
        builders.xor(),
        builders.layered(3, [4, 2], 2, amplifier_gain=[2.0, 3.0]),
        builders.layered(2, [3, 3, 3], 1, amplifier_gain=[2, 3, 5], feedback_gain=[0.05, 1.0, 0.3]),
        builders.layered(2, [3, 3, 3, 3], 1, skips=2, feedback_gain=0.1),
        builders.layered(2, [3, 2, 3], 2, skips=[[0, 3], [1, 4], [1, 3]], duplicate_hidden=False),
        builders.complete(2, 4, 1),
        builders.complete(2, 3, 2, amplifier_gain=3.0),
        builders.complete(3, 2, 1, duplicate_hidden=False, doubled_outputs=False),
    ],
    ids=lambda net: net.name,
)
def test_every_builder_compensates_as_the_circuits_energy_says(net):
    derived = builders.energy_compensation(net)
    assert derived.keys() == set(net.layers.tolist())
    for layer, factor in derived.items():
        assert net.layer_compensation[layer] == pytest.approx(factor, rel=1e-12)


def test_the_compensation_is_the_product_of_forward_over_feedback_gains():
    net = builders.layered(2, [2, 2, 2], 1, amplifier_gain=[2.0, 4.0, 5.0], feedback_gain=[0.5, 0.1, 0.2])
    assert net.layer_compensation == pytest.approx({4: 1.0, 3: 25.0, 2: 1000.0, 1: 4000.0})
    reciprocal = builders.layered(2, [2, 2], 1, amplifier_gain=[2.0, 3.0])
    assert reciprocal.layer_compensation == pytest.approx({3: 1.0, 2: 9.0, 1: 36.0})


def test_a_skip_gets_amplifiers_whose_ratio_spans_the_stages_it_skips():
    """Hidden layer 1 into the output of a 3-hidden-layer network: forward a_1, backward
    a_1·(b_1/a_1)(b_2/a_2)(b_3/a_3); the skip conductances train with the output layer."""
    net = builders.layered(
        2, [2, 2, 2], 1, amplifier_gain=[2.0, 4.0, 5.0], feedback_gain=[0.5, 0.1, 0.2], skips=[[1, 4]]
    )
    skip_amps = [a for a in net.amplifiers if a.name.startswith("XS1_4")]
    assert len(skip_amps) == 4  # 2 nodes × (+, −)
    ratio = (0.5 / 2.0) * (0.1 / 4.0) * (0.2 / 5.0)
    for a in skip_amps:
        assert abs(a.gain) == 2.0 and -a.backward_gain / a.gain == pytest.approx(ratio)
    skipped = [c for c in net.conductances if c.a.startswith("s1_4_")]
    assert len(skipped) == 4 * 2 and {c.layer for c in skipped} == {4}
    assert (
        net.conductances[: len(net.conductances) - 8]
        == builders.layered(
            2, [2, 2, 2], 1, amplifier_gain=[2.0, 4.0, 5.0], feedback_gain=[0.5, 0.1, 0.2]
        ).conductances
    )  # the others draw the same initial values with and without skips


def test_skips_on_the_layers_own_amplifiers_leave_no_energy():
    shared = _shared_skips(builders.layered(2, [3, 3, 3], 1, skips=2))
    with pytest.raises(ValueError, match=r"has no energy: conductance .* closes a loop"):
        builders.energy_factors(shared)


def test_the_seed_circuits_layer_one_factor_is_minus_a_squared():
    """Its CCCS +1/A is a negative ratio: an energy saddle, where the estimate is −1/A² of the
    gradient (README, 'What the seed circuit does')."""
    assert builders.energy_compensation(builders.seed_xor(4.0)) == {1: -16.0, 2: 1.0}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(feedback_gain=[0.1]), "1 feedback gains for 2 hidden layers"),
        (dict(feedback_gain=-0.25), "must all be > 0"),
        (dict(amplifier_gain=[4.0, 0.0]), "must all be > 0"),
        (dict(skips=1), "skips = 1 does not fit"),
        (dict(skips=[[1, 2]]), r"skips pair \[1, 2\] does not fit"),
        (dict(skips=[[0, 3], [0, 3]]), "name a pair twice"),
    ],
)
def test_bad_gains_and_skips_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        builders.layered(2, [2, 2], 1, **kwargs)


# ---------------------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("depth", range(1, 7))
def test_centered_vdm_is_the_gradient_at_every_depth(depth):
    """Reciprocal A = 4: layer 1 of six hidden layers is compensated by 4¹² = 1.7e7, and its raw
    estimate sinks towards the doubles' rounding as the nudge shrinks (6e-4 at β = 1e-3 on this
    start, 0.3 at 1e-6): deep networks want a larger β, which centered VDM affords."""
    errors = _errors(TwinBackend(builders.layered(2, [3] * depth, 1)), beta=1e-2)
    assert max(errors.values()) <= 1e-3, errors


@pytest.mark.parametrize(
    "net",
    [
        builders.layered(2, [3, 3, 3], 1, amplifier_gain=[2, 3, 5], feedback_gain=[0.05, 1.0, 0.3]),
        builders.layered(2, [3, 3, 3, 3], 1, skips=2, feedback_gain=0.1),
        builders.layered(2, [3, 2, 3], 2, skips=[[0, 3], [1, 4], [1, 3]]),
        builders.complete(2, 4, 1),
        builders.complete(2, 3, 2, amplifier_gain=3.0),
    ],
    ids=lambda net: net.name,
)
def test_centered_vdm_is_the_gradient_on_every_topology(net):
    errors = _errors(TwinBackend(net))
    assert max(errors.values()) <= 1e-3, errors


def test_the_compensation_must_follow_the_feedback_gains():
    """The same circuit estimated with the reciprocal factors A² instead of A/b: each layer comes
    out scaled by the ratio of the two, layer 1 by 4²·4²/(80·8) = 0.4, layer 2 by 4²/8 = 2."""
    net = builders.layered(2, [3, 3], 1, feedback_gain=[0.05, 0.5])
    wrong = replace(net, layer_compensation=builders.layer_compensation([4.0, 4.0]))
    assert max(_errors(TwinBackend(net)).values()) <= 1e-3
    errors = _errors(TwinBackend(wrong))
    assert errors == pytest.approx({1: 0.6, 2: 1.0, 3: 0.0}, abs=1e-3)


def test_skips_on_the_layers_own_amplifiers_are_not_estimated_by_any_factor():
    shared = _shared_skips(builders.layered(2, [3, 3, 3], 1, skips=2))
    errors = _errors(TwinBackend(shared))
    assert errors[1] > 1.0 and errors[2] > 1.0, errors


# ---------------------------------------------------------------------------------------- ngspice
@pytest.mark.parametrize(
    "net",
    [
        builders.layered(2, [3, 3, 3], 1, skips=[[0, 2], [1, 4]], feedback_gain=[0.05, 1.0, 0.3]),
        builders.complete(2, 4, 1),
        builders.complete(2, 3, 2, amplifier_gain=3.0),
    ],
    ids=lambda net: net.name,
)
def test_ngspice_and_the_twin_agree_on_every_topology(net):
    g = np.random.default_rng(7).uniform(1e-3, 0.1, len(net.conductances))
    twin, spice = TwinBackend(net), SpiceBackend(net, SimulatorOptions())
    try:
        for backend in (twin, spice):
            backend.program(g)
        for x in ([0.0, 4.0], [4.0, 0.0], [2.5, -1.0]):
            nudge = {node: 1e-3 for node in net.nudge_nodes}
            for nudges in (None, nudge):
                a, b = twin.settle(np.array(x), nudges), spice.settle(np.array(x), nudges)
                assert np.max(np.abs(a.voltages - b.voltages)) <= 1e-9
        errors = _errors(spice)
        assert max(errors.values()) <= 1e-3, errors
    finally:
        spice.close()


# ---------------------------------------------------------------------------------------- configs
SHIPPED = ("deep.toml", "deep-skip.toml", "complete.toml")


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_topologies_pass_gradcheck_on_every_sample(configs, name):
    """`hil gradcheck` at the config's β, every sample, on the twin (ngspice: above)."""
    e = config.load(configs / name)
    backend = TwinBackend(e.network())
    data, g, h = e.dataset(), e.start_conductances(), e.hyper()
    for x, t in zip(data.inputs, data.targets, strict=True):
        result = gradcheck.check(backend, g, x, t, [h.method], [h.beta])
        assert result.relative_error[h.method].max() <= 1e-3, (x, result.relative_error)


@pytest.mark.parametrize("name, by_epoch", [("deep.toml", 60), ("complete.toml", 100)])
def test_the_shipped_topologies_learn_xor(configs, name, by_epoch):
    """On the twin, from the config's start: every row right within `by_epoch` epochs (deep: at
    epoch 33; complete: at 67)."""
    e = config.load(configs / name, {"training": {"epochs": by_epoch}, "backend": {"name": "numeric"}})
    records = train(TwinBackend(e.network()), e.dataset(), e.start_conductances(), e.hyper())
    assert records[-1].accuracy == 1.0


def test_the_netlist_of_a_skip_network_runs_in_ngspice(hil, configs, tmp_path):
    netlist = hil("netlist", str(configs / "deep-skip.toml"), "--sample", "1").stdout
    e = config.load(configs / "deep-skip.toml")
    net = e.network()
    assert all(f"\n{c.name} {c.a} {c.b} " in netlist for c in net.conductances)
    assert all(f"\nE{a.name} {a.node_out} 0 {a.node_in} 0 " in netlist for a in net.amplifiers)
    path = tmp_path / "deep-skip.cir"
    path.write_text(netlist)
    printed = subprocess.run(["ngspice", "-b", str(path)], capture_output=True, text=True, timeout=60).stdout
    # ngspice prints a circuit this size as a table of node and voltage, one node a line
    volts = {}
    for line in printed.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in net.node_index and re.fullmatch(r"-?[0-9.]+e[-+][0-9]+", parts[1]):
            volts[parts[0]] = float(parts[1])
    twin = TwinBackend(net)
    twin.program(e.start_conductances())
    state = dict(zip(net.nodes, twin.settle(e.dataset().inputs[1]).voltages, strict=True))
    assert volts.keys() == set(net.nodes)
    for node, value in volts.items():
        assert value == pytest.approx(state[node], rel=1e-5, abs=1e-6), node


@pytest.mark.parametrize(
    "circuit",
    [
        dict(builder="layered", hidden=[3, 2, 4], skips=2),
        dict(builder="layered", hidden=[3, 2, 4], skips=[[0, 4], [1, 3]], duplicate_hidden=False),
        dict(builder="layered", hidden=[5], skips=[[0, 2]], duplicate_inputs=False, doubled_outputs=False),
        dict(builder="complete", hidden=[4]),
        dict(builder="complete", hidden=[3], amplifier_gain=2.0, outputs=2),
        dict(builder="complete", hidden=[2], duplicate_hidden=False, duplicate_inputs=False),
    ],
)
def test_the_counted_size_is_the_built_size(circuit):
    table = {name: key.default for name, key in config.SCHEMA["circuit"].items()} | circuit
    size = config.circuit_size(table)
    net = config._build_network(table)
    driven = {s.node for s in net.sources} | {a.node_out for a in net.amplifiers}
    assert (size.conductances, size.nodes, size.layers) == (
        len(net.conductances),
        len(net.nodes),
        max(net.layers),
    )
    assert size.free_nodes == len([n for n in net.nodes if n not in driven])


@pytest.mark.parametrize(
    "circuit, message",
    [
        ('builder = "layered"\nhidden = [2, 2]\nskips = 4\n', "[circuit] skips = 4 does not fit"),
        (
            'builder = "layered"\nhidden = [2, 2]\nskips = [[1, 2]]\n',
            "[circuit] skips pair [1, 2] does not fit",
        ),
        (
            'builder = "layered"\nhidden = [2, 2]\nfeedback_gain = [0.1]\n',
            "feedback_gain = [0.1] gives 1 value",
        ),
        ('builder = "layered"\nhidden = [2, 2]\nfeedback_gain = 0\n', "feedback_gain = 0 is invalid"),
        ('builder = "layered"\nhidden = [2] \nfeedback_gain = "weak"\n', "feedback_gain = 'weak' is invalid"),
        ('builder = "layered"\nhidden = [2, 2, 2]\nfeedback_gain = 1e-5\n', "compensation Π A/b"),
        ('builder = "xor"\nskips = 2\n', 'skips applies only to builder = "layered"'),
        ('builder = "complete"\nfeedback_gain = 0.1\n', 'feedback_gain applies only to builder = "layered"'),
        ('builder = "complete"\nhidden = [2, 2]\n', 'builder = "complete" has no layers'),
        ('builder = "xor"\namplifier_gain = [4.0]\n', "amplifier_gain = [4.0] is a list"),
    ],
)
def test_bad_circuit_keys_are_one_line_refusals(tmp_path, circuit, message):
    path = tmp_path / "x.toml"
    path.write_text(f"[circuit]\n{circuit}")
    with pytest.raises(config.ConfigError) as refused:
        config.load(path)
    assert message in str(refused.value) and "\n" not in str(refused.value)
