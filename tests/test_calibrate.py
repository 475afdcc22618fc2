"""`hil calibrate-pots`: the rheostat fit, the measuring plan, the virtual bench's toleranced pots,
the table file, the config that loads it, and the measured pots against the emulated truth (the
virtual bench draws each part's R_AB and R_W, which the calibration never sees)."""

from __future__ import annotations

import re
import signal
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import start_hil

from drivers import benchconfig
from drivers import calibration as cal
from drivers.bench import open_bench
from drivers.models import POTS
from drivers.pots import TAPS, AD5206Model
from hil import builders, config
from hil.cli.calibrate import parse_codes
from hil.config import ConfigError
from hil.runlog import read as read_run
from sim.factory import twin_predictor
from sim.virtual.bench import VirtualBench
from sim.virtual.pot_emulators import EmulatedPot, draw_parts

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# An XOR experiment whose worst case keeps the pots inside their ratings at the bench's supply (the
# calibration, not the training, is under test here).
EXPERIMENT = """\
[circuit]
builder = "xor"
amplifier_gain = 2.0

[conductances]
g_min = 1.1e-4
g_max = 1e-3
init_low = 1.1e-4
init_high = 1e-3

[dataset]
name = "xor"
input_low = -0.5
input_high = 0.5
target_low = 0.0
target_high = 0.25

[training]
method = "vdm-centered"
beta = 1e-6
epochs = 2
"""


def write_bench(
    folder: Path,
    tolerance: float = 0.2,
    r_w_range: str = "[45, 100]",
    seed: int = 1,
    extra: str = "",
    noise: str = "none",
) -> Path:
    """bench-virtual.toml's bench, running EXPERIMENT, with toleranced pots."""
    (folder / "xor-cal.toml").write_text(EXPERIMENT)
    text = (CONFIGS / "bench-virtual.toml").read_text()
    text = re.sub(r"(?m)^experiment = .*$", 'experiment = "xor-cal.toml"', text)
    text = re.sub(r"(?m)^max_nudge_current = .*$", "max_nudge_current = 1e-5", text)
    text = re.sub(r"(?m)^noise = .*\n", "", text)
    text = re.sub(r"(?m)^\[bench\]$", f'[bench]\nnoise = "{noise}"', text)
    pots = f"r_ab_tolerance = {tolerance}\nr_w_range = {r_w_range}\npart_seed = {seed}\n{extra}"
    text = re.sub(r"(?m)^(r_w = .*)$", lambda m: m.group(1) + "\n" + pots, text)
    path = folder / "bench.toml"
    path.write_text(text)
    return path


def truth(path: Path) -> list[EmulatedPot]:
    bench = benchconfig.read(path, calibrations=False)
    return draw_parts(bench.instruments["pots"])


# ---------------------------------------------------------------------------------------- the fit
def test_the_fit_recovers_wiper_and_end_to_end_resistance():
    codes = list(range(0, 256, 5))
    g = [1.0 / (73.0 + 9120.0 * c / 256) for c in codes]
    r_w, r_ab, rms = cal.fit_rheostat(codes, g)
    assert r_w == pytest.approx(73.0, rel=1e-9) and r_ab == pytest.approx(9120.0, rel=1e-9)
    assert rms < 1e-12
    rng = np.random.default_rng(0)
    noisy = np.array(g) * (1 + 1e-3 * rng.standard_normal(len(g)))
    r_w, r_ab, rms = cal.fit_rheostat(codes, noisy)
    assert r_w == pytest.approx(73.0, rel=0.02) and r_ab == pytest.approx(9120.0, rel=2e-3)
    assert 5e-4 < rms < 2e-3


def test_a_fit_needs_two_codes_and_positive_conductances():
    with pytest.raises(cal.CalibrationError, match="at least two different codes"):
        cal.fit_rheostat([3, 3], [1e-3, 1e-3])
    with pytest.raises(cal.CalibrationError, match="not positive"):
        cal.fit_rheostat([0, 1], [1e-3, -1e-3])


def test_out_of_spec_parts_are_named_against_the_datasheet():
    nominal = AD5206Model(r_ab=10e3, r_w=50.0)
    fit = cal.PotFit("R1", "pots", 1, (0, 255), (1e-2, 1e-4), 120.0, 6500.0, 0.0)
    problems = fit.problems(nominal)
    assert any("R_AB 6500 Ω is -35%" in p for p in problems)
    assert any("R_W 120 Ω" in p for p in problems)
    assert cal.PotFit("R1", "pots", 1, (0, 255), (1e-2, 1e-4), 99.0, 7100.0, 0.0).problems(nominal) == []


