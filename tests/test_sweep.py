"""`hil sweep`: the seed's start-condition behaviour, the corrected circuit, parallel runs giving the
same numbers, interruption and resumption, grids, gradient quality over β, bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hil import config
from hil.studies import sweep
from hil.studies.sweepfile import read

ROOT_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ROOT = Path(__file__).resolve().parent.parent


def test_seed_start_conditions_reproduce_the_seeds_first_12_starts(hil, configs, tmp_path):
    """The seed's start-condition claim, as statistics over its first 12 starts (100 epochs).

    The seed measured VDM ending at +7.7…+8.6 dB in 11 of 12 starts and PCM at −5.7…−9.6 dB in 12
    of 12. No single start's end is asserted: 100 epochs of this flawed circuit are chaotic for some
    starts. Measured in 24 sweeps (twin and ngspice; solver tolerances and gmin ×10 and ÷10; 18
    perturbations of the initial conductances by ±1e-12 relative, as another CPU's rounding), the
    final errors of PCM starts 2, 4, 6, 10 span −8.8…−4.3, −9.9…−5.8, −8.1…−5.5, −6.1…−5.5 dB
    (start 2 ended at −4.27 dB on the twin of an x86-64 machine), PCM start 1 ends at +5.2 dB on
    ngspice with reltol 1e-2, VDM start 6 spans −3.0…+8.4 dB on ngspice; every other start stays
    within 0.15 dB. The statistics below held in all 24 sweeps with the margins given; the
    per-start numbers are study output (`hil sweep starts`, `make bench`).
    """
    out = tmp_path / "starts.h5"
    result = hil(
        "sweep", "starts", str(configs / "xor-seed-starts.toml"), "--starts", "12", "--workers", "2",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    s = read(out)
    assert s.kind == "starts" and s.epochs == 100 and list(s.methods) == ["vdm", "pcm"]
    assert list(s.points["seed"]) == [n + 3 * n * n + 5 for n in range(12)]
    vdm, pcm = s.methods["vdm"], s.methods["pcm"]
    assert vdm.done.all() and pcm.done.all()
    # Every start begins from the same conductances for both methods, drawn as the seed draws them.
    np.testing.assert_array_equal(vdm.initial_conductances, pcm.initial_conductances)
    first = np.random.RandomState(5).uniform(1e-4, 0.1, 9)[1:]
    np.testing.assert_array_equal(vdm.initial_conductances[0], first)
    # A start the solver loses counts with its last recorded error, and as a failure (measured: at
    # most 1 of 12 VDM starts, on ngspice with tolerances ×10 only; never a PCM start).
    vdm_last = np.array([row[np.isfinite(row)][-1] for row in vdm.error_db])
    assert vdm.failed.sum() <= 1 and not pcm.failed.any()
    for k in np.flatnonzero(vdm.failed):
        assert np.isnan(vdm.final_error_db[k]) and "converge" in vdm.failure[k]
    # VDM diverges: ends at +7…+9 dB in at least 9 of 12 starts (measured 10-11 of 12; the seed 11)
    # and never reaches -9 dB (measured: lowest end −4.65 dB). Without the seed's pairing VDM
    # ends near +11 dB (0 of 12 in the band); on the corrected circuit near −16 dB (10 succeed).
    assert np.sum((vdm_last >= 7.0) & (vdm_last <= 9.0)) >= 9
    assert not vdm.success.any()
    # PCM plateaus: ends at −12…−4 dB in at least 10 of 12 starts (measured 11-12 of 12; the seed
    # 12 in −5.7…−9.6 dB), and below VDM in at least 10 of 12 (measured 11-12; 1 of 12 on the
    # corrected circuit, where VDM trains).
    assert np.sum((pcm.final_error_db >= -12.0) & (pcm.final_error_db <= -4.0)) >= 10
    assert np.sum(pcm.final_error_db < vdm_last) >= 10
    # The summary says what the file holds.
    assert f"{int(pcm.success.sum())}/12 reach -9 dB" in result.stdout
    assert f"{int(vdm.success.sum())}/12 reach -9 dB" in result.stdout
    assert "solver failures" in result.stdout


def test_corrected_xor_with_centered_vdm_reaches_minus_15_db_in_5_of_6_starts(hil, configs, tmp_path):
    out = tmp_path / "xor.h5"
    result = hil(
        "sweep", "starts", str(configs / "xor.toml"), "--starts", "6", "--backend", "numeric",
        "--methods", "vdm-centered", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    r = read(out).methods["vdm-centered"]
    assert r.done.all() and not r.failed.any()
    # Not chaotic: the corrected circuit descends smoothly. Final errors -17.0, -5.7, -16.5, -18.4,
    # -15.9, -15.9 dB agree within 1e-8 dB on the twin and ngspice, with tolerances and gmin ×10
    # and ÷10, and from initial conductances perturbed by 1e-12 relative; the closest start is
    # 0.86 dB inside -15 dB. (On the seed circuit none of the 6 gets there.)
    assert np.sum(r.final_error_db <= -15.0) >= 5
    assert np.all(r.error_db[:, 0] > 0)  # they all start far from the answer


def _tasks(configs, starts=3, epochs=4):
    e = config.load(configs / "xor.toml", {"backend": {"name": "numeric"}, "training": {"epochs": epochs}})
    return sweep.start_tasks(e, ["vdm-centered", "pcm"], starts)


def _collect(tasks, **how):
    results = {}
    sweep.execute(tasks, lambda r: results.__setitem__((r.method, r.index), r), lambda: False, **how)
    return results


def test_results_are_identical_in_process_in_worker_processes_and_on_dask(configs):
    from dask.distributed import LocalCluster

    tasks = _tasks(configs)
    serial = _collect(tasks)
    pool = _collect(tasks, workers=2)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        dask = _collect(tasks, dask_address=cluster.scheduler_address)
    assert (
        set(serial) == set(pool) == set(dask) == {(m, n) for m in ("vdm-centered", "pcm") for n in range(3)}
    )
    for key, a in serial.items():
        for other in (pool[key], dask[key]):
            np.testing.assert_array_equal(a.error_db, other.error_db)
            np.testing.assert_array_equal(a.final_conductances, other.final_conductances)
    # Different starts really are different.
    assert not np.array_equal(serial["pcm", 0].error_db, serial["pcm", 1].error_db)


def test_ctrl_c_keeps_finished_starts_and_the_same_command_resumes(configs, tmp_path):
    out = tmp_path / "long.h5"
    args = [
        sys.executable, "-m", "hil.cli", "sweep", "starts", str(configs / "xor.toml"), "--backend", "numeric",
        "--starts", "300", "--epochs", "10", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ROOT_ENV)
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "interrupted"
        done = f["vdm-centered/done"][:]
        before = f["vdm-centered/error_db"][:][done]
    assert 0 < done.sum() < 300
    resumed = subprocess.run(args, capture_output=True, text=True, env=ROOT_ENV, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{int(done.sum())} of 300 tasks already done" in resumed.stderr
    r = read(out).methods["vdm-centered"]
    assert r.done.all() and np.isfinite(r.final_error_db).all()
    np.testing.assert_array_equal(r.error_db[done], before)


def test_an_existing_file_of_another_sweep_is_refused_unless_forced(hil, configs, tmp_path):
    out = tmp_path / "s.h5"
    base = (
        "sweep",
        "starts",
        str(configs / "xor.toml"),
        "--backend",
        "numeric",
        "--starts",
        "2",
        "--out",
        str(out),
    )
    assert hil(*base, "--epochs", "2").returncode == 0
    stamp = out.stat().st_mtime_ns
    other = hil(*base, "--epochs", "3")
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1
    assert "holds another sweep (different config)" in other.stderr and "--force" in other.stderr
    assert out.stat().st_mtime_ns == stamp
    forced = hil(*base, "--epochs", "3", "--force")
    assert forced.returncode == 0, forced.stderr
    assert read(out).epochs == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--starts", "0"), "--starts 0 must be at least 1"),
        (("--starts", "2", "--methods", "sgd"), "unknown method 'sgd'"),
        (("--starts", "2", "--workers", "0"), "--workers 0 must be at least 1"),
        (("--starts", "2", "--workers", "2", "--dask", "tcp://127.0.0.1:1"), "exclude each other"),
    ],
)
def test_bad_sweep_input_is_one_line_and_writes_nothing(hil, configs, tmp_path, extra, message):
    out = tmp_path / "never.h5"
    result = hil("sweep", "starts", str(configs / "xor.toml"), *extra, "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hil: error: ") and message in lines[0], result.stderr
    assert not out.exists()


def test_grid_runs_every_learning_rate_and_beta(hil, configs, tmp_path):
    out = tmp_path / "grid.h5"
    result = hil(
        "sweep", "grid", str(configs / "case1-seed.toml"), "--alpha", "5e-4,5e-3", "--beta", "1e-7,1e-3,1e-1",
        "--epochs", "5", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    s = read(out)
    assert s.kind == "grid"
    np.testing.assert_array_equal(s.points["alpha"], [5e-4] * 3 + [5e-3] * 3)
    np.testing.assert_allclose(s.points["learning_rate"], 2 * s.points["alpha"])
    np.testing.assert_array_equal(s.points["beta"], [1e-7, 1e-3, 1e-1] * 2)
    r = s.methods["vdm"]
    assert r.done.all() and r.error_db.shape == (6, 5)
    np.testing.assert_array_equal(r.initial_conductances, np.repeat(r.initial_conductances[:1], 6, axis=0))
    # A larger learning rate moves the error further in 5 epochs.
    assert abs(r.error_db[3, -1] - r.error_db[3, 0]) > abs(r.error_db[0, -1] - r.error_db[0, 0])


def test_grid_needs_exactly_one_learning_rate_axis(hil, configs, tmp_path):
    result = hil(
        "sweep", "grid", str(configs / "case1.toml"), "--beta", "1e-6", "--out", str(tmp_path / "g.h5")
    )
    assert result.returncode == 2 and "--alpha" in result.stderr and "--learning-rate" in result.stderr


def _scan(hil, cfg, betas, methods):
    result = hil(
        "gradcheck", str(cfg), "--backend", "numeric", "--betas", betas, "--methods", methods, "--json"
    )
    assert result.returncode == 0, result.stderr
    return {(r["method"], r["beta"], layer["layer"]): layer for r in json.loads(result.stdout)["results"]
            for layer in r["layers"]}  # fmt: skip


def test_gradient_quality_over_beta_shows_first_and_second_order_bias(hil, configs):
    table = _scan(hil, configs / "xor.toml", "1e-4,1e-3", "vdm,vdm-centered")
    for layer in (1, 2):
        positive = table["vdm", 1e-3, layer]["relative_error"] / table["vdm", 1e-4, layer]["relative_error"]
        centered = (
            table["vdm-centered", 1e-3, layer]["relative_error"]
            / table["vdm-centered", 1e-4, layer]["relative_error"]
        )
        assert positive == pytest.approx(10, rel=0.2)  # O(β)
        assert centered == pytest.approx(100, rel=0.2)  # O(β²)
        assert table["vdm-centered", 1e-4, layer]["cosine"] > 0.999999


def test_gradient_quality_over_beta_shows_the_seed_flaws_at_every_beta(hil, configs):
    table = _scan(hil, configs / "xor-seed-vdm.toml", "1e-8,1e-6", "vdm")
    for beta in (1e-8, 1e-6):
        assert table["vdm", beta, 1]["cosine"] < 0  # layer 1 points uphill
        assert table["vdm", beta, 2]["cosine"] > 0.9999


def test_gradcheck_without_betas_keeps_its_behaviour_and_refuses_stray_options(hil, configs):
    plain = hil("gradcheck", str(configs / "xor.toml"), "--backend", "numeric")
    assert plain.returncode == 0 and re.search(r"layer 1 \(\d+ edges\): relative error", plain.stdout)
    stray = hil("gradcheck", str(configs / "xor.toml"), "--methods", "vdm")
    assert stray.returncode == 2 and "--betas" in stray.stderr


def test_sweep_config_section_is_checked(hil, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[sweep]\nseed_formula = "n^2"\n')
    result = hil("sweep", "starts", str(bad), "--starts", "1", "--out", str(tmp_path / "x.h5"))
    assert result.returncode == 2 and "[sweep] seed_formula = 'n^2' is invalid" in result.stderr
    assert sweep.start_seed("n+3n^2+5", 99, 4) == 4 + 48 + 5 and sweep.start_seed("seed+n", 99, 4) == 103


# ---------------------------------------------------------------------------------------- stopping workers
def _procs() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, state letter)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(stat.parent.name)] = (int(fields[1]), fields[0])
    return found


def _workers(parent: int) -> list[int]:
    """The sweep's worker processes (not multiprocessing's resource tracker)."""
    kids = [pid for pid, (ppid, _) in _procs().items() if ppid == parent]
    out = []
    for pid in kids:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return out


def _gone(pids: list[int], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        procs = _procs()
        if all(pid not in procs or procs[pid][1] == "Z" for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def started():
    """Sweeps a test starts; whatever a failing test left running is killed, workers included."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the workers too, orphaned or not
        except ProcessLookupError:
            pass
        proc.communicate()


