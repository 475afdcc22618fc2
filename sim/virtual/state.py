"""What the emulated instruments hold, shared with the emulated circuit that answers them.

Emulators change these under `lock`; the circuit reads them to decide what is connected to what.
Tests inspect them to check that a bench was left safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class SmuState:
    """One SMU channel as the front panel would show it.

    Each source function keeps its own level, as on the instruments: changing the function sources
    the level last set for that function, never the other function's number."""

    function: str = "V"  # "V" forces voltage, "I" forces current
    voltage: float = 0.0  # V, forced while the function is "V"
    current: float = 0.0  # A, forced while the function is "I"
    current_limit: float = 1e-4  # A, compliance while forcing voltage
    voltage_limit: float = 2.0  # V, compliance while forcing current
    output: bool = False
    # What the output holds while off, as its output-off mode sets it: None, the output relay open
    # (high impedance: draws nothing from a node); a number, 0 V forced at that current limit.
    off_limit: float | None = None
    # Integration time, PLC, of voltage and of current readings: one setting per measure function
    # on a 2450 (reference manual §6 [:SENSe[1]]:<function>:NPLCycles), one for both on a 2600B
    # (smuX.measure.nplc) and a B2900 ("the nplc value is common for all items").
    voltage_nplc: float = 1.0
    current_nplc: float = 1.0

    @property
    def nplc(self) -> float:
        """The integration time of a voltage reading (what the bench reads), PLC."""
        return self.voltage_nplc

    @nplc.setter
    def nplc(self, value: float) -> None:
        self.voltage_nplc = self.current_nplc = value

    @property
    def level(self) -> float:
        """What the channel forces: the level of its present source function."""
        return self.voltage if self.function == "V" else self.current

    @level.setter
    def level(self, value: float) -> None:
        if self.function == "V":
            self.voltage = value
        else:
            self.current = value


@dataclass
class RelayState:
    """Closed crosspoints of a switch matrix, by the instrument's own channel names."""

    closed: set[str] = field(default_factory=set)


@dataclass
class PotBankState:
    """Wiper codes of a digital-potentiometer bank."""

    codes: list[int]
    safe_code: int


@dataclass
class BenchState:
    """Everything the virtual bench's instruments hold, keyed by instrument (and channel) name."""

    smus: dict[str, SmuState] = field(default_factory=dict)  # "smu1.a" -> state
    relays: dict[str, RelayState] = field(default_factory=dict)
    pots: dict[str, PotBankState] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    version: int = 0  # bumped on every change, so the circuit re-solves only when needed

    def changed(self) -> None:
        self.version += 1
