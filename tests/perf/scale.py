"""The twin at real sizes: build time, milliseconds per training sample, peak memory, and its
agreement with ngspice on the shipped configs too big for the test suite. Printed, never asserted.

    OMP_NUM_THREADS=1 .venv/bin/python tests/perf/scale.py

A training sample is what the trainer does per sample with centered VDM and mini-batches: the
free, +β and −β phases of its batch (`eqprop.measure_batch`, one `settle_batch` each; the batch mean
of the estimate as the trainer takes it) and its share of the batch's update (compensated mean,
clip, `program`). The first epoch starts every sample
cold; later ones start from the warm starts the twin keeps, as a training does. Times are the
process's CPU time on one thread (OMP_NUM_THREADS=1), so other work on the machine does not
inflate them; on an idle machine wall time is the same. Peak memory is measured in a fresh
process (its resident-set high-water mark).
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hil import builders, config, eqprop, train
from hil.datasets import Dataset
from hil.interface import Backend
from hil.network import Network
from sim.spice import SpiceBackend
from sim.twin import TwinBackend

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the suite's stand-in MNIST files
from conftest import stand_in_idx_files  # noqa: E402

BETA, RATE, G_MIN, G_MAX = 1e-6, 2e-4, 1e-4, 0.1
# The dense twin this one replaced, on this machine (one sample at a time; wall time).
BEFORE = {
    "64-64-10": "before: 21.5 ms/sample at batch 16, 29 at batch 1",
    "784-100-10": "before: 1131 ms/sample (batch 4), 2.9 GB, 10.4 s to build the twin",
}
TARGET = {"64-64-10": "target 0.3 ms/sample", "784-100-10": "target 5 ms/sample, 500 MB, 2 s to build"}
SUITE_CONDUCTANCES = 20_000  # tests/test_physics.py checks the shipped configs up to this size


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits: pixels (0–16) to ±1 V, one-hot targets (0 V, 1 V)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    targets = np.zeros((len(bunch.target), 10))
    targets[np.arange(len(bunch.target)), bunch.target] = 1.0
    return bunch.data / 8.0 - 1.0, targets


def random_images(samples: int, pixels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-like stand-ins (no such data set ships): a fifth of the pixels lit, one-hot targets."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random((samples, pixels)) < 0.2, rng.uniform(0.0, 1.0, (samples, pixels)), -1.0)
    targets = np.zeros((samples, 10))
    targets[np.arange(samples), rng.integers(0, 10, samples)] = 1.0
    return x, targets


def train_epochs(
    net: Network, x: np.ndarray, t: np.ndarray, batch: int, epochs: int, seed: int = 0
) -> tuple[list[float], float]:
    """CPU ms per sample of each epoch of mini-batch centered-VDM training, and the share of the
    last epoch spent in the twin's settles."""
    rng = np.random.default_rng(seed)
    backend = TwinBackend(net)
    g = rng.uniform(G_MIN, 1e-2, len(net.conductances))
    rates = np.full(len(g), RATE)
    backend.program(g)
    in_settles = [0.0]
    plain = backend.settle_batch

    def timed(inputs: np.ndarray, nudges: np.ndarray | None = None):
        start = time.process_time()
        state = plain(inputs, nudges)
        in_settles[0] += time.process_time() - start
        return state

    backend.settle_batch = timed  # type: ignore[method-assign]
    per_sample = []
    for _ in range(epochs):
        in_settles[0] = 0.0
        start = time.process_time()
        for k in range(0, len(x), batch):
            m = eqprop.measure_batch(
                backend, g, x[k : k + batch], t[k : k + batch], "vdm-centered", BETA, per_sample=False
            )
            estimate = eqprop.compensated(net, m.mean)
            g = backend.program(eqprop.apply_update(net, g, estimate, rates, G_MIN, G_MAX))
        elapsed = time.process_time() - start
        per_sample.append(elapsed / len(x) * 1e3)
    return per_sample, in_settles[0] / elapsed


def build(n_inputs: int, hidden: list[int], n_outputs: int, **kw: object) -> tuple[Network, float, float]:
    """The network and the twin, with each one's build time (CPU s)."""
    start = time.process_time()
    net = builders.layered(n_inputs, hidden, n_outputs, **kw)  # type: ignore[arg-type]
    built = time.process_time()
    TwinBackend(net)
    return net, built - start, time.process_time() - built


def mnist_child(hidden: int, batch: int, samples: int) -> None:
    """In a fresh process: 784-hidden-10 built and trained two epochs; JSON on stdout."""
    net, t_net, t_twin = build(784, [hidden], 10)
    x, t = random_images(samples, 784)
    per_sample, share = train_epochs(net, x, t, batch, 2)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = len(net.conductances)
    figures = {"net": t_net, "twin": t_twin, "ms": per_sample, "share": share, "peak_mb": peak}
    print(json.dumps({"conductances": size, **figures}))


