"""A virtual bench for a bench config: one emulator per instrument, each on its own local TCP port,
all answering from one emulated circuit. `hil emulate` serves one; `emulated = true` in a bench
config makes `hil train` and `hil bench-check` start one on free ports and stop it at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers.benchconfig import BenchConfig, InstrumentSpec
from drivers.models import MATRIX, POTS
from hil.network import Network
from sim.virtual.circuit import EmulatedCircuit, Wiring
from sim.virtual.pot_emulators import PotBridgeEmulator
from sim.virtual.server import LineServer
from sim.virtual.smu_emulators import Emulated2450, Emulated2600B, EmulatedB2900, Reading
from sim.virtual.state import BenchState, PotBankState, RelayState
from sim.virtual.switch_emulators import Keithley707BEmulator, Keysight34980AEmulator

Emulator = Any  # anything with `handle(line) -> reply | None`
Build = Callable[[InstrumentSpec, str, BenchState, Reading], Emulator]


def _relays(state: BenchState, spec: InstrumentSpec) -> RelayState:
    return state.relays.setdefault(spec.name, RelayState())


def _pot_bank(state: BenchState, spec: InstrumentSpec) -> PotBankState:
    return state.pots.setdefault(spec.name, PotBankState([255] * spec.channels, 255))


def _keithley_matrix(spec: InstrumentSpec, idn: str, state: BenchState, reading: Reading) -> Emulator:
    """A 707B, or a 3706A driven with 707B-style cards: the same TSP (see drivers.switch)."""
    return Keithley707BEmulator(_relays(state, spec), state, idn)


# Per model (the keys of `drivers.models.MODELS`): what its emulator answers to *IDN?, and how it
# is built on the bench's shared state and the circuit's readings.
EMULATORS: dict[str, tuple[str, Build]] = {
    "keithley-2450": (
        "KEITHLEY INSTRUMENTS,MODEL 2450,{serial},1.7.12b (virtual)",
        lambda spec, idn, state, reading: Emulated2450(spec.name, idn, state, reading),
    ),
    "keithley-2600b": (
        "Keithley Instruments Inc., Model 2602B, {serial}, 3.3.5 (virtual)",
        lambda spec, idn, state, reading: Emulated2600B(spec.name, idn, state, reading),
    ),
    "keysight-b2900": (
        "Keysight Technologies,B2902A,{serial},3.4.2011.5100 (virtual)",
        lambda spec, idn, state, reading: EmulatedB2900(spec.name, idn, state, reading),
    ),
    "keithley-707b": ("Keithley Instruments Inc., Model 707B, {serial}, 1.6.1 (virtual)", _keithley_matrix),
    "keithley-3706a": ("Keithley Instruments Inc., Model 3706A, {serial}, 1.6.1 (virtual)", _keithley_matrix),
    "keysight-34980a": (
        "Agilent Technologies,34980A,{serial},2.51-2.51-2.51-2.51 (virtual)",
        lambda spec, idn, state, reading: Keysight34980AEmulator(_relays(state, spec), state, idn),
    ),
    "pot-bridge": (
        "EQPROP-HIL,POTBRIDGE,{serial},1.0 (virtual)",
        lambda spec, idn, state, reading: PotBridgeEmulator(_pot_bank(state, spec), state, idn),
    ),
}


def wiring(config: BenchConfig, network: Network) -> Wiring:
    hardwired: dict[str, str] = {}
    for s in network.sources:
        hardwired[config.sources[s.name]] = s.node
    for node, key in config.nudges.items():
        hardwired[key] = node
    crosspoints: dict[tuple[str, str], tuple[str, str, str]] = {}
    if config.probe_matrix and config.probe_channel:
        for node, channels in config.probe_routes.items():
            # The last crosspoint of a route joins the probe's row to the node's column.
            for channel in channels:
                crosspoints[(config.probe_matrix, channel)] = ("smu", config.probe_channel, node)
    matrix = config.probe_matrix or next(iter(config.of_role(MATRIX)), "")
    for amplifier, channels in config.amplifiers.items():
        for channel in channels:
            crosspoints[(matrix, channel)] = ("invert", amplifier, "")
    models = {name: spec.pot_model() for name, spec in config.of_role(POTS).items()}
    return Wiring(
        hardwired=hardwired,
        crosspoints=crosspoints,
        pots=dict(config.pots),
        pot_conductance=lambda bank, channel, code: models[bank].nominal_conductance(code),
    )


class VirtualBench:
    def __init__(self, config: BenchConfig, network: Network) -> None:
        self.config = config
        self.state = BenchState()
        self.circuit = EmulatedCircuit(network, wiring(config, network), self.state)
        self.emulators: dict[str, Emulator] = {}
        for k, (name, spec) in enumerate(config.instruments.items()):
            identity, build = EMULATORS[spec.model]
            self.emulators[name] = build(
                spec, identity.format(serial=f"VB{k:05d}"), self.state, self.circuit.reading
            )
        self.servers: dict[str, LineServer] = {}

    def start(self) -> VirtualBench:
        for name, emulator in self.emulators.items():
            self.servers[name] = LineServer(emulator).start()
        return self

    @property
    def addresses(self) -> dict[str, str]:
        out = {}
        for name, server in self.servers.items():
            if self.config.instruments[name].role == POTS:
                out[name] = f"socket://{server.host}:{server.port}"
            else:
                out[name] = f"TCPIP::{server.host}::{server.port}::SOCKET"
        return out

    def lines_received(self) -> int:
        return sum(server.lines for server in self.servers.values())

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers = {}

    def __enter__(self) -> VirtualBench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
