"""The bench backend through the drivers, over sockets, against the virtual bench."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np
import pytest

from drivers import benchconfig
from drivers.bench import BenchBackend, BenchSafetyError
from drivers.pots import AD5206Model
from hil import config, open_backend, train
from sim.quantised import QuantisedBackend, pot_quantiser
from sim.twin import TwinBackend
from sim.virtual.bench import VirtualBench

ROOT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _served_config(configs, tmp_path, virtual, edit=lambda text: text):
    """bench-virtual.toml pointed at an already running virtual bench (emulated = false)."""
    text = (configs / "bench-virtual.toml").read_text()
    text = text.replace('experiment = "xor-bench.toml"', f'experiment = "{configs / "xor-bench.toml"}"')
    text = text.replace("emulated = true", "emulated = false")
    for name, address in virtual.addresses.items():
        text = re.sub(
            rf'(\[instruments\.{name}\]\nmodel = "[^"]+"\naddress = )"[^"]+"', rf'\1"{address}"', text
        )
    path = tmp_path / "bench.toml"
    path.write_text(edit(text))
    return path


@pytest.fixture
def virtual(configs):
    bench = benchconfig.read(configs / "bench-virtual.toml")
    experiment = config.load(configs / "bench-virtual.toml")
    with VirtualBench(bench, experiment.network()) as v:
        yield v


def _assert_safe(virtual):
    for key, smu in virtual.state.smus.items():
        assert not smu.output and smu.level == 0.0, key
    for name, relays in virtual.state.relays.items():
        assert relays.closed == set(), name


def test_training_through_the_bench_matches_the_twin_step_for_step(configs, tmp_path):
    out = tmp_path / "bench.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "hil.cli", "train", str(configs / "bench-virtual.toml"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    e = config.load(configs / "bench-virtual.toml")
    bench = benchconfig.read(configs / "bench-virtual.toml")
    net = e.network()
    twin = QuantisedBackend(TwinBackend(net), pot_quantiser(bench, net))
    reference = train.train(twin, e.dataset(), e.initial_conductances(8), e.hyper())
    pot = AD5206Model(r_ab=10e3, r_w=45.0, channels=8)

    def codes(g):
        return np.array([[pot.code_for(1, abs(x)) for x in row] for row in g])

    with h5py.File(out, "r") as f:
        assert f.attrs["backend"] == "bench"
        instruments = json.loads(f.attrs["instruments"])
        assert len(instruments) == 6 and all("(virtual)" in i["idn"] for i in instruments)
        settings = json.loads(f.attrs["settings"])
        measured = f["epochs/conductances"][1:]
        accuracy = f["epochs/accuracy"][-1]
        signs = np.sign(measured)
    expected = np.array([r.conductances for r in reference])
    assert accuracy == reference[-1].accuracy == 1.0
    np.testing.assert_array_equal(signs, np.sign(expected))
    assert np.max(np.abs(codes(measured) - codes(expected))) <= 1
    # The settings snapshot is what the instruments answered, stored with the data.
    assert settings["[probe]"]["off_state"] == "0 A, output relay closed"
    assert all(settings[f"k26{m}.{ch}"]["current_limit"] > 0 for m in "abcd" for ch in "ab")


def test_bench_check_identifies_every_emulated_instrument(hil, configs):
    result = hil("bench-check", str(configs / "bench-virtual.toml"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "6 instruments, all identified" in lines[0]
    for name, model in (("k26a", "Model 2602B"), ("matrix", "Model 707B"), ("pots", "POTBRIDGE")):
        assert any(line.split()[0] == name and model in line for line in lines[1:]), name


def test_a_phase_costs_a_reading_per_node_and_three_round_trips_per_probe_move(configs):
    e = config.load(configs / "bench-virtual.toml")
    net = e.network()
    backend = cast(BenchBackend, open_backend(e))
    try:
        backend.program(e.initial_conductances(8))
        traffic = backend.hw.traffic
        backend.settle(e.dataset().inputs[1])  # routes and levels now set once
        before = traffic()
        backend.settle(e.dataset().inputs[2])
        after = traffic()
        measured = len(net.nodes)
        # Each probe move: the old route open (*OPC?), the probe off (its SMU's *OPC?), the new
        # route closed (*OPC?): no relay moves under a live probe.
        assert after.queries - before.queries <= measured + 3 * len(backend.config.probe_routes)
        before = traffic()
        g = e.initial_conductances(8)
        backend.program(np.abs(g[::-1]) * np.sign(g))  # other codes in range, no sign flipped
        after = traffic()
        assert after.writes - before.writes == 1  # one bulk pot write
        assert after.queries - before.queries == 1  # and its *OPC?
    finally:
        backend.close()


def test_sigterm_mid_epoch_leaves_every_output_off_and_every_relay_open(configs, tmp_path, virtual):
    path = _served_config(configs, tmp_path, virtual)
    out = tmp_path / "run.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "train", str(path), "--out", str(out), "--epochs", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(s.output for s in virtual.state.smus.values()):
        time.sleep(0.05)
    time.sleep(0.5)  # mid-epoch: outputs on, levels set, a probe route closed
    assert any(s.output for s in virtual.state.smus.values())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    _assert_safe(virtual)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "interrupted"


def test_a_compliance_trip_stops_training_with_a_clear_message(configs, tmp_path, virtual, hil):
    path = _served_config(
        configs,
        tmp_path,
        virtual,
        lambda text: text.replace("compliance_current = 0.2", "compliance_current = 1e-4"),
    )
    out = tmp_path / "trip.h5"
    result = hil("train", str(path), "--out", str(out))
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "compliance" in message and "Vx" in message, message
    _assert_safe(virtual)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"].startswith("failed: ") and "compliance" in f.attrs["status"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace('"7" = ["1A01"]\n', ""), "no route to measure node '7'"),
        (lambda t: t.replace("max_volts = 3.0", "max_volts = 1.5"), "above [limits] max_volts = 1.5"),
        (
            lambda t: t.replace("max_volts = 3.0", "max_volts = 500.0"),
            "[limits] max_volts = 500.0 is invalid",
        ),
        (lambda t: t.replace('Vx1 = "k26a.a"', 'Vx1 = "k26a.c"'), "not an SMU channel"),
        (lambda t: t.replace('X2 = ["1B02"]\n', ""), "no inverting relay"),
    ],
)
def test_bad_bench_configs_fail_before_any_instrument_is_touched(
    configs, tmp_path, virtual, hil, edit, message
):
    path = _served_config(configs, tmp_path, virtual, edit)
    result = hil("train", str(path), "--out", str(tmp_path / "never.h5"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sum(s.lines for s in virtual.servers.values()) == 0  # not one line reached an instrument
    assert not (tmp_path / "never.h5").exists()


def test_wrong_identity_and_unreachable_address_are_refused_before_outputs_go_on(
    configs, tmp_path, virtual, hil
):
    matrix = virtual.addresses["matrix"]
    wrong = _served_config(
        configs, tmp_path, virtual, lambda t: t.replace(virtual.addresses["k26b"], matrix)
    )  # a 707B where a 2602B should be
    result = hil("bench-check", str(wrong))
    assert result.returncode != 0 and "Model 707B" in result.stderr and "not a Model 26" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(s.output for s in virtual.state.smus.values())
    gone = _served_config(
        configs,
        tmp_path,
        virtual,
        lambda t: re.sub(
            r"(\[instruments\.matrix\]\nmodel = \"[^\"]+\"\naddress = )\"[^\"]+\"",
            r'\1"TCPIP::127.0.0.1::9::SOCKET"',
            t,
        ),
    )
    result = hil("bench-check", str(gone))
    assert result.returncode != 0 and "TCPIP::127.0.0.1::9::SOCKET: no answer" in result.stderr, result.stderr
    assert "Connection refused" in result.stderr and "address in the bench config" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(s.output for s in virtual.state.smus.values())


def test_hil_emulate_serves_instruments_that_the_drivers_identify(configs):
    from drivers.smu import Keithley2600B
    from drivers.transport import VisaTransport

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "emulate", str(configs / "bench-virtual.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(8)]
        assert lines[-1].startswith("serving"), lines
        addresses = dict(line.split() for line in lines[1:7])
        smu = Keithley2600B(VisaTransport(addresses["k26c"], Keithley2600B.line), "k26c")
        assert "Model 2602B" in smu.identify()
        smu.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_backend_option_on_a_bench_config_is_a_dry_run_said_so(hil, configs, tmp_path):
    out = tmp_path / "dry.h5"
    result = hil(
        "train",
        str(configs / "bench-virtual.toml"),
        "--backend",
        "numeric",
        "--epochs",
        "2",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "dry run" in result.stderr and "no instrument is touched" in result.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["backend"] == "numeric" and json.loads(f.attrs["instruments"]) == []
        assert f.attrs["backend_description"].endswith("dry run of bench bench-virtual.toml")
        assert 'name = "numeric"' in f.attrs["config_toml"] and "bench-virtual.toml" in f.attrs["config_toml"]


@pytest.mark.parametrize(
    "experiment, message",
    [
        ("self.toml", "is itself a bench config"),
        ("missing.toml", "missing.toml not found: name an experiment config"),
    ],
)
def test_a_bench_config_must_name_an_existing_experiment_config(hil, configs, tmp_path, experiment, message):
    path = tmp_path / "self.toml"
    text = (configs / "bench-virtual.toml").read_text().replace('"xor-bench.toml"', f'"{experiment}"')
    path.write_text(text)
    result = hil("train", str(path), "--out", str(tmp_path / "never.h5"))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "never.h5").exists()


def test_an_experiment_cannot_name_the_bench_backend_without_a_bench(hil, tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('[backend]\nname = "bench"\n')
    result = hil("solve", str(path))
    assert result.returncode == 2 and "needs a bench config" in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------- safe state, locks
def test_safe_state_reads_everything_back_and_names_only_what_it_could_not_make_safe(
    configs, tmp_path, virtual, monkeypatch
):
    import drivers.bench

    monkeypatch.setattr(drivers.bench, "ANSWER_TIMEOUT_S", 0.25)
    e = config.load(_served_config(configs, tmp_path, virtual))
    backend = open_backend(e)
    try:
        backend.program(e.initial_conductances(8))
        backend.settle(e.dataset().inputs[1])
        assert any(s.output for s in virtual.state.smus.values()) and virtual.unsafe() != []
        virtual.inject("k26c", "stall", 0, lasting=True)  # hung: it will not even answer *IDN?
        with pytest.raises(drivers.bench.BenchSafetyError) as caught:
            backend.safe_state()
    finally:
        backend.close()
    message = str(caught.value)
    # The last check (before the safe state) found it first; then the safe state could not reach it.
    assert "\n" not in message and message.startswith("k26c at ") and "; NOT SAFE: k26c at " in message
    assert not any(name in message for name in ("k26a", "k26b", "k26d", "matrix", "pots"))
    assert "hil safe" in message
    assert {k for k, s in virtual.state.smus.items() if s.output} == {"k26c.a", "k26c.b"}
    assert virtual.unsafe() == ["k26c.a output on", "k26c.b output on", "k26c.a at 1", "k26c.b at 1"]


def test_a_bench_in_use_is_refused_with_who_holds_it(configs, tmp_path, virtual, hil):
    path = _served_config(configs, tmp_path, virtual)
    backend = open_backend(config.load(path))
    try:
        for command in (("bench-check",), ("safe",), ("train", "--out", str(tmp_path / "never.h5"))):
            result = hil(*command[:1], str(path), *command[1:])
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and len(lines) == 1, result.stderr
            assert f"is in use by pid {os.getpid()}" in lines[0] and "wait for that run" in lines[0]
        assert not (tmp_path / "never.h5").exists()
    finally:
        backend.close()
    assert hil("bench-check", str(path)).returncode == 0  # released at close


def test_hil_safe_reports_every_instrument_and_refuses_an_emulated_bench(configs, tmp_path, virtual, hil):
    path = _served_config(configs, tmp_path, virtual)
    with virtual.state.lock:  # as a run that died would leave it
        virtual.state.smus["k26a.a"].output = True
        virtual.state.smus["k26a.a"].level = 2.0
        virtual.state.relays["matrix"].closed.update({"1A01", "1B02"})
        virtual.state.pots["pots"].codes[:3] = [7, 8, 9]
        virtual.state.changed()
    result = hil("safe", str(path))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 7 and "6 instruments safe" in lines[-1]
    assert any(line.split()[:3] == ["k26a", "keithley-2600b", "safe"] for line in lines), lines
    assert any("matrix" in line and "every relay open" in line for line in lines)
    assert any("pots" in line and "8 pots at the safe code 255" in line for line in lines)
    assert virtual.unsafe() == []
    emulated = hil("safe", str(configs / "bench-virtual.toml"))
    assert emulated.returncode == 2 and "emulated bench" in emulated.stderr


def test_hil_safe_makes_the_others_safe_and_names_an_instrument_that_does_not_answer(
    configs, tmp_path, virtual, hil
):
    path = _served_config(configs, tmp_path, virtual)
    with virtual.state.lock:
        for key in ("k26a.a", "k26b.b"):
            virtual.state.smus[key].output = True
        virtual.state.changed()
    virtual.inject("k26b", "disconnect", 0, lasting=True)
    result = hil("safe", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "hil: error: k26b not made safe: make sure each is on and connected, then run `hil safe` again "
        "(or switch its outputs off at its front panel)"
    ]
    assert any(line.split()[:3] == ["k26b", "keithley-2600b", "NOT"] for line in result.stdout.splitlines())
    assert virtual.unsafe() == ["k26b.b output on"]


def test_a_bench_refuses_pruning_at_config_time_and_a_dry_run_allows_it(tmp_path):
    experiment = tmp_path / "xor-bench-pruned.toml"
    text = (ROOT_CONFIGS / "xor-bench.toml").read_text()
    experiment.write_text(text.replace("[training]\n", "[training]\nprune_below = 2e-4\n", 1))
    bench = tmp_path / "bench.toml"
    bench.write_text(
        (ROOT_CONFIGS / "bench-virtual.toml").read_text().replace('"xor-bench.toml"', f'"{experiment}"')
    )
    with pytest.raises(config.ConfigError, match="cannot open a pot: set prune_below = 0"):
        config.load(bench)
    assert config.load(bench, {"backend": {"name": "numeric"}}).dry_run


# ---------------------------------------------------------------------------------- the probe's off state
def _emulated_config(configs, tmp_path, edit=lambda text: text):
    """bench-virtual.toml (2602B SMUs, the probe on k26d.b) with its experiment by absolute path."""
    text = (configs / "bench-virtual.toml").read_text()
    text = text.replace('experiment = "xor-bench.toml"', f'experiment = "{configs / "xor-bench.toml"}"')
    path = tmp_path / "bench.toml"
    path.write_text(edit(text))
    return config.load(path)


def _settle_recording(e, backend: Any):
    """Some settles, every line the probe's 2600B was sent during them, and the applied settings."""
    probe = backend.config.probe_channel
    emu = backend.emulator.emulators[probe.partition(".")[0]]
    sent: list[str] = []
    handle = emu.handle

    def recorded(line: str) -> str | None:
        sent.append(line)
        return handle(line)

    emu.handle = recorded
    backend.program(e.initial_conductances(8))
    for x in e.dataset().inputs:
        backend.settle(x, {"11": 1e-6})
    return sent, emu.off_record(probe), backend.identity().settings


