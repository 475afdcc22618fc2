"""`hil watch`: a live view that follows a real training through its run log, and its CLI."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import matplotlib
import pytest

from hil import runlog
from hil.studies import watch

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PATIENCE = 120.0  # s: only a hung training trips this; no assert depends on how fast anything is


def _hil(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hil.cli", *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def finished_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = tmp_path_factory.mktemp("finished") / "run.h5"
    proc = _hil("train", "configs/xor.toml", "--backend", "numeric", "--epochs", "4", "--out", str(log))
    _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 0, err
    return log


@pytest.fixture
def running_log(finished_log: Path, tmp_path: Path) -> Iterator[Path]:
    """A run log as it is while its training runs: status "running", its writer lock held."""
    log = tmp_path / "running.h5"
    shutil.copy(finished_log, log)
    with h5py.File(log, "a") as f:
        f.attrs["status"] = "running"
    lock = runlog.Lock(log)
    lock.acquire()
    yield log
    lock.release()


class Trainer:
    """The watcher's sleep, and the training's pace: each call lets the training run until it has
    written one more epoch, then freezes it (SIGSTOP) while the watcher looks, so the watcher sees
    every epoch however fast either side is."""

    def __init__(self, proc: subprocess.Popen[str], log: Path, epochs: int) -> None:
        self.proc, self.log, self.epochs = proc, log, epochs
        self.seen = -1
        self.frozen = False
        self.after_end = False

    def written(self) -> int | None:
        """Whole epochs in the run log (every series has the row), as `runlog.read` counts them."""
        try:
            with h5py.File(self.log, "r", locking=False) as f:
                ep = f["epochs"]
                rows = [len(ep[name]) for name in (*runlog.EPOCH_SERIES, "sample_loss")]
                return min(*rows, len(ep["conductances"]) - 1)
        except (OSError, KeyError):
            return None

    def thaw(self) -> None:
        if self.frozen and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def follow(self, seconds: float) -> None:
        self.thaw()
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            n = self.written()
            if self.proc.poll() is not None:
                if n is None:
                    _, err = self.proc.communicate()
                    raise AssertionError(f"the training ended without a run log: {err}")
                if self.after_end:
                    raise AssertionError("the watcher went on waiting after the training had ended")
                self.after_end = True
                return
            if n is not None and n > self.seen:
                self.seen = n
                if n < self.epochs:
                    self.proc.send_signal(signal.SIGSTOP)
                    self.frozen = True
                else:
                    # The last epoch: let the writer add how the run ended before the next read.
                    self.proc.wait(timeout=PATIENCE)
                return
            time.sleep(0.002)
        raise AssertionError(f"the training wrote nothing new in {PATIENCE:g} s")


def _whole_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE) and data.rstrip(b"\x00")[-8:-4] == b"IEND"


@dataclass(frozen=True)
class Refresh:
    epochs: int
    status: str
    error_points: int
    conductance_points: int
    png_whole: bool
    png_digest: str
    mtime: int


def test_watch_follows_a_live_training_and_ends_when_it_completes(tmp_path: Path) -> None:
    log, png, epochs = tmp_path / "run.h5", tmp_path / "live.png", 6
    proc = _hil("train", "configs/bench-virtual.toml", "--out", str(log), "--epochs", str(epochs))
    trainer = Trainer(proc, log, epochs)
    refreshes: list[Refresh] = []

    def record(run: runlog.Run, view: watch.LiveView) -> None:
        (error,) = view.lines["error"]
        # The line counted is one the figure shows, not a stale copy.
        assert error.axes is not None and error.axes in view.figure.axes and error in error.axes.lines
        refreshes.append(
            Refresh(
                run.epochs,
                run.status,
                len(error.get_xdata()),
                len(view.lines["conductances"][0].get_xdata()),
                _whole_png(png.read_bytes()),
                hashlib.sha256(png.read_bytes()).hexdigest(),
                png.stat().st_mtime_ns,
            )
        )

    try:
        ended = watch.watch(
            log,
            png,
            interval=0.01,
            wait=PATIENCE,
            pacing=watch.Pacing(sleep=trainer.follow),
            on_refresh=record,
        )
    finally:
        trainer.thaw()
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 0, err

    assert ended is not None and ended.reason == "run ended" and ended.status == "completed"
    assert ended.run.epochs == epochs
    assert "completed" in ended.line() and str(png) in ended.line()
    # Each refresh plots one error point per finished epoch and the conductances from epoch 0.
    assert [r.error_points for r in refreshes] == [r.epochs for r in refreshes]
    assert [r.conductance_points for r in refreshes] == [r.epochs + 1 for r in refreshes]
    # It grew while the training ran, redrawing only on news, and its last picture is the end.
    counts = [r.epochs for r in refreshes]
    assert counts == sorted(counts) and set(range(1, epochs + 1)) <= set(counts), counts
    assert all((a.epochs, a.status) != (b.epochs, b.status) for a, b in itertools.pairwise(refreshes))
    assert [r.status for r in refreshes[:-1]] == ["running"] * (len(refreshes) - 1)
    assert refreshes[-1].status == "completed"
    # The PNG is rewritten with new content each time, and is whole each time it is looked at.
    assert all(r.png_whole for r in refreshes)
    assert len({r.png_digest for r in refreshes}) == len(refreshes)
    assert [r.mtime for r in refreshes] == sorted(r.mtime for r in refreshes)
    assert hashlib.sha256(png.read_bytes()).hexdigest() == refreshes[-1].png_digest
    assert not list(tmp_path.glob(".*partial"))


def test_watch_waits_for_a_run_log_that_is_not_there_yet(finished_log: Path, tmp_path: Path) -> None:
    log = tmp_path / "later.h5"
    said: list[str] = []
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            shutil.copy(finished_log, log)

    ended = watch.watch(
        log, tmp_path / "view.png", wait=PATIENCE, pacing=watch.Pacing(sleep=sleep), say=said.append
    )
    assert ended is not None and ended.status == "completed" and ended.run.epochs == 4
    assert len(naps) == 3 and len(said) == 1 and str(log) in said[0]
    assert _whole_png((tmp_path / "view.png").read_bytes())


def test_watch_stops_on_request_and_keeps_the_last_picture(running_log: Path, tmp_path: Path) -> None:
    looks: list[int] = []
    ended = watch.watch(
        running_log,
        tmp_path / "view.png",
        pacing=watch.Pacing(sleep=lambda s: None, stop=lambda: bool(looks)),
        on_refresh=lambda run, view: looks.append(run.epochs),
    )
    assert ended is not None and ended.reason == "stopped" and ended.status == "running"
    assert looks == [4] and (tmp_path / "view.png").exists()


def test_hil_watch_once_draws_next_to_the_run_log(finished_log: Path, hil) -> None:
    result = hil("watch", str(finished_log), "--once")
    assert result.returncode == 0, result.stderr
    png = finished_log.with_name("run-watch.png")
    assert result.stdout.strip() == f"run completed after 4 of 4 epochs; figure in {png}"
    assert _whole_png(png.read_bytes())


def test_hil_watch_ends_on_a_run_whose_writer_died(finished_log: Path, tmp_path: Path, hil) -> None:
    log = tmp_path / "killed.h5"
    shutil.copy(finished_log, log)
    with h5py.File(log, "a") as f:
        f.attrs["status"] = "running"  # as a kill -9 leaves it: "running", and nobody holds its lock
    result = hil("watch", str(log), "--png", str(tmp_path / "view.png"))
    assert result.returncode == 1, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("run ended after 4 of 4 epochs (stopped without closing its log")
    assert _whole_png((tmp_path / "view.png").read_bytes())


def test_hil_watch_stops_cleanly_on_sigterm(running_log: Path, tmp_path: Path) -> None:
    png = tmp_path / "view.png"
    proc = _hil("watch", str(running_log), "--png", str(png), "--interval", "0.1")
    deadline = time.monotonic() + PATIENCE
    while not png.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 130, err
    assert out.strip() == f"watch stopped at 4 of 4 epochs (running); figure in {png}"
    assert "Traceback" not in err


def _not_hdf5(path: Path) -> None:
    path.write_bytes(b"epoch,loss\n1,0.5\n")


def _short_text(path: Path) -> None:
    path.write_bytes(b"hi\n")


def _other_hdf5(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "eqprop-hil-sweep"


@pytest.mark.parametrize("make", [_not_hdf5, _short_text, _other_hdf5, Path.mkdir, None])
def test_hil_watch_refuses_what_is_not_a_run_log(make, tmp_path: Path, hil) -> None:
    path = tmp_path / "x.h5"
    if make is not None:
        make(path)
    # A missing file is waited for; --wait 0 turns that into the error at once.
    result = hil("watch", str(path), "--wait", "0")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("hil: error: ") and len(result.stderr.strip().splitlines()) == 1
    assert str(path) in result.stderr and result.stdout == ""
    assert not list(tmp_path.glob("*.png"))
