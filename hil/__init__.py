"""eqprop-hil: Equilibrium Propagation on physical resistive networks, computer in the loop.

The objects a script or notebook needs, importable from here:

    import hil
    from hil.train import train
    experiment = hil.load("configs/xor.toml")          # or build a Network with hil.builders
    backend = hil.open_backend(experiment)             # ngspice, the twin or a bench
    records = train(backend, experiment.dataset(), experiment.start_conductances(),
                    experiment.hyper(), on_epoch=print)
    run = hil.read_run("runs/xor.h5")                  # a run log as arrays

(`hil.train` is the trainer's module; its `train` function is imported from it.)
"""

__version__ = "0.1.0"

from hil import builders, datasets, eqprop, train
from hil.backends import open_backend
from hil.config import ConfigError, Experiment, load
from hil.interface import Backend, BackendError, ConvergenceError, Identity, State
from hil.network import Network
from hil.runlog import Run, RunLog
from hil.runlog import read as read_run
from hil.train import EpochRecord, Hyper, Interrupted, evaluate

__all__ = [
    "Backend",
    "BackendError",
    "ConfigError",
    "ConvergenceError",
    "EpochRecord",
    "Experiment",
    "Hyper",
    "Identity",
    "Interrupted",
    "Network",
    "Run",
    "RunLog",
    "State",
    "__version__",
    "builders",
    "datasets",
    "eqprop",
    "evaluate",
    "load",
    "open_backend",
    "read_run",
    "train",
]
