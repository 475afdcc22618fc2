"""The SMU error model (sim.noise): figures from the datasheets, statistics that match the model's
own figures, seeded and reproducible sessions, `noise = "none"` exact, the wrapper around the
twin composing with settle_batch and checkpoints, the virtual bench's readings, `hil noise` and
`hil gradcheck --repeat`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hil
from drivers import benchconfig
from hil import eqprop
from hil.config import NOISE_MODELS, ConfigError
from hil.network import Conductance, Network, Output, VoltageSource
from sim import noise
from sim.noise import MODELS, Flicker, NoisyBackend, SmuModel
from sim.twin import TwinBackend
from sim.virtual.bench import VirtualBench

ROOT = Path(__file__).resolve().parent.parent


def divider(g: float = 1e-3) -> Network:
    """V1 (the input) and V2 = 0.5 V into node 3 through equal conductances: V3 = (x + 0.5)/2."""
    return Network(
        name="divider",
        conductances=[Conductance("R1", "1", "3", 1), Conductance("R2", "2", "3", 1)],
        sources=[VoltageSource("V1", "1", input_index=0), VoltageSource("V2", "2", value=0.5)],
        outputs=[Output("3")],
        n_inputs=1,
    )


def twin_of(network: Network) -> TwinBackend:
    return TwinBackend(network)


def variant(base: SmuModel, **changes: float) -> SmuModel:
    """`base` with some columns of every range replaced (e.g. no source noise)."""
    return dataclasses.replace(
        base,
        name=f"{base.name} variant",
        volts=tuple(dataclasses.replace(f, **changes) for f in base.volts),
        amps=tuple(dataclasses.replace(f, **changes) for f in base.amps),
    )


PERFECT = variant(
    MODELS["keithley-2450"],
    source_resolution=1e-18,
    source_gain=0.0,
    source_offset=0.0,
    source_noise=0.0,
    measure_resolution=1e-18,
    measure_gain=0.0,
    measure_offset=0.0,
)


# ---------------------------------------------------------------------------------------- the table
def test_the_table_names_the_config_models_and_what_the_issue_measured() -> None:
    assert set(MODELS) == set(NOISE_MODELS) - {"none"}
    for m in MODELS.values():
        for ranges in (m.volts, m.amps):
            scales = [f.full_scale for f in ranges]
            assert scales == sorted(scales) and len(set(scales)) == len(scales)
            assert all(f.source for f in ranges)
    two_volts = MODELS["keithley-2450"].volts[2]
    # The 2450 on its 2 V range: 10 µV rms source noise below 10 Hz, 1 µV resolution (SPEC-2450 p. 2).
    assert (two_volts.full_scale, two_volts.source_noise, two_volts.measure_resolution) == (2.0, 10e-6, 1e-6)
    # The 2602B gives peak to peak: 50 µV p-p on its 1 V range is 7.6 µV rms.
    assert MODELS["keithley-2602b"].volts[1].source_noise == pytest.approx(50e-6 / 6.6)


def test_reading_noise_falls_with_nplc_as_the_datasheets_say() -> None:
    m = MODELS["keithley-2602b"]
    noise_at = {n: m.reading_noise("V", n) for n in (0.01, 0.1, 1.0, 10.0)}
    assert np.all(noise_at[0.01] > noise_at[0.1]) and np.all(noise_at[0.1] > noise_at[1.0])
    assert np.all(noise_at[1.0] > noise_at[10.0])
    # At 0.1 PLC the 2602B adds 0.01 % of range to its accuracy (SPEC-2602B note 4): taken as 3σ.
    converter = m.volts[1].measure_resolution * noise.nplc_factor(0.1)
    assert 3 * math.sqrt(noise_at[0.1][1] ** 2 - converter**2) == pytest.approx(1e-4 * 1.0, rel=1e-9)
    assert noise_at[1.0][1] == m.volts[1].measure_resolution  # one count at 1 PLC
    assert noise.nplc_factor(10.0) == pytest.approx(1.5 / 4)  # the Keithley 2015's table


# ---------------------------------------------------------------------------------------- exactness
def test_noise_none_is_the_simulator_itself() -> None:
    e = hil.load(ROOT / "configs/xor.toml", {"backend": {"name": "numeric", "noise": "none"}})
    b = hil.open_backend(e)
    assert isinstance(b, TwinBackend)
    plain = TwinBackend(e.network())
    g = e.start_conductances()
    b.program(g)
    plain.program(g)
    for x in e.dataset().inputs:
        assert np.array_equal(b.settle(x).voltages, plain.settle(x).voltages)


def test_an_error_free_model_reads_exactly_what_the_simulator_solves() -> None:
    """The wrapper's plumbing (sources as inputs, sign flips, nudges, node order) loses nothing."""
    e = hil.load(ROOT / "configs/xor.toml", {"backend": {"name": "numeric"}})
    net = e.network()
    g = e.start_conductances() * np.array([1, -1, 1, 1, -1, 1, -1, 1])  # flip sources and an amplifier
    wrapped = NoisyBackend(net, twin_of, PERFECT, seed=3)
    plain = TwinBackend(net)
    assert np.array_equal(wrapped.program(g), plain.program(g))
    data = e.dataset()
    nudges = np.array([[2e-4], [-1e-4], [0.0], [3e-5]])
    got = wrapped.settle_batch(data.inputs, nudges)
    want = plain.settle_batch(data.inputs, nudges)
    assert np.max(np.abs(got.voltages - want.voltages)) < 1e-12


