"""The instrument models a bench config may name: the one table of what each model is.

A model plays one role on the bench (an SMU, a switch matrix, a bank of digital pots), has the
channels its driver exposes (an SMU's channel names; () for a single-channel SMU), a driver class
and the kind of line it is reached over (VISA, or a serial port/URL for the pot bridge).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.instrument import Instrument
from drivers.pots import PotBridge
from drivers.smu import Keithley2450, Keithley2600B, KeysightB2900
from drivers.switch import Keithley707B, Keysight34980A

SMU, MATRIX, POTS = "smu", "matrix", "pots"


@dataclass(frozen=True)
class Model:
    role: str  # SMU, MATRIX or POTS
    driver: type[Instrument]
    channels: tuple[str, ...] = ()  # SMU channel names ("a", "b"); () for one unnamed channel

    @property
    def serial(self) -> bool:
        """Reached over a serial line (pyserial), not a VISA resource."""
        return self.role == POTS


MODELS: dict[str, Model] = {
    "keithley-2450": Model(SMU, Keithley2450),
    "keithley-2600b": Model(SMU, Keithley2600B, ("a", "b")),
    "keysight-b2900": Model(SMU, KeysightB2900, ("1", "2")),
    "keithley-707b": Model(MATRIX, Keithley707B),
    "keithley-3706a": Model(MATRIX, Keithley707B),
    "keysight-34980a": Model(MATRIX, Keysight34980A),
    "pot-bridge": Model(POTS, PotBridge),
}


def of_role(role: str) -> tuple[str, ...]:
    return tuple(name for name, model in MODELS.items() if model.role == role)
