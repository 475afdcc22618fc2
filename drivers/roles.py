"""The roles a bench needs, in the lab's words. Concrete drivers implement them; the bench backend
drives SMU channels and switch matrices through these roles alone, and pot banks through
`drivers.pots.PotBankDriver.program` (the role plus the part's model, which turns conductances into
codes). Sessions (identity, error queue, close) are `drivers.instrument.Instrument`'s.

- `SourceMeter`: one SMU channel that forces a voltage (inputs, biases) or a current (nudges,
  or 0 A to read a node's voltage) and measures either.
- `SwitchMatrix`: relays that connect SMU channels to nodes.
- `PotBank`: digital potentiometers, the trainable conductances.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SourceMeter(Protocol):
    name: str

    def identify(self) -> str:
        """`*IDN?`, checked against the configured model."""
        ...

    def source_voltage(self, current_limit: float) -> None:
        """Force voltage: compliance (current limit) first, then the function, level 0 V."""
        ...

    def source_current(self, voltage_limit: float) -> None:
        """Force current: compliance (voltage limit) first, then the function, level 0 A."""
        ...

    def set_level(self, value: float) -> None:
        """The forced value (V or A, whichever the channel sources); refuses a value outside the
        channel's range."""
        ...

    def output(self, on: bool) -> None: ...

    def integrate(self, nplc: float) -> None:
        """Integration time of every reading, in power-line cycles."""
        ...

    def measure_voltage(self) -> float: ...

    def measure_current(self) -> float: ...

    def tripped(self) -> bool:
        """True when the channel sits at its compliance limit."""
        ...

    def check_errors(self) -> None:
        """Drain the error queue; raise `InstrumentError` with the instrument's codes and texts."""
        ...

    def safe(self) -> None:
        """Level 0, output off. Must work whatever state the channel is in."""
        ...

    def applied_settings(self) -> dict[str, Any]:
        """Each setting the channel records, as the instrument answers it now (sets as sorted lists)."""
        ...


@runtime_checkable
class SwitchMatrix(Protocol):
    name: str

    def identify(self) -> str: ...

    def close_channels(self, channels: list[str]) -> None: ...

    def open_channels(self, channels: list[str]) -> None: ...

    def open_all(self) -> None: ...

    def closed_channels(self) -> set[str]: ...

    def wait_complete(self) -> None:
        """Return once every switching command sent has been carried out (`*OPC?`)."""
        ...

    def check_errors(self) -> None: ...


@runtime_checkable
class PotBank(Protocol):
    name: str
    channels: int
    taps: int

    def identify(self) -> str: ...

    def reset(self) -> None:
        """All wipers to the bank's safe code (`*RST`)."""
        ...

    def write_codes(self, codes: dict[int, int]) -> None:
        """Set several wipers in one bulk command."""
        ...

    def read_code(self, channel: int) -> int: ...

    def check_errors(self) -> None: ...