# ---------------------------------------------------------------------------------------- statistics
def test_readings_match_the_models_own_figures() -> None:
    net = divider()
    b = NoisyBackend(net, twin_of, MODELS["keithley-2450"], seed=11)
    b.program(np.array([1e-3, 1e-3]))
    n = 3000
    readings = np.empty((n, 3))
    for k in range(n):
        b.idle(100.0)  # far beyond the slowest flicker corner: independent draws
        readings[k] = b.settle(np.array([1.0])).voltages
    (c1, c2), nudge, probe = b._sources, b._nudges[0], b._probe
    two = 2  # every value here sits on the 2 V range; the nudge (0 A) on the 10 nA range

    def forced(ch: noise.Channel, level: float) -> float:
        e, f = ch.errors["V"], MODELS["keithley-2450"].volts[two]
        return (
            round(level / f.source_resolution) * f.source_resolution * (1 + e["source_gain"][two])
            + e["source_offset"][two]
        )

    v3 = (forced(c1, 1.0) + forced(c2, 0.5) + nudge.errors["A"]["source_offset"][0] / 1e-3) / 2
    e3 = nudge.errors["V"]  # node 3 is the output: its nudge channel reads it
    expected = v3 * (1 + e3["measure_gain"][two]) + e3["measure_offset"][two]
    sigma_s, sigma_r, step = 10e-6, 1e-6, 1e-6
    sd = math.sqrt(sigma_s**2 / 2 + sigma_r**2 + step**2 / 12)  # two sources halved, reading, rounding
    assert abs(readings[:, 2].mean() - expected) < 4 * sd / math.sqrt(n)
    assert readings[:, 2].std() == pytest.approx(sd, rel=0.05)
    own = math.sqrt(sigma_s**2 + sigma_r**2 + step**2 / 12)  # a source read by its own channel
    assert readings[:, 0].std() == pytest.approx(own, rel=0.05)
    assert probe is not None


def test_source_noise_is_flicker_readings_a_settle_apart_are_correlated() -> None:
    net = divider()
    b = NoisyBackend(net, twin_of, MODELS["keithley-2450"], seed=5)
    b.program(np.array([1e-3, 1e-3]))
    series = np.array([b.settle(np.array([1.0])).voltages[2] for _ in range(4000)])
    d = series - series.mean()
    lag1 = float(d[1:] @ d[:-1] / (d @ d))
    taus = 1 / (2 * np.pi * np.array(Flicker.CORNERS_HZ))
    source_var, total_var = 10e-6**2 / 2, 10e-6**2 / 2 + 1e-12 + 1e-12 / 12
    expected = float(np.mean(np.exp(-b.settle_seconds / taus))) * source_var / total_var
    assert expected > 0.4  # white noise would give 0
    assert lag1 == pytest.approx(expected, abs=0.06)


