"""The HDF5 run log: one file per training run, written as it goes and flushed every epoch.

Layout (format "eqprop-hil-run", version 1):
  attrs     format, format_version, config_toml, backend, backend_description, created,
            versions (JSON), instruments (JSON list; empty in simulation), status (on close)
  /network  edge_names, endpoints [edges, 2], layers, g_min, g_max (attrs: name)
  /epochs   loss, error_db, accuracy, update_norm (one row per epoch),
            sample_loss [epochs, samples], conductances [epochs + 1, edges] (row 0 = initial)
The file is opened in SWMR mode, so it can be read while training writes it. On close, the
attribute `status` says how the run ended ("completed", "interrupted", or the error).

Every file hil writes (run logs, sweep files, gradient-quality files) starts with the same
header (`write_header`) and describes its network the same way (`write_network`).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from hil.interface import Identity
from hil.network import Network
from hil.train import EpochRecord

FORMAT = "eqprop-hil-run"
FORMAT_VERSION = 1
EPOCH_SERIES = ("loss", "error_db", "accuracy", "update_norm")


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


def write_network(f: h5py.File, network: Network) -> h5py.Group:
    """/network: the edges every per-edge dataset of the file is indexed by."""
    net = f.create_group("network")
    net.attrs["name"] = network.name
    net["edge_names"] = np.array(network.edge_names, dtype=h5py.string_dtype())
    net["endpoints"] = np.array([[g.a, g.b] for g in network.conductances], dtype=h5py.string_dtype())
    net["layers"] = network.layers
    return net


def refuse_overwrite(path: Path, overwrite: bool, option: str = "--out") -> None:
    """Checked before anything runs, so a refused run leaves no trace."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: choose another {option} or pass --force to replace it")


class RunLog:
    def __init__(
        self,
        path: Path,
        config_toml: str,
        identity: Identity,
        network: Network,
        g_min: float,
        g_max: float,
        initial: np.ndarray,
        n_samples: int,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        f = h5py.File(path, "w", libver="latest")
        self._file = f
        write_header(f, FORMAT, FORMAT_VERSION, config_toml, identity)
        net = write_network(f, network)
        net["g_min"] = g_min
        net["g_max"] = g_max
        ep = f.create_group("epochs")
        n = len(network.conductances)
        for name in EPOCH_SERIES:
            ep.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
        ep.create_dataset(
            "sample_loss",
            shape=(0, n_samples),
            maxshape=(None, n_samples),
            dtype="f8",
            chunks=(64, n_samples),
        )
        ep.create_dataset(
            "conductances", data=np.asarray(initial, float)[None, :], maxshape=(None, n), chunks=(64, n)
        )
        f.swmr_mode = True
        f.flush()

    def epoch(self, record: EpochRecord) -> None:
        ep = self._file["epochs"]
        row = len(ep["loss"])
        for name in EPOCH_SERIES:
            ep[name].resize((row + 1,))
            ep[name][row] = getattr(record, name)
        ep["sample_loss"].resize((row + 1, ep["sample_loss"].shape[1]))
        ep["sample_loss"][row] = record.sample_losses
        ep["conductances"].resize((row + 2, ep["conductances"].shape[1]))
        ep["conductances"][row + 1] = record.conductances
        self._file.flush()

    def close(self, status: str = "completed") -> None:
        if self._file.id.valid:
            self._file.flush()
            self._file.close()
            # SWMR forbids new attributes while writing, so how the run ended is added after.
            with h5py.File(self.path, "a") as f:
                f.attrs["status"] = status


# ---------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Run:
    """A run log read back as arrays (`read`)."""

    path: Path
    status: str  # "running" while the writer has not closed it
    backend: str
    config_toml: str
    edge_names: list[str]
    layers: np.ndarray  # [edges]
    loss: np.ndarray  # [epochs]
    error_db: np.ndarray
    accuracy: np.ndarray
    update_norm: np.ndarray
    sample_loss: np.ndarray  # [epochs, samples]
    conductances: np.ndarray  # [epochs + 1, edges], row 0 the initial ones

    @property
    def epochs(self) -> int:
        return len(self.loss)


def read(path: str | Path) -> Run:
    """Read a run log, also while a training is still writing it (SWMR)."""
    path = Path(path)
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a run log (format {f.attrs.get('format')!r}): give a hil train log"
            )
        ep = f["epochs"]
        # A reader of a live file can see a series one row ahead of another: keep whole epochs.
        n = min(len(ep[name]) for name in (*EPOCH_SERIES, "sample_loss"))
        n = min(n, len(ep["conductances"]) - 1)
        return Run(
            path=path,
            status=str(f.attrs.get("status", "running")),
            backend=str(f.attrs["backend"]),
            config_toml=str(f.attrs["config_toml"]),
            edge_names=[s.decode() for s in f["network/edge_names"][:]],
            layers=f["network/layers"][:],
            loss=ep["loss"][:n],
            error_db=ep["error_db"][:n],
            accuracy=ep["accuracy"][:n],
            update_norm=ep["update_norm"][:n],
            sample_loss=ep["sample_loss"][:n],
            conductances=ep["conductances"][: n + 1],
        )
