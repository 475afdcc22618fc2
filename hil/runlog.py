"""The HDF5 run log: one file per training run, committed after every epoch.

Layout (format "eqprop-hil-run", version 1):
  attrs       format, format_version, config_toml, backend, backend_description, created,
              versions (JSON), instruments (JSON list; empty in simulation), bench_toml (the bench
              config's tables on a bench, else ""), status ("running", "completed", "interrupted",
              "failed: <reason>")
  /network    edge_names, endpoints [edges, 2], layers, g_min, g_max (attrs: name)
  /epochs     loss, error_db, accuracy, update_norm, pruned (edges open at the epoch's end; one
              row per epoch), sample_loss [epochs, samples], conductances [epochs + 1, edges]
              (row 0 = initial; a pruned edge is 0)
  /result     mask [edges]: 1 where the edge was pruned (an open switch) at the last epoch
              confusion: the test samples' answers counted after the last epoch, [classes,
              classes] (row the true class, column the answer) or for a truth table [outputs,
              2, 2] (per output, true bit and answered bit); attrs classes, outputs, axes, epoch
              /epochs/accuracy is on the training samples, /epochs/test_accuracy on the test
              samples (a truth table's test samples are its own rows)
  /checkpoint where the training stands (`hil.train.Progress`: epoch, position, full-precision and
              realised conductances, shuffling state, the pruning mask and its generator's state),
              /checkpoint/optimiser (the optimiser's state: momentum, Adam's moments) and
              /checkpoint/solver, what the backend's solver remembered: `hil train --resume`
              continues from it bit for bit

Crash-safe by construction: each commit writes the whole log next to it (`.RUN.h5.<pid>.tmp`),
makes it durable and renames it over the log, so the file is always a complete log that opens
normally, whatever killed the writer and when; readers never wait for the writer. The writer holds
`RUN.h5.lock` (flock, with its pid and command) for the whole run: a second writer, or `--force`
on a live log, is refused with who holds it. A log whose status says "running" while nobody holds
its lock was left by a writer that died; `read` says so.

Every file hil writes (run logs, sweep files, gradient-quality files) starts with the same
header (`write_header`) and describes its network the same way (`write_network`).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from hil.datasets import Confusion
from hil.interface import Identity
from hil.network import Network
from hil.train import EpochRecord, Progress

FORMAT = "eqprop-hil-run"
FORMAT_VERSION = 1
DURABLE_SECONDS = 10.0  # the longest stretch of a run a power cut may cost
EPOCH_SERIES = ("loss", "error_db", "accuracy", "test_accuracy", "update_norm", "pruned")


def versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    found = {
        "eqprop-hil": metadata.version("eqprop-hil"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
    }
    try:
        found["PySpice"] = metadata.version("PySpice")
    except metadata.PackageNotFoundError:
        found["PySpice"] = "not installed"
    found["ngspice"] = "not used by this backend"
    found.update(extra or {})
    return found


def write_header(
    f: h5py.File, format: str, format_version: int, config_toml: str, identity: Identity
) -> None:
    """What every file hil writes begins with: what it is, the config, the backend and versions."""
    f.attrs["format"] = format
    f.attrs["format_version"] = format_version
    f.attrs["config_toml"] = config_toml
    f.attrs["backend"] = identity.kind
    f.attrs["backend_description"] = identity.description
    f.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    f.attrs["versions"] = json.dumps(versions(identity.versions))
    f.attrs["instruments"] = json.dumps(identity.instruments)
    # Every setting as the instruments answered it once configured: the data's own snapshot.
    f.attrs["settings"] = json.dumps(identity.settings)


def write_network(f: h5py.File, network: Network) -> h5py.Group:
    """/network: the edges every per-edge dataset of the file is indexed by."""
    net = f.create_group("network")
    net.attrs["name"] = network.name
    net["edge_names"] = np.array(network.edge_names, dtype=h5py.string_dtype())
    net["endpoints"] = np.array([[g.a, g.b] for g in network.conductances], dtype=h5py.string_dtype())
    net["layers"] = network.layers
    return net


class LogBusy(FileExistsError):
    """Another process is writing this run log."""


class Lock:
    """The writer's exclusive claim on a run log: `RUN.h5.lock`, flock'ed for the whole run and
    holding who took it. The kernel drops the claim when the process dies, even by kill -9."""

    def __init__(self, log: Path) -> None:
        self.path = log.with_name(log.name + ".lock")
        self._fd: int | None = None

    def holder(self) -> str | None:
        """Who holds the claim (pid, host, command, since), or None when nobody does."""
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.path.read_text().strip() or "another process"
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LogBusy(
                f"{self.path.with_suffix('')} is being written by {self.holder() or 'another process'}: "
                "wait for that run, or stop it"
            ) from None
        os.ftruncate(fd, 0)
        since = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        os.write(
            fd, f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)}), since {since}".encode()
        )
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def refuse_overwrite(path: Path, overwrite: bool, option: str = "--out") -> None:
    """Checked before anything runs, so a refused run leaves no trace. A log another process is
    writing is refused even with --force."""
    holder = Lock(path).holder()
    if holder is not None:
        raise LogBusy(f"{path} is being written by {holder}: choose another {option}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: choose another {option} or pass --force to replace it")


def claim_new(folder: Path, stem: str) -> tuple[Path, Lock]:
    """A new log name, `folder/stem-YYYYmmdd-HHMMSS.h5` (-2, -3, ... when taken), claimed for this
    process: two runs started in the same second get different logs."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        path = folder / f"{stem}-{stamp}{'' if n == 1 else f'-{n}'}.h5"
        if path.exists():
            continue
        lock = Lock(path)
        try:
            lock.acquire()
        except LogBusy:
            continue
        if path.exists():  # another run claimed, wrote and released it in between
            lock.release()
            continue
        return path, lock
    raise FileExistsError(f"no free run-log name for {stem} in {folder}: give --out")


