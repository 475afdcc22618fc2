"""`make bench` study: weights trained on the twin, written into toleranced pots of the virtual
bench, before and after `hil calibrate-pots`. Printed, never asserted.

Per seed (0-11): the bench config's experiment trained on the numerical twin (its own epochs,
seed for the start and the order); then the bench config's virtual bench with pots drawn within
R_AB ±20 % and R_W 45-100 Ω (part_seed = the seed, so each seed meets other parts), the twin's
conductances programmed through the nominal formula (uncalibrated), and again after
`hil calibrate-pots` (the table loaded: codes from the measured conductances, the device range
narrowed to what every pot realises). Counted: seeds whose free-phase error at the fixed
conductances (on the twin, and on the bench with its [bench] noise) is ≤ -15 dB.

    .venv/bin/python tests/perf/transfer.py [--bench configs/bench-virtual.toml] [--codes 0-255]
        [--noise datasheet] [--seeds 12]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import tempfile
import time
from pathlib import Path

import numpy as np

import hil
from hil import eqprop
from hil.cli import main as hil_main
from hil.train import evaluate, train

ROOT = Path(__file__).resolve().parents[2]
SEEDS = range(12)
THRESHOLD = -15.0


def twin_weights(experiment: Path, seed: int) -> tuple[np.ndarray, float]:
    """The twin's trained conductances, and their free-phase error on the twin (dB)."""
    e = hil.load(
        experiment,
        {"backend": {"name": "numeric"}, "conductances": {"seed": seed}, "training": {"seed": seed}},
    )
    b = hil.open_backend(e)
    try:
        records = train(b, e.dataset(), e.start_conductances(), e.hyper())
        g = records[-1].conductances
        _, per_sample = evaluate(b, g, e.dataset())
    finally:
        b.close()
    mean = float(np.mean(per_sample))
    return g, (10 * np.log10(mean) if mean > 0 else -np.inf)


def toleranced(bench: Path, folder: Path, seed: int, tolerance: float, r_w_range: str, noise: str) -> Path:
    """The bench config with toleranced pots drawn from `seed`, its experiment found where it was."""
    text = bench.read_text()
    experiment = re.search(r'(?m)^experiment = "(.*)"', text)
    assert experiment is not None
    text = text.replace(
        experiment.group(0), f'experiment = "{(bench.parent / experiment.group(1)).resolve()}"'
    )
    text = re.sub(r"(?m)^(r_ab_tolerance|r_w_range|part_seed|calibration|noise) = .*\n", "", text)
    text = re.sub(r"(?m)^\[bench\]$", f'[bench]\nnoise = "{noise}"', text)
    parts = f"r_ab_tolerance = {tolerance}\nr_w_range = {r_w_range}\npart_seed = {seed}"
    text = re.sub(r"(?m)^(r_w = .*)$", lambda m: m.group(1) + "\n" + parts, text)
    path = folder / f"bench-{seed}.toml"
    path.write_text(text)
    return path


def bench_db(bench: Path, g: np.ndarray) -> tuple[float, float, float]:
    """Free-phase error (dB) of conductances `g` on the bench, clipped to its device range (as the
    trainer clips), and that range."""
    e = hil.load(bench)
    h, net = e.hyper(), e.network()
    b = hil.open_backend(e)
    try:
        _, per_sample = evaluate(b, eqprop.clip_conductances(g, net.signed, h.g_min, h.g_max), e.dataset())
    finally:
        b.safe_state()
        b.close()
    mean = float(np.mean(per_sample))
    return (10 * np.log10(mean) if mean > 0 else -np.inf), h.g_min, h.g_max


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bench", default=str(ROOT / "configs" / "bench-virtual.toml"))
    p.add_argument("--codes", default="0-255", help="codes calibrate-pots measures (default all)")
    p.add_argument("--tolerance", type=float, default=0.2)
    p.add_argument("--r-w-range", default="[45, 100]")
    p.add_argument("--seeds", type=int, default=len(SEEDS))
    p.add_argument("--noise", default="none", help='[bench] noise of the virtual bench, e.g. "datasheet"')
    args = p.parse_args()
    bench = Path(args.bench).resolve()
    text = bench.read_text()
    found = re.search(r'(?m)^experiment = "(.*)"', text)
    assert found is not None
    experiment = (bench.parent / found.group(1)).resolve()
    print(
        f"twin-trained weights in toleranced pots: {bench.name} ({experiment.name}), "
        f"R_AB ±{args.tolerance:.0%}, "
        f"R_W {args.r_w_range} Ω, [bench] noise {args.noise}, calibrate-pots --codes {args.codes}; "
        f"≤ {THRESHOLD:g} dB counts"
    )
    print(f"{'seed':>4s} {'twin dB':>8s} {'uncal dB':>9s} {'cal dB':>8s}  calibrated g range S   time s")
    counts = {"twin": 0, "uncalibrated": 0, "calibrated": 0}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for seed in range(args.seeds):
            start = time.perf_counter()
            g, twin = twin_weights(experiment, seed)
            path = toleranced(bench, folder, seed, args.tolerance, args.r_w_range, args.noise)
            uncal, _, _ = bench_db(path, g)
            table = folder / f"bench-{seed}-pots-calibration.toml"
            with contextlib.redirect_stdout(io.StringIO()):  # its per-pot lines: not this table's
                code = hil_main(["calibrate-pots", str(path), "--codes", args.codes, "--out", str(table)])
            assert code == 0, f"calibrate-pots exited {code}"
            path.write_text(
                re.sub(
                    r"(?m)^(part_seed = .*)$",
                    rf'\1\ncalibration = "{table.name}"',
                    path.read_text(),
                )
            )
            cal, low, high = bench_db(path, g)
            for key, value in (("twin", twin), ("uncalibrated", uncal), ("calibrated", cal)):
                counts[key] += value <= THRESHOLD
            took = time.perf_counter() - start
            print(
                f"{seed:4d} {twin:8.2f} {uncal:9.2f} {cal:8.2f}  {low:.4g}-{high:.4g}  {took:7.1f}",
                flush=True,
            )
    n = args.seeds
    print(
        f"seeds ≤ {THRESHOLD:g} dB of {n}: twin {counts['twin']}, in the pots uncalibrated "
        f"{counts['uncalibrated']}, after hil calibrate-pots {counts['calibrated']}"
    )


if __name__ == "__main__":
    main()
