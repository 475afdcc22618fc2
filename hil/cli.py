"""`hil`: train, solve, print netlists and check gradients from an experiment config."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hil import config as config_mod
from hil import eqprop, gradcheck, runlog, train
from hil.interface import Backend, BackendError

EXIT_USAGE = 2
EXIT_FAILED = 1


class Interrupted(Exception):
    """SIGTERM or Ctrl-C: stop, leave things safe, keep the log."""


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if getattr(args, "backend", None):
        out.setdefault("backend", {})["name"] = args.backend
    if getattr(args, "epochs", None) is not None:
        out.setdefault("training", {})["epochs"] = args.epochs
    if getattr(args, "seed", None) is not None:
        out.setdefault("conductances", {})["seed"] = args.seed
        out.setdefault("training", {})["seed"] = args.seed
    return out


def _open(experiment: config_mod.Experiment) -> tuple[Backend, np.ndarray]:
    from sim.factory import open_experiment

    return open_experiment(experiment), experiment.start_conductances()


def _sample(experiment: config_mod.Experiment, index: int) -> tuple[np.ndarray, np.ndarray]:
    data = experiment.dataset()
    if not 0 <= index < len(data):
        raise ValueError(f"--sample {index} is out of range: the dataset has samples 0 to {len(data) - 1}")
    return data.inputs[index], data.targets[index]


@contextmanager
def _stop_between_samples() -> Iterator[Callable[[], None]]:
    """SIGTERM and Ctrl-C only set a flag; the returned check raises `Interrupted` between two
    samples, so no phase, update or log write is cut in half."""
    caught: list[str] = []

    def handler(signum: int, frame: object) -> None:
        caught.append(signal.Signals(signum).name)

    def check() -> None:
        if caught:
            raise Interrupted(caught[0])

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield check
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    experiment = config_mod.load(args.config, _overrides(args))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{stamp}.h5"
    runlog.refuse_overwrite(out, args.force)
    hyper = experiment.hyper()
    data = experiment.dataset()
    backend, g0 = _open(experiment)
    log = None
    status = "failed"
    try:
        with _stop_between_samples() as stop_if_asked:
            log = runlog.RunLog(
                out,
                experiment.to_toml(),
                backend.identity(),
                backend.network,
                hyper.g_min,
                hyper.g_max,
                g0,
                len(data),
            )
            bar = tqdm(
                total=hyper.epochs * len(data),
                unit="sample",
                disable=None,
                file=sys.stderr,
                desc=f"training {backend.network.name}",
            )
            records = train.train(
                backend,
                data,
                g0,
                hyper,
                on_epoch=log.epoch,
                on_sample=lambda: (bar.update(1), stop_if_asked()),
            )
            bar.close()
            status = "completed"
    except (KeyboardInterrupt, Interrupted):
        status = "interrupted"
        print(f"hil: interrupted; the epochs finished so far are in {out}", file=sys.stderr)
        return 130
    except BackendError as exc:
        status = f"failed: {exc}"
        raise
    finally:
        backend.safe_state()
        backend.close()
        if log is not None:
            log.close(status)
    last = records[-1]
    right = round(last.accuracy * len(data))
    print(
        f"trained {len(records)} epochs: loss {last.loss:.4g} ({last.error_db:.2f} dB), "
        f"accuracy {right}/{len(data)} ({last.accuracy:.0%}), run log {out}"
    )
    return 0


def cmd_netlist(args: argparse.Namespace) -> int:
    from sim.netlist import SimulatorOptions, netlist

    experiment = config_mod.load(args.config, _overrides(args))
    x, t = _sample(experiment, args.sample)
    backend, g0 = _open(experiment)
    nudges = None
    try:
        if args.phase == "nudged":
            backend.program(g0)
            y = eqprop.outputs(backend.network, backend.settle(x))
            nudges = backend.network.nudge_currents(t, y, experiment.hyper().beta)
    finally:
        backend.close()
    b = experiment["backend"]
    text = netlist(
        backend.network, g0, x, nudges, SimulatorOptions(b["reltol"], b["vntol"], b["abstol"], b["gmin"])
    )
    header = f"* config {args.config}, sample {args.sample}, {args.phase} phase\n"
    sys.stdout.write(text.replace("\n", "\n" + header, 1))
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    experiment = config_mod.load(args.config, _overrides(args))
    x, _ = _sample(experiment, args.sample)
    backend, g0 = _open(experiment)
    try:
        backend.program(g0)
        state = backend.settle(x)
    finally:
        backend.close()
    nodes = dict(zip(backend.network.nodes, map(float, state.voltages), strict=True))
    if args.json:
        print(json.dumps({"nodes": nodes}))
    else:
        for name, volts in nodes.items():
            print(f"{name:>12s}  {volts: .12e} V")
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    experiment = config_mod.load(args.config, _overrides(args))
    hyper = experiment.hyper()
    x, t = _sample(experiment, args.sample)
    method = args.method or hyper.method
    beta = args.beta if args.beta is not None else hyper.beta
    if not beta > 0:
        raise ValueError(f"--beta {beta} must be > 0 (A/V)")
    backend, g0 = _open(experiment)
    try:
        report = gradcheck.gradcheck(backend, g0, x, t, method, beta, hyper.pcm_perturbation)
    finally:
        backend.close()
    report = {"config": str(args.config), "sample": args.sample, **report}
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{report['config']}: sample {args.sample}, method {method}, beta {beta:g} A/V, "
        f"loss {report['loss']:.6g}"
    )
    print(f"{'edge':>14s} {'layer':>5s} {'raw':>13s} {'estimate':>13s} {'finite diff':>13s} {'est/fd':>9s}")
    for e in report["edges"]:
        ratio = e["estimate"] / e["finite_difference"] if e["finite_difference"] else float("nan")
        print(
            f"{e['name']:>14s} {e['layer']:>5d} {e['raw']: .6e} {e['estimate']: .6e} "
            f"{e['finite_difference']: .6e} {ratio: .4f}"
        )
    for layer in report["layers"]:
        print(
            f"layer {layer['layer']}: relative error {layer['relative_error']:.3e}, "
            f"cosine {layer['cosine']:.6f}"
        )
    return 0


# ---------------------------------------------------------------------------------------- parser
def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    summary: str,
    detail: str,
    sample: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand taking CONFIG and --backend (and --sample unless told not to)."""
    sp = sub.add_parser(name, help=summary, description=detail)
    sp.add_argument("config", help="experiment config (TOML)")
    sp.add_argument("--backend", choices=("spice", "numeric"), help="override [backend] name")
    if sample:
        sp.add_argument("--sample", type=int, default=0, help="dataset sample index (default 0)")
    sp.set_defaults(run=run)
    return sp