@dataclass
class Checkpoint:
    """What a run log holds to continue its training: the trainer's progress and what the
    backend's solver remembered."""

    progress: Progress
    solver_state: dict[str, np.ndarray]


def _merge_record(group: h5py.Group, record: dict[str, float]) -> None:
    """A resumed run's record joins the one its earlier sessions wrote: counts add up (`settles`),
    largest values keep the larger."""
    for name, value in record.items():
        if name in group.attrs:
            old = float(group.attrs[name])
            value = old + value if name == "settles" else max(old, value)
        group.attrs[name] = float(value)


class RunLog:
    """Writes one run log. Every commit (each epoch's rows with a checkpoint, and the final status)
    writes the log afresh next to it and renames it into place: the file on disk is always a
    whole log, readable at any moment, and a kill at any point leaves the last commit intact."""

    def __init__(self, path: Path, lock: Lock) -> None:
        self.path = path
        self._lock = lock
        self._rows: list[EpochRecord] = []
        self._config_toml: str | None = None  # a changed config, written with the next commit
        self._synced = time.monotonic()  # when a commit last reached the disk

    @classmethod
    def create(
        cls,
        path: Path,
        config_toml: str,
        identity: Identity,
        network: Network,
        g_min: float,
        g_max: float,
        initial: np.ndarray,
        n_samples: int,
        bench_toml: str = "",
        lock: Lock | None = None,
    ) -> RunLog:
        """A new log at `path`, under `lock` when the caller already claimed it (`claim_new`)."""
        if lock is None:
            lock = Lock(path)
            lock.acquire()
        log = cls(path, lock)
        try:
            log._commit(
                lambda f: _layout(
                    f, config_toml, identity, network, g_min, g_max, initial, n_samples, bench_toml
                ),
                fresh=True,
            )
        except BaseException:
            lock.release()
            raise
        return log

    @classmethod
    def resume(cls, path: Path) -> tuple[RunLog, Checkpoint]:
        """Claim a run log written before (by a run that stopped) and read its checkpoint."""
        lock = Lock(path)
        lock.acquire()
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a commit cut short by a kill
            stale.unlink()
        try:
            checkpoint = read_checkpoint(path)
        except BaseException:
            lock.release()
            raise
        return cls(path, lock), checkpoint

    def extend(self, config_toml: str) -> None:
        """The run goes on for more epochs than its config said (`--resume --epochs N`)."""
        self._config_toml = config_toml

    def epoch(self, record: EpochRecord) -> None:
        """Rows wait in memory for the commit that follows every epoch (`checkpoint`)."""
        self._rows.append(record)

    def checkpoint(self, progress: Progress, solver_state: dict[str, np.ndarray]) -> None:
        def write(f: h5py.File) -> None:
            self._write_rows(f)
            _write_checkpoint(f, Checkpoint(progress, solver_state))
            # A rewritten string attribute leaves its old copy behind in the file: write on change only.
            if f.attrs.get("status") != "running":
                f.attrs["status"] = "running"

        self._commit(write)
        self._rows = []

    def close(self, status: str = "completed", record: dict[str, float] | None = None) -> None:
        """Write how the run ended (and any rows not yet committed) and the backend's run record
        (`hil.interface.run_record`) as attributes of `/bench/record`; release the log."""
        try:
            if self.path.exists():

                def write(f: h5py.File) -> None:
                    self._write_rows(f)
                    if record:
                        _merge_record(f.require_group("bench").require_group("record"), record)
                    f.attrs["status"] = status

                self._commit(write, durable=True)
        finally:
            self._lock.release()

    def _write_rows(self, f: h5py.File) -> None:
        if self._config_toml is not None:
            f.attrs["config_toml"] = self._config_toml
            self._config_toml = None
        ep = f["epochs"]
        for record in self._rows:
            row = len(ep["loss"])
            for name in EPOCH_SERIES:
                if name not in ep:  # a log begun before the series existed: its earlier rows are unknown
                    ep.create_dataset(name, data=np.full(row, np.nan), maxshape=(None,), chunks=(256,))
                ep[name].resize((row + 1,))
                ep[name][row] = getattr(record, name)
            ep["sample_loss"].resize((row + 1, ep["sample_loss"].shape[1]))
            ep["sample_loss"][row] = record.sample_losses
            ep["conductances"].resize((row + 2, ep["conductances"].shape[1]))
            ep["conductances"][row + 1] = record.conductances
        confusions = [r.confusion for r in self._rows if r.confusion is not None]
        if confusions:
            _write_confusion(f, confusions[-1], self._rows[-1].epoch)
        if self._rows and self._rows[-1].mask is not None:
            _put(f.require_group("result"), "mask", self._rows[-1].mask.astype(float))

    def _commit(self, write: Callable[[h5py.File], None], fresh: bool = False, durable: bool = False) -> None:
        """Copy, change the copy, rename it over the log. The rename alone makes the commit survive
        the writer being killed; reaching the disk (fsync, tens of ms on a busy disk: most of an
        epoch of a small network) is done at the start, at the end and every DURABLE_SECONDS, so
        a power cut costs at most that much of the run."""
        durable = durable or fresh or time.monotonic() - self._synced >= DURABLE_SECONDS
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            if not fresh:
                shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "w" if fresh else "a") as f:
                write(f)
            if durable:
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self._synced = time.monotonic()


