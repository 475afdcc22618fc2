import numpy as np
import pytest

from hil import builders
from hil.network import Conductance, Network, Output, VoltageSource


def test_seed_xor_matches_the_reference_topology():
    net = builders.seed_xor()
    endpoints = {g.name: (g.a, g.b, g.layer) for g in net.conductances}
    assert endpoints == {
        "R1": ("1", "7", 1),
        "R2": ("2", "8", 1),
        "R3": ("3", "7", 1),
        "R4": ("4", "8", 1),
        "R5": ("5", "7", 1),
        "R6": ("6", "8", 1),
        "R7": ("9", "11", 2),
        "R8": ("10", "11", 2),
    }
    assert [(a.node_in, a.node_out, a.gain, a.backward_gain) for a in net.amplifiers] == [
        ("7", "9", 4.0, 0.25),
        ("8", "10", 4.0, 0.25),
    ]
    assert [(c.node, c.v_high, c.v_low) for c in net.clamps] == [("7", 0.3, -0.3), ("8", 0.3, -0.3)]
    assert net.diode_model.saturation_current == 1e-6 and net.diode_model.emission_coefficient == 2
    assert net.temperature == 25.0 and net.diode_model.nominal_temperature == 27.0
    assert net.nudge_sign == -1.0 and [o.plus for o in net.outputs] == ["11"]
    # XOR bit b maps to 4b − 2 V on both copies of each input; biases at +1 V.
    np.testing.assert_array_equal(net.source_values(np.array([-2.0, 2.0])), [-2, -2, 2, 2, 1, 1])


def test_negative_weights_flip_sources_and_gains_as_the_seed_does():
    seed, fixed = builders.seed_xor(), builders.xor()
    g = np.full(8, 0.01)
    g[[0, 6]] = -0.01  # R1 (layer 1, source Vx1) and R7 (layer 2, amplifier X1)
    src, amp = seed.sign_multipliers(g)
    np.testing.assert_array_equal(src, [-1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(amp, [-1, 1])
    fwd, back = seed.amplifier_gains(g)
    np.testing.assert_array_equal(fwd, [-4, 4])
    np.testing.assert_array_equal(back, [0.25, 0.25])  # the seed leaves its CCCS alone
    fwd, back = fixed.amplifier_gains(g)
    np.testing.assert_array_equal(fwd, [-4, 4])
    np.testing.assert_array_equal(back, [0.25, -0.25])  # reciprocal: -1/A, flipped with A


def test_layered_network_shape_and_compensation():
    net = builders.layered(3, [4, 2], 2, amplifier_gain=[2.0, 3.0])
    per_layer = {layer: int(np.sum(net.layers == layer)) for layer in (1, 2, 3)}
    # (3 inputs + bias) × 2 signs into 4 nodes; (4 hidden × ±) + 2 biases into 2; (2 × ±) + 2 into 4.
    assert per_layer == {1: 8 * 4, 2: 10 * 2, 3: 6 * 4}
    assert net.layer_compensation == {3: 1.0, 2: 9.0, 1: 36.0}
    assert len(net.outputs) == 2 and all(o.minus for o in net.outputs)


def test_doubled_output_nudge_goes_in_at_plus_and_out_at_minus():
    net = builders.layered(2, [2], 1)
    currents = net.nudge_currents(np.array([1.0]), np.array([0.25]), 1e-3)
    assert currents == {"y0p": pytest.approx(7.5e-4), "y0n": pytest.approx(-7.5e-4)}


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(conductances=[Conductance("R1", "a", "a", 1)]), "to itself"),
        (dict(conductances=[Conductance("G1", "a", "b", 1)]), "must start with R"),
        (dict(conductances=[Conductance("R1", "A", "b", 1)]), "lower-case"),
        (dict(conductances=[Conductance("R1", "a", "b", 1, signed_by="Vnone")]), "unknown element"),
        (dict(conductances=[Conductance("R1", "c", "b", 1)]), r"nodes \['b', 'c'\] have no DC path"),
        (dict(sources=[VoltageSource("V1", "a", 1.0), VoltageSource("V2", "a", 2.0)]), "driven by two"),
        (dict(sources=[VoltageSource("V1", "0", 1.0)]), r"driven by two sources: \['0'\]"),
        (dict(n_inputs=1), "input 0 drives no source"),
        (dict(outputs=[]), "has no output"),
        (dict(estimator_pairing=(1,)), "permutation"),
        (dict(sources=[VoltageSource("X1", "a", 1.0)]), "must start with V"),
    ],
)
def test_bad_networks_are_refused(bad, message):
    base = dict(
        name="t",
        conductances=[Conductance("R1", "a", "b", 1)],
        sources=[VoltageSource("V1", "a", 1.0)],
        outputs=[Output("b")],
    )
    with pytest.raises(ValueError, match=message):
        Network(**{**base, **bad})


def test_the_smallest_valid_network_is_accepted():
    """The base every refusal above changes one thing of: on its own, it is a network."""
    net = Network(
        name="t",
        conductances=[Conductance("R1", "a", "b", 1)],
        sources=[VoltageSource("V1", "a", 1.0)],
        outputs=[Output("b")],
    )
    assert set(net.nodes) == {"a", "b"}
    with_input = Network(
        name="t",
        conductances=[Conductance("R1", "a", "b", 1), Conductance("R2", "b", "c", 2)],
        sources=[VoltageSource("V1", "a", input_index=0), VoltageSource("V2", "c", 0.5)],
        outputs=[Output("b")],
        n_inputs=1,
        estimator_pairing=(1, 0),
    )
    assert with_input.n_inputs == 1


def test_rewired_with_the_networks_own_sources_solves_alike_and_inverts_what_it_is_told():
    from sim.twin import TwinBackend

    net = builders.xor()
    same = net.rewired("same", [(s.name, s.node) for s in net.sources], frozenset())
    g = np.linspace(0.01, 0.08, len(net.conductances))
    x = np.array([2.0, -2.0])
    levels = net.source_values(x)
    a, b = TwinBackend(net), TwinBackend(same)
    a.program(g)
    b.program(g)
    assert np.max(np.abs(a.settle(x).voltages - b.settle(levels).voltages)) <= 1e-12
    flipped = net.rewired("flipped", [("V", "1")], frozenset({net.amplifiers[0].name}))
    one, other = flipped.amplifiers[0], net.amplifiers[0]
    assert one.gain == -other.gain and flipped.amplifiers[1].gain == net.amplifiers[1].gain
    assert one.backward_gain == (-other.backward_gain if other.backward_follows_sign else other.backward_gain)
    assert [(s.name, s.node) for s in flipped.sources] == [("V", "1")] and flipped.n_inputs == 1
