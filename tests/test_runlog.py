"""The run log as a lab relies on it: complete after any kill, continued bit for bit by --resume,
written by one process at a time, named uniquely, with a status that tells how the run ended."""

import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import start_hil

import hil
from hil import runlog

ROOT = Path(__file__).resolve().parents[1]


def _shuffled_batches(tmp_path: Path) -> Path:
    """xor.toml with shuffling and batches of 3: the shuffle state and a batch straddling the
    epoch boundary must both survive a resume."""
    text = (ROOT / "configs/xor.toml").read_text()
    text = text.replace("shuffle = false", "shuffle = true").replace(
        "batch_size = 1        # online", "batch_size = 3"
    )
    path = tmp_path / "xor-shuffled.toml"
    path.write_text(text)
    return path


def _train(*args: str, cwd: Path) -> subprocess.Popen:
    return start_hil("train", *args, cwd=cwd)


def _epochs_in(path: Path) -> int:
    try:
        return hil.read_run(path).epochs
    except (OSError, KeyError):
        return 0


def _kill_after(path: Path, epochs: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while _epochs_in(path) < epochs and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


@pytest.mark.parametrize(
    "config, backend, epochs, kill_at",
    [("shuffled", "numeric", 60, (7, 23, 41)), ("bench-virtual.toml", None, 8, (2, 5))],
)
def test_kill_9_then_resume_ends_bit_identical_to_an_uninterrupted_run(
    tmp_path, config, backend, epochs, kill_at
):
    path = _shuffled_batches(tmp_path) if config == "shuffled" else ROOT / "configs" / config
    common = [str(path), "--epochs", str(epochs), *(["--backend", backend] if backend else [])]
    whole = _train(*common, "--out", "whole.h5", cwd=tmp_path)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    cut = tmp_path / "cut.h5"
    for n, at in enumerate(kill_at):
        proc = (
            _train(*common, "--out", str(cut), cwd=tmp_path)
            if n == 0
            else _train("--resume", str(cut), cwd=tmp_path)
        )
        _kill_after(cut, at, proc)
        with h5py.File(cut, "r") as f:  # opens normally: no SWMR, no repair
            assert f.attrs["status"] == "running" and len(f["epochs/loss"]) >= at
        assert hil.read_run(cut).status.startswith("stopped without closing its log")
    resumed = _train("--resume", str(cut), cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "hil: resuming" in err and f"trained {epochs} epochs" in out
    a, b = hil.read_run(tmp_path / "whole.h5"), hil.read_run(cut)
    assert b.status == "completed" and b.epochs == a.epochs == epochs
    for name in ("conductances", "loss", "accuracy", "sample_loss", "update_norm"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
    assert not list(tmp_path.glob(".cut.h5.*.tmp")) and not (tmp_path / "cut.h5.lock").exists()


def test_sigterm_then_resume_continues_and_extends(tmp_path):
    path = _shuffled_batches(tmp_path)
    proc = _train(str(path), "--epochs", "100000", "--backend", "numeric", "--out", "run.h5", cwd=tmp_path)
    deadline = time.monotonic() + 60
    while _epochs_in(tmp_path / "run.h5") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--resume" in err
    done = hil.read_run(tmp_path / "run.h5").epochs
    assert hil.read_run(tmp_path / "run.h5").status == "interrupted"
    more = _train("--resume", "run.h5", "--epochs", str(done + 2), cwd=tmp_path)
    _, err = more.communicate(timeout=120)
    assert more.returncode == 0, err
    assert hil.read_run(tmp_path / "run.h5").epochs == done + 2
    again = _train("--resume", "run.h5", cwd=tmp_path)
    _, err = again.communicate(timeout=60)
    assert again.returncode == 2 and f"already holds {done + 2} of {done + 2} epochs" in err


def test_a_live_log_is_refused_to_a_second_writer_and_to_force(tmp_path):
    first = _train(
        str(ROOT / "configs/xor.toml"),
        "--backend",
        "numeric",
        "--epochs",
        "100000",
        "--out",
        "run.h5",
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while _epochs_in(tmp_path / "run.h5") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        for extra in ([], ["--force"]):
            second = _train(str(ROOT / "configs/xor.toml"), "--out", "run.h5", *extra, cwd=tmp_path)
            _, err = second.communicate(timeout=60)
            assert second.returncode == 2, err
            assert (
                f"pid {first.pid}" in err and "being written by" in err and len(err.strip().splitlines()) == 1
            )
        resume = _train("--resume", "run.h5", cwd=tmp_path)
        _, err = resume.communicate(timeout=60)
        assert resume.returncode == 2 and f"pid {first.pid}" in err
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert hil.read_run(tmp_path / "run.h5").status == "interrupted"


def test_default_names_are_unique_within_one_second(tmp_path):
    config = str(ROOT / "configs/xor.toml")
    procs = [_train(config, "--backend", "numeric", "--epochs", "2", cwd=tmp_path) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    logs = sorted((tmp_path / "runs").glob("xor-*.h5"))
    assert len(logs) == 3
    assert all(hil.read_run(log).status == "completed" and hil.read_run(log).epochs == 2 for log in logs)


def test_new_names_skip_those_taken_or_claimed(tmp_path):
    first, lock = runlog.claim_new(tmp_path, "x")
    assert not first.exists() and runlog.Lock(first).holder() is not None
    lock.release()
    first.write_bytes(b"")
    second, held = runlog.claim_new(tmp_path, "x")
    assert second.name.endswith("-2.h5")
    third, _ = runlog.claim_new(tmp_path, "x")  # -2 is claimed by `held`, not yet written
    assert third.name.endswith("-3.h5")
    held.release()


def test_a_commit_that_fails_leaves_the_last_commit_whole(tmp_path, monkeypatch):
    """A full disk mid-commit: the error reaches the caller, the log on disk is the previous one."""
    e = hil.load(ROOT / "configs/xor.toml", {"backend": {"name": "numeric"}, "training": {"epochs": 3}})
    backend = hil.open_backend(e)
    path = tmp_path / "run.h5"
    log = runlog.RunLog.create(
        path, e.to_toml(), backend.identity(), e.network(), 1e-4, 0.1, e.start_conductances(), 4
    )

    def after_one(progress):
        if progress.epoch == 1:
            log.checkpoint(progress, backend.solver_state())
            return

        def no_space(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(runlog.shutil, "copyfile", no_space)
        log.checkpoint(progress, backend.solver_state())

    with pytest.raises(OSError, match="No space left"):
        hil.train.train(
            backend, e.dataset(), e.start_conductances(), e.hyper(), log.epoch, on_checkpoint=after_one
        )
    monkeypatch.undo()
    run = hil.read_run(path)
    assert run.epochs == 1 and run.status == "running"  # its writer (this process) holds the lock
    log._lock.release()
    assert hil.read_run(path).status.startswith("stopped without closing")
    assert runlog.read_checkpoint(path).progress.epoch == 1
    assert not list(tmp_path.glob(".run.h5.*.tmp"))
