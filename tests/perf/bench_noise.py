"""`make bench`: the shipped bench circuit (configs/xor-bench.toml on configs/bench-virtual.toml)
under the pots' steps, a Keithley 2450's datasheet errors and per-pot tolerance, uncalibrated.
Printed, never asserted: seeds (0-11, 100 epochs) ending at or below -15 dB.

Twin: the pots' 256 steps through `pot_quantiser`; with tolerance, each pot's R_AB within ±20 %
and R_W in 45-100 Ω (drawn per seed) while the trainer believes the nominal part. Virtual bench:
the emulated SMUs read with the 2450 model ([bench] noise) and the emulated pots drawn with the
same tolerance ([instruments.pots] r_ab_tolerance, r_w_range, part_seed).

    .venv/bin/python tests/perf/bench_noise.py [--quick] [--twin]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import hil
from drivers import benchconfig
from drivers.pots import AD5206Model
from hil.network import Network
from hil.train import train
from sim.quantised import QuantisedBackend, pot_quantiser

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
EPOCHS = 100
THRESHOLD = -15.0


def toleranced(network: Network, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Codes chosen for the nominal part, conductances those of parts drawn within tolerance."""
    nominal = AD5206Model(r_ab=10e3, r_w=45.0, channels=8)
    rng = np.random.default_rng(1000 + seed)
    parts = [
        AD5206Model(r_ab=10e3 * rng.uniform(0.8, 1.2), r_w=rng.uniform(45.0, 100.0), channels=8)
        for _ in network.conductances
    ]

    def quantise(g: np.ndarray) -> np.ndarray:
        return np.array(
            [
                np.sign(x) * part.nominal_conductance(nominal.code_for(1, abs(x)))
                for x, part in zip(g, parts, strict=True)
            ]
        )

    return quantise


def twin_db(noise: str, tolerance: bool, seed: int) -> float:
    e = hil.load(
        CONFIGS / "xor-bench.toml",
        {
            "backend": {"name": "numeric", "noise": noise},
            "conductances": {"seed": seed},
            "training": {"seed": seed, "epochs": EPOCHS},
        },
    )
    bench = benchconfig.read(CONFIGS / "bench-virtual.toml")
    quantise = toleranced(e.network(), seed) if tolerance else pot_quantiser(bench, e.network())
    b = QuantisedBackend(hil.open_backend(e), quantise)
    try:
        return float(train(b, e.dataset(), e.start_conductances(), e.hyper())[-1].error_db)
    finally:
        b.close()


def bench_db(noise: str, tolerance: bool, seed: int, folder: Path) -> float:
    text = (CONFIGS / "bench-virtual.toml").read_text()
    text = text.replace('experiment = "xor-bench.toml"', f'experiment = "{CONFIGS / "xor-bench.toml"}"')
    text = text.replace("[bench]\n", f'[bench]\nnoise = "{noise}"\n', 1)
    if tolerance:
        text = text.replace(
            "[instruments.pots]\n",
            f"[instruments.pots]\nr_ab_tolerance = 0.2\nr_w_range = [45.0, 100.0]\npart_seed = {seed}\n",
            1,
        )
    path = folder / f"bench-{noise}-{tolerance}-{seed}.toml"
    path.write_text(text)
    overrides: dict[str, Any] = {"conductances": {"seed": seed}, "training": {"seed": seed, "epochs": EPOCHS}}
    e = hil.load(path, overrides)
    b = hil.open_backend(e)
    try:
        return float(train(b, e.dataset(), e.start_conductances(), e.hyper())[-1].error_db)
    finally:
        b.close()


CASES = [
    ("noise-free", "none", False),
    ("2450 model", "keithley-2450", False),
    ("2450 + tolerance", "keithley-2450", True),
]


def main(quick: bool, twin_only: bool) -> None:
    seeds = range(4) if quick else range(12)
    print(
        f"\nShipped bench circuit (xor-bench.toml), seeds {seeds[0]}-{seeds[-1]}, {EPOCHS} epochs: "
        f"seeds ≤ {THRESHOLD:g} dB"
    )
    with tempfile.TemporaryDirectory() as folder:
        for where in ("twin + pot steps", "virtual bench"):
            if twin_only and where == "virtual bench":
                continue
            for name, noise, tolerance in CASES:
                start = time.perf_counter()
                if where == "virtual bench":
                    db = [
                        bench_db(noise if noise != "none" else "none", tolerance, s, Path(folder))
                        for s in seeds
                    ]
                else:
                    db = [twin_db(noise, tolerance, s) for s in seeds]
                ok = sum(d <= THRESHOLD for d in db)
                print(
                    f"  {where:<17s} {name:<18s} {ok:2d}/{len(db)}   final dB median {np.median(db):+.1f} "
                    f"(range {min(db):+.1f} … {max(db):+.1f}), {time.perf_counter() - start:.0f} s"
                )


if __name__ == "__main__":
    main("--quick" in sys.argv, "--twin" in sys.argv)