def test_reading_noise_averages_down_with_readings() -> None:
    quiet = variant(MODELS["keithley-2450"], source_noise=0.0)
    sigma = quiet.reading_noise("V", 0.1)[2]  # 2 V range at 0.1 PLC: ~67 µV, far above the 1 µV step
    for averages in (1, 16):
        b = NoisyBackend(divider(), twin_of, quiet, seed=2, nplc=0.1, averages=averages)
        b.program(np.array([1e-3, 1e-3]))
        v = np.array([b.settle(np.array([1.0])).voltages[2] for _ in range(1500)])
        assert v.std() == pytest.approx(sigma / math.sqrt(averages), rel=0.06)


# ---------------------------------------------------------------------------------------- sessions
def test_a_session_is_seeded_and_reproducible() -> None:
    def run(seed: int) -> np.ndarray:
        e = hil.load(ROOT / "configs/xor.toml", {"backend": {"name": "numeric", "noise": "keithley-2450"}})
        b = NoisyBackend(e.network(), twin_of, MODELS["keithley-2450"], seed=seed)
        b.program(e.start_conductances())
        return np.array([b.settle(x).voltages for x in e.dataset().inputs])

    assert np.array_equal(run(1), run(1))
    assert not np.allclose(run(1), run(2), atol=1e-7)


def test_the_wrapper_composes_with_settle_batch_and_the_batched_estimator() -> None:
    e = hil.load(ROOT / "configs/xor.toml", {"backend": {"name": "numeric"}})
    net, data, g = e.network(), e.dataset(), e.start_conductances()
    nudges = np.array([[1e-4], [-1e-4], [0.0], [5e-5]])
    batch = NoisyBackend(net, twin_of, MODELS["keithley-2450"], seed=7)
    one = NoisyBackend(net, twin_of, MODELS["keithley-2450"], seed=7)
    batch.program(g)
    one.program(g)
    together = batch.settle_batch(data.inputs, nudges).voltages
    apart = np.array(
        [
            one.settle(x, {net.nudge_nodes[0]: float(i[0])}).voltages
            for x, i in zip(data.inputs, nudges, strict=True)
        ]
    )
    assert np.max(np.abs(together - apart)) < 1e-12
    assert batch.clock == one.clock
    m = eqprop.measure_batch(batch, g, data.inputs, data.targets, "vdm-centered", 1e-4)
    assert m.raw.shape == (4, len(g)) and np.all(np.isfinite(m.raw))


def test_a_checkpoint_carries_the_noise_on() -> None:
    e = hil.load(ROOT / "configs/xor.toml", {"backend": {"name": "numeric"}})
    net, x, g = e.network(), e.dataset().inputs[1], e.start_conductances()
    first = NoisyBackend(net, twin_of, MODELS["keithley-2602b"], seed=4)
    first.program(g)
    for _ in range(3):
        first.settle(x)
    state = first.solver_state()
    after = np.array([first.settle(x).voltages for _ in range(3)])
    resumed = NoisyBackend(net, twin_of, MODELS["keithley-2602b"], seed=4)
    resumed.program(g)
    resumed.restore_solver_state(state)
    assert np.max(np.abs(np.array([resumed.settle(x).voltages for _ in range(3)]) - after)) < 1e-12


def test_a_bench_refuses_the_simulators_noise_key() -> None:
    e = hil.load(ROOT / "configs/bench-virtual.toml", {"backend": {"noise": "keithley-2450"}})
    with pytest.raises(ConfigError, match=r"\[bench\] noise"):
        hil.open_backend(e)


