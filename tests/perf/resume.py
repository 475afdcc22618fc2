"""`make bench`: kill -9 at 20 seeded random moments of a training, resume each, compare with the
uninterrupted run bit for bit (twin and virtual bench); and what a commit costs per epoch.
Printed, never asserted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

import hil

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20


def _train(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill_and_resume(config: Path, extra: list[str], epochs: int, seed: int) -> tuple[int, int, int]:
    """(resumes bit-identical, logs that opened only with SWMR or not at all, kills) over KILLS kills."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        common = [str(config), "--epochs", str(epochs), *extra]
        start = time.perf_counter()
        whole = _train([*common, "--out", "whole.h5"], cwd)
        _, err = whole.communicate()
        assert whole.returncode == 0, err
        seconds = time.perf_counter() - start
        reference = hil.read_run(cwd / "whole.h5")
        same = unopenable = 0
        for k in range(KILLS):
            log = cwd / f"cut{k}.h5"
            proc = _train([*common, "--out", str(log)], cwd)
            time.sleep(rng.uniform(0.3, 0.9) * seconds)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            try:
                with h5py.File(log, "r"):
                    pass
            except OSError:
                unopenable += 1
                continue
            if _train(["--resume", str(log)], cwd).wait() != 0:
                continue
            run = hil.read_run(log)
            same += int(
                np.array_equal(run.conductances, reference.conductances) and run.status == "completed"
            )
        return same, unopenable, KILLS


def commit_cost() -> tuple[float, float]:
    """Seconds per epoch of 200 XOR epochs on the twin with and without the log's commits."""
    e = hil.load(ROOT / "configs/xor.toml", {"backend": {"name": "numeric"}, "training": {"epochs": 200}})
    backend = hil.open_backend(e)
    start = time.perf_counter()
    hil.train.train(backend, e.dataset(), e.start_conductances(), e.hyper())
    bare = (time.perf_counter() - start) / 200
    with tempfile.TemporaryDirectory() as folder:
        log = hil.runlog.RunLog.create(
            Path(folder) / "run.h5",
            e.to_toml(),
            backend.identity(),
            e.network(),
            1e-4,
            0.1,
            e.start_conductances(),
            4,
        )
        start = time.perf_counter()
        hil.train.train(
            backend,
            e.dataset(),
            e.start_conductances(),
            e.hyper(),
            on_epoch=log.epoch,
            on_checkpoint=lambda p: log.checkpoint(p, backend.solver_state()),
        )
        logged = (time.perf_counter() - start) / 200
        log.close()
    backend.close()
    return bare, logged


def main() -> None:
    print(f"\nkill -9 at {KILLS} random moments, then `hil train --resume`:")
    shuffled = Path(tempfile.mkdtemp()) / "xor-shuffled.toml"
    text = (ROOT / "configs/xor.toml").read_text().replace("shuffle = false", "shuffle = true")
    shuffled.write_text(text.replace("batch_size = 1        # online", "batch_size = 3"))
    for name, config, extra, epochs in (
        ("twin, xor shuffled, batches of 3", shuffled, ["--backend", "numeric"], 300),
        ("virtual bench, xor-bench", ROOT / "configs/bench-virtual.toml", [], 30),
    ):
        same, unopenable, kills = kill_and_resume(config, extra, epochs, seed=1)
        print(
            f"  {name}: {same}/{kills} resumed runs bit-identical; {unopenable} logs failed to open normally"
        )
    bare, logged = commit_cost()
    print(
        f"run-log commit (whole log copied and renamed, with checkpoint): {(logged - bare) * 1e3:.2f} ms per "
        f"epoch on top of {bare * 1e3:.2f} ms (XOR on the twin, 200 epochs)"
    )


if __name__ == "__main__":
    main()
