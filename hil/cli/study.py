"""`hil gradcheck`, `hil sweep`, `hil report`: the method studies."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hil import config, eqprop, runlog
from hil.backends import open_backend
from hil.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    StopFlag,
    add_command,
    names,
    numbers,
    overrides,
    sample,
)
from hil.interface import Backend
from hil.studies import gradcheck, sweep
from hil.studies.sweepfile import Plan, SweepFile, read, summarise
from hil.train import Interrupted


# ---------------------------------------------------------------------------------------- gradcheck
def cmd_gradcheck(args: argparse.Namespace) -> int:
    experiment = config.load(args.config, overrides(args))
    hyper = experiment.hyper()
    x, t = sample(experiment, args.sample)
    if args.edges is not None and args.edges < 1:
        raise ValueError(f"--edges {args.edges} must be at least 1 (edges differenced per layer)")
    if args.repeat != 1:
        return _gradcheck_repeated(args, experiment, x, t)
    if args.betas is None:
        if args.methods is not None or args.out is not None:
            raise ValueError("--methods and --out go with --betas: add --betas 1e-9,1e-8,...")
        beta = args.beta if args.beta is not None else hyper.beta
        if not beta > 0:
            raise ValueError(f"--beta {beta} must be > 0 (A/V)")
        betas, methods = [beta], [args.method or hyper.method]
    else:
        if args.beta is not None:
            raise ValueError("--beta and --betas exclude each other: give the list with --betas")
        betas = numbers(args.betas, "--betas")
        methods = eqprop.check_methods(
            names(args.methods) or ([args.method] if args.method else eqprop.METHODS)
        )
    out = Path(args.out) if args.out else None
    if out is not None:
        runlog.refuse_overwrite(out, args.force)
    # A bench refuses PCM before it touches anything, so name it when the check includes it.
    backend = open_backend(experiment, "pcm" if "pcm" in methods else hyper.method)
    try:
        g0 = experiment.start_conductances()
        if args.betas is None and args.beta is None and hyper.nudge_current > 0:
            betas = [_constant_current_beta(backend, g0, x, t, hyper.nudge_current)]
        result = gradcheck.check(
            backend, g0, x, t, methods, betas, hyper.pcm_perturbation, edges_per_layer=args.edges
        )
        identity = backend.identity()
    finally:
        backend.safe_state()
        backend.close()
    head = {"config": str(args.config), "sample": args.sample}
    constant = args.betas is None and args.beta is None and hyper.nudge_current > 0
    via = f" (nudge_current {hyper.nudge_current:g} A over ‖t − y‖)" if constant else ""
    if args.betas is None:
        report = {**head, **gradcheck.edge_report(result, experiment.network(), t)}
        if args.json:
            print(json.dumps(report))
            return 0
        print(
            f"{args.config}: sample {args.sample}, method {methods[0]}, beta {betas[0]:g} A/V"
            f"{via}, loss {report['loss']:.6g}"
        )
        print("\n".join(gradcheck.edge_table(report)))
        return 0
    if out is not None:
        gradcheck.write(out, result, experiment.network(), experiment.to_toml(), identity, args.sample)
    if args.json:
        print(json.dumps({**head, **gradcheck.as_json(result)}))
        return 0
    print(f"{args.config}: sample {args.sample}, loss {result.loss:.6g}, against finite differences")
    print("\n".join(gradcheck.table(result)))
    if out is not None:
        print(f"written to {out}")
    return 0


def _constant_current_beta(
    backend: Backend, g: np.ndarray, x: np.ndarray, t: np.ndarray, current: float
) -> float:
    """The β a constant-current config nudges this sample with at `g`: I0 over its ‖t − y‖."""
    backend.program(g)
    y = backend.network.output_voltages(backend.settle(x).voltages)
    error = float(np.linalg.norm(np.asarray(t) - y))
    if not error > 0:
        raise ValueError(
            "the sample's outputs sit on their targets: no nudge to check; pick another --sample"
        )
    return current / error


def _gradcheck_repeated(
    args: argparse.Namespace, experiment: config.Experiment, x: np.ndarray, t: np.ndarray
) -> int:
    """`--repeat N`: the estimate taken N times at one state, each against the finite-difference
    gradient. Finite differences of noisy readings would be noise, so where readings are noisy the
    reference is exact: on a simulator read through an error model ([backend] noise), the same
    simulator read exactly; on a bench, the twin at the conductances the bench realised. Elsewhere
    it is the backend's own, as without --repeat."""
    hyper = experiment.hyper()
    if args.repeat < 2:
        raise ValueError(f"--repeat {args.repeat} must be at least 2 (the spread of N estimates)")
    if args.betas is not None or args.out is not None:
        raise ValueError("--repeat goes with one β: drop --betas/--out, or --repeat")
    beta = args.beta if args.beta is not None else hyper.beta
    if not beta > 0:
        raise ValueError(f"--beta {beta} must be > 0 (A/V)")
    method = args.method or hyper.method
    # The config's own nudge: a constant current (its β follows each free phase) unless --beta.
    current = hyper.nudge_current if args.beta is None else 0.0
    name = experiment["backend"]["name"]
    noisy = name == "bench" or experiment["backend"].get("noise", "none") != "none"
    backend = open_backend(experiment, method)
    try:
        g = backend.program(experiment.start_conductances())
        picked = gradcheck.sample_edges(backend.network.layers, args.edges)
        if noisy:
            exact_backend = {"name": "numeric" if name == "bench" else name, "noise": "none"}
            exact = config.load(args.config, {**overrides(args), "backend": exact_backend})
            reference = open_backend(exact, method)
            try:
                fd = eqprop.finite_difference(reference, reference.program(g), x, t, edges=picked)
            finally:
                reference.close()
        else:
            fd = eqprop.finite_difference(backend, g, x, t, edges=picked)
        net = backend.network
        estimates = []
        for _ in range(args.repeat):
            backend.program(g)
            m = eqprop.measure(backend, g, x, t, method, beta, hyper.pcm_perturbation, current)
            estimates.append(eqprop.compensated(net, m.raw))
    finally:
        backend.safe_state()
        backend.close()
    report = gradcheck_spread(np.array(estimates), fd, net.layers)
    head = {"config": str(args.config), "sample": args.sample, "method": method, "beta": beta}
    if current > 0:
        head = {**head, "beta": None, "nudge_current": current}
    if args.json:
        print(json.dumps({**head, "repeat": args.repeat, "exact_reference": noisy, **report}))
        return 0
    against = (
        "the twin's (at the realised conductances)"
        if name == "bench"
        else "the noise-free simulator's"
        if noisy
        else "the same backend's"
    )
    print(
        f"{args.config}: sample {args.sample}, method {method}, "
        f"{f'nudge current {current:g} A' if current > 0 else f'beta {beta:g} A/V'}, {args.repeat} estimates "
        f"against {against} finite-difference gradient"
    )
    for layer in report["layers"]:
        print(
            f"layer {layer['layer']}: cosine {layer['cosine_mean']:.4f} mean "
            f"(min {layer['cosine_min']:.4f}), relative error {layer['relative_error_median']:.3g} "
            f"median (max {layer['relative_error_max']:.3g}); their mean: cosine "
            f"{layer['mean_estimate_cosine']:.4f}"
        )
    print(f"spread of the estimate: {report['spread']:.3g} (median of ‖e − ē‖/‖ē‖ over the {args.repeat})")
    return 0


