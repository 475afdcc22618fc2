"""Open the backend a config names: ngspice, the numerical twin, or a bench (real or virtual)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hil.config import Experiment
from hil.interface import Backend
from hil.network import Network
from sim.netlist import SimulatorOptions


def open_backend(
    name: str,
    network: Network,
    settings: dict[str, Any],
    method: str = "vdm-centered",
    inputs: np.ndarray | None = None,
) -> Backend:
    """`settings` is the config's [backend] table. A bench checks `method` and the source levels
    that `inputs` call for against its limits before it touches any instrument."""
    gmin = float(settings.get("gmin", 1e-12))
    if name == "numeric":
        from sim.twin import TwinBackend

        return TwinBackend(network, gmin=gmin)
    if name == "spice":
        from sim.spice import SpiceBackend

        options = SimulatorOptions(
            float(settings.get("reltol", 1e-9)),
            float(settings.get("vntol", 1e-12)),
            float(settings.get("abstol", 1e-15)),
            gmin,
        )
        return SpiceBackend(network, options)
    if name == "bench":
        from drivers import bench, benchconfig

        if not settings.get("bench"):
            raise ValueError("backend 'bench' needs a bench config: run `hil train` on the bench's .toml")
        config = benchconfig.read(settings["bench"])
        levels = np.zeros((0, network.n_inputs)) if inputs is None else inputs
        return bench.open_bench(config, network, method, levels)
    raise ValueError(f"unknown backend {name!r}: use 'spice', 'numeric' or a bench config")


def open_experiment(experiment: Experiment, method: str | None = None) -> Backend:
    """The backend an experiment config names, told the method and the data set's inputs."""
    hyper = experiment.hyper()
    return open_backend(
        experiment["backend"]["name"],
        experiment.network(),
        experiment["backend"],
        method or hyper.method,
        experiment.dataset().inputs,
    )
