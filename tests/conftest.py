"""Shared fixtures: paths to the shipped configs and a way to run `hil` as a user does."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture
def configs() -> Path:
    return CONFIGS


def run_hil(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`hil ...` in a fresh process, as a user would call it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hil.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=env,
    )


def start_hil(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """`hil ...` started in the background, as a user would in another terminal (pipes for its
    output): for tests that signal, kill or watch it while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "hil.cli", *args],
        cwd=cwd or ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture
def hil():
    return run_hil


def loopback_bench(
    configs: Path, limits: dict[str, float] | None = None, **fields: Any
) -> tuple[Any, Any, Any]:
    """bench-virtual.toml's bench with its drivers wired in memory to its emulators (no sockets),
    configured and programmed with the start conductances as `open_bench` would: (backend, virtual
    bench, experiment). `limits` replace some of its [limits]; `fields` replace BenchConfig fields."""
    from dataclasses import replace

    import hil
    from drivers import benchconfig
    from drivers.bench import BenchBackend, Instruments, configure
    from drivers.models import MODELS
    from drivers.pots import PotBridge
    from drivers.transport import LoopbackTransport
    from sim.factory import twin_predictor
    from sim.virtual.bench import VirtualBench

    bench = benchconfig.read(configs / "bench-virtual.toml")
    bench = replace(bench, limits={**bench.limits, **(limits or {})}, **fields)
    experiment = hil.load(configs / "bench-virtual.toml")
    net = experiment.network()
    virtual = VirtualBench(bench, net)
    hw = Instruments()
    for name, spec in bench.instruments.items():
        link = LoopbackTransport(virtual.emulators[name])
        if MODELS[spec.model].serial:
            hw.pots[name] = driver = PotBridge(link, name, spec.pot_model())
        else:
            driver = MODELS[spec.model].driver(link, name)
            if MODELS[spec.model].role == "matrix":
                hw.matrices[name] = driver
        hw.sessions[name] = driver
        driver.identify()
    for key in bench.smu_channels():
        instrument, _, ch = key.partition(".")
        hw.smus[key] = hw.sessions[instrument].channel(ch) if ch else hw.sessions[instrument]
    backend = BenchBackend(net, bench, hw, twin_predictor(net))
    configure(backend)
    backend.program(experiment.start_conductances())
    return backend, virtual, experiment


def write_idx(path: Path, array: np.ndarray, code: int = 0x08, compress: bool = False) -> Path:
    """An MNIST-format IDX file of `array` (type code 0x08 unsigned bytes, 0x0B big-endian int16,
    0x0D big-endian float32), gzip'ed if asked."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += np.asarray(array, dtype=dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def stand_in_idx_files(directory: Path, pixels: tuple[int, int] = (28, 28)) -> dict[str, str]:
    """Small MNIST-format files (random images, labels 0-9) for configs that read the user's."""
    rng = np.random.default_rng(0)
    paths = {}
    for split, count in (("train", 20), ("test", 10)):
        for kind, array in (
            ("images", rng.integers(0, 256, (count, *pixels)).astype(np.uint8)),
            ("labels", (np.arange(count) % 10).astype(np.uint8)),
        ):
            paths[f"{split}_{kind}"] = str(write_idx(directory / f"{split}-{kind}", array))
    return paths