def test_a_2600b_probe_moves_with_its_output_relay_closed_and_every_node_within_its_0_a_limit(
    configs, tmp_path
):
    """2600B RM §7 smuX.source.offmode = OUTPUT_NORMAL, offfunc = OUTPUT_DCAMPS, offlimitv: the
    probe goes off at every move as before, but as a 0 A source with its output relay closed (the
    relay the manuals warn high impedance wears); every node it landed on while off was below the
    limit, and below the bound that chose it."""
    e = _emulated_config(configs, tmp_path)
    backend: Any = open_backend(e)
    try:
        sent, record, settings = _settle_recording(e, backend)
    finally:
        backend.close()
    moves = sent.count("smub.source.output = 0")
    assert moves >= len(e.dataset().inputs) * (len(backend.config.probe_routes) - 1)
    assert not [line for line in sent if "offmode =" in line or "HIGH_Z" in line or "output = 2" in line]
    chosen = settings["[probe]"]
    assert chosen["off_state"] == "0 A, output relay closed" and chosen["off_voltage_limit"] == 5.0
    assert settings["k26d.b"]["off_mode"] == 0 and settings["k26d.b"]["off_voltage_limit"] == 5.0
    assert record.relay_openings == 0 and record.limit_hits == []
    assert 0.1 < record.largest_off_volts <= chosen["worst_case_volts"] < 0.95 * 5.0


