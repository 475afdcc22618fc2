"""`hil train`, `hil solve`, `hil netlist`: one experiment, one backend."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
from collections.abc import Callable
from pathlib import Path

from hil import config, eqprop, runlog, train
from hil.backends import open_backend
from hil.cli.common import EXIT_INTERRUPTED, StopFlag, add_command, overrides, sample
from hil.datasets import Dataset
from hil.interface import Backend, BackendError, Identity


def default_run_log(config_path: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(config_path).stem}-{stamp}.h5"


def cmd_train(args: argparse.Namespace) -> int:
    experiment = config.load(args.config, overrides(args))
    out = Path(args.out) if args.out else default_run_log(args.config)
    runlog.refuse_overwrite(out, args.force)
    hyper, data = experiment.hyper(), experiment.dataset()
    if experiment.dry_run:
        print(
            f"hil: dry run: the bench config's experiment on the {experiment['backend']['name']} simulator; "
            "no instrument is touched",
            file=sys.stderr,
        )
    backend = open_backend(experiment)
    g0 = experiment.start_conductances()
    log = None
    status = "failed"
    try:
        with StopFlag() as stop:
            log = runlog.RunLog(
                out,
                experiment.to_toml(),
                _identity(experiment, backend.identity()),
                backend.network,
                hyper.g_min,
                hyper.g_max,
                g0,
                len(data),
            )
            records = train.train(
                backend, data, g0, hyper, on_epoch=log.epoch, on_sample=_progress(backend, hyper, data, stop)
            )
            status = "completed"
    except train.Interrupted:
        status = "interrupted"
        print(f"hil: interrupted; the epochs finished so far are in {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
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


def _identity(experiment: config.Experiment, identity: Identity) -> Identity:
    if experiment.bench is None or not experiment.dry_run:
        return identity
    note = f", dry run of bench {experiment.bench.path.name}"
    return dataclasses.replace(identity, description=identity.description + note)


def _progress(backend: Backend, hyper: train.Hyper, data: Dataset, stop: StopFlag) -> Callable[[], None]:
    """A progress bar on stderr (when it is a terminal), and the stop check between samples."""
    from tqdm import tqdm

    bar = tqdm(
        total=hyper.epochs * len(data),
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
        "Train a network; write the run log (HDF5) as epochs finish. On a bench config: train on the "
        "bench (or, with --backend, a dry run of the same experiment on that simulator).",
        sample=False,
    )
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
