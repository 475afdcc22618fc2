"""`make bench`: epochs to reach −15 dB on configs/xor.toml (twin, seeds 1–12, 200 epochs) for each
optimiser, and the complete graph with L1 and pruning (configs/complete-pruned.toml, seeds 0–11).
Printed, never asserted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import hil

ROOT = Path(__file__).resolve().parents[2]
OPTIMISERS: dict[str, dict[str, Any]] = {
    "SGD η 2e-4 (shipped)": {},
    "momentum 0.9, η 2e-5": {"momentum": 0.9, "learning_rate": 2e-5},
    "Nesterov 0.8, η 1e-4": {"momentum": 0.8, "nesterov": True, "learning_rate": 1e-4},
    "Adam η 1e-2": {"optimiser": "adam", "learning_rate": 1e-2},
}


def epochs_to(
    config: Path, training: dict[str, Any], seed: int, threshold: float = -15.0
) -> tuple[int | None, Any]:
    e = hil.load(
        config, {"backend": {"name": "numeric"}, "conductances": {"seed": seed}, "training": training}
    )
    backend = hil.open_backend(e)
    try:
        records = hil.train.train(backend, e.dataset(), e.start_conductances(), e.hyper())
    finally:
        backend.close()
    db = np.array([r.error_db for r in records])
    hit = np.flatnonzero(db <= threshold)
    return (int(hit[0]) + 1 if len(hit) else None), records[-1]


def main() -> None:
    print("\noptimisers on configs/xor.toml (twin, seeds 1-12, 200 epochs): epochs to -15 dB")
    for name, training in OPTIMISERS.items():
        found = [
            epochs_to(ROOT / "configs/xor.toml", {"epochs": 200, **training}, s)[0] for s in range(1, 13)
        ]
        reached = [n for n in found if n is not None]
        median = np.median([n if n is not None else np.inf for n in found])
        print(f"  {name:<24s} {len(reached):2d}/12 reach -15 dB, median epochs {median:.1f}")
    kept = []
    for seed in range(12):
        _, last = epochs_to(ROOT / "configs/complete-pruned.toml", {}, seed)
        kept.append((last.accuracy, last.pruned / 66))
    full = sum(1 for acc, _ in kept if acc == 1.0)
    opened = [share for _, share in kept]
    print(
        f"complete graph + L1 + pruning (configs/complete-pruned.toml, seeds 0-11): {full}/12 at 100 %, "
        f"{min(opened):.0%}-{max(opened):.0%} of 66 conductances open"
    )


if __name__ == "__main__":
    main()