def _sweep(started, tmp_path, starts, epochs):
    out = tmp_path / "workers.h5"
    args = [
        sys.executable, "-m", "hil.cli", "sweep", "starts", str(ROOT / "configs" / "xor.toml"), "--backend",
        "numeric", "--starts", str(starts), "--epochs", str(epochs), "--workers", "2", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ROOT_ENV, start_new_session=True
    )
    started.append(proc)
    deadline = time.monotonic() + 60
    while len(_workers(proc.pid)) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "no workers started"
        time.sleep(0.05)
    return proc, out, _workers(proc.pid)


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_stopping_a_sweep_stops_every_worker_and_says_interrupted(started, tmp_path, how):
    proc, out, workers = _sweep(started, tmp_path, starts=200, epochs=5000)  # tasks of ~7 s each
    time.sleep(0.5)
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the workers too
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        f"hil: interrupted; every finished task is in {out}: run the same command again to resume"
    ]
    assert _gone(workers, 1.0)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "interrupted"


def test_sigterm_while_one_worker_has_no_task_left_stops_the_sweep(started, tmp_path):
    """The last task running, the other worker done: stopping must not wait for either."""
    proc, out, workers = _sweep(started, tmp_path, starts=3, epochs=3000)  # tasks of ~4 s
    deadline = time.monotonic() + 120
    idle = 0
    while idle < 10:  # for 0.5 s one worker has no task (waiting, or gone) while the other trains
        assert time.monotonic() < deadline and proc.poll() is None
        states = [_procs().get(pid, (0, "gone"))[1] for pid in workers]
        idle = idle + 1 if states.count("R") == 1 else 0
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert _gone(workers, 1.0)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "interrupted"


def test_a_worker_that_dies_ends_the_sweep_with_one_line_instead_of_a_hang(started, tmp_path):
    proc, out, workers = _sweep(started, tmp_path, starts=200, epochs=5000)
    time.sleep(0.5)
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hil: error: worker process {workers[0]} died"), err
    assert "killed by SIGKILL" in lines[0] and "run the same command again to resume" in lines[0]
    assert _gone(workers, 1.0)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"].startswith(f"failed: worker process {workers[0]} died (killed by SIGKILL)")


def test_kill_9_of_a_sweep_takes_its_workers_along(started, tmp_path):
    proc, _, workers = _sweep(started, tmp_path, starts=200, epochs=5000)
    time.sleep(1.0)  # well into their first tasks
    proc.kill()
    proc.wait(timeout=30)
    assert _gone(workers, 2.0)  # their tasks had seconds to go
    proc.communicate(timeout=30)  # the workers held its pipes
