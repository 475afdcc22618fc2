"""What every driver shares: a locked line-level session, identity check, error queue, and
declarative controls (one line per instrument command) with validators that refuse, never clip.

Every failure names the instrument: a transport's error is prefixed with the instrument's name,
and an answer a control cannot parse is an `InstrumentError` that quotes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from drivers.transport import LineFormat, Transport, TransportError, one_line


class InstrumentError(RuntimeError):
    """The instrument reported an error, or is not the instrument the bench config names."""


# ---------------------------------------------------------------------------------------- validators
Validator = Callable[[Any], Any]


def strict_range(low: float, high: float, unit: str = "") -> Validator:
    """Accept low ≤ value ≤ high; refuse anything else (no clipping: a wrong level is a bug)."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ValueError(f"{value!r}{unit} is outside [{low:g}, {high:g}]{unit}")
        return float(value)

    return check


def strict_set(allowed: Iterable[Any]) -> Validator:
    options = tuple(allowed)

    def check(value: Any) -> Any:
        if value not in options:
            raise ValueError(f"{value!r} is not one of {options}")
        return value

    return check


def strict_integer(low: int, high: int) -> Validator:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{value!r} is not an integer in [{low}, {high}]")
        return value

    return check


# ---------------------------------------------------------------------------------------- controls
class Control:
    """A readable and/or writable instrument setting: `get` is the query, `set` the command
    template (`{value}` and the owner's `{ch}` are filled in)."""

    def __init__(
        self,
        get: str | None,
        set: str | None,
        doc: str,
        validator: Validator = lambda v: v,
        parse: Callable[[str], Any] = float,
        format: Callable[[Any], str] = lambda v: repr(v) if isinstance(v, float) else str(v),
    ) -> None:
        self.get, self.set, self.__doc__ = get, set, doc
        self.validator, self.parse, self.format = validator, parse, format

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, owner: Any, kind: type | None = None) -> Any:
        if owner is None:
            return self
        if self.get is None:
            raise AttributeError(f"{self.name} cannot be read back")
        query = self.get.format(ch=owner.ch)
        return parsed(owner.name, query, owner.ask(query), self.parse)

    def __set__(self, owner: Any, value: Any) -> None:
        if self.set is None:
            raise AttributeError(f"{self.name} is read-only")
        checked = self.validator(value)
        owner.write(self.set.format(ch=owner.ch, value=self.format(checked)))


def measurement(get: str, doc: str, parse: Callable[[str], Any] = float) -> Control:
    return Control(get, None, doc, parse=parse)


def setting(set: str, doc: str, validator: Validator = lambda v: v, **kw: Any) -> Control:
    return Control(None, set, doc, validator, **kw)


def parsed(name: str, query: str, reply: str, parse: Callable[[str], Any]) -> Any:
    """`parse(reply)`, or an `InstrumentError` quoting what the instrument answered."""
    try:
        return parse(reply)
    except (ValueError, IndexError) as exc:
        raise InstrumentError(
            one_line(
                f"{name}: answered {reply[:40]!r} to {query!r}, which does not parse ({exc}): the session "
                "is out of step or the line is noisy"
            )
        ) from exc


def on_off(text: str) -> bool:
    """Parse the many ways instruments say on/off."""
    word = text.strip().upper()
    if word in ("1", "ON", "1.00000E+00", "SMUA.OUTPUT_ON", "SMUB.OUTPUT_ON"):
        return True
    if word in ("0", "OFF", "0.00000E+00", "SMUA.OUTPUT_OFF", "SMUB.OUTPUT_OFF"):
        return False
    return float(word) != 0.0


