"""The one place that opens a backend: ngspice, the numerical twin, or a bench (real or virtual).

Each opener takes an experiment and the method it will serve; they are registered under the
entry-point group `eqprop_hil.backends` (pyproject.toml), which is how `hil.open_backend` finds
them without the method importing the simulators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from drivers import benchconfig
from drivers.bench import Predict, open_bench
from drivers.benchconfig import BenchConfig
from hil.config import ConfigError, Experiment
from hil.interface import Backend
from hil.network import Network
from sim.netlist import SimulatorOptions


def simulator_options(settings: dict[str, Any]) -> SimulatorOptions:
    """ngspice's options from an experiment's [backend] table."""
    return SimulatorOptions(
        float(settings["reltol"]),
        float(settings["vntol"]),
        float(settings["abstol"]),
        float(settings["gmin"]),
    )


def open_spice(experiment: Experiment, method: str = "") -> Backend:
    settings = experiment["backend"]
    return noisy(experiment, lambda network: spice(network, settings))


def open_twin(experiment: Experiment, method: str = "") -> Backend:
    settings = experiment["backend"]
    return noisy(experiment, lambda network: twin(network, settings))


def noisy(experiment: Experiment, open_inner: Callable[[Network], Backend]) -> Backend:
    """The simulator `open_inner` makes, read through the SMU error model `[backend] noise` names
    (seeded by `[training] seed`, so each start of a sweep gets its own instruments' errors); with
    `noise = "none"` the simulator itself, untouched."""
    settings = experiment["backend"]
    name = settings.get("noise", "none")
    if name == "none":
        return open_inner(experiment.network())
    from sim.noise import NoisyBackend, model

    return NoisyBackend(
        experiment.network(),
        open_inner,
        model(name),
        seed=int(experiment["training"]["seed"]),
        nplc=float(settings.get("nplc", 1.0)),
        averages=int(settings.get("averages", 1)),
    )


def spice(network: Network, settings: dict[str, Any]) -> Backend:
    from sim.spice import SpiceBackend

    return SpiceBackend(network, simulator_options(settings))


def twin(network: Network, settings: dict[str, Any]) -> Backend:
    from sim.twin import TwinBackend

    return TwinBackend(network, gmin=float(settings["gmin"]))


def bench_config(experiment: Experiment) -> BenchConfig:
    """The bench config the experiment was loaded through, checked on its own."""
    if experiment.bench is None:
        raise ConfigError(
            f"{experiment.path} is an experiment config, not a bench config: give a bench .toml "
            "(one with a [bench] table naming this experiment)"
        )
    return benchconfig.parse(experiment.bench.path, experiment.bench.tables)


def open_bench_backend(experiment: Experiment, method: str) -> Backend:
    """A bench: checked against the network, the method and every source level the data set
    calls for before any instrument is touched. An emulated bench config starts its virtual bench
    on free local ports and stops it on close."""
    config = bench_config(experiment)
    if experiment["backend"].get("noise", "none") != "none":
        raise ConfigError(
            f"{experiment.path}: [backend] noise = {experiment['backend']['noise']!r} reads a simulator "
            "through an error model, and a bench reads its instruments: remove it (for a virtual bench, "
            'set [bench] noise = "datasheet" in the bench config)'
        )
    network, inputs = experiment.network(), experiment.dataset().inputs
    seed = int(experiment["training"]["seed"])

    served: list[Any] = []

    def serve() -> tuple[dict[str, str], Callable[[], None]]:
        from sim.virtual.bench import VirtualBench

        virtual = VirtualBench(config, network, seed=seed).start()
        served.append(virtual)
        return virtual.addresses, virtual.stop

    backend = open_bench(
        config, network, method, inputs, serve if config.emulated else None, predict=twin_predictor(network)
    )
    backend.emulator = served[0] if served else None
    return backend


def twin_predictor(network: Network) -> Predict:
    """What the bench checks each settle with before applying it: the twin of `network` with
    every source free to take its own level (a bench sets levels, not inputs: the signs of
    signed conductances are already in them, and `settle_levels` drives sources one by one), the
    pots' conductances as given and the amplifiers the bench inverts, inverted."""
    from sim.twin import TwinBackend

    twins: dict[frozenset[str], tuple[TwinBackend, list[int]]] = {}
    programmed: dict[frozenset[str], bytes] = {}

    def board(inverted: frozenset[str]) -> tuple[TwinBackend, list[int]]:
        if inverted not in twins:
            net = network.rewired(
                f"{network.name} as the bench sets it", [(s.name, s.node) for s in network.sources], inverted
            )
            twins[inverted] = (TwinBackend(net), [net.node_index[n] for n in network.nodes])
        return twins[inverted]

    def predict(
        levels: np.ndarray, nudges: dict[str, float], conductances: np.ndarray, inverted: frozenset[str]
    ) -> np.ndarray:
        twin, order = board(inverted)
        key = np.asarray(conductances, float).tobytes()
        if programmed.get(inverted) != key:
            twin.program(np.asarray(conductances, float))
            programmed[inverted] = key
        return twin.settle(np.asarray(levels, float), nudges or None).voltages[order]

    return predict
