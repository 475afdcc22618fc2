"""`make bench`: ngspice at scale. Per training sample (centered VDM: free, +β, −β and the update),
online and in mini-batches; where a solve's time goes; how an update reaches ngspice; open switches
against huge resistances; memory over a long run; kill -9 and resume on ngspice. Printed, never
asserted. Times are this process's CPU time (ngspice runs in it, on one thread), so other work on
the machine does not inflate them. `python tests/perf/spice_scale.py --big` adds 784-100-10
(minutes)."""

from __future__ import annotations

import dataclasses
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hil import builders, eqprop
from hil.network import Network
from sim.netlist import netlist
from sim.spice import SpiceBackend

ROOT = Path(__file__).resolve().parents[2]
BETA = 1e-6
# Measured on main before this backend (issue 11): ms per sample, one sample at a time.
BEFORE = {"5-10-3": 3.5, "10-10-6": 5.5, "64-32-10": 57.0, "64-64-10": 147.0, "784-100-10": 15171.0}
TARGET = {"5-10-3": 1.0, "64-32-10": 10.0}  # ms per sample (issue 11, "Done when")
SHAPES = {
    "5-10-3": (5, [10], 3),
    "10-10-6": (10, [10], 6),
    "64-32-10": (64, [32], 10),
    "64-64-10": (64, [64], 10),
    "784-100-10": (784, [100], 10),
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _problem(net: Network, samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.uniform(1e-4, 1e-2, len(net.conductances))
    x = rng.uniform(-1, 1, (samples, net.n_inputs))
    t = rng.uniform(-0.1, 0.1, (samples, len(net.outputs)))
    return g, x, t


def per_sample(net: Network, samples: int, batch: int, fresh_runs: bool = True, repeats: int = 3) -> float:
    """Seconds per training sample, best of `repeats`: each batch measured together, one update."""
    backend = SpiceBackend(net, fresh_runs=fresh_runs)
    g, x, t = _problem(net, samples)
    rates = np.full(len(g), 1e-6)
    g = backend.program(g)

    def train(n: int) -> None:
        nonlocal g
        for k in range(0, n, batch):
            if batch == 1:
                raw = eqprop.measure(backend, g, x[k], t[k], "vdm-centered", BETA).raw
            else:
                b = eqprop.measure_batch(backend, g, x[k : k + batch], t[k : k + batch], "vdm-centered", BETA)
                raw = b.raw.mean(axis=0)
            g = backend.program(eqprop.apply_update(net, g, eqprop.compensated(net, raw), rates, 1e-5, 0.1))

    train(min(samples, 2 * batch))  # load, first run
    best = np.inf
    for _ in range(repeats):
        start = time.process_time()
        train(samples)
        best = min(best, (time.process_time() - start) / samples)
    backend.close()
    return best


def _best(f: object, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.process_time()
        f()  # type: ignore[operator]
        best = min(best, time.process_time() - start)
    return best


def solve_costs(net: Network, repeats: int = 20) -> tuple[float, float, float]:
    """Seconds: a settle continuing the run; a program of unchanged values and the settle that
    starts the new run (setup, ordering, cold Newton); ngspice's `op` (what every settle cost)."""
    backend = SpiceBackend(net)
    g, x, _ = _problem(net, 64)
    backend.program(g)
    backend.settle(x[0])
    k = [0]

    def warm() -> None:
        k[0] += 1
        backend.settle(x[k[0] % 64])

    def cold() -> None:
        backend.program(g)
        backend.settle(x[0])

    s = backend._session
    warm_s, cold_s = _best(warm, repeats), _best(cold, max(3, repeats // 4))
    s.end_run()
    op_s = _best(lambda: (s.command("op"), s.command("destroy all")), max(3, repeats // 4))
    backend.close()
    return warm_s, cold_s, op_s


def update_paths(net: Network, repeats: int = 5) -> tuple[float, float]:
    """Seconds to give ngspice new values of every conductance: joined `alter` lines, or the
    netlist loaded again."""
    backend = SpiceBackend(net)
    g, x, _ = _problem(net, 1)
    backend.program(g)
    backend.settle(x[0])
    s = backend._session
    s.end_run()
    n = len(g)
    commands = [p + repr(v) for p, v in zip(backend._prefix[:n], (1.0 / g).tolist(), strict=True)]
    lines, line = [], ""
    for c in commands:
        if line and len(line) + len(c) + 1 > 1000:
            lines.append(line)
            line = c
        else:
            line = f"{line};{c}" if line else c
    lines.append(line)
    encoded = [ln.encode() for ln in lines]
    alter_s = _best(lambda: [s.lib.ngSpice_Command(ln) for ln in encoded], repeats)
    text = netlist(net, g, x[0], None, backend.options, analysis=False)

    def reload() -> None:
        s.command("remcirc")
        s.ng.load_circuit(text)

    reload_s = _best(reload, repeats)
    s.owner = None  # the circuit ngspice holds is no backend's now
    backend.close()
    return alter_s, reload_s


def open_switches(fraction: float = 0.3) -> None:
    """An open edge as m = 0 and as a huge resistance, against the network without it."""
    net = builders.layered(5, [10], 3)
    g, x, _ = _problem(net, 4, seed=3)
    rng = np.random.default_rng(4)
    closed = rng.random(len(g)) > fraction
    kept = [c for c, k in zip(net.conductances, closed, strict=True) if k]
    reduced = dataclasses.replace(net, conductances=kept)
    order = [reduced.node_index[n] for n in net.nodes]
    ref = SpiceBackend(reduced)
    ref.program(g[closed])
    want = [ref.settle(xi).voltages[order] for xi in x]
    ref.close()
    print(
        f"  open switches ({(~closed).sum()} of {len(g)} edges of 5-10-3), against the network without them:"
    )
    for label, g_open in (("m = 0", 0.0), *((f"{1 / x:.0e} ohm", x) for x in (1e-9, 1e-12, 1e-15, 1e-30))):
        backend = SpiceBackend(net)
        backend.program(np.where(closed, g, g_open))
        worst = max(np.max(np.abs(backend.settle(xi).voltages - w)) for xi, w in zip(x, want, strict=True))
        backend.close()
        print(f"    {label:>9s}: max |dV| {worst:.1e} V")
    # A node whose every edge is open: m = 0 is refused up front (the node floats); huge resistances
    # are its only paths, and its voltage is whatever they average to.
    a, b = net.edge_endpoints
    into = (a == net.node_index["y0p"]) | (b == net.node_index["y0p"])
    for scale in (1e-6, 1e-12, 1e-20, 1e-28):
        backend = SpiceBackend(net)
        g_leak = np.where(into, g * scale, g)
        backend.program(g_leak)
        try:
            v = backend.settle(x[0]).voltages
            other = np.where(a == net.node_index["y0p"], b, a)[into]
            average = np.sum(g_leak[into] * v[other]) / np.sum(g_leak[into])
            said = f"V(y0p) {v[net.node_index['y0p']]:+.6f} V, the leaks' average {average:+.6f} V"
        except Exception as exc:  # what ngspice makes of it is the figure
            said = f"{type(exc).__name__}: {str(exc)[:90]}"
        backend.close()
        ohms = f"{1e2 / scale:.0e}…{1e4 / scale:.0e} ohm"
        print(f"    output y0p held only by its edges x {scale:.0e} ({ohms}): {said}")


def memory(net: Network, solves: int = 3000) -> tuple[float, float]:
    """(MB grown, seconds per solve) over `solves` settles, the conductances updated every third."""
    backend = SpiceBackend(net)
    g, x, _ = _problem(net, 64)
    backend.program(g)
    for i in range(300):
        backend.settle(x[i % 64])
    gc.collect()
    before = rss_mb()
    start = time.process_time()
    for i in range(solves):
        if i % 3 == 0:
            backend.program(g * (1 + 1e-3 * np.sin(i)))
        backend.settle(x[i % 64], {n: 1e-6 * (i % 3) for n in net.nudge_nodes})
    seconds = (time.process_time() - start) / solves
    gc.collect()
    backend.close()
    return rss_mb() - before, seconds


def resume_on_ngspice() -> None:
    import resume  # tests/perf, beside this file

    resume.KILLS = 8
    shuffled = Path(tempfile.mkdtemp()) / "xor-shuffled.toml"
    text = (ROOT / "configs/xor.toml").read_text().replace("shuffle = false", "shuffle = true")
    shuffled.write_text(text.replace("batch_size = 1        # online", "batch_size = 3"))
    same, unopenable, kills = resume.kill_and_resume(shuffled, ["--backend", "spice"], 60, seed=2)
    print(
        f"  kill -9 at {kills} random moments, then `hil train --resume` (ngspice, xor shuffled, batches of "
        f"3): {same}/{kills} resumed runs bit-identical; {unopenable} logs failed to open normally"
    )


def main(big: bool = False) -> None:
    print(
        "\nngspice at scale, ms per training sample (centered VDM: free, +β, −β and the update), best of 3:"
    )
    print(
        f"{'network':>11s} {'edges':>7s} {'before':>9s} {'online':>9s} {'online*':>9s} {'batch 4':>9s} "
        f"{'batch 16':>9s} {'batch 64':>9s} {'target':>7s}"
    )
    for name, shape in SHAPES.items():
        if name == "784-100-10" and not big:
            continue
        net = builders.layered(*shape)
        size = len(net.conductances)
        if size < 20000:
            figures = [
                per_sample(net, 32, 1),
                per_sample(net, 32, 1, fresh_runs=False),
                *(per_sample(net, 128 if size < 1000 else 64, b) for b in (4, 16, 64)),
            ]
        else:  # an ordering takes seconds here: one update per figure
            figures = [
                np.nan,
                per_sample(net, 2, 1, fresh_runs=False, repeats=1),
                np.nan,
                np.nan,
                per_sample(net, 64, 64, repeats=1),
            ]
        target = f"{TARGET[name]:7.1f}" if name in TARGET else ""
        cells = " ".join(f"{1e3 * x:9.2f}" if np.isfinite(x) else f"{'-':>9s}" for x in figures)
        print(f"{name:>11s} {size:7d} {BEFORE[name]:9.1f} {cells} {target}")
    print("  before: main before this backend, one sample at a time. online*: one run kept across updates")
    print("  (SpiceBackend(fresh_runs=False): no setup or ordering per update; last bits depend on history).")
    print("\nwhere a solve's time goes (ms): a settle continuing the run; program + the settle that starts a")
    print("run; `op`, which every settle cost before (setup, two orderings, Newton from cold):")
    for name in ("5-10-3", "64-32-10"):
        warm, cold, op = solve_costs(builders.layered(*SHAPES[name]))
        print(f"  {name:>9s}: continuing {1e3 * warm:.3f}, new run {1e3 * cold:.3f}, op {1e3 * op:.3f}")
    print("\nan update of every conductance (ms): joined `alter` lines against loading the netlist again:")
    for name in ("5-10-3", "64-32-10"):
        alter, reload = update_paths(builders.layered(*SHAPES[name]))
        print(f"  {name:>9s}: alter {1e3 * alter:.2f}, reload {1e3 * reload:.2f}")
    print()
    open_switches()
    grown, per_solve = memory(builders.layered(*SHAPES["64-32-10"]))
    print(
        f"\nngspice memory at 64-32-10: 3000 settles, conductances updated every 3, grew resident memory by "
        f"{grown:.2f} MB (target < 20 MB); {per_solve * 1e3:.2f} ms per settle"
    )
    resume_on_ngspice()


if __name__ == "__main__":
    main(big="--big" in sys.argv)
