"""`make bench`: speed and memory figures on this machine, printed (never asserted)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
from optimisers import main as optimiser_bench
from resume import main as resume_bench
from scale import report as twin_scale_bench
from spice_scale import main as spice_scale_bench
from sweeps import main as sweep_bench
from virtual_bench import report as virtual_bench_report

from hil import config, eqprop, train
from hil.backends import open_backend
from hil.datasets import Dataset
from hil.interface import Backend

ROOT = Path(__file__).resolve().parents[2]
SEED_SECONDS = {"vdm": 3.8, "pcm": 25.9}  # the seed's code, 50 epochs, measured on a 2-core machine
TARGET = {"spice": 20, "numeric": 100}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def seed_work(backend: Backend, data: Dataset, g0: np.ndarray, hyper: train.Hyper) -> None:
    """Exactly the seed's work: measure and update, sample by sample, no per-epoch evaluation."""
    net = backend.network
    g = backend.program(g0)
    rates = np.full(len(g), hyper.learning_rate)
    for _ in range(hyper.epochs):
        for x, t in zip(data.inputs, data.targets, strict=True):
            m = eqprop.measure(backend, g, x, t, hyper.method, hyper.beta, hyper.pcm_perturbation)
            g = backend.program(
                eqprop.apply_update(net, g, eqprop.compensated(net, m.raw), rates, hyper.g_min, hyper.g_max)
            )


def time_training(method: str, backend_name: str, repeats: int = 3) -> tuple[float, float]:
    """Best of `repeats`: (the full training loop, the seed's work alone)."""
    e = config.load(ROOT / f"configs/xor-seed-{method}.toml", {"backend": {"name": backend_name}})
    full = bare = np.inf
    for _ in range(repeats):
        backend = open_backend(e)
        g0 = e.initial_conductances(8)
        start = time.perf_counter()
        train.train(backend, e.dataset(), g0, e.hyper())
        full = min(full, time.perf_counter() - start)
        start = time.perf_counter()
        seed_work(backend, e.dataset(), g0, e.hyper())
        bare = min(bare, time.perf_counter() - start)
        backend.close()
    return full, bare


def memory_growth(solves: int = 2000) -> tuple[float, float]:
    e = config.load(ROOT / "configs/xor.toml", {"backend": {"name": "spice"}})
    backend = open_backend(e)
    rng = np.random.default_rng(0)
    data = e.dataset()
    backend.program(e.initial_conductances(8))
    for i in range(200):  # warm up: libngspice's first allocations are not growth
        backend.settle(data.inputs[i % 4])
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    for i in range(solves):
        if i % 4 == 0:
            backend.program(rng.uniform(1e-4, 0.1, 8))
        backend.settle(data.inputs[i % 4], {"11": 1e-6 * (i % 3)})
    seconds = time.perf_counter() - start
    gc.collect()
    backend.close()
    return rss_mb() - before, seconds / solves


def main() -> None:
    print("50 XOR epochs, seed circuit and settings. 'training' is `hil train`'s loop, which also")
    print("evaluates accuracy after every epoch; 'seed work' is what the seed's code did (measure and")
    print("update only): the like-for-like comparison with its times.")
    print(
        f"{'method':>6s} {'backend':>8s} {'training s':>11s} {'seed work s':>12s} {'seed code s':>12s} "
        f"{'speed-up':>9s} {'target':>7s}"
    )
    for method in ("vdm", "pcm"):
        for backend in ("spice", "numeric"):
            full, bare = time_training(method, backend)
            print(
                f"{method:>6s} {backend:>8s} {full:11.3f} {bare:12.3f} {SEED_SECONDS[method]:12.1f} "
                f"{SEED_SECONDS[method] / bare:8.0f}x {TARGET[backend]:6d}x"
            )
    grown, per_solve = memory_growth()
    print(
        f"ngspice memory: 2000 solves (weights altered every 4) grew resident memory by {grown:.2f} MB "
        f"(target < 20 MB); {per_solve * 1e6:.0f} us per solve"
    )
    virtual_bench_report()
    sweep_bench()
    resume_bench()
    optimiser_bench()
    spice_scale_bench()
    twin_scale_bench()


if __name__ == "__main__":
    main()
