"""Sweeps: many trainings of one config, as independent tasks run here, in worker processes or on
a Dask cluster.

A task is one (method, point) pair: a random start of `hil sweep starts`, or a (learning rate, β)
point of `hil sweep grid`. It carries the complete resolved config, so a worker needs nothing but
this module; it opens its own backend, so a task's result does not depend on where or after what
it ran. A solver failure ends that task's training and is returned as a counted failure, never
skipped; any other error stops the sweep.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from hil import config, eqprop, train
from hil.backends import open_backend
from hil.interface import BackendError
from hil.train import Interrupted

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Task:
    method: str
    index: int  # row of this task in its method's datasets
    experiment: config.Experiment  # the resolved config this task trains


@dataclass
class TaskResult:
    method: str
    index: int
    error_db: np.ndarray  # [epochs]; NaN after a solver failure
    accuracy: np.ndarray  # [epochs]
    initial_conductances: np.ndarray
    final_conductances: np.ndarray  # at the last finished epoch
    failure: str  # "" when training finished
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ tasks
def start_seed(formula: str, base: int, n: int) -> int:
    """The conductance seed of start n."""
    if formula == "n+3n^2+5":
        return n + 3 * n * n + 5
    if formula == "seed+n":
        return base + n
    raise ValueError(f"unknown seed formula {formula!r}: use one of {', '.join(config.SEED_FORMULAS)}")


def sweep_methods(experiment: config.Experiment, methods: Sequence[str] | None) -> list[str]:
    """--methods, else [sweep] methods, else the [training] method."""
    return eqprop.check_methods(
        methods or experiment["sweep"]["methods"] or [experiment["training"]["method"]]
    )


def learning_rate(experiment: config.Experiment, method: str) -> float:
    """[sweep] learning_rates[method], else [training] learning_rate."""
    return float(experiment["sweep"]["learning_rates"].get(method, experiment["training"]["learning_rate"]))


def _task(experiment: config.Experiment, method: str, index: int, changes: dict[str, dict[str, Any]]) -> Task:
    values = copy.deepcopy(experiment.values)
    values["training"]["method"] = method
    for section, entries in changes.items():
        values[section].update(entries)
    return Task(method, index, dataclasses.replace(experiment, values=values))


def start_seeds(experiment: config.Experiment, starts: int) -> np.ndarray:
    s = experiment["sweep"]
    base = experiment["conductances"]["seed"]
    return np.array([start_seed(s["seed_formula"], base, n) for n in range(starts)], dtype=np.int64)


def start_tasks(experiment: config.Experiment, methods: Sequence[str], starts: int) -> list[Task]:
    """Every method from the same N starts; start n's draw uses its own seed (see `start_seed`)."""
    if starts < 1:
        raise ValueError(f"--starts {starts} must be at least 1")
    seeds = start_seeds(experiment, starts)
    return [
        _task(
            experiment,
            method,
            n,
            {
                "conductances": {"seed": int(seeds[n])},
                "training": {"seed": int(seeds[n]), "learning_rate": learning_rate(experiment, method)},
            },
        )
        for method in methods
        for n in range(starts)
    ]


