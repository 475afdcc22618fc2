"""Switch matrices: Keithley 707B / 3706A (TSP) and Keysight 34980A (SCPI). Both implement
`drivers.roles.SwitchMatrix`; `drivers.router.Router` puts lab words (routes) on top.

Crosspoint names are the instrument's own and are checked before anything is sent:
- 707B: slot digit 1–6, row letter A–H, two-digit column 01–12, e.g. `1A01` (707B reference
  manual 707B-901-01 §2 "Channel identification");
- 3706A matrix cards: slot 1–6, an optional bank digit 1–4, row digit 1–8, two-digit column,
  e.g. `1101` (SRCC) or `11101` (SBRCC) (Series 3700A reference manual 3700AS-901-01 §5 "Matrix
  card channel specifiers"); a 707B-style `1A01` names nothing on a 3706A;
- 34980A: four digits, slot 1–8, bank/row digit 1–9 and a two-digit channel 01–99, e.g. `1101`.

Commands, as the role methods send them:

| role method         | 707B / 3706A                                | 34980A                           |
|---------------------|---------------------------------------------|----------------------------------|
| close_channels      | `channel.close("1A01,1B02")`                | `ROUT:CLOS (@1101,1202)`         |
| open_channels       | `channel.open("1A01")`                      | `ROUT:OPEN (@1101)`              |
| open_all            | `channel.open("allslots")`                  | `ROUT:OPEN:ALL`                  |
| closed_channels     | `print(channel.getclose("allslots"))`       | `ROUT:CLOS? (@…)` on those closed |
| check_errors        | `print(errorqueue.next())` until code 0     | `SYST:ERR?` until code 0         |
| reset_and_clear     | `reset()`, `errorqueue.clear()`, `*OPC?`    | `*RST`, `*CLS`, `*OPC?`          |
| prepare             | `channel.connectrule = channel.BREAK_BEFORE_MAKE` | (nothing to set)           |
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import ClassVar

from drivers.instrument import Control, Instrument, InstrumentError, measurement, setting, strict_set
from drivers.transport import LineFormat, Transport

KEITHLEY_CROSSPOINT = re.compile(r"[1-6][A-H](0[1-9]|1[0-2])")
KEITHLEY_3706A_CROSSPOINT = re.compile(r"[1-6][1-4]?[1-8](0[1-9]|[1-9][0-9])")
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
keithley3706a_crosspoints = crosspoint_list(
    KEITHLEY_3706A_CROSSPOINT, "1101: slot 1-6, [bank 1-4,] row 1-8, column 01-99", "3706A"
)
keysight_crosspoints = crosspoint_list(KEYSIGHT_CROSSPOINT, "1101: slot 1-8, bank/row, channel", "34980A")


def parse_getclose(reply: str) -> set[str]:
    """`channel.getclose` gives `nil` when nothing is closed, else names separated by ';'."""
    text = reply.strip()
    if text in ("", "nil"):
        return set()
    return {name.strip() for name in text.split(";") if name.strip()}


# ---------------------------------------------------------------------------------------- Keithley 707B
# Each model's names for its crosspoints.
KEITHLEY_NAMING: dict[str, Callable[[Iterable[str]], list[str]]] = {
    "707B": keithley_crosspoints,
    "3706A": keithley3706a_crosspoints,
}


class Keithley707B(Instrument):
    """Keithley 707B switching matrix, or a 3706A system switch, in TSP; crosspoints are named
    as the model `identify` found names them (707B-style before that)."""

    model = "707B"
    models: ClassVar[tuple[str, ...]] = ("707B", "3706A")
    line = LineFormat("\n", "\n", 5.0)
    error_query = "print(errorqueue.next())"
    reset_lines = ("reset()", "errorqueue.clear()")  # 707B RM §7 reset(), errorqueue.clear()
    OPEN_ALL: ClassVar[str] = 'channel.open("allslots")'

    # The names are checked by `close_channels`/`open_channels`, against the model's naming.
    close_crosspoints = setting('channel.close("{value}")', "Close crosspoints.", format=",".join)
    open_crosspoints = setting('channel.open("{value}")', "Open crosspoints.", format=",".join)
    closed_crosspoints = measurement(
        'print(channel.getclose("allslots"))', "Closed crosspoints, every slot.", parse_getclose
    )
    # Break before make (1) is what the router's switching order assumes (707B RM channel.connectrule).
    connect_rule = Control(
        "print(channel.connectrule)",
        "channel.connectrule = {value}",
        "0 OFF, 1 BREAK_BEFORE_MAKE, 2 MAKE_BEFORE_BREAK.",
        strict_set((0, 1, 2)),
        lambda r: int(float(r)),
    )
    recorded = ("connect_rule", "closed_crosspoints")

    def __init__(self, transport: Transport, name: str) -> None:
        super().__init__(transport, name)
        self.crosspoints = KEITHLEY_NAMING[self.model]

    def identify(self) -> str:
        idn = self.ask("*IDN?")
        found = [model for model in self.models if model in idn]
        if not found:
            raise InstrumentError(
                f"{self.name}: *IDN? answered {idn!r}, not a 707B or 3706A: "
                "check the address in the bench config"
            )
        self.crosspoints = KEITHLEY_NAMING[found[0]]
        self.idn = idn
        return idn

    def prepare(self) -> None:
        self.connect_rule = 1

    def parse_error(self, reply: str) -> tuple[int, str]:
        """`errorqueue.next()` prints code, message, severity and node, tab-separated."""
        fields = reply.split("\t")
        return int(float(fields[0])), fields[1].strip() if len(fields) > 1 else ""

    def close_channels(self, channels: list[str]) -> None:
        if channels:
            self.close_crosspoints = self.crosspoints(channels)

    def open_channels(self, channels: list[str]) -> None:
        if channels:
            self.open_crosspoints = self.crosspoints(channels)

    def open_all(self) -> None:
        self.write(self.OPEN_ALL)

    def closed_channels(self) -> set[str]:
        return self.closed_crosspoints


class Keithley3706A(Keithley707B):
    """A 3706A system switch with matrix cards: the 707B's TSP, the 3706A's channel names."""

    model = "3706A"
    models = ("3706A",)


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
