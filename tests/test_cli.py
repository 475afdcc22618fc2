"""`hil` as a user runs it: help, training to a run log, solve/netlist/gradcheck, bad input."""

import json
import subprocess

import h5py
import numpy as np
import pytest

from hil import runlog

COMMANDS = ("train", "netlist", "solve", "gradcheck")


@pytest.mark.parametrize("command", (None, *COMMANDS))
def test_every_command_has_help(hil, command):
    result = hil(*((command,) if command else ()), "--help")
    assert result.returncode == 0
    assert "usage: hil" in result.stdout
    if command:
        assert "config" in result.stdout


def test_train_writes_a_complete_run_log(hil, configs, tmp_path):
    out = tmp_path / "run.h5"
    result = hil("train", str(configs / "xor.toml"), "--out", str(out), "--epochs", "3", "--backend", "spice")
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("trained 3 epochs") and str(out) in summary
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == runlog.FORMAT and f.attrs["format_version"] == 1
        assert f.attrs["backend"] == "spice" and f.attrs["status"] == "completed"
        assert 'builder = "xor"' in f.attrs["config_toml"] and "epochs = 3" in f.attrs["config_toml"]
        versions = json.loads(f.attrs["versions"])
        assert {"eqprop-hil", "python", "numpy", "h5py", "PySpice", "ngspice"} <= set(versions)
        assert versions["ngspice"].isdigit()  # the spice backend reports the library it loaded
        assert json.loads(f.attrs["instruments"]) == []
        names = [n.decode() for n in f["network/edge_names"][:]]
        assert names == [f"R{i}" for i in range(1, 9)]
        assert f["network/endpoints"].shape == (8, 2) and list(f["network/layers"][:]) == [1] * 6 + [2] * 2
        loss, db, acc = f["epochs/loss"][:], f["epochs/error_db"][:], f["epochs/accuracy"][:]
        assert loss.shape == db.shape == acc.shape == (3,)
        np.testing.assert_allclose(db, 10 * np.log10(loss))
        np.testing.assert_allclose(loss, f["epochs/sample_loss"][:].mean(axis=1))
        g = f["epochs/conductances"][:]
        assert g.shape == (4, 8) and not np.allclose(g[0], g[-1])
        assert all(
            d.dtype == np.float64 for d in (f["epochs/loss"], f["epochs/error_db"], f["epochs/accuracy"])
        )


def test_train_refuses_to_overwrite_unless_forced(hil, configs, tmp_path):
    out = tmp_path / "run.h5"
    out.write_bytes(b"precious")
    result = hil("train", str(configs / "xor.toml"), "--out", str(out), "--epochs", "1")
    assert result.returncode == 2 and "exists" in result.stderr and "--force" in result.stderr
    assert out.read_bytes() == b"precious"
    forced = hil(
        "train",
        str(configs / "xor.toml"),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--force",
        "--backend",
        "numeric",
    )
    assert forced.returncode == 0, forced.stderr
    assert h5py.is_hdf5(out)


def test_solve_json_agrees_between_backends_and_with_the_netlist_in_ngspice(hil, configs, tmp_path):
    spice = json.loads(hil("solve", str(configs / "xor.toml"), "--json", "--sample", "2").stdout)["nodes"]
    twin = json.loads(
        hil("solve", str(configs / "xor.toml"), "--json", "--sample", "2", "--backend", "numeric").stdout
    )["nodes"]
    assert spice.keys() == twin.keys() and "11" in spice
    for node in spice:
        assert abs(spice[node] - twin[node]) <= 1e-9
    netlist = hil("netlist", str(configs / "xor.toml"), "--sample", "2").stdout
    assert "\nR1 1 7 " in netlist and "\nR8 10 11 " in netlist and ".op" in netlist
    path = tmp_path / "xor.cir"
    path.write_text(netlist)
    printed = subprocess.run(["ngspice", "-b", str(path)], capture_output=True, text=True, timeout=60).stdout
    table = {}
    for line in printed.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("V("):
            table[parts[0][2:-1]] = float(parts[1])
    assert set(table) >= {"7", "8", "11"}
    for node, volts in table.items():
        assert volts == pytest.approx(spice[node], rel=1e-5, abs=1e-6)


def test_nudged_netlist_carries_the_nudge_current(hil, configs):
    free = hil("netlist", str(configs / "xor.toml"), "--phase", "free").stdout
    nudged = hil("netlist", str(configs / "xor.toml"), "--phase", "nudged").stdout
    assert "INUDGE_11 0 11 dc 0.0" in free
    line = next(ln for ln in nudged.splitlines() if ln.startswith("INUDGE_11"))
    assert float(line.split()[-1]) != 0.0


def test_gradcheck_json_report(hil, configs):
    result = hil(
        "gradcheck", str(configs / "xor.toml"), "--json", "--beta", "1e-6", "--method", "vdm-centered"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"config", "sample", "beta", "method", "targets", "outputs", "loss", "edges", "layers"} <= set(
        report
    )
    assert report["outputs"] == [["11", None]] and report["targets"] == [0.0]
    assert [e["name"] for e in report["edges"]] == [f"R{i}" for i in range(1, 9)]
    for e in report["edges"]:
        factor = 16.0 if e["layer"] == 1 else 1.0
        assert e["estimate"] == pytest.approx(factor * e["raw"], rel=1e-12)
    assert all(layer["relative_error"] <= 1e-3 for layer in report["layers"])