def grid_points(learning_rates: Sequence[float], betas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(learning rate, β) of every grid point, learning rate major."""
    for name, values in (("learning rate", learning_rates), ("beta", betas)):
        if not values:
            raise ValueError(f"no {name} values: give a comma-separated list")
        bad = [v for v in values if not (np.isfinite(v) and v > 0)]
        if bad:
            raise ValueError(f"{name} {bad[0]!r} must be a finite number > 0")
    lr, beta = np.meshgrid(np.asarray(learning_rates, float), np.asarray(betas, float), indexing="ij")
    return lr.ravel(), beta.ravel()


def grid_tasks(
    experiment: config.Experiment, methods: Sequence[str], rates: np.ndarray, betas: np.ndarray
) -> list[Task]:
    """One task per method and (learning rate, β), all from the config's own initial conductances."""
    return [
        _task(experiment, method, k, {"training": {"learning_rate": float(r), "beta": float(b)}})
        for method in methods
        for k, (r, b) in enumerate(zip(rates, betas, strict=True))
    ]


# ------------------------------------------------------------------------------------------ one task
def run_task(
    task: Task,
    on_epoch: Callable[[], None] = lambda: None,
    on_sample: Callable[[], None] = lambda: None,
) -> TaskResult:
    """Train one task on a fresh backend. Solver failures are returned; anything else is raised."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    experiment = task.experiment
    hyper = experiment.hyper()
    g0 = experiment.start_conductances()
    records: list[train.EpochRecord] = []

    def epoch_done(record: train.EpochRecord) -> None:
        records.append(record)
        on_epoch()

    started = time.perf_counter()
    backend = open_backend(experiment)
    failure = ""
    try:
        versions = dict(backend.identity().versions)
        train.train(backend, experiment.dataset(), g0, hyper, on_epoch=epoch_done, on_sample=on_sample)
    except BackendError as exc:
        failure = f"epoch {len(records) + 1}: {exc}" if not str(exc).startswith("epoch") else str(exc)
    finally:
        backend.safe_state()
        backend.close()
    error_db = np.full(hyper.epochs, np.nan)
    accuracy = np.full(hyper.epochs, np.nan)
    error_db[: len(records)] = [r.error_db for r in records]
    accuracy[: len(records)] = [r.accuracy for r in records]
    final = records[-1].conductances if records else g0
    return TaskResult(
        task.method,
        task.index,
        error_db,
        accuracy,
        np.asarray(g0, float),
        np.asarray(final, float),
        failure,
        time.perf_counter() - started,
        versions,
    )


# ------------------------------------------------------------------------------------------ running
class WorkerDied(RuntimeError):
    """A worker process ended without handing back its task (killed, out of memory, crashed)."""


def _worker(conn: Connection, parent: int) -> None:
    """A worker process: trains the tasks the parent sends, one at a time, until it sends None.

    The parent owns its workers: Ctrl-C and SIGTERM are the parent's to handle (it stops the
    workers itself), and on Linux the kernel kills a worker whose parent died, even by kill -9."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = "1"
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        return
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent closed its end
            return
        if task is None:
            return
        try:
            reply: tuple[str, Any] = ("result", run_task(task))
        except Exception as exc:  # raised again in the parent, as it would have been in-process
            reply = ("error", _portable(exc))
        conn.send(reply)


@contextlib.contextmanager
def _stop_signals_ignored_by_children() -> Iterator[None]:
    """A worker started in here ignores Ctrl-C and SIGTERM from its first instruction: an ignored
    signal stays ignored through exec, and Python keeps it so, whereas a worker still importing
    (before `_worker` ignores them) would end with a traceback. Here they are held back (blocked,
    so Linux keeps one that arrives pending rather than dropping it) and handled when this ends."""
    stops = (signal.SIGINT, signal.SIGTERM)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    handlers = {s: signal.signal(s, signal.SIG_IGN) for s in stops}
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _portable(exc: Exception) -> Exception:
    """`exc` with its traceback as a note, or a RuntimeError saying it when it does not pickle."""
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.dumps(exc)
    except Exception:
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    exc.add_note(f"in a worker process:\n{text}")
    return exc


def execute(
    tasks: Sequence[Task],
    on_result: Callable[[TaskResult], None],
    stop_requested: Callable[[], bool],
    workers: int = 1,
    dask_address: str | None = None,
    on_epoch: Callable[[], None] = lambda: None,
) -> None:
    """Run `tasks`, handing each result to `on_result` as it arrives (in any order).

    In this process (workers = 1), in `workers` spawned processes, or on the Dask cluster at
    `dask_address`. Raises `Interrupted` once `stop_requested()` is true, after cancelling what
    has not finished; results already handed over stay handed over.
    """
    if not tasks:
        return
    if dask_address is not None:
        _on_dask(tasks, on_result, stop_requested, dask_address)
    elif workers > 1:
        _in_processes(tasks, on_result, stop_requested, workers)
    else:

        def check() -> None:
            if stop_requested():
                raise Interrupted

        for task in tasks:
            check()
            on_result(run_task(task, on_epoch=on_epoch, on_sample=check))


