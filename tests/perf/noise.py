"""`make bench`: training with bench-like readings (sim.noise), printed, never asserted.

XOR (configs/xor.toml and xor-bench.toml without its pots' steps, twin, seeds 0-11, 100 epochs)
read through SMU error models: how many seeds
end at or below -15 dB, noise-free and with noise, at the shipped β and at larger ones, with one
reading per node or averaged, with constant-current nudges (`nudge_current` = I0), and the shipped
bench-ready variant configs/xor-noisy.toml. Also what the readings look like: per-node rms and the
spread of the centered-VDM estimate at one state.

    .venv/bin/python tests/perf/noise.py [--quick] [--workers N]
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
    # The bench's circuit (configs/xor-bench.toml, its own nudge_current), its pots' steps left out
    # (the twin, continuous conductances); tests/perf/bench_noise.py has it with the pots.
    ("xor-bench.toml", "noise-free, shipped nudge", {}, {}),
    ("xor-bench.toml", "2450, shipped nudge, NPLC 1", {"noise": "keithley-2450"}, {}),
    # Constant-current nudges: β = I0/‖t − y‖ per sample, every nudge's current of norm I0.
    ("xor.toml", "2450, I0 10 µA, NPLC 1", {"noise": "keithley-2450"}, {"nudge_current": 1e-5}),
    ("xor.toml", "2450, I0 20 µA, NPLC 1", {"noise": "keithley-2450"}, {"nudge_current": 2e-5}),
    ("xor.toml", "2450, I0 100 µA, NPLC 1", {"noise": "keithley-2450"}, {"nudge_current": 1e-4}),
    ("xor.toml", "2450, I0 500 µA, NPLC 1", {"noise": "keithley-2450"}, {"nudge_current": 5e-4}),
    # The shipped variant (2450 model, I0 = 50 µA, NPLC 1), and around it.
    ("xor-noisy.toml", "shipped: 2450, I0 50 µA, NPLC 1", {}, {}),
    ("xor-noisy.toml", "noise-free, I0 50 µA", {"noise": "none"}, {}),
    ("xor-noisy.toml", "2602B, I0 50 µA, NPLC 1", {"noise": "keithley-2602b"}, {}),
    ("xor-noisy.toml", "2450, I0 50 µA, NPLC 0.1", {"nplc": 0.1}, {}),
    ("xor-noisy.toml", "2450, I0 50 µA, NPLC 0.1, 10 averaged", {"nplc": 0.1, "averages": 10}, {}),
]
QUICK = [0, 1, 4, 14]


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
    nudges = [(beta, 0.0, f"β {beta:g}") for beta in (1e-6, 1e-5, 1e-4, 1e-3)]
    nudges += [(0.0, current, f"I0 {current:g} A") for current in (1e-5, 5e-5)]
    for beta, current, name in nudges:
        truth = eqprop.compensated(
            ref.network, eqprop.measure(ref, g, x, t, "vdm-centered", beta, nudge_current=current).raw
        )
        est = np.array(
            [
                eqprop.compensated(
                    b.network, eqprop.measure(b, g, x, t, "vdm-centered", beta, nudge_current=current).raw
                )
                for _ in range(50)
            ]
        )
        cos = est @ truth / (np.linalg.norm(est, axis=1) * np.linalg.norm(truth))
        rel = np.linalg.norm(est - truth, axis=1) / np.linalg.norm(truth)
        print(
            f"  {name}: centered VDM vs the noise-free estimate, 50 repeats: cosine {cos.mean():.3f} "
            f"(min {cos.min():.3f}), relative error {np.median(rel):.3g} median"
        )
    b.close()
    ref.close()


def main(quick: bool = False, workers: int = 2) -> None:
    print(f"\nXOR with SMU error models (twin, seeds 0-11, {EPOCHS} epochs): seeds ending ≤ {THRESHOLD:g} dB")
    readings_report()
    cases = [CASES[k] for k in QUICK] if quick else CASES
    with ProcessPoolExecutor(workers) as pool:
        for config, name, backend, training in cases:
            start = time.perf_counter()
            db = list(pool.map(_task, [(f"configs/{config}", backend, training, s) for s in SEEDS]))
            ok = sum(d <= THRESHOLD for d in db)
            print(
                f"  {config:<14s} {name:<40s} {ok:2d}/12   final dB median {np.median(db):+.1f} "
                f"(range {min(db):+.1f} … {max(db):+.1f}), {time.perf_counter() - start:.0f} s"
            )


if __name__ == "__main__":
    args = sys.argv[1:]
    main("--quick" in args, int(args[args.index("--workers") + 1]) if "--workers" in args else 2)
