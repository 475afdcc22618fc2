"""Emulated switch matrices: Keithley 707B and 3706A (TSP) and Keysight 34980A (SCPI). Each takes
one line and gives the reply, or None when the command has none; relays live in a `RelayState`
changed under the bench's lock. A command the instrument would refuse puts the instrument's error
in its queue, and never raises.

Channel names are each instrument's own (707B reference manual 707B-901-01 §2 "Channel
identification"; Series 3700A reference manual 3700AS-901-01 §5 "Matrix card channel
specifiers"; 34980A user's guide "Channel numbering"):
- 707B: slot 1-6, row A-H, column 01-12: `1A01`;
- 3706A matrix cards: slot 1-6, row 1-8, two-digit column: `1101` (SRCC), or with a bank digit
  (SBRCC, `11101`) on cards that have banks;
- 34980A matrix modules: slot 1-8, row 1-9, two-digit column: `1101`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from sim.virtual.grammar import (
    MISSING,
    OUT_OF_RANGE,
    SYNTAX,
    Call,
    Refused,
    Scpi,
    ScpiFrontEnd,
    TspFrontEnd,
    Value,
    keyword,
    refuse,
    runtime,
)
from sim.virtual.state import BenchState, RelayState

KEITHLEY_CHANNEL = re.compile(r"([1-6])([A-H])(0[1-9]|1[0-2])")
KEITHLEY_3706A_CHANNEL = re.compile(r"([1-6])([1-4]?)([1-8])(0[1-9]|[1-9][0-9])")
KEYSIGHT_CHANNEL = re.compile(r"([1-8])[1-9](?!00)[0-9]{2}")
QUEUE_LENGTH = 32


class _Relays:
    relays: RelayState
    bench: BenchState

    def close(self, names: Iterable[str]) -> None:
        with self.bench.lock:
            self.relays.closed.update(names)
            self.bench.changed()

    def open(self, names: Iterable[str]) -> None:
        with self.bench.lock:
            self.relays.closed.difference_update(names)
            self.bench.changed()

    def open_all(self) -> None:
        with self.bench.lock:
            self.relays.closed.clear()
            self.bench.changed()


# ---------------------------------------------------------------------------------------- 707B / 3706A
class Keithley707BEmulator(_Relays, TspFrontEnd):
    """A 707B, or a 3706A when its identity says so (its own channel names), in TSP: `channel.close`,
    `.open`, `.exclusiveclose`, `.getclose`, `.reset` (707B RM §7 "channel" functions; 3700A RM
    §8), `channel.connectrule`, `reset()`, `waitcomplete()`, the error queue, 488.2 commands."""

    queue_size = QUEUE_LENGTH

    def __init__(
        self,
        relays: RelayState,
        bench: BenchState,
        identity: str = "KEITHLEY INSTRUMENTS INC.,MODEL 707B,04123456,1.3.4",
        slots: Iterable[int] = range(1, 7),
    ) -> None:
        super().__init__()
        self.relays, self.bench = relays, bench
        self.identity = identity
        self.slots = set(slots)
        self.is_3706a = "3706A" in identity
        self.pattern = KEITHLEY_3706A_CHANNEL if self.is_3706a else KEITHLEY_CHANNEL
        self.connectrule = 1.0  # channel.BREAK_BEFORE_MAKE after reset (707B RM channel.connectrule)

    def reset(self) -> None:
        self.open_all()
        self.connectrule = 1.0

    def next_error(self) -> str:
        return self.handle("print(errorqueue.next())") or ""

    # -- names
    CONSTANTS = {  # noqa: RUF012 - a table, read only
        "channel.BREAK_BEFORE_MAKE": 1.0,
        "channel.MAKE_BEFORE_BREAK": 2.0,
        "channel.OFF": 0.0,
    }

    def read(self, name: str) -> Value:
        if name in self.CONSTANTS:
            return self.CONSTANTS[name]
        if name == "channel.connectrule":
            return self.connectrule
        raise LookupError(name)

    def write(self, name: str, value: Value) -> None:
        if name != "channel.connectrule":
            raise LookupError(name)
        number = self.number(value, name)
        if number not in self.CONSTANTS.values():
            raise runtime(f"Parameter 1, invalid connect rule {number:g}")
        self.connectrule = number

    def call(self, name: str, args: list[Value]) -> tuple[Value, ...]:
        verbs: dict[str, Callable[[list[str]], tuple[Value, ...]]] = {
            "channel.close": lambda names: self._do(self.close, names),
            "channel.open": lambda names: self._do(self.open, names),
            "channel.exclusiveclose": self._exclusive,
            "channel.reset": lambda names: self._do(self.open, names),
            "channel.getclose": self._getclose,
        }
        if name not in verbs:
            raise LookupError(name)
        if len(args) != 1 or not isinstance(args[0], str):
            got = "no value" if not args else type(args[0]).__name__
            raise runtime(f"bad argument #1 to `{name.split('.')[-1]}' (string expected, got {got})")
        return verbs[name](self.channels(args[0], allow_all=name != "channel.close"))

    def _do(self, action: Callable[[list[str]], None], names: list[str]) -> tuple[Value, ...]:
        action(names)
        return ()

    def _exclusive(self, names: list[str]) -> tuple[Value, ...]:
        with self.bench.lock:
            self.relays.closed = set(names)
            self.bench.changed()
        return ()

    def _getclose(self, names: list[str]) -> tuple[Value, ...]:
        with self.bench.lock:
            closed = sorted(self.relays.closed & set(names))
        return (";".join(closed) if closed else None,)

    def every_channel(self, slots: Iterable[int]) -> list[str]:
        """Every crosspoint of the slots' cards (a 6x16 card in a 3706A slot), and any relay closed
        there under another card's naming."""
        slots = sorted(slots)
        if self.is_3706a:
            names = [f"{s}{r}{c:02d}" for s in slots for r in range(1, 7) for c in range(1, 17)]
        else:
            names = [f"{s}{r}{c:02d}" for s in slots for r in "ABCDEFGH" for c in range(1, 13)]
        with self.bench.lock:
            known = set(names)
            return names + sorted(n for n in self.relays.closed if int(n[0]) in slots and n not in known)

    def channels(self, argument: str, allow_all: bool) -> list[str]:
        """The channels a channel list names (items separated by `,` or `;`, ranges `1A01:1A04`,
        `slotN`, `allslots`), or a TSP run-time error as the instrument gives it."""
        names: list[str] = []
        for item in re.split(r"[,;]", argument):
            item = item.strip()
            word = item.lower()
            if word == "allslots" and allow_all:
                names += self.every_channel(self.slots)
                continue
            if word.startswith("slot") and word[4:].isdigit() and allow_all:
                if int(word[4:]) not in self.slots:
                    raise self._bad(item)
                names += self.every_channel([int(word[4:])])
                continue
            first, _, last = item.partition(":")
            names += self._span(first.strip(), last.strip()) if last else [self._checked(first.strip())]
        return names

    def _checked(self, name: str) -> str:
        match = self.pattern.fullmatch(name)
        if match is None or int(match.group(1)) not in self.slots:
            raise self._bad(name)
        return name

    def _span(self, first: str, last: str) -> list[str]:
        a, b = self._checked(first), self._checked(last)
        if a[0] != b[0] or len(a) != len(b):
            raise self._bad(f"{first}:{last}")
        rows = sorted({a[-3], b[-3]})
        cols = sorted({int(a[-2:]), int(b[-2:])})
        prefix = a[:-3]
        ordered = "ABCDEFGH" if not self.is_3706a else "12345678"
        span = ordered[ordered.index(rows[0]) : ordered.index(rows[-1]) + 1]
        return [f"{prefix}{r}{c:02d}" for r in span for c in range(cols[0], cols[-1] + 1)]

    @staticmethod
    def _bad(name: str) -> Refused:
        return runtime(f"Parameter 1, invalid channel list {name!r}")