def gradcheck_spread(estimates: np.ndarray, fd: np.ndarray, layers: np.ndarray) -> dict[str, Any]:
    """Per layer, how N estimates [N, edges] sit around the finite-difference gradient: cosine
    (mean, min), relative error (median, max), the cosine of their mean; and their spread."""
    out = []
    for level, sel in gradcheck.layer_selections(layers, fd):
        each = [gradcheck.layer_agreement(e[sel], fd[sel]) for e in estimates]
        rel = np.array([r for r, _ in each])
        cos = np.array([c for _, c in each])
        _, mean_cos = gradcheck.layer_agreement(estimates[:, sel].mean(axis=0), fd[sel])
        out.append(
            {
                "layer": level,
                "cosine_mean": float(cos.mean()),
                "cosine_min": float(cos.min()),
                "relative_error_median": float(np.median(rel)),
                "relative_error_max": float(rel.max()),
                "mean_estimate_cosine": float(mean_cos),
            }
        )
    centre = estimates.mean(axis=0)
    norm = float(np.linalg.norm(centre))
    spread = float(np.median(np.linalg.norm(estimates - centre, axis=1)) / norm) if norm > 0 else float("inf")
    return {"layers": out, "spread": spread}


# ---------------------------------------------------------------------------------------- sweeps
def _check_parallel(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers} must be at least 1")
    if args.dask is not None and args.workers != 1:
        raise ValueError("--workers and --dask exclude each other: the Dask cluster has its own workers")
    if args.dask is not None:
        sweep.connect_dask(args.dask).close()  # refuse an unreachable cluster before writing anything


