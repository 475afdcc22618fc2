"""Open the backend an experiment names, without knowing how backends are made.

The method (this package's root) defines what a backend is (`hil.interface.Backend`) but does not
import the packages that realise one. Each realisation registers an opener under the entry-point
group `eqprop_hil.backends` (see pyproject.toml: ngspice, the twin and the bench, all opened by
`sim.factory`); `open_backend` finds the one named by the experiment's [backend] name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import metadata

from hil.config import Experiment
from hil.interface import Backend

GROUP = "eqprop_hil.backends"
Opener = Callable[[Experiment, str], Backend]


@cache
def openers() -> dict[str, metadata.EntryPoint]:
    """The installed backends, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def open_backend(experiment: Experiment, method: str | None = None) -> Backend:
    """The backend the experiment's [backend] name says, told the method it will serve (a bench
    refuses one it cannot measure before it touches anything)."""
    name = experiment["backend"]["name"]
    found = openers()
    if name not in found:
        raise ValueError(
            f"no backend {name!r} is installed (installed: {', '.join(sorted(found)) or 'none'}): "
            "install eqprop-hil with `pip install -e .` (make setup does it)"
        )
    opener: Opener = found[name].load()
    return opener(experiment, method or experiment.hyper().method)