def test_a_probe_whose_nodes_can_pass_its_0_a_limit_falls_back_to_high_impedance(configs, tmp_path):
    """compliance_voltage = 2.5 V: sources up to max_volts = 2.5 V can take the amplifier outputs
    to 2.86 V (the bound at every pot code), past the 0 A off state's limit, where the off probe
    would clamp the node and the route's relays would break and make that current. The bench says
    why and opens the output relay at every move instead (smuX.source.offmode = OUTPUT_HIGH_Z)."""
    e = _emulated_config(
        configs,
        tmp_path,
        lambda t: t.replace("max_volts = 3.0", "max_volts = 2.5").replace(
            "compliance_voltage = 5.0", "compliance_voltage = 2.5"
        ),
    )
    backend = open_backend(e)
    try:
        sent, record, settings = _settle_recording(e, backend)
    finally:
        backend.close()
    chosen = settings["[probe]"]
    assert chosen["off_state"] == "high impedance, output relay open" and chosen["off_voltage_limit"] is None
    assert 2.5 < chosen["worst_case_volts"] < 3.0 and "not below 0.95 × the 0 A off state's" in chosen["why"]
    assert settings["k26d.b"]["off_mode"] == 2
    moves = sent.count("smub.source.output = 0")
    assert moves > 0 and record.relay_openings >= moves and record.largest_off_volts == 0.0


