"""The HDF5 sweep file: one file per sweep, written by the parent as tasks finish.

Layout (format "eqprop-hil-sweep", version 1):
  attrs     the shared header (`hil.runlog.write_header`), kind ("starts" or "grid"),
            methods (JSON list), epochs, success_db, status
  /network  as in a run log
  /points   starts: start, seed; grid: alpha (NaN when given as learning rates), learning_rate, beta
  /<method> error_db [points, epochs] (NaN after a solver failure), accuracy [points, epochs],
            final_error_db, success, done, failed, failure (message), seconds [points],
            initial_conductances, final_conductances [points, edges]
A task's row is written and flushed as soon as it arrives, so an interrupted sweep keeps every
finished task; opening the same sweep again resumes it (the rows not `done`), and a starts
sweep may grow (more starts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hil import runlog
from hil.interface import Identity
from hil.network import Network
from hil.studies.sweep import TaskResult

FORMAT = "eqprop-hil-sweep"
FORMAT_VERSION = 1
KINDS = ("starts", "grid")
_PER_POINT = ("final_error_db", "seconds")


@dataclass(frozen=True)
class Plan:
    """What a sweep is: compared with an existing file before resuming it."""

    kind: str
    config_toml: str
    backend: str
    methods: list[str]
    epochs: int
    success_db: float
    points: dict[str, np.ndarray]  # equal-length columns, one row per point


def _differences(f: h5py.File, plan: Plan) -> list[str]:
    """What makes an existing file another sweep than `plan` ([] when it can be resumed)."""
    if f.attrs.get("format") != FORMAT:
        return ["it is not a sweep file"]
    diff = []
    for name, want in (
        ("kind", plan.kind),
        ("config_toml", plan.config_toml),
        ("backend", plan.backend),
        ("methods", json.dumps(plan.methods)),
    ):
        if f.attrs.get(name) != want:
            diff.append("config" if name == "config_toml" else name)
    stored = {k: f["points"][k][:] for k in f["points"]}
    if set(stored) != set(plan.points):
        diff.append("points")
    else:
        rows = min(len(next(iter(stored.values()))), len(next(iter(plan.points.values()))))
        same = all(np.array_equal(stored[k][:rows], plan.points[k][:rows], equal_nan=True) for k in stored)
        grows_only = plan.kind == "starts" or all(len(stored[k]) == len(plan.points[k]) for k in stored)
        if not (same and grows_only):
            diff.append("grid points" if plan.kind == "grid" else "start seeds")
    return diff


class SweepFile:
    """Open (create, resume or replace) a sweep file; `write` stores one task's result."""

    def __init__(self, path: Path, plan: Plan, network: Network, force: bool = False) -> None:
        self.path = path
        self.plan = plan
        if path.exists() and not force:
            try:
                with h5py.File(path, "r") as f:
                    diff = _differences(f, plan)
            except OSError as exc:
                raise FileExistsError(
                    f"{path} exists and is not an HDF5 sweep file ({exc.__class__.__name__}): "
                    "choose another --out or pass --force to replace it"
                ) from exc
            if diff:
                raise FileExistsError(
                    f"sweep file {path} holds another sweep (different {', '.join(diff)}): "
                    "choose another --out or pass --force to replace it"
                )
            self._file = h5py.File(path, "a")
            self._grow()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = h5py.File(path, "w")
            self._create(network)
        self._file.attrs["status"] = "running"
        self._file.flush()

    # ------------------------------------------------------------------ layout
    def _create(self, network: Network) -> None:
        f, plan = self._file, self.plan
        # Workers open their own backends: the versions they report arrive with their results.
        runlog.write_header(f, FORMAT, FORMAT_VERSION, plan.config_toml, Identity(plan.backend, "sweep"))
        f.attrs["kind"] = plan.kind
        f.attrs["methods"] = json.dumps(plan.methods)
        f.attrs["epochs"] = plan.epochs
        f.attrs["success_db"] = plan.success_db
        runlog.write_network(f, network)
        points = f.create_group("points")
        for name, column in plan.points.items():
            points.create_dataset(name, data=column, maxshape=(None,))
        n, e, edges = self.rows, plan.epochs, len(network.conductances)
        for method in plan.methods:
            g = f.create_group(method)
            for name in ("error_db", "accuracy"):
                g.create_dataset(name, shape=(n, e), maxshape=(None, e), dtype="f8", fillvalue=np.nan)
            for name in _PER_POINT:
                g.create_dataset(name, shape=(n,), maxshape=(None,), dtype="f8", fillvalue=np.nan)
            for name in ("success", "done", "failed"):
                g.create_dataset(name, shape=(n,), maxshape=(None,), dtype=bool)
            g.create_dataset("failure", shape=(n,), maxshape=(None,), dtype=h5py.string_dtype())
            for name in ("initial_conductances", "final_conductances"):
                g.create_dataset(name, shape=(n, edges), maxshape=(None, edges), dtype="f8", fillvalue=np.nan)

    def _grow(self) -> None:
        """More starts than the file holds: extend every column, keep every finished row."""
        f = self._file
        n = self.rows
        if n <= len(f["points"][next(iter(f["points"]))]):
            return
        for name, column in self.plan.points.items():
            f["points"][name].resize((n,))
            f["points"][name][:] = column
        for method in self.plan.methods:
            for d in f[method].values():
                d.resize((n, *d.shape[1:]))

    @property
    def rows(self) -> int:
        return len(next(iter(self.plan.points.values())))

    def done(self, method: str) -> np.ndarray:
        """Which rows of `method` are finished (within the planned rows)."""
        return self._file[method]["done"][: self.rows]

    # ------------------------------------------------------------------ writing
    def write(self, result: TaskResult) -> None:
        g = self._file[result.method]
        i = result.index
        g["error_db"][i] = result.error_db
        g["accuracy"][i] = result.accuracy
        g["initial_conductances"][i] = result.initial_conductances
        g["final_conductances"][i] = result.final_conductances
        final = float(result.error_db[-1])
        g["final_error_db"][i] = final
        g["seconds"][i] = result.seconds
        g["failed"][i] = bool(result.failure)
        g["failure"][i] = result.failure
        g["success"][i] = not result.failure and final <= self.plan.success_db
        g["done"][i] = True
        if result.versions:
            self._file.attrs["versions"] = json.dumps(runlog.versions(result.versions))
        self._file.flush()

    def close(self, status: str) -> None:
        if self._file.id.valid:
            self._file.attrs["status"] = status
            self._file.close()


