"""Open a simulated backend by the name a config gives."""

from __future__ import annotations

from typing import Any

from hil.interface import Backend
from hil.network import Network
from sim.netlist import SimulatorOptions


def open_backend(name: str, network: Network, settings: dict[str, Any]) -> Backend:
    """`settings` is the config's [backend] table (ngspice tolerances, GMIN)."""
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
    raise ValueError(f"unknown backend {name!r}: use 'spice' or 'numeric'")
