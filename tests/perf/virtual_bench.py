"""Round trips and wall time of training through the drivers on the virtual bench."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hil import config, eqprop
from hil.backends import open_backend

ROOT = Path(__file__).resolve().parents[2]


def report(samples: int = 40) -> None:
    e = config.load(ROOT / "configs/bench-virtual.toml")
    net, hyper, data = e.network(), e.hyper(), e.dataset()
    backend = open_backend(e)
    traffic = backend.hw.traffic  # type: ignore[attr-defined]
    try:
        g = e.initial_conductances(len(net.conductances))
        rates = np.full(len(g), hyper.learning_rate)
        backend.program(g)
        for x in data.inputs:  # first visit sets routes and levels; measure the steady state
            backend.settle(x)
        phase_queries = []
        for k in range(8):
            before = traffic()
            backend.settle(data.inputs[k % len(data)])
            after = traffic()
            phase_queries.append((after.queries - before.queries, after.writes - before.writes))
        before = traffic()
        start = time.perf_counter()
        for k in range(samples):
            x, t = data.inputs[k % len(data)], data.targets[k % len(data)]
            m = eqprop.measure(backend, g, x, t, hyper.method, hyper.beta)
            g = eqprop.apply_update(net, g, eqprop.compensated(net, m.raw), rates, hyper.g_min, hyper.g_max)
            backend.program(g)
        seconds = time.perf_counter() - start
        after = traffic()
        before_program = traffic()
        backend.program(np.abs(g[::-1]) * np.sign(g))  # other codes in range, no sign flipped
        after_program = traffic()
    finally:
        backend.close()
    measured = len(net.nodes)
    moves = len(backend.config.probe_routes)  # type: ignore[attr-defined]
    q = max(p[0] for p in phase_queries)
    w = max(p[1] for p in phase_queries)
    print(
        f"virtual bench ({hyper.method}, {measured} measured nodes): a phase costs {q} round trips "
        f"(a reading per node and 3 per probe move, no hot switching: {measured + 3 * moves}) and {w} writes"
    )
    print(
        f"  per training sample: {(after.queries - before.queries) / samples:.1f} round trips, "
        f"{(after.writes - before.writes) / samples:.1f} writes, {seconds / samples * 1e3:.1f} ms wall time"
    )
    print(
        f"  program(): {after_program.writes - before_program.writes} bulk write, "
        f"{after_program.queries - before_program.queries} round trip (*OPC?)"
    )


if __name__ == "__main__":
    report()