def test_gradcheck_differences_sampled_edges_and_refuses_a_count_below_one(hil, configs):
    result = hil("gradcheck", str(configs / "xor.toml"), "--json", "--edges", "2")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [layer["edges"] for layer in report["layers"]] == [2, 2] and len(report["edges"]) == 4
    assert all(layer["relative_error"] <= 1e-3 for layer in report["layers"])
    refused = hil("gradcheck", str(configs / "xor.toml"), "--edges", "0")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "hil: error: --edges 0 must be at least 1 (edges differenced per layer)"
    ]


BAD_CONFIGS = {
    "malformed.toml": ("[training\nbeta = 1", "malformed TOML"),
    "unknown.toml": ("[training]\nbetta = 1e-6\n", "unknown key [training] betta: did you mean beta?"),
    "section.toml": ("[trainer]\nbeta = 1e-6\n", "unknown section [trainer]"),
    "range.toml": ("[conductances]\ng_min = 0.2\ng_max = 0.1\n", "g_min = 0.2 must be below g_max"),
    "negative.toml": ("[conductances]\ng_min = -1e-4\n", "[conductances] g_min = -0.0001 is invalid"),
    "zero.toml": ("[conductances]\ninit_low = 0.0\n", "[conductances] init_low = 0.0 is invalid"),
    "type.toml": ('[training]\nepochs = "many"\n', "[training] epochs = 'many' is invalid"),
    "method.toml": ('[training]\nmethod = "sgd"\n', "must be one of vdm, vdm-centered, pcm"),
    "misplaced.toml": ('[circuit]\nbuilder = "xor"\nhidden = [4]\n', "applies only to builder"),
    "empty.toml": ("", "the config is empty"),
    "nan.toml": ("[training]\nbeta = nan\n", "[training] beta = nan is invalid"),
    "init.toml": ("[conductances]\ng_min = 1e-3\ninit_low = 1e-4\n", "init_low = 0.0001 is below g_min"),
    "huge.toml": (
        '[circuit]\nbuilder = "layered"\nhidden = [100000]\n',
        "[circuit] hidden = [100000] is invalid",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", ("train", "solve"))
def test_bad_configs_are_one_line_errors_with_nothing_written(hil, tmp_path, name, command):
    text, message = BAD_CONFIGS[name]
    path = tmp_path / name
    path.write_text(text)
    out = tmp_path / "never.h5"
    args = ("train", str(path), "--out", str(out)) if command == "train" else ("solve", str(path))
    result = hil(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hil: error: "), result.stderr
    assert message in lines[0] and str(path) in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_missing_config_file_is_a_one_line_error(hil, tmp_path):
    result = hil("train", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"hil: error: config file {tmp_path / 'nope.toml'} not found: give the "
        "path to a .toml experiment config"
    )
    assert not (tmp_path / "runs").exists()


def test_sample_out_of_range_is_a_one_line_error(hil, configs):
    result = hil("solve", str(configs / "xor.toml"), "--sample", "9")
    assert result.returncode == 2 and "--sample 9 is out of range" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_gradcheck_shows_the_seed_sign_flaw(hil, configs):
    result = hil("gradcheck", str(configs / "xor-seed-vdm.toml"), "--json", "--beta", "1e-7")
    report = json.loads(result.stdout)
    ratio = {e["name"]: e["estimate"] / e["finite_difference"] for e in report["edges"]}
    # R1 and R6 are paired with their own drops in the seed; both sit behind +4 amplifiers.
    assert ratio["R1"] == pytest.approx(-1 / 16, rel=1e-2)
    assert ratio["R6"] == pytest.approx(-1 / 16, rel=1e-2)
    assert ratio["R7"] == pytest.approx(1.0, rel=1e-2) and ratio["R8"] == pytest.approx(1.0, rel=1e-2)


def test_sigterm_mid_run_keeps_a_readable_log_marked_interrupted(configs, tmp_path):
    import os
    import signal
    import sys
    import time

    out = tmp_path / "long.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hil.cli",
            "train",
            str(configs / "xor.toml"),
            "--out",
            str(out),
            "--epochs",
            "100000",
            "--backend",
            "numeric",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    epochs = 0
    while time.monotonic() < deadline and epochs < 3:
        time.sleep(0.2)
        if out.exists():
            try:  # read while it is being written (SWMR)
                with h5py.File(out, "r", libver="latest", swmr=True) as f:
                    epochs = len(f["epochs/loss"])
            except OSError:
                pass
    assert epochs >= 3, "training did not start writing epochs"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "interrupted"
        n = len(f["epochs/loss"])
        assert n >= epochs and f["epochs/conductances"].shape[0] == n + 1
        assert np.all(np.isfinite(f["epochs/loss"][:]))