# ---------------------------------------------------------------------------------------- virtual bench
def test_the_virtual_bench_reads_through_each_smus_datasheet_model() -> None:
    config = dataclasses.replace(benchconfig.read(ROOT / "configs/bench-virtual.toml"), noise="datasheet")
    e = hil.load(ROOT / "configs/bench-virtual.toml")
    bench = VirtualBench(config, e.network(), seed=9)  # not served: its circuit is read directly
    levels = {"Vx1": 2.0, "Vx2": 2.0, "Vx3": -2.0, "Vx4": -2.0, "Vbias1": 1.0, "Vbias2": 1.0}
    for source, level in levels.items():
        smu = bench.state.smus[config.sources[source]]
        smu.function, smu.voltage, smu.output = "V", level, True
    bench.state.changed()
    circuit, key = bench.circuit, config.sources["Vx1"]
    assert circuit.errors is not None
    start = circuit.errors.clock
    n = 1500
    v = np.empty(n)
    for k in range(n):
        circuit.errors.clock += 100.0  # independent draws
        v[k] = circuit.reading(key)[0]
    assert circuit.errors.clock - start == pytest.approx(n * (100.0 + 1 / 50 + noise.READING_OVERHEAD_S))
    ch = circuit.errors.channel(key)
    assert ch is not None and ch.model.name == "keithley-2602b"  # a 2600B's channel, by its model
    six = 2  # 2 V sits on the 2602B's 6 V range
    f, err = ch.model.volts[six], ch.errors["V"]
    forced = round(2.0 / f.source_resolution) * f.source_resolution * (1 + err["source_gain"][six])
    expected = (forced + err["source_offset"][six]) * (1 + err["measure_gain"][six]) + err["measure_offset"][
        six
    ]
    sd = math.sqrt(f.source_noise**2 + f.measure_resolution**2 * (1 + 1 / 12))
    assert abs(v.mean() - expected) < 4 * sd / math.sqrt(n)
    assert v.std() == pytest.approx(sd, rel=0.06)


# ---------------------------------------------------------------------------------------- commands
def _command(module: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """A command module's subcommand run as `hil` would (the module registers its own parser)."""
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    assert args.run(args) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def _noisy_config(tmp_path: Path, model: str) -> Path:
    text = (
        (ROOT / "configs/xor.toml")
        .read_text()
        .replace('name = "spice"', f'name = "numeric"\nnoise = "{model}"')
    )
    path = tmp_path / f"xor-{model}.toml"
    path.write_text(text)
    return path


def test_hil_noise_measures_the_spread_and_recommends_a_nudge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hil.cli import noise as command

    quiet = _command(
        command, ["noise", str(_noisy_config(tmp_path, "none")), "--readings", "16", "--json"], capsys
    )
    loud = _command(
        command,
        ["noise", str(_noisy_config(tmp_path, "keithley-2450")), "--readings", "16", "--json"],
        capsys,
    )
    assert quiet["spread"] < 1e-6 and all(n["rms"] < 1e-12 for n in quiet["nodes"])
    rms = {n["node"]: n["rms"] for n in loud["nodes"]}
    assert 5e-6 < rms["11"] < 30e-6  # the output: source noise through the circuit, and its reading
    assert loud["spread"] > 0.5  # at the shipped β = 1e-6 A/V the estimate drowns
    assert loud["recommended_beta"] > 1e-5 and loud["recommended_nudge_current"] > 0
    assert len(loud["allan_readings"]) == len(loud["nodes"][0]["allan"]) >= 2


def test_gradcheck_repeat_reports_the_spread_against_the_exact_gradient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hil.cli import study

    path = str(_noisy_config(tmp_path, "keithley-2450"))
    small = _command(study, ["gradcheck", path, "--repeat", "6", "--json"], capsys)
    large = _command(study, ["gradcheck", path, "--repeat", "6", "--beta", "1e-4", "--json"], capsys)
    assert small["exact_reference"] and small["repeat"] == 6
    assert min(layer["cosine_mean"] for layer in large["layers"]) > 0.99
    assert small["layers"][0]["cosine_mean"] < 0.9 and small["spread"] > 10 * large["spread"]


def test_hil_noise_is_a_hil_command_and_measures_a_constant_current_config_at_its_own_nudge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hil.cli import main

    text = (ROOT / "configs/xor-noisy.toml").read_text().replace('noise = "keithley-2450"', 'noise = "none"')
    path = tmp_path / "xor-quiet.toml"
    path.write_text(text)
    assert main(["noise", str(path), "--readings", "8", "--sample", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    experiment = hil.load(path)
    backend = hil.open_backend(experiment)
    try:
        backend.program(experiment.start_conductances())
        data = experiment.dataset()
        y = backend.network.output_voltages(backend.settle(data.inputs[1]).voltages)
    finally:
        backend.close()
    # the nudge its training applies at this state: I0 over ‖t − y‖, not the unused default β
    expected = experiment.hyper().nudge_current / float(np.linalg.norm(data.targets[1] - y))
    assert report["beta"] == pytest.approx(expected, rel=1e-9)
    assert report["beta"] != pytest.approx(experiment.hyper().beta)