def big_config_agreement() -> None:
    """Twin against ngspice on the shipped configs the test suite leaves out (ngspice takes ~20 s
    to load one): one sample, free and nudged."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted((ROOT / "configs").glob("*.toml")):
            overrides: dict = {"backend": {"name": "numeric"}}
            if 'name = "idx"' in path.read_text():
                overrides["dataset"] = stand_in_idx_files(Path(tmp))
            e = config.load(path, overrides)
            net = e.network()
            if len(net.conductances) <= SUITE_CONDUCTANCES:
                continue
            data, g = e.dataset(), e.start_conductances()
            x, t = data.inputs[:1], data.targets[:1]
            twin, spice = TwinBackend(net), SpiceBackend(net)
            try:
                start = time.perf_counter()
                twin.program(g)
                spice.program(g)
                free = spice.settle_batch(x)
                nudges = net.nudge_matrix(t, net.output_voltages(free.voltages), e.hyper().beta)
                worst = max(
                    np.max(np.abs(twin.settle_batch(x).voltages - free.voltages)),
                    np.max(
                        np.abs(twin.settle_batch(x, nudges).voltages - spice.settle_batch(x, nudges).voltages)
                    ),
                )
            finally:
                spice.close()
            print(
                f"  {path.name} ({len(net.conductances):,} conductances): twin − ngspice ≤ {worst:.1e} V "
                f"(free and nudged; target 1e-9 V; {time.perf_counter() - start:.0f} s)"
            )


def generic_cases() -> None:
    """What the elimination helps less or not at all: deep networks with skips, the complete graph."""
    x, t = digits()
    cases = [
        ("64-[64]x4-10, skips 2", builders.layered(64, [64] * 4, 10, skips=2), x[:512], t[:512]),
        ("complete 16-48-10", builders.complete(16, 48, 10), x[:512, ::4], t[:512]),
    ]
    for name, net, xs, ts in cases:
        twin = TwinBackend(net)
        per_sample, share = train_epochs(net, xs, ts, 16, 2)
        print(
            f"  {name} ({len(net.conductances):,} conductances, {len(twin._free)} free nodes, "
            f"{len(twin._free) - twin._nd} in the dense system), batch 16: {per_sample[1]:.2f} ms/sample "
            f"warm (twin {share:.0%})"
        )


def shipped_digits(epochs: int = 3) -> None:
    """configs/digits.toml as `hil train` runs it (its circuit, ±12 V inputs driving the clamps into
    conduction, batch, Adam, L1): CPU ms per training sample with each epoch's evaluation (free
    phases of the training and test samples, not part of a training sample) left out."""
    e = config.load(ROOT / "configs" / "digits.toml", {"training": {"epochs": epochs}})
    backend = TwinBackend(e.network())
    data, hyper = e.dataset(), e.hyper()
    judging = [0.0]
    plain = train.judge

    def timed(backend: Backend, conductances: np.ndarray, data: Dataset) -> train.Evaluation:
        start = time.process_time()
        try:
            return plain(backend, conductances, data)
        finally:
            judging[0] += time.process_time() - start

    marks, tests = [time.process_time()], []

    def on_epoch(record: train.EpochRecord) -> None:
        marks.append(time.process_time() - judging[0])
        tests.append(record.test_accuracy)

    train.judge = timed
    try:
        train.train(backend, data, e.start_conductances(), hyper, on_epoch=on_epoch)
    finally:
        train.judge = plain
    per_sample = [(b - a) / len(data) * 1e3 for a, b in itertools.pairwise(marks)]
    print(
        f"  digits.toml as shipped (batch {hyper.batch_size}, {hyper.optimiser.__class__.__name__}): "
        + ", ".join(f"{ms:.3f}" for ms in per_sample)
        + f" ms/sample in epochs 1–{epochs} (test accuracy then "
        + ", ".join(f"{100 * a:.1f} %" for a in tests)
        + f"); {TARGET['64-64-10']}"
    )


def report() -> None:
    print("The twin at real sizes (centered VDM, mini-batches; CPU ms per training sample, one thread):")
    net, t_net, t_twin = build(64, [64], 10)
    x, t = digits()
    print(
        f"  64-64-10 ({len(net.conductances):,} conductances, rain's 128-(64+64)-10 structure) on "
        f"{len(x)} digits: network {t_net:.2f} s, twin {t_twin:.3f} s to build; {BEFORE['64-64-10']}"
    )
    for batch in (1, 4, 16, 64):
        per_sample, share = train_epochs(net, x, t, batch, 3)
        print(
            f"    batch {batch:3d}: {per_sample[0]:.3f} ms/sample cold (epoch 1), {min(per_sample[1:]):.3f} "
            f"warm (the twin's settles {share:.0%} of it); {TARGET['64-64-10']}"
        )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    batch = 32
    # 784-100-10 is the target size; 784-200-10 the largest MNIST config the cap admits.
    for hidden in (100, 200):
        out = subprocess.run(
            [sys.executable, __file__, "--mnist-child", str(hidden), str(batch), "2048"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        before = f"; {BEFORE['784-100-10']}" if hidden == 100 else ""
        print(
            f"  784-{hidden}-10 ({r['conductances']:,} conductances) on 2048 random images, batch {batch}: "
            f"network {r['net']:.2f} s + twin {r['twin']:.2f} s to build; {r['ms'][0]:.2f} ms/sample cold, "
            f"{r['ms'][1]:.2f} warm (the twin's settles {r['share']:.0%}); peak memory "
            f"{r['peak_mb']:.0f} MB; {TARGET['784-100-10']}{before}"
        )
    shipped_digits()
    generic_cases()
    big_config_agreement()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--mnist-child":
        mnist_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        report()