# ------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class MethodResults:
    method: str
    error_db: np.ndarray  # [points, epochs]
    final_error_db: np.ndarray
    success: np.ndarray
    done: np.ndarray
    failed: np.ndarray
    failure: list[str]
    initial_conductances: np.ndarray
    final_conductances: np.ndarray


@dataclass(frozen=True)
class Sweep:
    path: Path
    kind: str
    backend: str
    status: str
    epochs: int
    success_db: float
    config_toml: str
    edge_names: list[str]
    layers: np.ndarray
    points: dict[str, np.ndarray]
    methods: dict[str, MethodResults]


def read(path: Path) -> Sweep:
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not a sweep file (format {f.attrs.get('format')!r})")
        methods = {}
        for m in json.loads(f.attrs["methods"]):
            g = f[m]
            methods[m] = MethodResults(
                m,
                g["error_db"][:],
                g["final_error_db"][:],
                g["success"][:],
                g["done"][:],
                g["failed"][:],
                [s.decode() if isinstance(s, bytes) else str(s) for s in g["failure"][:]],
                g["initial_conductances"][:],
                g["final_conductances"][:],
            )
        return Sweep(
            path,
            str(f.attrs["kind"]),
            str(f.attrs["backend"]),
            str(f.attrs.get("status", "")),
            int(f.attrs["epochs"]),
            float(f.attrs["success_db"]),
            str(f.attrs["config_toml"]),
            [s.decode() for s in f["network/edge_names"][:]],
            f["network/layers"][:],
            {k: f["points"][k][:] for k in f["points"]},
            methods,
        )


@dataclass(frozen=True)
class Summary:
    """One method of a sweep, in numbers a reviewer can check."""

    method: str
    done: int
    successes: int
    failures: int  # solver failures, counted (their final error is NaN)
    final_median: float  # over the tasks that finished training
    final_low: float
    final_high: float
    epochs_to_threshold: float  # median over the successes; NaN if none

    def line(self, success_db: float) -> str:
        rate = self.successes / self.done if self.done else float("nan")
        reach = "never" if np.isnan(self.epochs_to_threshold) else f"{self.epochs_to_threshold:.0f}"
        return (
            f"{self.method:>12s}: {self.successes}/{self.done} reach {success_db:g} dB ({rate:.0%}); "
            f"final error median {self.final_median:+.2f} dB, range {self.final_low:+.2f} … "
            f"{self.final_high:+.2f} dB; median epochs to {success_db:g} dB "
            f"{reach}; solver failures {self.failures}"
        )


def epochs_to_threshold(error_db: np.ndarray, threshold: float) -> np.ndarray:
    """Per row, the first epoch (1-based) at or below `threshold`; NaN if never."""
    below = error_db <= threshold
    first = np.argmax(below, axis=1) + 1.0
    return np.where(below.any(axis=1), first, np.nan)


def summarise(sweep: Sweep) -> list[Summary]:
    out = []
    for m, r in sweep.methods.items():
        finished = r.done & ~r.failed
        finals = r.final_error_db[finished]
        reach = epochs_to_threshold(r.error_db[r.success], sweep.success_db)

        def stat(values: np.ndarray, f: Callable[[np.ndarray], Any]) -> float:
            return float(f(values)) if len(values) else float("nan")

        out.append(
            Summary(
                m,
                int(r.done.sum()),
                int(r.success.sum()),
                int((r.done & r.failed).sum()),
                stat(finals, np.median),
                stat(finals, np.min),
                stat(finals, np.max),
                stat(reach, np.median),
            )
        )
    return out
