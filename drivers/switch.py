"""Switch matrices: Keithley 707B / 3706A (TSP) and Keysight 34980A (SCPI). Both implement
`drivers.roles.SwitchMatrix`; `drivers.router.Router` puts lab words (routes) on top.

Crosspoint names are the instrument's own and are checked before anything is sent:
- 707B (and a 3706A driven with 707B-style cards): slot digit 1–6, row letter A–H, two-digit
  column 01–12, e.g. `1A01`;
- 34980A: four digits, slot 1–8, bank/row digit 1–9 and a two-digit channel 01–99, e.g. `1101`.

Commands, as the role methods send them:

| role method         | 707B / 3706A                                | 34980A                           |
|---------------------|---------------------------------------------|----------------------------------|
| close_channels      | `channel.close("1A01,1B02")`                | `ROUT:CLOS (@1101,1202)`         |
| open_channels       | `channel.open("1A01")`                      | `ROUT:OPEN (@1101)`              |
| open_all            | `channel.open("allslots")`                  | `ROUT:OPEN:ALL`                  |
| closed_channels     | `print(channel.getclose("allslots"))`       | `ROUT:CLOS? (@…)` on those closed |
| check_errors        | `print(errorqueue.next())` until code 0     | `SYST:ERR?` until code 0         |
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import ClassVar

from drivers.instrument import Instrument, InstrumentError, measurement, setting
from drivers.transport import LineFormat, Transport

KEITHLEY_CROSSPOINT = re.compile(r"[1-6][A-H](0[1-9]|1[0-2])")
KEYSIGHT_CROSSPOINT = re.compile(r"[1-8][1-9](?!00)[0-9]{2}")


def crosspoint_list(
    pattern: re.Pattern[str], example: str, model: str
) -> Callable[[Iterable[str]], list[str]]:
    """A validator for a list of crosspoint names: every name well formed, none repeated."""

    def check(channels: Iterable[str]) -> list[str]:
        if isinstance(channels, str):
            raise ValueError(f"give a list of {model} crosspoints, not the string {channels!r}")
        names = list(channels)
        if not names:
            raise ValueError(f"an empty list of {model} crosspoints")
        for name in names:
            if not isinstance(name, str) or not pattern.fullmatch(name):
                raise ValueError(f"{name!r} is not a {model} crosspoint (like {example})")
        if len(set(names)) != len(names):
            raise ValueError(f"crosspoints repeated in {names}")
        return names

    return check


keithley_crosspoints = crosspoint_list(KEITHLEY_CROSSPOINT, "1A01: slot 1-6, row A-H, column 01-12", "707B")
keysight_crosspoints = crosspoint_list(KEYSIGHT_CROSSPOINT, "1101: slot 1-8, bank/row, channel", "34980A")


def parse_getclose(reply: str) -> set[str]:
    """`channel.getclose` gives `nil` when nothing is closed, else names separated by ';'."""
    text = reply.strip()
    if text in ("", "nil"):
        return set()
    return {name.strip() for name in text.split(";") if name.strip()}


# ---------------------------------------------------------------------------------------- Keithley 707B
class Keithley707B(Instrument):
    """Keithley 707B switching matrix, or a 3706A system switch, in TSP."""

    model = "707B"
    models: ClassVar[tuple[str, ...]] = ("707B", "3706A")
    line = LineFormat("\n", "\n", 5.0)
    error_query = "print(errorqueue.next())"
    OPEN_ALL: ClassVar[str] = 'channel.open("allslots")'

    close_crosspoints = setting(
        'channel.close("{value}")', "Close crosspoints.", keithley_crosspoints, format=",".join
    )
    open_crosspoints = setting(
        'channel.open("{value}")', "Open crosspoints.", keithley_crosspoints, format=",".join
    )
    closed_crosspoints = measurement(
        'print(channel.getclose("allslots"))', "Closed crosspoints, every slot.", parse_getclose
    )

    def __init__(self, transport: Transport, name: str) -> None:
        super().__init__(transport, name)

    def identify(self) -> str:
        idn = self.ask("*IDN?")
        if not any(model in idn for model in self.models):
            raise InstrumentError(
                f"{self.name}: *IDN? answered {idn!r}, not a 707B or 3706A: "
                "check the address in the bench config"
            )
        self.idn = idn
        return idn

    def parse_error(self, reply: str) -> tuple[int, str]:
        """`errorqueue.next()` prints code, message, severity and node, tab-separated."""
        fields = reply.split("\t")
        return int(float(fields[0])), fields[1].strip() if len(fields) > 1 else ""

    def close_channels(self, channels: list[str]) -> None:
        if channels:
            self.close_crosspoints = channels

    def open_channels(self, channels: list[str]) -> None:
        if channels:
            self.open_crosspoints = channels

    def open_all(self) -> None:
        self.write(self.OPEN_ALL)

    def closed_channels(self) -> set[str]:
        return self.closed_crosspoints


# ---------------------------------------------------------------------------------------- Keysight 34980A
def parse_states(reply: str) -> list[bool]:
    """`ROUT:CLOS?` answers one 1 or 0 per channel asked, comma-separated."""
    return [field.strip() == "1" for field in reply.split(",") if field.strip()]


class Keysight34980A(Instrument):
    """Keysight 34980A multifunction switch with matrix modules, in SCPI.

    The 34980A has no query for "every closed relay", so the driver remembers what this session
    closed and asks the instrument to confirm those (`ROUT:CLOS? (@…)`).
    """

    model = "34980A"
    line = LineFormat("\n", "\n", 5.0)
    error_query = "SYST:ERR?"
    OPEN_ALL: ClassVar[str] = "ROUT:OPEN:ALL"
    STATE_QUERY: ClassVar[str] = "ROUT:CLOS? (@{channels})"

    close_crosspoints = setting(
        "ROUT:CLOS (@{value})", "Close crosspoints.", keysight_crosspoints, format=",".join
    )
    open_crosspoints = setting(
        "ROUT:OPEN (@{value})", "Open crosspoints.", keysight_crosspoints, format=",".join
    )

    def __init__(self, transport: Transport, name: str) -> None:
        super().__init__(transport, name)
        self._closed: set[str] = set()

    def close_channels(self, channels: list[str]) -> None:
        if channels:
            self.close_crosspoints = channels
            self._closed.update(channels)

    def open_channels(self, channels: list[str]) -> None:
        if channels:
            self.open_crosspoints = channels
            self._closed.difference_update(channels)

    def open_all(self) -> None:
        self.write(self.OPEN_ALL)
        self._closed.clear()

    def closed_channels(self) -> set[str]:
        if not self._closed:
            return set()
        asked = sorted(self._closed)
        states = parse_states(self.ask(self.STATE_QUERY.format(channels=",".join(asked))))
        if len(states) != len(asked):
            raise InstrumentError(
                f"{self.name}: ROUT:CLOS? gave {len(states)} states for {len(asked)} channels"
            )
        closed = {name for name, is_closed in zip(asked, states, strict=True) if is_closed}
        self._closed = closed
        return set(closed)