def _plan(
    experiment: config.Experiment, kind: str, methods: list[str], points: dict[str, np.ndarray]
) -> Plan:
    return Plan(
        kind=kind,
        config_toml=experiment.to_toml(),
        backend=experiment["backend"]["name"],
        methods=methods,
        epochs=experiment["training"]["epochs"],
        success_db=float(experiment["training"]["success_db"]),
        points=points,
    )


def _run_sweep(
    args: argparse.Namespace, experiment: config.Experiment, plan: Plan, tasks: list[sweep.Task]
) -> int:
    from tqdm import tqdm

    network = experiment.network()
    out = Path(args.out)
    parallel = args.dask is not None or args.workers > 1
    # The stop flag is up from before the file says "running" until it says how the sweep ended,
    # so a signal never leaves it "running", and workers are stopped before it is closed.
    with StopFlag() as stop:
        file = SweepFile(out, plan, network, force=args.force)
        remaining = [t for t in tasks if not file.done(t.method)[t.index]]
        finished = len(tasks) - len(remaining)
        if finished:
            print(f"hil: resuming {out}: {finished} of {len(tasks)} tasks already done", file=sys.stderr)
        bar = tqdm(
            total=len(remaining) * plan.epochs,
            unit="epoch",
            disable=None,
            file=sys.stderr,
            desc=f"sweep {plan.kind} {network.name}",
        )

        def on_result(result: sweep.TaskResult) -> None:
            file.write(result)
            if parallel:
                bar.update(plan.epochs)

        status = "failed"
        try:
            sweep.execute(
                remaining,
                on_result,
                lambda: stop.requested,
                workers=args.workers,
                dask_address=args.dask,
                on_epoch=lambda: bar.update(1),
            )
            status = "completed"
        except Interrupted:
            status = "interrupted"
        except sweep.WorkerDied as exc:
            status = f"failed: {exc}"
        except Exception as exc:
            status = f"failed: {' '.join(str(exc).split())}"
            raise
        finally:
            bar.close()
            file.close(status)
    if status == "interrupted":
        print(
            f"hil: interrupted; every finished task is in {out}: run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if status != "completed":
        print(f"hil: error: {status.removeprefix('failed: ')}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"sweep {plan.kind}: {len(tasks) // len(plan.methods)} points × {len(plan.methods)} methods, "
        f"{plan.epochs} epochs, backend {plan.backend}, success = final error ≤ {plan.success_db:g} dB; "
        f"file {out}"
    )
    for s in summarise(read(out)):
        print(s.line(plan.success_db))
    return 0


def cmd_sweep_starts(args: argparse.Namespace) -> int:
    experiment = config.load(args.config, overrides(args))
    methods = sweep.sweep_methods(experiment, names(args.methods))
    tasks = sweep.start_tasks(experiment, methods, args.starts)
    _check_parallel(args)
    points = {
        "start": np.arange(args.starts, dtype=np.int64),
        "seed": sweep.start_seeds(experiment, args.starts),
    }
    return _run_sweep(args, experiment, _plan(experiment, "starts", methods, points), tasks)


def cmd_sweep_grid(args: argparse.Namespace) -> int:
    experiment = config.load(args.config, overrides(args))
    methods = sweep.sweep_methods(experiment, names(args.methods))
    betas = numbers(args.beta, "--beta")
    if (args.alpha is None) == (args.learning_rate is None):
        raise ValueError(
            "give the learning-rate axis once: --alpha (the seed's α, η = 2α) or --learning-rate"
        )
    if args.alpha is not None:
        alphas = numbers(args.alpha, "--alpha")
        rates = [2.0 * a for a in alphas]
    else:
        rates = numbers(args.learning_rate, "--learning-rate")
        alphas = [float("nan")] * len(rates)
    lr, beta = sweep.grid_points(rates, betas)
    alpha = np.repeat(np.asarray(alphas, float), len(betas))  # the grid is learning-rate major
    tasks = sweep.grid_tasks(experiment, methods, lr, beta)
    _check_parallel(args)
    points = {"alpha": alpha, "learning_rate": lr, "beta": beta}
    return _run_sweep(args, experiment, _plan(experiment, "grid", methods, points), tasks)


# ---------------------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from hil.studies import report

    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a run log, sweep or gradcheck file (.h5)")
    out = Path(args.out) if args.out else path.with_name(f"{path.stem}-report")
    figures = report.report(path, out)
    print(f"wrote {len(figures)} figures and {out / 'index.md'}")
    return 0


# ---------------------------------------------------------------------------------------- parser
def _parallel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", help="comma-separated methods (default: [sweep] methods, else [training])")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on the Dask scheduler at ADDRESS instead")
    p.add_argument("--out", required=True, help="sweep file (HDF5); the same command again resumes it")
    p.add_argument("--epochs", type=int, help="override [training] epochs")
    p.add_argument("--force", action="store_true", help="replace an existing file that holds another sweep")


def register(sub: argparse._SubParsersAction) -> None:
    g = add_command(
        sub,
        "gradcheck",
        cmd_gradcheck,
        "compare estimators with finite differences, at one β or many",
        "Per conductance: raw estimator, compensated estimate, finite-difference gradient of "
        "L = ½Σ(t − y)²; per layer: relative error and cosine. With --betas: every method at every β.",
    )
    g.add_argument("--beta", type=float, help="nudge strength in A/V (default: the config's)")
    g.add_argument("--method", choices=eqprop.METHODS, help="estimator (default: the config's)")
    g.add_argument("--betas", help="comma-separated β values: relative error and cosine per method and layer")
    g.add_argument("--methods", help="with --betas: comma-separated methods (default all three)")
    g.add_argument("--out", help="with --betas: write the result (HDF5) for `hil report`")
    g.add_argument("--force", action="store_true", help="with --out: replace an existing file")
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    g.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="take the estimate N times at one β: the spread of the estimate (on a noisy backend)",
    )
    g.add_argument(
        "--edges",
        type=int,
        metavar="N",
        help="difference N edges of each layer, drawn at random (seeded), not every edge: for networks "
        "too big for two settles per edge (configs/mnist.toml: --edges 20)",
    )

    sp = sub.add_parser(
        "sweep",
        help="many trainings of one config: random starts, or a learning-rate × β grid",
        description="Run many trainings of one config in parallel; store them in one HDF5 sweep file.",
    )
    kinds = sp.add_subparsers(dest="kind", required=True, metavar="KIND")
    s = add_command(
        kinds,
        "starts",
        cmd_sweep_starts,
        "starting-conductance analysis: every method from the same N random starts",
        "Train every method from the same N random starting conductances (start n seeded by "
        "[sweep] seed_formula); report success rate (final error ≤ [training] success_db), final "
        "errors, epochs to the threshold and solver failures per method.",
        sample=False,
    )
    s.add_argument("--starts", type=int, required=True, help="number of random starts N")
    _parallel_options(s)
    grid = add_command(
        kinds,
        "grid",
        cmd_sweep_grid,
        "learning-rate × β grid from the config's initial conductances",
        "Train at every (learning rate, β) pair; the learning rate is given as the seed's α "
        "(η = 2α) or directly as η.",
        sample=False,
    )
    grid.add_argument("--alpha", help="comma-separated seed α values (η = 2α, the seed's update with λ = 1)")
    grid.add_argument("--learning-rate", help="comma-separated learning rates η")
    grid.add_argument("--beta", required=True, help="comma-separated β values (A/V)")
    _parallel_options(grid)

    r = sub.add_parser(
        "report",
        help="PNG figures and index.md for a run log, sweep or gradcheck file",
        description="Write PNG figures (and index.md listing them) for a run log, a sweep file or "
        "a gradient-quality file from `hil gradcheck --betas --out`.",
    )
    r.add_argument("file", help="an HDF5 file written by hil")
    r.add_argument("--out", help="directory for the figures (default <file>-report next to the file)")
    r.set_defaults(run=cmd_report)
