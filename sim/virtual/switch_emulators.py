"""Command handlers of the emulated switch matrices: Keithley 707B / 3706A (TSP) and Keysight
34980A (SCPI). Each takes one line and gives the reply line, or None when the command has none;
relays live in a `RelayState` changed under the bench's lock. An unknown or malformed command
puts an error in the queue, as the instrument would, and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sim.virtual.state import BenchState, RelayState

KEITHLEY_CHANNEL = re.compile(r"([1-6])[A-H](0[1-9]|1[0-2])")
KEYSIGHT_CHANNEL = re.compile(r"([1-8])[1-9](?!00)[0-9]{2}")
QUEUE_LENGTH = 32


class _RelayEmulator:
    def __init__(self, relays: RelayState, bench: BenchState, identity: str, slots: Iterable[int]) -> None:
        self.relays = relays
        self.bench = bench
        self.identity = identity
        self.slots = set(slots)
        self.errors: list[tuple[int, str]] = []

    def push_error(self, code: int, text: str) -> None:
        if len(self.errors) < QUEUE_LENGTH:
            self.errors.append((code, text))
        else:
            self.errors[-1] = (-350, "Queue overflow")

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
class Keithley707BEmulator(_RelayEmulator):
    """TSP subset: `channel.close/open("…")`, `channel.open("allslots")`,
    `print(channel.getclose("allslots"))`, `print(errorqueue.next())`, `errorqueue.clear()`,
    `print(errorqueue.count)`, `waitcomplete()`, `reset()`, `*RST`, `*CLS`, `*OPC?`, `*IDN?`."""

    CALL = re.compile(r'channel\.(close|open|getclose)\(\s*"([^"]*)"\s*\)')

    def __init__(
        self,
        relays: RelayState,
        bench: BenchState,
        identity: str = "KEITHLEY INSTRUMENTS INC.,MODEL 707B,04123456,1.3.4",
        slots: Iterable[int] = range(1, 7),
    ) -> None:
        super().__init__(relays, bench, identity, slots)

    def handle(self, line: str) -> str | None:
        text = line.strip()
        if not text:
            return None
        if text == "*IDN?":
            return self.identity
        if text == "*OPC?":
            return "1"  # commands run in order: when this is read, every relay has moved
        if text in ("*CLS", "waitcomplete()"):
            if text == "*CLS":
                self.errors.clear()
            return None
        if text in ("*RST", "reset()", "channel.reset()"):
            self.open_all()
            return None
        if text == "print(errorqueue.next())":
            return self.next_error()
        if text == "errorqueue.clear()":
            self.errors.clear()
            return None
        if text == "print(errorqueue.count)":
            return str(len(self.errors))
        printed = text.startswith("print(") and text.endswith(")")
        call = self.CALL.fullmatch(text[6:-1] if printed else text)
        if call is None:
            self.push_error(-285, f"TSP Syntax error at line 1: unexpected symbol near '{text[:40]}'")
            return None
        verb, argument = call.groups()
        if verb == "getclose":
            names = self.channels(argument, allow_all=True)
            if names is None:
                return "nil" if printed else None
            with self.bench.lock:
                closed = sorted(
                    self.relays.closed if names == "allslots" else self.relays.closed & set(names)
                )
            if not printed:
                return None
            return ";".join(closed) if closed else "nil"
        if printed:
            self.push_error(
                -285, "TSP Syntax error at line 1: channel." + verb + " returns no value to print"
            )
            return None
        names = self.channels(argument, allow_all=verb == "open")
        if names is None:
            return None
        if names == "allslots":
            self.open_all()
        elif verb == "close":
            self.close(names)
        else:
            self.open(names)
        return None

    def channels(self, argument: str, allow_all: bool) -> list[str] | str | None:
        """The channel list of a call, or None after queueing the error."""
        if allow_all and argument.strip().lower() == "allslots":
            return "allslots"
        names = [name.strip() for name in argument.split(",")]
        for name in names:
            match = KEITHLEY_CHANNEL.fullmatch(name)
            if match is None or int(match.group(1)) not in self.slots:
                self.push_error(
                    -286, f"TSP Runtime error at line 1: Parameter 1, invalid channel list {name!r}"
                )
                return None
        return names

    def next_error(self) -> str:
        if not self.errors:
            return "0\tQueue Is Empty\t0\t0"
        code, text = self.errors.pop(0)
        return f"{code}\t{text}\t2\t1"


# ---------------------------------------------------------------------------------------- 34980A
class Keysight34980AEmulator(_RelayEmulator):
    """SCPI subset: `ROUT:CLOS (@…)`, `ROUT:OPEN (@…)`, `ROUT:OPEN:ALL [ALL|slot]`,
    `ROUT:CLOS? (@…)`, `ROUT:OPEN? (@…)`, `SYST:ERR?`, `*IDN?`, `*RST`, `*CLS`, `*OPC?`; short or
    long forms, the optional ROUTe root, channel ranges `1101:1104`."""

    ERRORS = {  # noqa: RUF012 - a table, read only
        -102: "Syntax error",
        -108: "Parameter not allowed",
        -109: "Missing parameter",
        -113: "Undefined header",
        -222: "Data out of range",
        -350: "Queue overflow",
    }

    def __init__(
        self,
        relays: RelayState,
        bench: BenchState,
        identity: str = "Agilent Technologies,34980A,MY44012345,2.51-2.43-2.09-1.00",
        slots: Iterable[int] = range(1, 9),
    ) -> None:
        super().__init__(relays, bench, identity, slots)

    def handle(self, line: str) -> str | None:
        text = line.strip()
        if not text:
            return None
        header, _, argument = text.partition(" ")
        header, argument = self.canonical(header), argument.strip()
        no_argument = {"*IDN?": self.identity, "*OPC?": "1"}
        if header in no_argument or header in ("*RST", "*CLS", "SYST:ERR?"):
            if argument:
                self.error(-108, header)
                return None
            if header == "*RST":
                self.open_all()
            elif header == "*CLS":
                self.errors.clear()
            elif header == "SYST:ERR?":
                return self.next_error()
            return no_argument.get(header)
        if header == "OPEN:ALL":
            word = argument.upper()
            if word in ("", "ALL"):
                self.open_all()
            elif word.isdigit() and int(word) in self.slots:
                with self.bench.lock:
                    self.relays.closed = {name for name in self.relays.closed if name[0] != word}
                    self.bench.changed()
            else:
                self.error(-222, f"slot {argument}")
            return None
        if header in ("CLOS", "OPEN", "CLOS?", "OPEN?"):
            names = self.channel_list(argument)
            if names is None:
                return None
            if header == "CLOS":
                self.close(names)
            elif header == "OPEN":
                self.open(names)
            else:
                with self.bench.lock:
                    closed = [name in self.relays.closed for name in names]
                return ",".join("1" if (c if header == "CLOS?" else not c) else "0" for c in closed)
            return None
        self.error(-113, header)
        return None

    @staticmethod
    def canonical(header: str) -> str:
        """Short form, without the optional ROUTe root: `ROUTe:CLOSe?` -> `CLOS?`."""
        word = header.upper()
        for root in ("ROUTE:", "ROUT:"):
            if word.startswith(root):
                word = word[len(root) :]
                break
        return word.replace("SYSTEM:", "SYST:").replace("ERROR", "ERR").replace("CLOSE", "CLOS")

    def channel_list(self, argument: str) -> list[str] | None:
        if not argument:
            self.error(-109, "a channel list (@…)")
            return None
        if not (argument.startswith("(@") and argument.endswith(")")):
            self.error(-102, f"channel list {argument!r}")
            return None
        names: list[str] = []
        for item in argument[2:-1].split(","):
            first, _, last = item.strip().partition(":")
            span = [first] if not last else self.span(first, last)
            for name in span:
                match = KEYSIGHT_CHANNEL.fullmatch(name)
                if match is None or int(match.group(1)) not in self.slots:
                    self.error(-222, f"channel {name!r}")
                    return None
                names.append(name)
        return names

    @staticmethod
    def span(first: str, last: str) -> list[str]:
        if not (first.isdigit() and last.isdigit()) or first[0] != last[0] or int(last) < int(first):
            return [f"{first}:{last}"]
        return [str(n) for n in range(int(first), int(last) + 1) if KEYSIGHT_CHANNEL.fullmatch(str(n))]

    def error(self, code: int, detail: str) -> None:
        self.push_error(code, f"{self.ERRORS[code]}; {detail}")

    def next_error(self) -> str:
        if not self.errors:
            return '+0,"No error"'
        code, text = self.errors.pop(0)
        return f'{code:+d},"{text}"'
