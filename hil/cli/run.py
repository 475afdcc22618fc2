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
from hil.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, StopFlag, add_command, overrides, sample
from hil.datasets import Dataset
from hil.interface import Backend, BackendError, Identity, run_record

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
    except BaseException as exc:
        if claim is not None:
            claim.release()
        unsafe = _leave_safe(backend)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError | FileNotFoundError):
            # Unwritable or full: nothing was trained, so nothing is lost but the time to say so.
            print(
                _one_line(
                    f"hil: error: cannot create the run log {out} ({exc.strerror or exc}): free space "
                    f"on its disk, make it writable or give another --out{'; ' + unsafe if unsafe else ''}"
                ),
                file=sys.stderr,
            )
            return EXIT_FAILED
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
    """Train into the log; on every way out leave the backend safe and the log with a true status.

    A failure (the backend's, or the run log's own: disk full, unwritable) ends the run with one
    line on stderr and exit code 1, and the log's status says it: "failed: <what> (where)". The
    stop flag stays up until the backend is safe and the log closed, so a second Ctrl-C or
    SIGTERM cannot cut the safe state short."""
    hyper, data = experiment.hyper(), experiment.dataset()
    last_checkpoint = [time.monotonic()]

    def checkpoint(progress: train.Progress) -> None:
        try:
            log.checkpoint(progress, backend.solver_state())
        except OSError as exc:
            raise _LogFailed(_log_failure(log, exc)) from exc
        last_checkpoint[0] = time.monotonic()

    records: list[train.EpochRecord] = []
    status, failure = "failed", ""
    with StopFlag() as stop:
        try:
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
        except BackendError as exc:
            failure = _what_failed(exc)
        except _LogFailed as exc:
            failure = str(exc)
        except BaseException as exc:  # a bug: its traceback follows, the log still says what ended it
            failure = _one_line(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            unsafe = _leave_safe(backend)
            if unsafe:
                failure = f"{failure}; {unsafe}" if failure else unsafe
            if failure:
                status = f"failed: {failure}"
            try:
                log.close(status, run_record(backend))
            except OSError as exc:
                failure = failure or _log_failure(log, exc)
    if failure:
        print(f"hil: error: {failure}; the run so far is in {log.path}", file=sys.stderr)
        return EXIT_FAILED
    if status == "interrupted":
        print(
            f"hil: interrupted; the run so far is in {log.path}: `hil train --resume {log.path}` "
            "continues it",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    last = records[-1]
    print(
        f"trained {last.epoch} epochs: loss {last.loss:.4g} ({last.error_db:.2f} dB), "
        f"accuracy {_score(last.accuracy, len(data))}, "
        f"test accuracy {_score(last.test_accuracy, len(data.test()))}, run log {log.path}"
    )
    return 0


def _score(accuracy: float, samples: int) -> str:
    """'352/360 (97.8%)': a whole percentage when it is one (4/4 (100%))."""
    right = round(accuracy * samples)
    share = 100 * right / samples
    percent = f"{share:.0f}" if (100 * right) % samples == 0 else f"{share:.1f}"
    return f"{right}/{samples} ({percent}%)"


class _LogFailed(Exception):
    """The run log could not be written; the message says so on one line."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _what_failed(exc: BackendError) -> str:
    """What failed, then where: the trainer puts where it was (epoch, sample, phase) in front of
    the backend's message; the log's status and the error line lead with the backend's words (on
    a bench, the instrument's name) and give the place in parentheses."""
    inner: BaseException = exc
    while isinstance(inner.__cause__, BackendError):
        inner = inner.__cause__
    text, outer = _one_line(inner), _one_line(exc)
    where = outer[: -len(text)].strip(" ,:") if inner is not exc and outer.endswith(text) else ""
    return f"{text} ({where})" if where else outer


def _log_failure(log: runlog.RunLog, exc: OSError) -> str:
    return _one_line(
        f"cannot write the run log {log.path} ({exc.strerror or exc}): free space on its disk or "
        f"make it writable; the log keeps every epoch up to its last checkpoint and "
        f"`hil train --resume {log.path}` continues from there"
    )


def _leave_safe(backend: Backend) -> str:
    """Safe state and close, whatever happened before; "" when done, else what went wrong there
    (on a bench: what the last check found, and what is not safe)."""
    problem = ""
    try:
        backend.safe_state()
    except BackendError as exc:
        problem = _one_line(exc)
    try:
        backend.close()
    except BackendError as exc:
        problem = problem or _one_line(exc)
    return problem


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
        hyper = experiment.hyper()
        beta = eqprop.strength(experiment.network(), t, y, hyper.beta, hyper.nudge_current)
        nudges = experiment.network().nudge_currents(t, y, float(beta))
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