def _in_processes(
    tasks: Sequence[Task],
    on_result: Callable[[TaskResult], None],
    stop_requested: Callable[[], bool],
    workers: int,
) -> None:
    """Each worker gets one task at a time over its own pipe. Whatever way this ends (done, a stop
    request, an error, a worker that died) every worker is gone when it returns: a stop kills
    them (their half-trained tasks are lost anyway), and one that dies ends the sweep with
    `WorkerDied` instead of waiting for a result that will never come."""
    # spawn: each worker starts clean, with its own ngspice and no state inherited from here.
    os.environ["OMP_NUM_THREADS"] = "1"
    context = multiprocessing.get_context("spawn")
    pending = list(reversed(tasks))
    running: dict[Connection, tuple[BaseProcess, Task | None]] = {}
    try:
        for _ in range(min(workers, len(tasks))):
            ours, theirs = context.Pipe()
            started: BaseProcess = context.Process(target=_worker, args=(theirs, os.getpid()), daemon=True)
            with _stop_signals_ignored_by_children():
                started.start()
            theirs.close()
            running[ours] = (started, None)
        for conn in running:
            running[conn] = (running[conn][0], _hand_out(conn, pending))
        while any(task is not None for _, task in running.values()):
            if stop_requested():
                raise Interrupted
            busy = {conn: (process, task) for conn, (process, task) in running.items() if task is not None}
            ready = set(wait([*busy, *(process.sentinel for process, _ in busy.values())], POLL_SECONDS))
            for conn, (process, task) in busy.items():
                if conn in ready:
                    try:
                        kind, value = conn.recv()
                    except (EOFError, OSError):
                        kind, value = "died", None
                elif process.sentinel in ready:
                    kind, value = "died", None
                else:
                    continue
                if kind == "error":
                    raise value
                if kind == "result":
                    on_result(value)
                    running[conn] = (process, _hand_out(conn, pending))
                    continue
                process.join(1.0)
                if stop_requested():
                    raise Interrupted  # a signal to the whole process group reached it first
                raise WorkerDied(
                    f"worker process {process.pid} died ({_how(process.exitcode)}) while training "
                    f"{task.method} #{task.index}: the finished tasks are kept; run the same command "
                    "again to resume"
                )
    finally:
        _stop_workers(running)


def _hand_out(conn: Connection, pending: list[Task]) -> Task | None:
    """Send the next task to a worker (None when there is none: it then exits)."""
    task = pending.pop() if pending else None
    try:
        conn.send(task)
    except OSError:
        pass  # it died: its sentinel says so
    return task


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


def _stop_workers(running: dict[Connection, tuple[BaseProcess, Task | None]]) -> None:
    """Kill every worker still running and wait for each: none outlives the sweep."""
    for conn, (process, task) in running.items():
        if process.is_alive() and task is not None:
            process.kill()  # busy: its task cannot be saved
        conn.close()  # an idle worker reads EOF and exits
    for process, _ in running.values():
        process.join(5.0)
        if process.is_alive():
            process.kill()
            process.join()


def connect_dask(address: str) -> Any:
    """A client of the Dask scheduler at `address`; a ValueError (one line) when it is not there."""
    from dask.distributed import Client

    try:
        return Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ValueError(
            f"cannot reach a Dask scheduler at {address!r} ({' '.join(str(exc).split())[:120]}): "
            "start one (`dask scheduler`) or fix --dask"
        ) from exc


def _on_dask(
    tasks: Sequence[Task],
    on_result: Callable[[TaskResult], None],
    stop_requested: Callable[[], bool],
    address: str,
) -> None:
    from dask.distributed import as_completed

    client = connect_dask(address)
    try:
        futures = client.map(run_task, list(tasks), pure=False)
        arriving = as_completed(futures, loop=client.loop)
        while not arriving.is_empty():
            if stop_requested():
                client.cancel(futures)
                raise Interrupted
            batch = arriving.next_batch(block=False)
            if not batch:
                time.sleep(POLL_SECONDS / 4)
            for future in batch:
                on_result(future.result())
    finally:
        client.close()
