"""A virtual bench for a bench config: one emulator per instrument, each on its own local TCP port,
all answering from one emulated circuit. `hil emulate` serves one; `emulated = true` in a bench
config makes `hil train` and `hil bench-check` start one on free ports and stop it at the end.
"""

from __future__ import annotations

from typing import Any

from drivers.benchconfig import MATRIX_MODELS, POT_MODELS, BenchConfig
from drivers.pots import AD5206Model
from hil.network import Network
from sim.virtual.circuit import EmulatedCircuit, Wiring
from sim.virtual.server import LineServer
from sim.virtual.smu_emulators import Emulated2450, Emulated2600B, EmulatedB2900
from sim.virtual.state import BenchState, PotBankState, RelayState

IDENTITIES = {
    "keithley-2450": "KEITHLEY INSTRUMENTS,MODEL 2450,{serial},1.7.12b (virtual)",
    "keithley-2600b": "Keithley Instruments Inc., Model 2602B, {serial}, 3.3.5 (virtual)",
    "keysight-b2900": "Keysight Technologies,B2902A,{serial},3.4.2011.5100 (virtual)",
    "keithley-707b": "Keithley Instruments Inc., Model 707B, {serial}, 1.6.1 (virtual)",
    "keithley-3706a": "Keithley Instruments Inc., Model 3706A, {serial}, 1.6.1 (virtual)",
    "keysight-34980A": "Agilent Technologies,34980A,{serial},2.51-2.51-2.51-2.51 (virtual)",
    "keysight-34980a": "Agilent Technologies,34980A,{serial},2.51-2.51-2.51-2.51 (virtual)",
    "pot-bridge": "EQPROP-HIL,POTBRIDGE,{serial},1.0 (virtual)",
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
    matrix = config.probe_matrix or next(
        (n for n, i in config.instruments.items() if i.model in MATRIX_MODELS), ""
    )
    for amplifier, channels in config.amplifiers.items():
        for channel in channels:
            crosspoints[(matrix, channel)] = ("invert", amplifier, "")
    models = {
        name: AD5206Model(r_ab=spec.r_ab, r_w=spec.r_w, channels=spec.channels)
        for name, spec in config.instruments.items()
        if spec.model in POT_MODELS
    }
    return Wiring(
        hardwired=hardwired,
        crosspoints=crosspoints,
        pots=dict(config.pots),
        pot_conductance=lambda bank, channel, code: models[bank].nominal_conductance(code),
    )


class VirtualBench:
    def __init__(self, config: BenchConfig, network: Network) -> None:
        from sim.virtual.pot_emulators import PotBridgeEmulator
        from sim.virtual.switch_emulators import Keithley707BEmulator, Keysight34980AEmulator

        self.config = config
        self.state = BenchState()
        self.circuit = EmulatedCircuit(network, wiring(config, network), self.state)
        self.emulators: dict[str, Any] = {}
        for k, (name, spec) in enumerate(config.instruments.items()):
            idn = IDENTITIES[spec.model].format(serial=f"VB{k:05d}")
            if spec.model == "keithley-2450":
                emulator: Any = Emulated2450(name, idn, self.state, self.circuit.reading)
            elif spec.model == "keithley-2600b":
                emulator = Emulated2600B(name, idn, self.state, self.circuit.reading)
            elif spec.model == "keysight-b2900":
                emulator = EmulatedB2900(name, idn, self.state, self.circuit.reading)
            elif spec.model in ("keithley-707b", "keithley-3706a"):
                relays = self.state.relays.setdefault(name, RelayState())
                emulator = Keithley707BEmulator(relays, self.state, idn)
            elif spec.model == "keysight-34980a":
                relays = self.state.relays.setdefault(name, RelayState())
                emulator = Keysight34980AEmulator(relays, self.state, idn)
            else:
                bank = self.state.pots.setdefault(name, PotBankState([255] * spec.channels, 255))
                emulator = PotBridgeEmulator(bank, self.state, idn)
            self.emulators[name] = emulator
        self.servers: dict[str, LineServer] = {}

    def start(self) -> VirtualBench:
        for name, emulator in self.emulators.items():
            self.servers[name] = LineServer(emulator).start()
        return self

    @property
    def addresses(self) -> dict[str, str]:
        out = {}
        for name, server in self.servers.items():
            if self.config.instruments[name].model in POT_MODELS:
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
