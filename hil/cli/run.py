"""`hil train`, `hil solve`, `hil netlist`: one experiment, one backend."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tomli_w

from hil import config, eqprop, runlog, train
from hil.backends import open_backend
from hil.cli.common import EXIT_INTERRUPTED, StopFlag, add_command, overrides, sample
from hil.datasets import Dataset
from hil.interface import Backend, BackendError, Identity

CHECKPOINT_SECONDS = 60.0  # within a long epoch, a checkpoint at least this often (and after every epoch)


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume is not None:
        return _resume(args)
    if args.config is None:
        raise ValueError("give a config to train, or --resume RUN.h5 to continue a run")
    experiment = config.load(args.config, overrides(args))
    if args.out:
        out, claim = Path(args.out), None
        runlog.refuse_overwrite(out, args.force)
    else:
        out, claim = runlog.claim_new(Path("runs"), Path(args.config).stem)
    hyper, data = experiment.hyper(), experiment.dataset()
    if experiment.dry_run:
        print(
            f"hil: dry run: the bench config's experiment on the {experiment['backend']['name']} simulator; "
            "no instrument is touched",
            file=sys.stderr,
        )
    try:
        backend = open_backend(experiment)
    except BaseException:
        if claim is not None:
            claim.release()
        raise
    g0 = experiment.start_conductances()
    try:
        bench_toml = tomli_w.dumps(experiment.bench.tables) if experiment.bench is not None else ""
        log = runlog.RunLog.create(
            out,
            experiment.to_toml(),
            _identity(experiment, backend.identity()),
            backend.network,
            hyper.g_min,
            hyper.g_max,
            g0,
            len(data),
            bench_toml,
            claim,
        )
    except BaseException:
        if claim is not None:
            claim.release()
        backend.safe_state()
        backend.close()
        raise
    return _run(experiment, backend, log, g0, None)


def _resume(args: argparse.Namespace) -> int:
    """Continue a run log where its checkpoint stands, on the backend it names."""
    extra = [f"--{k}" for k in ("config", "out", "backend", "seed") if getattr(args, k) is not None]
    if extra or args.force:
        raise ValueError(
            f"--resume continues a run as it was: drop {', '.join(extra or ['--force'])} "
            "(only --epochs may extend it)"
        )
    path = Path(args.resume)
    if not path.is_file():
        raise FileNotFoundError(f"run log {path} not found: give the log of the run to continue")
    log, checkpoint = runlog.RunLog.resume(path)
    try:
        stored = runlog.read(path)
        bench = None
        if stored.bench_toml:
            values = tomllib.loads(stored.config_toml)
            bench = config.BenchFile(Path(values["backend"]["bench"]), tomllib.loads(stored.bench_toml))
        extend = {"training": {"epochs": args.epochs}} if args.epochs is not None else None
        experiment = config.loads(stored.config_toml, path, bench, extend)
        done = checkpoint.progress.epoch
        if done >= experiment.hyper().epochs and stored.status.startswith("stopped"):
            log.close("completed")  # every epoch was in; the run stopped while closing
            print(f"hil: {path} already held all {done} epochs; marked completed", file=sys.stderr)
            return 0
        if done >= experiment.hyper().epochs:
            raise ValueError(
                f"{path} already holds {done} of {experiment.hyper().epochs} epochs: pass --epochs N "
                f"(more than {done}) to extend it"
            )
        backend = open_backend(experiment)
    except BaseException:
        log.close(stored.status if "stored" in locals() else "failed: could not resume")
        raise
    if extend is not None:
        log.extend(experiment.to_toml())
    backend.restore_solver_state(checkpoint.solver_state)
    print(f"hil: resuming {path} at epoch {done + 1}, sample {checkpoint.progress.position}", file=sys.stderr)
    return _run(experiment, backend, log, checkpoint.progress.conductances, checkpoint.progress)


def _run(
    experiment: config.Experiment,
    backend: Backend,
    log: runlog.RunLog,
    g0: np.ndarray,
    start: train.Progress | None,
) -> int:
    """Train into the log; on every way out leave the backend safe and the log with a true status."""
    hyper, data = experiment.hyper(), experiment.dataset()
    last_checkpoint = [time.monotonic()]

    def checkpoint(progress: train.Progress) -> None:
        log.checkpoint(progress, backend.solver_state())
        last_checkpoint[0] = time.monotonic()

    status = "failed"
    try:
        with StopFlag() as stop:
            records = train.train(
                backend,
                data,
                g0,
                hyper,
                on_epoch=log.epoch,
                on_sample=_progress(backend, hyper, data, stop, start),
                start=start,
                on_checkpoint=checkpoint,
                checkpoint_due=lambda: time.monotonic() - last_checkpoint[0] > CHECKPOINT_SECONDS,
            )
            status = "completed"
    except train.Interrupted:
        status = "interrupted"
        print(
            f"hil: interrupted; the run so far is in {log.path}: `hil train --resume {log.path}` "
            "continues it",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except BackendError as exc:
        status = f"failed: {exc}"
        raise
    finally:
        try:
            backend.safe_state()
            backend.close()
        finally:
            log.close(status)
    last = records[-1]
    right = round(last.accuracy * len(data))
    print(
        f"trained {last.epoch} epochs: loss {last.loss:.4g} ({last.error_db:.2f} dB), "
        f"accuracy {right}/{len(data)} ({last.accuracy:.0%}), run log {log.path}"
    )
    return 0


def _identity(experiment: config.Experiment, identity: Identity) -> Identity:
    if experiment.bench is None or not experiment.dry_run:
        return identity
    note = f", dry run of bench {experiment.bench.path.name}"
    return dataclasses.replace(identity, description=identity.description + note)


def _progress(
    backend: Backend, hyper: train.Hyper, data: Dataset, stop: StopFlag, start: train.Progress | None
) -> Callable[[], None]:
    """A progress bar on stderr (when it is a terminal), and the stop check between samples."""
    from tqdm import tqdm

    bar = tqdm(
        total=hyper.epochs * len(data),
        initial=(start.epoch * len(data) + start.position) if start is not None else 0,
        unit="sample",
        disable=None,
        file=sys.stderr,
        desc=f"training {backend.network.name}",
    )

    def on_sample() -> None:
        bar.update(1)
        stop.check()

    return on_sample


def cmd_netlist(args: argparse.Namespace) -> int:
    from sim.factory import simulator_options
    from sim.netlist import netlist

    experiment = config.load(args.config, overrides(args))
    x, t = sample(experiment, args.sample)
    g0 = experiment.start_conductances()
    nudges = None
    if args.phase == "nudged":
        backend = open_backend(experiment)
        try:
            backend.program(g0)
            y = eqprop.outputs(backend.network, backend.settle(x))
        finally:
            backend.safe_state()
            backend.close()
        nudges = experiment.network().nudge_currents(t, y, experiment.hyper().beta)
    text = netlist(experiment.network(), g0, x, nudges, simulator_options(experiment["backend"]))
    header = f"* config {args.config}, sample {args.sample}, {args.phase} phase\n"
    sys.stdout.write(text.replace("\n", "\n" + header, 1))
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    experiment = config.load(args.config, overrides(args))
    x, _ = sample(experiment, args.sample)
    backend = open_backend(experiment)
    try:
        backend.program(experiment.start_conductances())
        state = backend.settle(x)
    finally:
        backend.safe_state()
        backend.close()
    nodes = dict(zip(backend.network.nodes, map(float, state.voltages), strict=True))
    if args.json:
        print(json.dumps({"nodes": nodes}))
    else:
        for name, volts in nodes.items():
            print(f"{name:>12s}  {volts: .12e} V")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    t = add_command(
        sub,
        "train",
        cmd_train,
        "train a network and write an HDF5 run log",
        "Train a network; write the run log (HDF5) as epochs finish, with a checkpoint after every "
        "epoch. On a bench config: train on the bench (or, with --backend, a dry run of the same "
        "experiment on that simulator). --resume RUN.h5 continues a run that stopped.",
        sample=False,
        config_required=False,
    )
    t.add_argument("--resume", metavar="RUN.h5", help="continue this run log from its checkpoint")
    t.add_argument("--out", help="run log path (default runs/<config>-<time>.h5)")
    t.add_argument("--epochs", type=int, help="override [training] epochs")
    t.add_argument("--seed", type=int, help="override the conductance and training seeds")
    t.add_argument("--force", action="store_true", help="replace an existing run log")
    n = add_command(
        sub,
        "netlist",
        cmd_netlist,
        "print a standalone ngspice netlist",
        "Print a netlist that `ngspice -b` runs (.op), at the initial conductances.",
    )
    n.add_argument("--phase", choices=("free", "nudged"), default="free")
    s = add_command(
        sub,
        "solve",
        cmd_solve,
        "node voltages of the free phase",
        "Solve the free phase at the initial conductances; print node voltages.",
    )
    s.add_argument("--json", action="store_true", help='print {"nodes": {name: volts}}')