@pytest.mark.parametrize(
    "text, codes", [("0-3,255", [0, 1, 2, 3, 255]), ("7, 5", [5, 7]), ("0-255", list(range(256)))]
)
def test_codes_are_parsed(text, codes):
    assert parse_codes(text) == codes


@pytest.mark.parametrize("text", ["3", "0-256", "a", "5-2", "1,,2"])
def test_bad_codes_are_refused(text):
    with pytest.raises(ValueError, match="--codes"):
        parse_codes(text)


# ---------------------------------------------------------------------------------------- the plan
def test_each_xor_pot_has_a_way_to_be_measured():
    net = builders.xor(4.0)
    plans = {p.edge: p for p in cal.plan(net, ["11"], ["7", "8", "9", "10"], net.edge_names)}
    assert plans["R1"].source == "Vx1" and plans["R1"].far == "7"
    assert set(plans["R1"].companions) == {"R3", "R5"}
    assert plans["R7"].output == "11" and plans["R7"].far == "9" and plans["R7"].held == ("R8",)
    assert plans["R8"].output == "11" and plans["R8"].held == ("R7",)


def test_a_pot_whose_terminals_the_bench_cannot_read_is_refused():
    net = builders.xor(4.0)
    with pytest.raises(cal.CalibrationError, match=r"edge R1 \(1–7\) cannot be measured in-circuit"):
        cal.plan(net, ["11"], ["8", "9", "10"], ["R1"])  # node 7 is not probed
    with pytest.raises(cal.CalibrationError, match="edge R7"):
        cal.plan(net, [], ["7", "8", "9", "10"], ["R7"])  # node 11 is not nudged


# ---------------------------------------------------------------------------------------- the parts
def test_the_virtual_benchs_pots_are_drawn_within_their_tolerance(tmp_path):
    parts = truth(write_bench(tmp_path, tolerance=0.2, r_w_range="[45, 100]", seed=4))
    assert len(parts) == 8
    assert all(8e3 <= p.r_ab <= 12e3 and 45.0 <= p.r_w <= 100.0 for p in parts)
    assert len({p.r_ab for p in parts}) == 8  # every channel its own part
    assert parts == truth(write_bench(tmp_path, seed=4))  # the same bench every time
    assert parts != truth(write_bench(tmp_path, seed=5))
    nominal = truth(write_bench(tmp_path, tolerance=0.0, r_w_range="[]"))
    assert all(p == EmulatedPot(10e3, 45.0) for p in nominal)


def test_the_emulated_circuit_conducts_through_the_drawn_parts(tmp_path):
    path = write_bench(tmp_path)
    bench = benchconfig.read(path, calibrations=False)
    network = config.load(path).network()
    virtual = VirtualBench(bench, network)
    parts = truth(path)
    for channel in (1, 8):
        for code in (0, 100, 255):
            got = virtual.circuit.wiring.pot_conductance("pots", channel, code)
            assert got == 1.0 / (parts[channel - 1].r_w + parts[channel - 1].r_ab * code / 256)


def test_a_real_bench_refuses_emulated_tolerances(tmp_path):
    path = write_bench(tmp_path)
    path.write_text(path.read_text().replace("emulated = true", "emulated = false"))
    with pytest.raises(ConfigError, match="describe emulated parts, and this bench is real"):
        benchconfig.read(path)


@pytest.mark.parametrize("value", ["[100, 45]", "[0.5, 60]", "[45]", '["a", "b"]'])
def test_bad_wiper_ranges_are_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="r_w_range"):
        benchconfig.read(write_bench(tmp_path, r_w_range=value))


# ---------------------------------------------------------------------------------------- measuring
def calibrated(path: Path, codes: list[int]) -> tuple[list[cal.PotFit], VirtualBench, dict]:
    """The pots of the bench at `path` measured in-process on its own virtual bench."""
    bench = benchconfig.read(path, calibrations=False)
    experiment = config.load(path)
    network = experiment.network()
    virtual = VirtualBench(bench, network).start()
    backend = open_bench(
        bench,
        network,
        "vdm-centered",
        experiment.dataset().inputs,
        lambda: (virtual.addresses, virtual.stop),
        predict=twin_predictor(network),
    )
    try:
        plans = cal.plan(network, list(bench.nudges), list(bench.probe_routes), network.edge_names)
        parts = {name: spec.pot_model() for name, spec in bench.of_role(POTS).items()}
        levels = cal.Levels(max_nudge=bench.limits["max_nudge_current"])
        fits = cal.calibrate(backend, plans, bench.pots, parts, codes, levels)
    finally:
        backend.safe_state()
        backend.close()
    return fits, virtual, backend.rating_record


