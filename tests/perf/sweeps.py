"""`make bench`: the seed's 100-start sweep (VDM and PCM, 100 epochs) on the twin, with 1 and 2
worker processes. Printed, never asserted."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hil import config
from hil.studies import sweep

ROOT = Path(__file__).resolve().parents[2]
STARTS = 100


def time_sweep(workers: int, starts: int = STARTS) -> tuple[float, int]:
    """Seconds for the whole sweep, and how many tasks the solver lost."""
    e = config.load(ROOT / "configs/xor-seed-starts.toml", {"backend": {"name": "numeric"}})
    tasks = sweep.start_tasks(e, sweep.sweep_methods(e, None), starts)
    failures: list[str] = []
    start = time.perf_counter()
    sweep.execute(tasks, lambda r: failures.append(r.failure) if r.failure else None, lambda: False, workers)
    return time.perf_counter() - start, len(failures)


def main() -> None:
    print(
        f"\n`hil sweep starts configs/xor-seed-starts.toml --starts {STARTS}` (VDM and PCM, 100 epochs each) "
        f"on the numerical twin, {os.cpu_count()} CPUs:"
    )
    serial = None
    for workers in (1, 2):
        seconds, lost = time_sweep(workers)
        serial = serial or seconds
        print(
            f"  {workers} worker{'s' if workers > 1 else ' '}: {seconds:6.1f} s "
            f"(speed-up {serial / seconds:.2f}x; {lost} starts lost to the solver, counted)"
        )


if __name__ == "__main__":
    main()
