"""`hil sweep`, `hil report` and `hil gradcheck --betas`: the method studies (registered into the
`hil` parser)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hil import betascan, config, eqprop, sweep
from hil.sweepfile import Plan, SweepFile, read, summarise

EXIT_INTERRUPTED = 130


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from hil.cli import _overrides as overrides

    return overrides(args)


def _names(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


@contextmanager
def _stop_flag() -> Iterator[Callable[[], bool]]:
    """Ctrl-C and SIGTERM set a flag that the sweep checks between samples and tasks, so no
    result is cut in half and the file stays whole."""
    caught: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield lambda: bool(caught)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------- sweeps
def _check_parallel(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers} must be at least 1")
    if args.dask is not None and args.workers != 1:
        raise ValueError("--workers and --dask exclude each other: the Dask cluster has its own workers")
    if args.dask is not None:
        sweep.connect_dask(args.dask).close()  # refuse an unreachable cluster before writing anything


def _run_sweep(
    args: argparse.Namespace, experiment: config.Experiment, plan: Plan, tasks: list[sweep.Task]
) -> int:
    from tqdm import tqdm

    network = experiment.network()
    out = Path(args.out)
    file = SweepFile(out, plan, network, force=args.force)
    remaining = [t for t in tasks if not file.done(t.method)[t.index]]
    finished = len(tasks) - len(remaining)
    if finished:
        print(f"hil: resuming {out}: {finished} of {len(tasks)} tasks already done", file=sys.stderr)
    parallel = args.dask is not None or args.workers > 1
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
        with _stop_flag() as stop_requested:
            sweep.execute(
                remaining,
                on_result,
                stop_requested,
                workers=args.workers,
                dask_address=args.dask,
                on_epoch=lambda: bar.update(1),
            )
        status = "completed"
    except (KeyboardInterrupt, sweep.Interrupted):
        status = "interrupted"
        print(
            f"hil: interrupted; every finished task is in {out}: run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as exc:
        status = f"failed: {exc}"
        raise
    finally:
        bar.close()
        file.close(status)
    result = read(out)
    print(
        f"sweep {plan.kind}: {len(tasks) // len(plan.methods)} points × {len(plan.methods)} methods, "
        f"{plan.epochs} epochs, backend {plan.backend}, success = final error ≤ {plan.success_db:g} dB; "
        f"file {out}"
    )
    for s in summarise(result):
        print(s.line(plan.success_db))
    return 0


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


def cmd_sweep_starts(args: argparse.Namespace) -> int:
    experiment = config.load(args.config, _overrides(args))
    methods = sweep.sweep_methods(experiment, _names(args.methods))
    tasks = sweep.start_tasks(experiment, methods, args.starts)
    _check_parallel(args)
    points = {
        "start": np.arange(args.starts, dtype=np.int64),
        "seed": sweep.start_seeds(experiment, args.starts),
    }
    return _run_sweep(args, experiment, _plan(experiment, "starts", methods, points), tasks)


def cmd_sweep_grid(args: argparse.Namespace) -> int:
    experiment = config.load(args.config, _overrides(args))
    methods = sweep.sweep_methods(experiment, _names(args.methods))
    betas = betascan.parse_list(args.beta, "--beta")
    if (args.alpha is None) == (args.learning_rate is None):
        raise ValueError(
            "give the learning-rate axis once: --alpha (the seed's α, η = 2α) or --learning-rate"
        )
    if args.alpha is not None:
        alphas = betascan.parse_list(args.alpha, "--alpha")
        rates = [2.0 * a for a in alphas]
    else:
        rates = betascan.parse_list(args.learning_rate, "--learning-rate")
        alphas = [float("nan")] * len(rates)
    lr, beta = sweep.grid_points(rates, betas)
    alpha = np.repeat(np.asarray(alphas, float), len(betas))  # the grid is learning-rate major
    tasks = sweep.grid_tasks(experiment, methods, lr, beta)
    _check_parallel(args)
    points = {"alpha": alpha, "learning_rate": lr, "beta": beta}
    return _run_sweep(args, experiment, _plan(experiment, "grid", methods, points), tasks)


# ---------------------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from hil import report

    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a run log, sweep or gradcheck file (.h5)")
    out = Path(args.out) if args.out else path.with_name(f"{path.stem}-report")
    figures = report.report(path, out)
    print(f"wrote {len(figures)} figures and {out / 'index.md'}")
    return 0


# ---------------------------------------------------------------------------------------- gradcheck
def _gradcheck_betas(fallback: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if args.betas is None:
            if args.methods is not None or args.out is not None:
                raise ValueError("--methods and --out go with --betas: add --betas 1e-9,1e-8,...")
            return fallback(args)
        return cmd_gradcheck_betas(args)

    return run


def cmd_gradcheck_betas(args: argparse.Namespace) -> int:
    from sim.factory import open_experiment

    experiment = config.load(args.config, _overrides(args))
    betas = betascan.parse_list(args.betas, "--betas")
    methods = _names(args.methods) or ([args.method] if args.method else list(eqprop.METHODS))
    unknown = [m for m in methods if m not in eqprop.METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}: use --methods with {', '.join(eqprop.METHODS)}")
    data = experiment.dataset()
    if not 0 <= args.sample < len(data):
        raise ValueError(
            f"--sample {args.sample} is out of range: the dataset has samples 0 to {len(data) - 1}"
        )
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.force:
        raise FileExistsError(f"{out} exists: choose another --out or pass --force to replace it")
    hyper = experiment.hyper()
    g0 = experiment.start_conductances()
    # A bench refuses PCM before it touches anything, so name it when the scan includes it.
    method = "pcm" if "pcm" in methods else hyper.method
    backend = open_experiment(experiment, method)
    try:
        result = betascan.scan(
            backend,
            g0,
            data.inputs[args.sample],
            data.targets[args.sample],
            methods,
            betas,
            hyper.pcm_perturbation,
        )
        kind = backend.identity().kind
    finally:
        backend.close()
    if out is not None:
        betascan.write(out, result, experiment.to_toml(), kind, args.sample)
    if args.json:
        import json

        print(json.dumps({"config": str(args.config), "sample": args.sample, **betascan.as_json(result)}))
    else:
        print(f"{args.config}: sample {args.sample}, loss {result.loss:.6g}, against finite differences")
        print("\n".join(betascan.table(result)))
        if out is not None:
            print(f"written to {out}")
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
    """Add the study commands to `hil`'s subparsers."""
    from hil.cli import add_command

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
    g = add_command(
        kinds,
        "grid",
        cmd_sweep_grid,
        "learning-rate × β grid from the config's initial conductances",
        "Train at every (learning rate, β) pair; the learning rate is given as the seed's α "
        "(η = 2α) or directly as η.",
        sample=False,
    )
    g.add_argument("--alpha", help="comma-separated seed α values (η = 2α, the seed's update with λ = 1)")
    g.add_argument("--learning-rate", help="comma-separated learning rates η")
    g.add_argument("--beta", required=True, help="comma-separated β values (A/V)")
    _parallel_options(g)

    r = sub.add_parser(
        "report",
        help="PNG figures and index.md for a run log, sweep or gradcheck file",
        description="Write PNG figures (and index.md listing them) for a run log, a sweep file or "
        "a gradient-quality file from `hil gradcheck --betas --out`.",
    )
    r.add_argument("file", help="an HDF5 file written by hil")
    r.add_argument("--out", help="directory for the figures (default <file>-report next to the file)")
    r.set_defaults(run=cmd_report)

    # gradcheck over a list of β: the existing command keeps its behaviour without --betas.
    gc = sub.choices["gradcheck"]
    gc.add_argument(
        "--betas", help="comma-separated β values: relative error and cosine per method and layer"
    )
    gc.add_argument("--methods", help="with --betas: comma-separated methods (default all three)")
    gc.add_argument("--out", help="with --betas: write the result (HDF5) for `hil report`")
    gc.add_argument("--force", action="store_true", help="with --out: replace an existing file")
    gc.set_defaults(run=_gradcheck_betas(gc.get_default("run")))