def test_every_pot_is_measured_as_the_emulated_part_is(tmp_path):
    path = write_bench(tmp_path)
    codes = [0, 1, 2, 5, 20, 90, 200, 255]
    fits, virtual, record = calibrated(path, codes)
    assert virtual.unsafe() == []  # left safe: outputs off at 0, relays open, pots at the safe code
    # every settle predicted and read inside the ratings; no wiper beyond the calibration's 1 mA
    assert record["settles"] > 0 and record["largest_wiper_current"] <= 1e-3
    parts = truth(path)
    assert [f.edge for f in fits] == [f"R{k}" for k in range(1, 9)]
    for fit in fits:
        part = parts[fit.channel - 1]
        for code, g in zip(fit.codes, fit.conductances, strict=True):
            assert g == pytest.approx(part.conductance(code), rel=1e-6), (fit.edge, code)
        assert fit.r_w == pytest.approx(part.r_w, rel=1e-6)
        assert fit.r_ab == pytest.approx(part.r_ab, rel=1e-6)
        # the emulated parts differ from the nominal formula the driver assumes, by design
        assert abs(part.conductance(0) * 45.0 - 1) > 1e-3 or abs(part.r_ab / 1e4 - 1) > 1e-3


def test_with_datasheet_noise_the_fit_is_within_a_percent(tmp_path):
    path = write_bench(tmp_path, noise="datasheet", seed=2)
    fits, _, _ = calibrated(path, [0, 1, 2, 3, 8, 32, 128, 255])
    parts = truth(path)
    for fit in fits:
        part = parts[fit.channel - 1]
        assert fit.r_w == pytest.approx(part.r_w, rel=0.02), fit.edge
        assert fit.r_ab == pytest.approx(part.r_ab, rel=0.01), fit.edge


