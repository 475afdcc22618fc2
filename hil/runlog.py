"""The HDF5 run log: one file per training run, written as it goes and flushed every epoch.

Layout (format "eqprop-hil-run", version 1):
  attrs     format, format_version, config_toml, backend, created, versions (JSON),
            instruments (JSON list; empty in simulation)
  /network  edge_names, endpoints [edges, 2], layers, g_min, g_max (attrs: name)
  /epochs   loss, error_db, accuracy, update_norm (one row per epoch),
            sample_loss [epochs, samples], conductances [epochs + 1, edges] (row 0 = initial)
The file is opened in SWMR mode, so it can be read while training writes it. On close, the
attribute `status` says how the run ended ("completed", "interrupted", or the error).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from hil import __version__
from hil.interface import Identity
from hil.network import Network
from hil.train import EpochRecord

FORMAT = "eqprop-hil-run"
FORMAT_VERSION = 1


def versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    found = {
        "eqprop-hil": __version__,
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


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    """Checked before anything runs, so a refused run leaves no trace."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"run log {path} exists: choose another --out or pass --force to replace it")


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
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["config_toml"] = config_toml
        f.attrs["backend"] = identity.kind
        f.attrs["backend_description"] = identity.description
        f.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        f.attrs["versions"] = json.dumps(versions(identity.versions))
        f.attrs["instruments"] = json.dumps(identity.instruments)
        net = f.create_group("network")
        net.attrs["name"] = network.name
        net["edge_names"] = np.array(network.edge_names, dtype=h5py.string_dtype())
        net["endpoints"] = np.array([[g.a, g.b] for g in network.conductances], dtype=h5py.string_dtype())
        net["layers"] = network.layers
        net["g_min"] = g_min
        net["g_max"] = g_max
        ep = f.create_group("epochs")
        n = len(network.conductances)
        for name in ("loss", "error_db", "accuracy", "update_norm"):
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
        for name, value in (
            ("loss", record.loss),
            ("error_db", record.error_db),
            ("accuracy", record.accuracy),
            ("update_norm", record.update_norm),
        ):
            ep[name].resize((row + 1,))
            ep[name][row] = value
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