def _layout(
    f: h5py.File,
    config_toml: str,
    identity: Identity,
    network: Network,
    g_min: float,
    g_max: float,
    initial: np.ndarray,
    n_samples: int,
    bench_toml: str,
) -> None:
    write_header(f, FORMAT, FORMAT_VERSION, config_toml, identity)
    f.attrs["bench_toml"] = bench_toml
    f.attrs["status"] = "running"
    net = write_network(f, network)
    net["g_min"] = g_min
    net["g_max"] = g_max
    ep = f.create_group("epochs")
    n = len(network.conductances)
    for name in EPOCH_SERIES:
        ep.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
    ep.create_dataset(
        "sample_loss", shape=(0, n_samples), maxshape=(None, n_samples), dtype="f8", chunks=(64, n_samples)
    )
    ep.create_dataset(
        "conductances", data=np.asarray(initial, float)[None, :], maxshape=(None, n), chunks=(64, n)
    )


def _write_confusion(f: h5py.File, confusion: Confusion, epoch: int) -> None:
    """/result/confusion: the test set's counts after the last epoch committed."""
    group = f.require_group("result")
    counts = group.get("confusion")
    if counts is not None and counts.shape == confusion.counts.shape:
        # In place: rewriting its string attributes every epoch would leave their old copies behind.
        counts[...] = confusion.counts
        counts.attrs["epoch"] = epoch
        return
    if counts is not None:
        del group["confusion"]
    counts = group.create_dataset("confusion", data=confusion.counts)
    counts.attrs["epoch"] = epoch
    counts.attrs["classes"] = np.array(confusion.classes, dtype=h5py.string_dtype())
    counts.attrs["outputs"] = np.array(confusion.outputs, dtype=h5py.string_dtype())
    counts.attrs["axes"] = (
        "output, true bit, answered bit" if confusion.outputs else "true class, answered class"
    )


def _read_confusion(f: h5py.File) -> Confusion | None:
    if "result/confusion" not in f:
        return None
    counts = f["result/confusion"]

    def names(key: str) -> tuple[str, ...]:
        return tuple(s.decode() if isinstance(s, bytes) else str(s) for s in counts.attrs[key])

    return Confusion(counts[...], names("classes"), names("outputs"))


def _put(group: h5py.Group, name: str, value: np.ndarray) -> None:
    """Replace a dataset of the checkpoint in place (its shape may change between commits)."""
    value = np.asarray(value, dtype=float)
    if name in group and group[name].ndim == value.ndim:
        group[name].resize(value.shape)
        group[name][...] = value
        return
    if name in group:
        del group[name]
    group.create_dataset(name, data=value, maxshape=(None,) * value.ndim, chunks=True)


