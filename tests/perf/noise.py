"""`make bench`: training with bench-like readings (sim.noise), printed, never asserted.

XOR (configs/xor.toml and xor-bench.toml without its pots' steps, twin, seeds 0-11, 100 epochs)
read through SMU error models: how many seeds
end at or below -15 dB, noise-free and with noise, at the shipped β and at larger ones, with one
reading per node or averaged. Also what the readings look like: per-node rms and the spread of the
centered-VDM estimate at one state.

    .venv/bin/python tests/perf/noise.py [--quick]
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

import hil
from hil import eqprop
from hil.train import train

ROOT = Path(__file__).resolve().parents[2]
SEEDS = range(12)
EPOCHS = 100
THRESHOLD = -15.0


def final_db(config: str, backend: dict[str, Any], training: dict[str, Any], seed: int) -> float:
    e = hil.load(
        ROOT / config,
        {
            "backend": {"name": "numeric", **backend},
            "conductances": {"seed": seed},
            "training": {"seed": seed, "epochs": EPOCHS, **training},
        },
    )
    b = hil.open_backend(e)
    try:
        records = train(b, e.dataset(), e.start_conductances(), e.hyper())
    finally:
        b.close()
    return float(records[-1].error_db)


def _task(args: tuple[str, dict[str, Any], dict[str, Any], int]) -> float:
    return final_db(*args)


CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("xor.toml", "noise-free, β 1e-6 (shipped)", {}, {}),
    ("xor.toml", "2450, β 1e-6, NPLC 1", {"noise": "keithley-2450"}, {}),
    ("xor.toml", "2450, β 1e-6, 16 readings averaged", {"noise": "keithley-2450", "averages": 16}, {}),
    ("xor.toml", "2450, β 1e-5, NPLC 1", {"noise": "keithley-2450"}, {"beta": 1e-5}),
    ("xor.toml", "2450, β 1e-4, NPLC 1", {"noise": "keithley-2450"}, {"beta": 1e-4}),
    ("xor.toml", "2450, β 1e-3, NPLC 1", {"noise": "keithley-2450"}, {"beta": 1e-3}),
    ("xor.toml", "2602B, β 1e-4, NPLC 1", {"noise": "keithley-2602b"}, {"beta": 1e-4}),
    ("xor.toml", "2450, β 1e-4, NPLC 0.1", {"noise": "keithley-2450", "nplc": 0.1}, {"beta": 1e-4}),
    # The bench's scale (g up to 0.02 S), its pots' steps left out (the twin, continuous conductances).
    ("xor-bench.toml", "noise-free, β 1e-6 (shipped)", {}, {}),
    ("xor-bench.toml", "2450, β 1e-6, NPLC 1", {"noise": "keithley-2450"}, {}),
    ("xor-bench.toml", "2450, β 1e-4, NPLC 1", {"noise": "keithley-2450"}, {"beta": 1e-4}),
]
QUICK = [0, 1, 4]


def readings_report() -> None:
    """Per-node rms over 200 settles at one state, and the spread of the centered-VDM estimate."""
    e = hil.load(ROOT / "configs/xor.toml", {"backend": {"name": "numeric", "noise": "keithley-2450"}})
    b = hil.open_backend(e)
    g = e.start_conductances()
    b.program(g)
    x, t = e.dataset().inputs[0], e.dataset().targets[0]
    v = np.array([b.settle(x).voltages for _ in range(200)])
    rms = v.std(axis=0) * 1e6
    print(
        "  per-node rms at sample 0, seed 1 start (µV): "
        + ", ".join(f"{n} {r:.1f}" for n, r in zip(b.network.nodes, rms, strict=True))
    )
    exact = hil.load(ROOT / "configs/xor.toml", {"backend": {"name": "numeric"}})
    ref = hil.open_backend(exact)
    ref.program(g)
    for beta in (1e-6, 1e-5, 1e-4, 1e-3):
        truth = eqprop.compensated(ref.network, eqprop.measure(ref, g, x, t, "vdm-centered", beta).raw)
        est = np.array(
            [
                eqprop.compensated(b.network, eqprop.measure(b, g, x, t, "vdm-centered", beta).raw)
                for _ in range(50)
            ]
        )
        cos = est @ truth / (np.linalg.norm(est, axis=1) * np.linalg.norm(truth))
        rel = np.linalg.norm(est - truth, axis=1) / np.linalg.norm(truth)
        print(
            f"  β {beta:g}: centered VDM vs the noise-free estimate, 50 repeats: cosine {cos.mean():.3f} "
            f"(min {cos.min():.3f}), relative error {np.median(rel):.3g} median"
        )
    b.close()
    ref.close()


def main(quick: bool = False) -> None:
    print(f"\nXOR with SMU error models (twin, seeds 0-11, {EPOCHS} epochs): seeds ending ≤ {THRESHOLD:g} dB")
    readings_report()
    cases = [CASES[k] for k in QUICK] if quick else CASES
    with ProcessPoolExecutor(2) as pool:
        for config, name, backend, training in cases:
            start = time.perf_counter()
            db = list(pool.map(_task, [(f"configs/{config}", backend, training, s) for s in SEEDS]))
            ok = sum(d <= THRESHOLD for d in db)
            print(
                f"  {config:<14s} {name:<38s} {ok:2d}/12   final dB median {np.median(db):+.1f} "
                f"(range {min(db):+.1f} … {max(db):+.1f}), {time.perf_counter() - start:.0f} s"
            )


if __name__ == "__main__":
    main("--quick" in sys.argv)
