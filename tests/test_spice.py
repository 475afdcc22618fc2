"""The ngspice backend's own promises: open switches, exact values, settles that depend on nothing
but what was programmed since, batches, and one library shared by several circuits."""

import dataclasses
import subprocess

import numpy as np
import pytest

from hil import builders
from hil.interface import ConvergenceError
from hil.network import Amplifier, Conductance, Load, Network, Output, VoltageSource
from sim.netlist import netlist
from sim.spice import SpiceBackend
from sim.twin import TwinBackend


def _divider() -> Network:
    """1 V at a, 0 V at c; b joined to a by R1 and to c by R2 and R3 in parallel."""
    return Network(
        name="divider",
        conductances=[
            Conductance("R1", "a", "b", 1),
            Conductance("R2", "b", "c", 1),
            Conductance("R3", "b", "c", 1),
        ],
        sources=[VoltageSource("Va", "a", 1.0), VoltageSource("Vc", "c", 0.0)],
        outputs=[Output("b")],
    )


def _pruned(net: Network, closed: np.ndarray) -> Network:
    """The same network with the open edges left out: an independent reference."""
    kept = [c for c, keep in zip(net.conductances, closed, strict=True) if keep]
    return dataclasses.replace(net, conductances=kept)


def test_an_open_switch_takes_its_resistor_out_and_closing_it_puts_it_back():
    g1, g2, g3 = 0.01, 0.03, 0.02
    spice = SpiceBackend(_divider())
    vb = {}
    for name, g in (("closed", [g1, g2, g3]), ("open", [g1, g2, 0.0]), ("closed again", [g1, g2, g3])):
        spice.program(np.array(g))
        vb[name] = spice.settle(np.zeros(0)).voltages[spice.network.node_index["b"]]
    spice.close()
    assert vb["closed"] == pytest.approx(g1 / (g1 + g2 + g3), rel=1e-14)
    assert vb["open"] == pytest.approx(g1 / (g1 + g2), rel=1e-14)
    assert vb["closed again"] == vb["closed"]


def test_a_pruned_layered_network_solves_as_the_network_without_those_edges():
    net = builders.layered(6, [8], 3)
    rng = np.random.default_rng(11)
    g = rng.uniform(1e-4, 1e-2, len(net.conductances))
    closed = rng.random(len(g)) > 0.3
    spice = SpiceBackend(net)
    spice.program(np.where(closed, g, 0.0))
    reduced = _pruned(net, closed)
    twin = TwinBackend(reduced)
    twin.program(g[closed])
    same_node = [reduced.node_index[n] for n in net.nodes]  # nodes are listed in another order
    worst = 0.0
    for _ in range(4):
        x = rng.uniform(-1, 1, 6)
        nudge = dict(zip(net.nudge_nodes, rng.uniform(-1e-4, 1e-4, len(net.nudge_nodes)), strict=True))
        for n in (None, nudge):
            a, b = spice.settle(x, n), twin.settle(x, n)
            worst = max(worst, np.max(np.abs(a.voltages - b.voltages[same_node])))
            np.testing.assert_allclose(a.source_currents, b.source_currents, rtol=1e-6, atol=1e-15)
    spice.close()
    assert worst <= 1e-9


def test_the_netlist_leaves_an_open_edge_out_and_says_so():
    text = netlist(_divider(), np.array([0.01, 0.03, 0.0]), np.zeros(0))
    assert "\nR2 b c " in text
    assert "\nR3 " not in text
    assert "\n* R3 b c open" in text


def test_the_netlist_of_a_pruned_network_runs_in_the_ngspice_program(tmp_path):
    text = netlist(_divider(), np.array([0.01, 0.03, 0.0]), np.zeros(0), analysis=False).replace(
        ".end", ".control\nset numdgt=15\nop\nprint v(b)\n.endc\n.end"
    )
    path = tmp_path / "divider.cir"
    path.write_text(text)
    out = subprocess.run(["ngspice", "-b", str(path)], capture_output=True, text=True, timeout=60).stdout
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("v(b)"))
    assert float(line.split("=")[1]) == pytest.approx(0.01 / 0.04, rel=1e-12)


def test_open_switches_that_leave_a_node_without_a_dc_path_are_refused():
    spice = SpiceBackend(_divider())
    with pytest.raises(ValueError, match=r"nodes \['b'\] with no DC path"):
        spice.program(np.array([0.0, 0.0, 0.0]))
    spice.program(np.array([0.0, 0.03, 0.0]))  # b still reaches c: allowed
    assert spice.settle(np.zeros(0)).voltages[spice.network.node_index["b"]] == pytest.approx(0.0, abs=1e-15)
    spice.close()


def _history_run(backend: SpiceBackend, x: np.ndarray, pushes: np.ndarray) -> np.ndarray:
    net = backend.network
    out = []
    for xi, push in zip(x, pushes, strict=True):
        out.append(backend.settle(xi).voltages)
        out.append(backend.settle(xi, dict(zip(net.nudge_nodes, push, strict=True))).voltages)
    out.append(backend.settle_batch(x, pushes).voltages.ravel())
    return np.concatenate(out)