# ---------------------------------------------------------------------------------------- instrument
class Instrument:
    """A session with one instrument. Subclasses say how lines end, what `*IDN?` must contain and
    how to read the error queue."""

    line: ClassVar[LineFormat] = LineFormat()
    model: ClassVar[str] = ""  # substring of the `*IDN?` reply that identifies the model
    error_query: ClassVar[str] = ":SYST:ERR?"
    # What puts the instrument in its reset state with an empty error queue (IEEE 488.2 §10.32
    # *RST and §10.3 *CLS for SCPI; TSP models list reset() and errorqueue.clear()).
    reset_lines: ClassVar[tuple[str, ...]] = ("*RST", "*CLS")
    # Controls whose values `applied_settings` reads back (those the bench relies on).
    recorded: ClassVar[tuple[str, ...]] = ()
    ch: str = ""

    def __init__(self, transport: Transport, name: str) -> None:
        self.transport = transport
        self.name = name
        # pyvisa sessions are not thread-safe: one exchange at a time per instrument.
        self._lock = threading.RLock()
        self.idn = ""

    # -- line level
    def write(self, line: str) -> None:
        with self._lock:
            try:
                self.transport.write(line)
            except TransportError as exc:
                raise self._named(exc) from exc

    def ask(self, line: str) -> str:
        with self._lock:
            try:
                return self.transport.query(line)
            except TransportError as exc:
                raise self._named(exc) from exc

    def _named(self, exc: TransportError) -> TransportError:
        """The transport's error with this instrument's name in front (its address follows)."""
        address = getattr(self.transport, "address", "")
        joint = " at " if address and str(exc).startswith(address) else ": "
        return TransportError(f"{self.name}{joint}{exc}")

    # -- session level
    def identify(self) -> str:
        """Ask `*IDN?` and refuse an instrument that is not the configured model."""
        idn = self.ask("*IDN?")
        if self.model not in idn:
            raise InstrumentError(
                f"{self.name}: *IDN? answered {idn!r}, not a {self.model}: "
                "check the address in the bench config"
            )
        self.idn = idn
        return idn

    def reset_and_clear(self) -> None:
        """The instrument's reset state, error queue empty, every command carried out: what a
        session starts from, whatever the front panel or the last client left."""
        for line in self.reset_lines:
            self.write(line)
        self.wait_complete()

    def prepare(self) -> None:
        """Set, explicitly, every mode the bench relies on that a reset leaves to the model's
        defaults (subclasses); after `reset_and_clear`."""

    def applied_settings(self) -> dict[str, Any]:
        """What the instrument answers for each recorded setting: for the run log."""
        return read_back(self)

    def wait_complete(self) -> None:
        """Block until every command sent so far has been carried out (`*OPC?`). Needed after
        switching: the next reading comes from another instrument, which does not wait for this."""
        reply = self.ask("*OPC?")
        if reply.strip() not in ("1", "1.00000e+00"):
            raise InstrumentError(f"{self.name}: *OPC? answered {reply!r}, expected 1")

    def parse_error(self, reply: str) -> tuple[int, str]:
        """SCPI: `-113,"Undefined header"`."""
        code, _, text = reply.partition(",")
        return int(float(code)), text.strip().strip('"')

    def errors(self) -> list[tuple[int, str]]:
        """Drain the error queue."""
        found: list[tuple[int, str]] = []
        for _ in range(64):  # a queue holds at most a few dozen entries; never loop forever
            code, text = parsed(self.name, self.error_query, self.ask(self.error_query), self.parse_error)
            if code == 0:
                return found
            found.append((code, text))
        return found

    def check_errors(self) -> None:
        """Raise the instrument's own errors, code and text, if it has any."""
        found = self.errors()
        if found:
            listed = "; ".join(f"{code}: {text}" for code, text in found)
            raise InstrumentError(f"{self.name} reports {listed}")

    def close(self) -> None:
        self.transport.close()


def read_back(owner: Any) -> dict[str, Any]:
    """Each of `owner.recorded`, as the instrument answers it now."""
    found: dict[str, Any] = {}
    for name in owner.recorded:
        value = getattr(owner, name)
        found[name] = sorted(value) if isinstance(value, set) else value
    return found


class Channel:
    """One channel of a multi-channel instrument: shares the parent's session and lock."""

    recorded: ClassVar[tuple[str, ...]] = ()

    def __init__(self, parent: Instrument, ch: str) -> None:
        self.parent = parent
        self.ch = ch
        self.name = f"{parent.name}.{ch}"

    def write(self, line: str) -> None:
        self.parent.write(line)

    def ask(self, line: str) -> str:
        return self.parent.ask(line)

    def prepare(self) -> None:
        """The channel's explicit modes (see `Instrument.prepare`)."""

    def applied_settings(self) -> dict[str, Any]:
        return read_back(self)