def test_a_settle_that_would_take_a_probed_node_near_the_0_a_limit_is_refused_before_any_level_moves(
    configs, tmp_path
):
    """The bench's own prediction of each settle is held to the probe's 0 A off-state limit too
    (here lowered below what node 9 or 10 reaches, as a bound that did not hold would leave it)."""
    e = _emulated_config(configs, tmp_path)
    backend: Any = open_backend(e)
    try:
        backend.program(e.initial_conductances(8))
        x = e.dataset().inputs[1]
        backend.settle(x)
        smus = backend.emulator.state.smus
        levels = {key: s.level for key, s in smus.items()}
        backend._probe_off_limit = 0.2
        with pytest.raises(
            BenchSafetyError, match=r"refused before any level was applied: node \d+ predicted"
        ):
            backend.settle(-x)
        assert {key: s.level for key, s in smus.items()} == levels
    finally:
        backend.close()


def test_a_probe_whose_off_state_another_client_changed_is_caught_at_the_next_check(configs, tmp_path):
    """The probe goes off and on at every move, so a reset of its SMU would not show as an output
    left off; `verify` holds it to every setting it was configured with. Here another client sets
    its normal off state back to a 0 V source (2600B RM §7 smuX.source.offfunc = OUTPUT_DCVOLTS),
    which would pull each node a route lands on."""
    e = _emulated_config(configs, tmp_path)
    backend: Any = open_backend(e)
    try:
        backend.program(e.initial_conductances(8))
        backend.settle(e.dataset().inputs[0])
        backend.verify()  # as configured: passes
        backend.emulator.emulators["k26d"].handle("smub.source.offfunc = 1")
        with pytest.raises(
            BenchSafetyError, match=r"k26d\.b: off_function reads 1 where the run set 0: the instrument"
        ):
            backend.verify()
    finally:
        backend.close()