def parser() -> argparse.ArgumentParser:
    from hil import bench_cli, study_cli

    p = argparse.ArgumentParser(prog="hil", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], summary: str, detail: str, sample: bool = True
    ) -> argparse.ArgumentParser:
        return add_command(sub, name, run, summary, detail, sample)

    t = command(
        "train",
        cmd_train,
        "train a network and write an HDF5 run log",
        "Train a network; write the run log (HDF5) as epochs finish.",
        sample=False,
    )
    t.add_argument("--out", help="run log path (default runs/<config>-<time>.h5)")
    t.add_argument("--epochs", type=int, help="override [training] epochs")
    t.add_argument("--seed", type=int, help="override the conductance and training seeds")
    t.add_argument("--force", action="store_true", help="replace an existing run log")

    n = command(
        "netlist",
        cmd_netlist,
        "print a standalone ngspice netlist",
        "Print a netlist that `ngspice -b` runs (.op), at the initial conductances.",
    )
    n.add_argument("--phase", choices=("free", "nudged"), default="free")

    s = command(
        "solve",
        cmd_solve,
        "node voltages of the free phase",
        "Solve the free phase at the initial conductances; print node voltages.",
    )
    s.add_argument("--json", action="store_true", help='print {"nodes": {name: volts}}')

    g = command(
        "gradcheck",
        cmd_gradcheck,
        "compare an estimator with finite differences",
        "Per conductance: raw estimator, compensated estimate, finite-difference gradient of "
        "L = ½Σ(t − y)²; per layer: relative error and cosine.",
    )
    g.add_argument("--beta", type=float, help="nudge strength in A/V (default: the config's)")
    g.add_argument("--method", choices=eqprop.METHODS, help="estimator (default: the config's)")
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    study_cli.register(sub)
    bench_cli.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (config_mod.ConfigError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"hil: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as exc:
        print(f"hil: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
