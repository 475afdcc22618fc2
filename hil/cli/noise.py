"""`hil noise CONFIG`: how noisy a bench's readings are, and the nudge that lifts the estimate
above them.

At one fixed state (the start conductances, one sample) it reads every node again and again
(free phases: per-node mean and rms, and the Allan deviation against averaging time), then takes
+β and −β phases back to back (the spread of their difference per node, and of the centered-VDM
estimate). From that it recommends β, and a constant-current nudge I0, within the bench's
`max_nudge_current`.

Why the recommendation scales as it does: in the centered estimate (ΔV+β² − ΔV−β²)/(4β) the
reading noise enters through ΔV+β − ΔV−β, whose signal is 2β·(t − y) times the circuit's
response. Its relative noise therefore goes as 1/(β·|t − y|): with a fixed β it grows as the
training brings y toward t (so β is sized for the error at `[training] success_db`), with a
constant current I0 = β·‖t − y‖ it stays where it was measured.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hil import config, eqprop
from hil.backends import open_backend
from hil.cli.common import add_command, overrides, sample
from hil.interface import Backend
from hil.network import Network


@dataclass(frozen=True)
class NoiseReport:
    nodes: list[str]
    readings: int  # free readings per node
    repeats: int  # ±β pairs
    mean: np.ndarray  # [nodes], V
    rms: np.ndarray  # [nodes], V
    seconds_per_reading: float  # one settle's readings, s (model time where the backend keeps one)
    allan_m: np.ndarray  # [K] readings averaged
    allan: np.ndarray  # [K, nodes], V
    beta: float
    difference_mean: np.ndarray  # [nodes], V(+β) − V(−β)
    difference_rms: np.ndarray  # [nodes]
    spread: float  # median over repeats of ‖estimate − mean‖ / ‖mean‖
    cosine: float  # mean cosine of each estimate to the mean estimate
    error: float  # ‖t − y‖ at this state
    worst_error: float  # max |t − y| over the data set's samples and outputs at the start


def allan_deviation(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping Allan deviation of readings [N, nodes] against m = 1, 2, 4, ... readings
    averaged (while at least 4 blocks fit): σ_A(m)² = ½·mean((ȳ_{k+1} − ȳ_k)²) over block means ȳ."""
    n = len(series)
    ms, out = [], []
    m = 1
    while n // m >= 4:
        blocks = series[: (n // m) * m].reshape(n // m, m, -1).mean(axis=1)
        out.append(np.sqrt(0.5 * np.mean(np.diff(blocks, axis=0) ** 2, axis=0)))
        ms.append(m)
        m *= 2
    return np.array(ms, dtype=int), np.array(out)


def _clock(backend: Backend) -> float:
    """Seconds: the backend's own time where it keeps one (a simulator read through an error
    model runs on model time), else the wall clock (a bench)."""
    clock = getattr(backend, "clock", None)
    return float(clock) if isinstance(clock, int | float) else time.monotonic()


def centered_raw(network: Network, plus: np.ndarray, minus: np.ndarray, beta: float) -> np.ndarray:
    """Centered VDM from the two phases' node voltages (as `hil.eqprop` computes it)."""
    from hil.interface import State

    across = eqprop.drops(network, State(plus - minus, None))
    along = eqprop.drops(network, State(plus + minus, None))
    raw = across * along
    if network.estimator_pairing is not None:
        raw = raw[network.pairing]
    return raw * network.nudge_sign / (4 * beta)


def measure_noise(
    backend: Backend,
    g: np.ndarray,
    x: np.ndarray,
    t: np.ndarray,
    beta: float,
    readings: int,
    worst: float,
    nudge_current: float = 0.0,
) -> NoiseReport:
    """With `nudge_current` > 0 (a constant-current config), β is that current over this state's
    ‖t − y‖, the nudge its training would apply here; else `beta`."""
    net = backend.network
    backend.program(g)
    start = _clock(backend)
    free = np.array([backend.settle(x).voltages for _ in range(readings)])
    per_reading = (_clock(backend) - start) / readings
    m, allan = allan_deviation(free)
    y = net.output_voltages(free.mean(axis=0))
    if nudge_current > 0:
        error = float(np.linalg.norm(np.asarray(t) - y))
        if not error > 0:
            raise ValueError(
                "the sample's outputs sit on their targets: no nudge to measure; pick another --sample"
            )
        beta = nudge_current / error
    plus, minus, estimates = [], [], []
    repeats = max(readings // 2, 2)
    for _ in range(repeats):
        p = backend.settle(x, net.nudge_currents(t, y, beta)).voltages
        q = backend.settle(x, net.nudge_currents(t, y, -beta)).voltages
        plus.append(p)
        minus.append(q)
        estimates.append(eqprop.compensated(net, centered_raw(net, p, q, beta)))
    diff = np.array(plus) - np.array(minus)
    est = np.array(estimates)
    centre = est.mean(axis=0)
    norm = float(np.linalg.norm(centre))
    spread = float(np.median(np.linalg.norm(est - centre, axis=1)) / norm) if norm > 0 else math.inf
    cos = float(np.mean(est @ centre / (np.linalg.norm(est, axis=1) * norm))) if norm > 0 else 0.0
    return NoiseReport(
        list(net.nodes),
        readings,
        repeats,
        free.mean(axis=0),
        free.std(axis=0),
        per_reading,
        m,
        allan,
        beta,
        diff.mean(axis=0),
        diff.std(axis=0),
        spread,
        cos,
        float(np.linalg.norm(np.asarray(t) - y)),
        worst,
    )


@dataclass(frozen=True)
class Advice:
    beta: float  # A/V: the estimate's spread at `target` down to the error at success_db
    current: float  # A: a constant-current nudge I0 with the same spread
    limit: float | None  # A: the bench's max_nudge_current (None in simulation)
    allowed_beta: float | None  # the largest β the limit allows at the data set's worst error
    end_error: float  # ‖t − y‖ at success_db


def advise(
    report: NoiseReport, target: float, success_db: float, outputs: int, limit: float | None
) -> Advice:
    end_error = math.sqrt(outputs * 10 ** (success_db / 10))  # ‖t − y‖ when the mean (t − y)² is there
    scale = report.spread / target
    beta = report.beta * scale * report.error / end_error
    current = report.beta * report.error * scale
    allowed = limit / report.worst_error if limit is not None and report.worst_error > 0 else None
    return Advice(beta, current, limit, allowed, end_error)


def _si(x: float, unit: str) -> str:
    return f"{x:.3g} {unit}"


def cmd_noise(args: argparse.Namespace) -> int:
    if args.readings < 8:
        raise ValueError(f"--readings {args.readings} is too few for a spread: give at least 8")
    if not 0 < args.target < 1:
        raise ValueError(f"--target {args.target} must be between 0 and 1 (a relative spread, e.g. 0.1)")
    experiment = config.load(args.config, overrides(args))
    hyper = experiment.hyper()
    beta = args.beta if args.beta is not None else hyper.beta
    current = hyper.nudge_current if args.beta is None else 0.0
    if not beta > 0:
        raise ValueError(f"--beta {beta} must be > 0 (A/V)")
    x, t = sample(experiment, args.sample)
    data = experiment.dataset()
    limit = None
    if experiment.bench is not None and not experiment.dry_run:
        limit = float(experiment.bench.tables["limits"]["max_nudge_current"])
    backend = open_backend(experiment, "vdm-centered")
    try:
        g = experiment.start_conductances()
        backend.program(g)
        from hil.train import free_outputs

        worst = float(np.max(np.abs(data.targets - free_outputs(backend, data.inputs)), initial=0.0))
        report = measure_noise(backend, g, x, t, beta, args.readings, worst, current)
        description = backend.identity().description
    finally:
        backend.safe_state()
        backend.close()
    net = experiment.network()
    advice = advise(report, args.target, float(experiment["training"]["success_db"]), len(net.outputs), limit)
    if args.json:
        print(json.dumps(as_json(report, advice, str(args.config), args.sample)))
        return 0
    for line in lines(report, advice, str(args.config), args.sample, description, args.target, net):
        print(line)
    return 0


def as_json(report: NoiseReport, advice: Advice, path: str, index: int) -> dict[str, Any]:
    return {
        "config": path,
        "sample": index,
        "seconds_per_reading": report.seconds_per_reading,
        "nodes": [
            {
                "node": n,
                "mean": float(report.mean[k]),
                "rms": float(report.rms[k]),
                "allan": [float(a) for a in report.allan[:, k]],
                "difference_mean": float(report.difference_mean[k]),
                "difference_rms": float(report.difference_rms[k]),
            }
            for k, n in enumerate(report.nodes)
        ],
        "allan_readings": report.allan_m.tolist(),
        "beta": report.beta,
        "spread": report.spread,
        "cosine": report.cosine,
        "recommended_beta": advice.beta,
        "recommended_nudge_current": advice.current,
        "max_nudge_current": advice.limit,
        "allowed_beta": advice.allowed_beta,
    }


def lines(
    report: NoiseReport, advice: Advice, path: str, index: int, description: str, target: float, net: Network
) -> list[str]:
    taus = ", ".join(f"{m * report.seconds_per_reading:.3g}" for m in report.allan_m)
    out = [
        f"{path}: sample {index}, {report.readings} readings per node at the "
        f"start conductances; {description}",
        f"Allan deviation at τ = {taus} s (every node read once every {report.seconds_per_reading:.3g} s)",
        f"{'node':>6s} {'mean V':>12s} {'rms µV':>9s}  Allan deviation µV",
    ]
    for k, node in enumerate(report.nodes):
        allan = " ".join(f"{a * 1e6:7.2f}" for a in report.allan[:, k])
        out.append(f"{node:>6s} {report.mean[k]:12.6f} {report.rms[k] * 1e6:9.2f}  {allan}")
    for node in net.nudge_nodes:
        k = net.node_index[node]
        mean, rms = report.difference_mean[k], report.difference_rms[k]
        ratio = abs(mean) / rms if rms > 0 else math.inf
        out.append(
            f"±β back to back (β {report.beta:.3g} A/V): node {node} moves {mean * 1e6:.3g} µV ± "
            f"{rms * 1e6:.3g} µV (signal/noise {ratio:.3g})"
        )
    out.append(
        f"centered-VDM estimate over {report.repeats} ±β pairs: "
        f"relative spread {report.spread:.3g} (median), cosine to their mean {report.cosine:.4f}"
    )
    out.append(
        f"recommend: β ≥ {_si(advice.beta, 'A/V')} (spread ≤ {target:g} down to ‖t − y‖ = "
        f"{advice.end_error:.3g} V, [training] success_db), or a constant-current nudge "
        f"I0 ≥ {_si(advice.current, 'A')}"
    )
    if advice.limit is None:
        out.append("  (no bench limit here: on a bench, max_nudge_current bounds both)")
    elif advice.allowed_beta is not None:
        peak = advice.beta * report.worst_error
        if peak <= advice.limit and advice.current <= advice.limit:
            out.append(
                f"  within the bench's max_nudge_current {_si(advice.limit, 'A')}: peak nudge "
                f"{_si(peak, 'A')} at the start (|t − y| up to {report.worst_error:.3g} V)"
            )
        else:
            out.append(
                f"  beyond the bench's max_nudge_current {_si(advice.limit, 'A')}: it allows β ≤ "
                f"{_si(advice.allowed_beta, 'A/V')} and I0 ≤ {_si(advice.limit, 'A')}; raise the limit "
                "if the parts allow, or lower the noise (NPLC, averaging)"
            )
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "noise",
        cmd_noise,
        "read every node repeatedly at one state: rms, Allan deviation, ±β spread, the β or I0 to use",
        "At the start conductances and one sample: every node read N times (mean, rms, Allan "
        "deviation against averaging time), then N/2 +β/−β pairs back to back (the spread of their "
        "difference and of the centered-VDM estimate), and the β or constant nudge current I0 that "
        "brings the estimate's spread to --target, within the bench's max_nudge_current.",
    )
    p.add_argument("--readings", type=int, default=64, help="free readings per node (default 64)")
    p.add_argument(
        "--beta",
        type=float,
        help="the nudge to measure at, A/V (default: the config's β, or its nudge_current over ‖t − y‖)",
    )
    p.add_argument(
        "--target", type=float, default=0.1, help="relative spread of the estimate to aim for (default 0.1)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