def _write_checkpoint(f: h5py.File, checkpoint: Checkpoint) -> None:
    p = checkpoint.progress
    group = f.require_group("checkpoint")
    group.attrs["epoch"] = p.epoch
    group.attrs["position"] = p.position
    # Fixed-length bytes: rewritten every commit, and unlike a str attribute it is replaced in place.
    group.attrs["rng_state"] = np.bytes_(json.dumps(p.rng_state))
    _put(group, "conductances", p.conductances)
    _put(group, "realised", p.realised)
    _put(group, "sample_losses", p.sample_losses)
    _put(group, "norms", np.array(p.norms, dtype=float))
    _put(group, "mask", p.mask.astype(float))
    group.attrs["prune_rng_state"] = np.bytes_(json.dumps(p.prune_rng_state))
    optimiser = group.require_group("optimiser")
    for name in set(optimiser) - set(p.optimiser_state):
        del optimiser[name]
    for name, value in p.optimiser_state.items():
        _put(optimiser, name, value)
    solver = group.require_group("solver")
    for name in set(solver) - set(checkpoint.solver_state):
        del solver[name]
    for name, value in checkpoint.solver_state.items():
        _put(solver, name, value)


def read_checkpoint(path: Path) -> Checkpoint:
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a run log (format {f.attrs.get('format')!r}): give a hil train log"
            )
        if "checkpoint" not in f:
            raise ValueError(
                f"{path} has no checkpoint (it was written before checkpoints existed): start a new run"
            )
        g = f["checkpoint"]
        progress = Progress(
            epoch=int(g.attrs["epoch"]),
            position=int(g.attrs["position"]),
            conductances=g["conductances"][:],
            realised=g["realised"][:],
            rng_state=json.loads(bytes(g.attrs["rng_state"])),
            sample_losses=g["sample_losses"][:],
            norms=[float(x) for x in g["norms"][:]],
            # Checkpoints from before optimisers and pruning: plain SGD, nothing pruned.
            optimiser_state={name: g["optimiser"][name][:] for name in g.get("optimiser", {})},
            mask=g["mask"][:].astype(bool) if "mask" in g else np.zeros(0, dtype=bool),
            prune_rng_state=(
                json.loads(bytes(g.attrs["prune_rng_state"])) if "prune_rng_state" in g.attrs else {}
            ),
        )
        return Checkpoint(progress, {name: g["solver"][name][:] for name in g["solver"]})


# ---------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Run:
    """A run log read back as arrays (`read`)."""

    path: Path
    status: str  # "running" while its writer runs
    backend: str
    config_toml: str
    bench_toml: str  # the bench config's tables when it ran on a bench, else ""
    edge_names: list[str]
    layers: np.ndarray  # [edges]
    loss: np.ndarray  # [epochs]
    error_db: np.ndarray
    accuracy: np.ndarray
    update_norm: np.ndarray
    sample_loss: np.ndarray  # [epochs, samples]
    conductances: np.ndarray  # [epochs + 1, edges], row 0 the initial ones
    pruned: np.ndarray  # [epochs], edges open at each epoch's end (NaN: not recorded)
    mask: np.ndarray  # [edges], True where pruned at the last epoch
    test_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [epochs] (NaN: not recorded)
    confusion: Confusion | None = None  # the test samples' after the last epoch committed

    @property
    def epochs(self) -> int:
        return len(self.loss)


def read(path: str | Path) -> Run:
    """Read a run log, also while a training is writing it (it is replaced whole at each commit)."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a run log (format {f.attrs.get('format')!r}): give a hil train log"
            )
        ep = f["epochs"]
        n = len(ep["loss"])
        status = str(f.attrs.get("status", "running"))
        if status == "running" and Lock(path).holder() is None:
            status = "stopped without closing its log (killed?): `hil train --resume` continues it"
        return Run(
            path=path,
            status=status,
            backend=str(f.attrs["backend"]),
            config_toml=str(f.attrs["config_toml"]),
            bench_toml=str(f.attrs.get("bench_toml", "")),
            edge_names=[s.decode() for s in f["network/edge_names"][:]],
            layers=f["network/layers"][:],
            loss=ep["loss"][:n],
            error_db=ep["error_db"][:n],
            accuracy=ep["accuracy"][:n],
            update_norm=ep["update_norm"][:n],
            sample_loss=ep["sample_loss"][:n],
            conductances=ep["conductances"][: n + 1],
            pruned=ep["pruned"][:n] if "pruned" in ep else np.full(n, np.nan),
            mask=(
                f["result/mask"][:].astype(bool)
                if "result/mask" in f
                else np.zeros(len(f["network/edge_names"]), dtype=bool)
            ),
            test_accuracy=ep["test_accuracy"][:n] if "test_accuracy" in ep else np.full(n, np.nan),
            confusion=_read_confusion(f),
        )