# ---------------------------------------------------------------------------------------- the table
def test_the_command_writes_a_table_that_the_bench_config_loads(tmp_path, hil):
    path = write_bench(tmp_path, seed=3)
    done = hil("calibrate-pots", str(path), "--codes", "0-2,16,128,255", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = tmp_path / "bench-pots-calibration.toml"
    assert f"calibration of pots: {table}" in done.stdout
    assert 'add  calibration = "bench-pots-calibration.toml"  to [instruments.pots]' in done.stdout
    parts = truth(path)
    low = max(p.conductance(255) for p in parts)
    high = min(p.conductance(0) for p in parts)
    assert f"every calibrated pot realises {low:.4g} to {high:.4g} S" in done.stdout
    # Loaded: codes follow the measured conductances, and the device range narrows to the pots'.
    path.write_text(
        path.read_text().replace(
            "part_seed = 3", 'part_seed = 3\ncalibration = "bench-pots-calibration.toml"'
        )
    )
    experiment = config.load(path)
    assert experiment.hyper().g_min == pytest.approx(max(1.1e-4, low), rel=1e-12)
    assert experiment.hyper().g_max == 1e-3 < high
    assert experiment["conductances"]["init_low"] >= experiment.hyper().g_min
    model = benchconfig.read(path).instruments["pots"].pot_model()
    for channel, part in enumerate(parts, start=1):
        for code in (0, 1, 2, 16, 128, 255):  # measured codes: the true conductance maps back to them
            table = model.calibration(channel)  # read through the SMUs' printed digits: ≈1e-7
            assert model.code_for(channel, np.clip(part.conductance(code), table.g_min, table.g_max)) == code
            assert model.conductance(channel, code) == pytest.approx(part.conductance(code), rel=1e-6)
        # between measured codes the fit, which is the part's own formula here
        wanted = part.conductance(60)
        assert model.code_for(channel, wanted) == 60
    # A training on the calibrated bench runs inside the narrowed range, and its log keeps it.
    trained = hil("train", str(path), "--epochs", "1", "--out", str(tmp_path / "run.h5"), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    run = read_run(tmp_path / "run.h5")
    assert tomllib.loads(run.config_toml)["conductances"]["g_min"] == experiment.hyper().g_min
    for k, edge in enumerate(run.edge_names):  # realised: a code of the measured table near the range
        table = set(model.calibration(k + 1).table.values())
        for g in np.abs(run.conductances[1:, k]):
            assert g in table, edge
            assert experiment.hyper().g_min / 1.05 <= g <= experiment.hyper().g_max * 1.05, edge
    # Again: the configured table is replaced without --force; another existing file needs it.
    again = hil("calibrate-pots", str(path), "--codes", "0,255", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    other = tmp_path / "other.toml"
    other.write_text("")
    refused = hil("calibrate-pots", str(path), "--codes", "0,255", "--out", str(other), cwd=tmp_path)
    assert refused.returncode == 2 and "exists" in refused.stderr and other.read_text() == ""


def test_out_of_spec_parts_are_warned_about(tmp_path, hil):
    path = write_bench(tmp_path, tolerance=0.2, r_w_range="[120, 150]")
    done = hil("calibrate-pots", str(path), "--codes", "0,255", "--edges", "R1,R7", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"warning: pot R1 \(pots\.1\) out of spec: R_W 1[2-5]\d\.?\d* Ω", done.stdout)
    assert "warning: pot R7 (pots.7) out of spec" in done.stdout
    assert "warning: pot R2" not in done.stdout


def test_a_missing_or_foreign_table_is_refused_with_the_fix(tmp_path):
    path = write_bench(tmp_path, extra='calibration = "missing.toml"\n')
    with pytest.raises(
        ConfigError, match=r"calibration: calibration file .*missing.toml not found: run `hil calibrate-pots`"
    ):
        config.load(path)
    fit = cal.PotFit("R1", "bank2", 1, (0, 255), (1e-2, 1e-4), 50.0, 1e4, 0.0)
    cal.save(tmp_path / "missing.toml", "bank2", [fit], "test")
    with pytest.raises(ConfigError, match="calibrates bank 'bank2', not 'pots'"):
        config.load(path)
    (tmp_path / "missing.toml").write_text("format = 1\n")
    with pytest.raises(ConfigError, match="is not a pot calibration table"):
        config.load(path)


def test_bad_arguments_touch_nothing(tmp_path, hil):
    path = write_bench(tmp_path)
    for args, message in [
        (["--codes", "300"], "--codes"),
        (["--edges", "R9"], "R9 has no pot"),
        (["--max-current", "0.02"], "--max-current"),
    ]:
        done = hil("calibrate-pots", str(path), *args, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "calibrating" not in done.stdout
    assert not (tmp_path / "bench-pots-calibration.toml").exists()


def test_the_table_round_trips(tmp_path):
    fit = cal.PotFit("R2", "pots", 2, (0, 7, 255), (1 / 60, 1 / 330.0, 1 / 9800.0), 60.0, 9600.0, 1e-3)
    cal.save(tmp_path / "t.toml", "pots", [fit], "a note\non two lines")
    assert (tmp_path / "t.toml").read_text().startswith("# a note\n# on two lines\n")
    loaded = cal.load(tmp_path / "t.toml", "pots", 8)
    assert set(loaded) == {2}
    table = loaded[2].table
    assert len(table) == TAPS and table[7] == 1 / 330.0  # measured
    assert table[100] == pytest.approx(1 / (60.0 + 9600.0 * 100 / 256), rel=1e-12)  # the fit


def test_calibrating_some_edges_keeps_the_others_tables(tmp_path, hil):
    path = write_bench(tmp_path, seed=6)
    table = tmp_path / "bench-pots-calibration.toml"
    first = hil("calibrate-pots", str(path), "--codes", "0,9,255", "--edges", "R1,R2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    path.write_text(
        path.read_text().replace(
            "part_seed = 6", 'part_seed = 6\ncalibration = "bench-pots-calibration.toml"'
        )
    )
    second = hil("calibrate-pots", str(path), "--codes", "0,255", "--edges", "R2,R7", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "(kept 1 pots measured before)" in second.stdout
    fits = {f.edge: f for f in cal.read_fits(table, "pots", 8)}
    assert sorted(fits) == ["R1", "R2", "R7"]
    assert fits["R1"].codes == (0, 9, 255) and fits["R2"].codes == (0, 255)  # R2 measured again
    parts = truth(path)
    assert fits["R7"].r_ab == pytest.approx(parts[6].r_ab, rel=1e-6)


def test_a_signal_stops_between_readings_leaves_the_bench_safe_and_writes_nothing(tmp_path):
    path = write_bench(tmp_path)
    run = start_hil("calibrate-pots", str(path), cwd=tmp_path)  # all 256 codes: long enough
    assert run.stdout is not None
    first = run.stdout.readline()
    assert "calibrating 8 pots at 256 codes" in first
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert "SIGTERM: stopped between two readings; the bench is safe, nothing was written" in out
    assert not (tmp_path / "bench-pots-calibration.toml").exists()
