"""A virtual bench for a bench config: one emulator per instrument, each on its own local TCP port,
all answering from one emulated circuit. `hil emulate` serves one; `emulated = true` in a bench
config makes `hil train` and `hil bench-check` start one on free ports and stop it at the end.

For fault-injection tests, `inject` gives one instrument's server a `Fault`: the line faults of
`sim.virtual.server` (disconnect, stall, garbage) or a state change the bench plays on that
instrument: "reset" (back to power-on: outputs off at 0 V, relays open, pots at the safe code, as
a front-panel reset or another client's *RST leaves it; the session stays), "power-cycle" (the
same, and the connection drops, as a power glitch does to a LAN or USB session) and, on an SMU,
"trip" (its limits fall below what the board draws, as a short would make it: every channel in
compliance).

`[bench] noise` puts the SMUs' datasheet errors on the emulated readings (`sim.noise`), seeded by
`seed` (a training's seed when a run starts the bench): offsets and gains fixed for the bench's
life, noise per reading.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from drivers.benchconfig import BenchConfig, InstrumentSpec
from drivers.firmware.potbridge import SAFE_CODE
from drivers.models import MATRIX, POTS, SMU
from hil.network import Network
from sim.noise import bench_errors
from sim.virtual.circuit import EmulatedCircuit, Wiring
from sim.virtual.pot_emulators import PotBridgeEmulator, draw_parts
from sim.virtual.server import DISCONNECT, Action, Fault, Hit, LineServer
from sim.virtual.smu_emulators import Emulated2450, Emulated2600B, EmulatedB2900, Reading
from sim.virtual.state import BenchState, PotBankState, RelayState, SmuState
from sim.virtual.switch_emulators import Keithley707BEmulator, Keysight34980AEmulator

Emulator = Any  # anything with `handle(line) -> reply | None`
Build = Callable[[InstrumentSpec, str, BenchState, Reading], Emulator]


def _relays(state: BenchState, spec: InstrumentSpec) -> RelayState:
    return state.relays.setdefault(spec.name, RelayState())


def _pot_bank(state: BenchState, spec: InstrumentSpec) -> PotBankState:
    return state.pots.setdefault(spec.name, PotBankState([SAFE_CODE] * spec.channels, SAFE_CODE))


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
    # The true parts, not the driver's model of them (nor its calibration): what a pot conducts.
    parts = {name: draw_parts(spec) for name, spec in config.of_role(POTS).items()}
    return Wiring(
        hardwired=hardwired,
        crosspoints=crosspoints,
        pots=dict(config.pots),
        pot_conductance=lambda bank, channel, code: parts[bank][channel - 1].conductance(code),
    )


class VirtualBench:
    def __init__(self, config: BenchConfig, network: Network, seed: int = 0) -> None:
        self.config = config
        self.state = BenchState()
        smus = {name: spec.model for name, spec in config.of_role(SMU).items()}
        errors = bench_errors(config.noise, smus, seed)
        self.circuit = EmulatedCircuit(network, wiring(config, network), self.state, errors)
        self.emulators: dict[str, Emulator] = {}
        for k, (name, spec) in enumerate(config.instruments.items()):
            identity, build = EMULATORS[spec.model]
            self.emulators[name] = build(
                spec, identity.format(serial=f"VB{k:05d}"), self.state, self.circuit.reading
            )
        self.servers: dict[str, LineServer] = {}

    def start(self) -> VirtualBench:
        for name, emulator in self.emulators.items():
            actions: dict[str, Action] = {
                "reset": partial(self.power_on, name),
                "power-cycle": partial(self._power_cycle, name),
            }
            if self.config.instruments[name].role == SMU:
                actions["trip"] = partial(self.trip, name)
            self.servers[name] = LineServer(emulator, actions=actions).start()
        return self

    # ------------------------------------------------------------------ faults
    def inject(self, name: str, kind: str, after: int, lasting: bool = False) -> None:
        """After `after` more lines to instrument `name`, `kind` strikes (see `Fault`)."""
        self.servers[name].inject(Fault(kind, after, lasting))

    def clear_faults(self) -> None:
        """Every instrument answers new connections again (the cable is back, the hang is over)."""
        for server in self.servers.values():
            server.clear_fault()

    def hits(self) -> dict[str, list[Hit]]:
        """The faults that struck, by instrument."""
        return {name: server.hits for name, server in self.servers.items() if server.hits}

    def _channels(self, name: str) -> list[str]:
        return [key for key in self.state.smus if key == name or key.startswith(f"{name}.")]

    def power_on(self, name: str) -> None:
        """Instrument `name` as it comes out of a power cycle or a reset."""
        with self.state.lock:
            for key in self._channels(name):
                self.state.smus[key] = SmuState()
            if name in self.state.relays:
                self.state.relays[name].closed.clear()
            if name in self.state.pots:
                bank = self.state.pots[name]
                bank.codes[:] = [bank.safe_code] * len(bank.codes)  # in place: the firmware shares the list
            self.state.changed()

    def _power_cycle(self, name: str) -> str:
        self.power_on(name)
        return DISCONNECT

    def trip(self, name: str) -> None:
        """Every channel of SMU `name` at its limit: the board now draws more than they allow."""
        with self.state.lock:
            for key in self._channels(name):
                smu = self.state.smus[key]
                smu.current_limit, smu.voltage_limit = 1e-9, 1e-3
            self.state.changed()

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

    def unsafe(self) -> list[str]:
        """What is not safe now: outputs on or off 0, relays closed, pots off the safe code."""
        found = [f"{key} output on" for key, s in self.state.smus.items() if s.output]
        found += [f"{key} at {s.level:g}" for key, s in self.state.smus.items() if s.level != 0.0]
        found += [f"{name} closes {sorted(r.closed)}" for name, r in self.state.relays.items() if r.closed]
        found += [
            f"{name} codes {p.codes}" for name, p in self.state.pots.items() if set(p.codes) != {p.safe_code}
        ]
        return found

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers = {}

    def __enter__(self) -> VirtualBench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