# ---------------------------------------------------------------------------------------- 34980A
class Keysight34980AEmulator(_Relays, ScpiFrontEnd):
    """SCPI: `[ROUTe:]CLOSe (@...)`, `[ROUTe:]OPEN (@...)`, `[ROUTe:]CLOSe:EXCLusive (@...)`,
    `[ROUTe:]OPEN:ALL [ALL|slot]`, `[ROUTe:]CLOSe? (@...)`, `[ROUTe:]OPEN? (@...)`,
    `SYSTem:ERRor[:NEXT]?`, 488.2 common commands; channel ranges `1101:1104` (34980A
    programmer's reference, ROUTe subsystem)."""

    queue_size = QUEUE_LENGTH
    no_error = '+0,"No error"'

    def __init__(
        self,
        relays: RelayState,
        bench: BenchState,
        identity: str = "Agilent Technologies,34980A,MY44012345,2.51-2.43-2.09-1.00",
        slots: Iterable[int] = range(1, 9),
    ) -> None:
        self.relays, self.bench = relays, bench
        self.identity = identity
        self.slots = set(slots)
        super().__init__()

    def reset(self) -> None:
        self.open_all()

    def table(self) -> list[Scpi]:
        return [
            Scpi("[:ROUTe]:CLOSe", lambda c: self.close(self._list(c)), self._closed(True), "ROUTe:CLOSe"),
            Scpi("[:ROUTe]:OPEN", lambda c: self.open(self._list(c)), self._closed(False), "ROUTe:OPEN"),
            Scpi("[:ROUTe]:CLOSe:EXCLusive", self._exclusive, None, "ROUTe:CLOSe:EXCLusive"),
            Scpi("[:ROUTe]:OPEN:ALL", self._open_all, None, "ROUTe:OPEN:ALL"),
            Scpi(":SYSTem:ERRor[:NEXT]", None, lambda c: self.next_error(), "SYSTem:ERRor?"),
        ]

    def _list(self, c: Call) -> list[str]:
        if not c.params:
            raise refuse(MISSING, "a channel list (@...)")
        c.count(1)
        argument = c.params[0].strip()
        if not (argument.startswith("(@") and argument.endswith(")")):
            raise refuse(SYNTAX, f"channel list {argument!r}")
        names: list[str] = []
        for item in argument[2:-1].split(","):
            first, _, last = item.strip().partition(":")
            for name in [first] if not last else self.span(first, last):
                match = KEYSIGHT_CHANNEL.fullmatch(name)
                if match is None or int(match.group(1)) not in self.slots:
                    raise refuse(OUT_OF_RANGE, f"channel {name!r}")
                names.append(name)
        return names

    def _closed(self, closed: bool) -> Callable[[Call], str]:
        def states(c: Call) -> str:
            names = self._list(c)
            with self.bench.lock:
                now = [name in self.relays.closed for name in names]
            return ",".join("1" if state == closed else "0" for state in now)

        return states

    def _exclusive(self, c: Call) -> None:
        names = self._list(c)
        with self.bench.lock:
            self.relays.closed = set(names)
            self.bench.changed()

    def _open_all(self, c: Call) -> None:
        c.count(0, 1)
        word = c.word() if c.params else "ALL"
        if word.isdigit():
            if int(word) not in self.slots:
                raise refuse(OUT_OF_RANGE, f"slot {word}")
            with self.bench.lock:
                self.relays.closed = {name for name in self.relays.closed if name[0] != word}
                self.bench.changed()
            return
        keyword(word, ("ALL",), "ROUTe:OPEN:ALL")
        self.open_all()

    @staticmethod
    def span(first: str, last: str) -> list[str]:
        if not (first.isdigit() and last.isdigit()) or first[0] != last[0] or int(last) < int(first):
            return [f"{first}:{last}"]
        return [str(n) for n in range(int(first), int(last) + 1) if KEYSIGHT_CHANNEL.fullmatch(str(n))]