def test_settles_after_a_program_do_not_depend_on_what_came_before_it():
    """What a resumed training relies on: a fresh backend programmed with the checkpoint's
    conductances answers bit for bit as the one that got there by training."""
    net = builders.layered(5, [10], 3)
    rng = np.random.default_rng(5)
    g1 = rng.uniform(1e-4, 1e-2, len(net.conductances))
    g2 = g1 * (1 + 0.01 * rng.standard_normal(len(g1)))
    x = rng.uniform(-1, 1, (6, 5))
    pushes = rng.uniform(-1e-5, 1e-5, (6, len(net.nudge_nodes)))
    trained = SpiceBackend(net)
    trained.program(g1)
    for xi in x[::-1]:
        trained.settle(xi)
    trained.program(g2)
    a = _history_run(trained, x, pushes)
    fresh = SpiceBackend(net)
    fresh.program(g2)
    b = _history_run(fresh, x, pushes)
    fresh.close()
    np.testing.assert_array_equal(a, b)


def test_a_batch_settles_as_its_samples_do_one_by_one():
    net = builders.layered(4, [6], 2)
    rng = np.random.default_rng(8)
    spice = SpiceBackend(net)
    spice.program(rng.uniform(1e-4, 1e-2, len(net.conductances)))
    x = rng.uniform(-1, 1, (5, 4))
    pushes = rng.uniform(-1e-4, 1e-4, (5, len(net.nudge_nodes)))
    batch = spice.settle_batch(x, pushes)
    free = spice.settle_batch(x)
    assert batch.voltages.shape == (5, len(net.nodes)) and batch.clamp_currents.shape == (5, 6, 2)
    for k in range(5):
        one = spice.settle(x[k], dict(zip(net.nudge_nodes, pushes[k], strict=True)))
        np.testing.assert_allclose(batch.voltages[k], one.voltages, rtol=0, atol=1e-12)
        np.testing.assert_allclose(batch.source_currents[k], one.source_currents, rtol=1e-9, atol=1e-18)
        np.testing.assert_allclose(free.voltages[k], spice.settle(x[k]).voltages, rtol=0, atol=1e-12)
    assert np.max(np.abs(batch.voltages - free.voltages)) > 1e-6  # the nudges were applied
    spice.close()


def test_conductances_reach_ngspice_as_the_very_doubles_python_holds():
    """Netlist text would not do: ngspice's netlist parser rounds about a third of such values
    differently; its command parser (alter) does not."""
    net = Network(
        name="one",
        conductances=[Conductance("R1", "a", "b", 1)],
        sources=[VoltageSource("Va", "a", 1.0), VoltageSource("Vb", "b", 0.0)],
        outputs=[Output("a")],
    )
    kept = SpiceBackend(net)  # loaded once, then altered
    for g in np.random.default_rng(3).uniform(1e-5, 1e-1, 20):
        fresh = SpiceBackend(net)  # loaded with g in its netlist
        for spice in (fresh, kept):
            spice.program(np.array([g]))
            # The current into Va's + terminal: −V/R, with R = 1/g as this backend computed it.
            assert spice.settle(np.zeros(0)).source_currents[0] == -1.0 / (1.0 / g)
        fresh.close()
    kept.close()


def test_after_a_failed_settle_the_next_one_starts_afresh():
    # Backward gain chosen so that KCL at h reads 0·Vh = g1·Va: no equilibrium at these g.
    net = Network(
        name="chain",
        conductances=[Conductance("R1", "a", "h", 1), Conductance("R2", "o", "y", 2)],
        sources=[VoltageSource("Va", "a", 1.5)],
        amplifiers=[Amplifier("X1", "h", "o", 3.0, 0.01 / (3.0 * 0.05 * 0.02 / 0.07))],
        loads=[Load("RL", "y", 0.02)],
        outputs=[Output("y")],
    )
    spice, twin = SpiceBackend(net), TwinBackend(net)
    spice.program(np.array([0.01, 0.05]))
    with pytest.raises(ConvergenceError, match="equilibrium"):
        spice.settle(np.zeros(0))
    for backend in (spice, twin):
        backend.program(np.array([0.02, 0.05]))
    np.testing.assert_allclose(
        spice.settle(np.zeros(0)).voltages, twin.settle(np.zeros(0)).voltages, atol=1e-12
    )
    spice.close()


def test_two_circuits_take_turns_in_the_one_library():
    nets = [builders.xor(), builders.layered(3, [4], 2)]
    rng = np.random.default_rng(9)
    pairs = []
    for net in nets:
        spice, twin = SpiceBackend(net), TwinBackend(net)
        g = rng.uniform(1e-3, 1e-2, len(net.conductances))
        spice.program(g)
        twin.program(g)
        pairs.append((spice, twin))
    for _ in range(3):
        for spice, twin in pairs:
            x = rng.uniform(-1, 1, spice.network.n_inputs)
            np.testing.assert_allclose(spice.settle(x).voltages, twin.settle(x).voltages, atol=1e-9)
    for spice, _ in pairs:
        spice.close()
