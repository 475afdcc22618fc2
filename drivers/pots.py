"""The digital-potentiometer bank: the trainable conductances.

`AD5206Model` is the part (an AD5206-class 256-position potentiometer used as a rheostat between
wiper W and end B: R_WB(code) = R_W + R_AB·code/256, so G(code) = 1/(R_W + R_AB·code/256); code 0
is the largest conductance) with a per-channel `Calibration` (measured conductance per code, the
nominal formula when none was measured). `PotBridge` drives a small microcontroller that holds the
pots, over a serial line (`drivers.firmware.potbridge` is its firmware).

Bridge line protocol (a SCPI dialect; ASCII lines ending in "\\n"; channels numbered 1…N as the
datasheet's RDAC1…RDAC6, then on along the chips of a bank):

| command                    | reply                                  | effect                          |
|----------------------------|----------------------------------------|---------------------------------|
| `*IDN?`                    | `EQPROP-HIL,POTBRIDGE,<serial>,<fw>`   |                                 |
| `*RST`                     | none                                   | every wiper to the safe code    |
| `*CLS`                     | none                                   | empties the error queue         |
| `*OPC?`                    | `1`                                    | once all before it are done     |
| `POT<n>:CODE <c>`          | none                                   | wiper n to code c               |
| `POT<n>:CODE?`             | `<c>`                                  |                                 |
| `POT:ALL <c1>,…,<cN>`      | none                                   | every wiper, one code each      |
| `POT:SET <n>=<c>,<n>=<c>…` | none                                   | the listed wipers only          |
| `POT:COUN?`                | `<N>`                                  | number of channels              |
| `SYST:ERR?`                | `0,"No error"` or `<code>,"<text>"`    | oldest error out of the queue   |

Headers are case-insensitive. A command is checked whole before any wiper moves: a bulk command
with one bad entry changes nothing. Errors (queue of 10; the last entry becomes -350 when full):
-100 command error (a malformed `POT:SET` entry), -104 data type error (not an integer), -108
parameter not allowed, -109 missing parameter, -113 undefined header, -114 header suffix out of
range (no such channel), -222 data out of range (code outside 0…255), -224 illegal parameter value
(a channel repeated), -350 queue overflow.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from drivers.instrument import Instrument, InstrumentError, measurement, strict_integer
from drivers.transport import LineFormat, Transport, TransportError

TAPS = 256


# ---------------------------------------------------------------------------------------- the part
class Calibration:
    """Conductance per code for one channel; the codes in the table are the realisable ones."""

    def __init__(self, conductances: Mapping[int, float]) -> None:
        if not conductances:
            raise ValueError("a calibration needs at least one (code, conductance) pair")
        for code, g in conductances.items():
            if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < TAPS:
                raise ValueError(f"calibration code {code!r} is not in [0, {TAPS - 1}]")
            if not g > 0:
                raise ValueError(f"calibration conductance {g!r} S at code {code} is not positive")
        self.table: dict[int, float] = dict(sorted(conductances.items()))
        # sorted by conductance so that the nearest one is a bisection away
        by_g = sorted((g, code) for code, g in self.table.items())
        self._g = [g for g, _ in by_g]
        self._codes = [code for _, code in by_g]

    @property
    def g_min(self) -> float:
        return self._g[0]

    @property
    def g_max(self) -> float:
        return self._g[-1]

    def conductance(self, code: int) -> float:
        if code not in self.table:
            raise ValueError(f"code {code!r} is not in the calibration table")
        return self.table[code]

    def code_for(self, conductance: float) -> int:
        """The code whose conductance is nearest; refuses one outside the calibrated range."""
        tolerance = 1e-12 * self.g_max  # the range ends themselves, after a float round trip
        if not self.g_min - tolerance <= conductance <= self.g_max + tolerance:
            raise ValueError(
                f"{conductance!r} S is outside the calibrated range [{self.g_min:.6g}, {self.g_max:.6g}] S"
            )
        i = bisect.bisect_left(self._g, conductance)
        if i == 0:
            return self._codes[0]
        if i == len(self._g):
            return self._codes[-1]
        below, above = self._g[i - 1], self._g[i]
        return self._codes[i - 1] if conductance - below <= above - conductance else self._codes[i]


@dataclass(frozen=True)
class AD5206Model:
    """An AD5206-class bank used as rheostats (W–B). R_AB is 10, 50 or 100 kΩ by grade; R_W is
    the wiper resistance (tens of ohms, typical value from the datasheet)."""

    r_ab: float = 10e3
    r_w: float = 45.0
    channels: int = 6
    calibrations: Mapping[int, Calibration] = field(default_factory=dict)
    _nominal: Calibration = field(init=False, repr=False, compare=False)
    taps: ClassVar[int] = TAPS
    codes: ClassVar[range] = range(TAPS)

    def __post_init__(self) -> None:
        if not self.r_ab > 0 or not self.r_w >= 0:
            raise ValueError(f"R_AB = {self.r_ab!r} Ω must be positive and R_W = {self.r_w!r} Ω not negative")
        for channel in self.calibrations:
            self._check_channel(channel)
        nominal = Calibration({code: self.nominal_conductance(code) for code in self.codes})
        object.__setattr__(self, "_nominal", nominal)

    def nominal_conductance(self, code: int) -> float:
        """G = 1/(R_W + R_AB·code/256), W to B."""
        return 1.0 / (self.r_w + self.r_ab * code / self.taps)

    def calibration(self, channel: int) -> Calibration:
        self._check_channel(channel)
        return self.calibrations.get(channel, self._nominal)

    def code_for(self, channel: int, conductance: float) -> int:
        try:
            return self.calibration(channel).code_for(conductance)
        except ValueError as exc:
            raise ValueError(f"pot channel {channel}: {exc}") from None

    def conductance(self, channel: int, code: int) -> float:
        return self.calibration(channel).conductance(code)

    def _check_channel(self, channel: int) -> None:
        if isinstance(channel, bool) or not isinstance(channel, int) or not 1 <= channel <= self.channels:
            raise ValueError(
                f"pot channel {channel!r} does not exist: the bank has channels 1-{self.channels}"
            )


# ---------------------------------------------------------------------------------------- the driver
class PotBankDriver:
    """`program()` on top of a bank's `write_codes`: conductances → codes through the model,
    only the channels whose code changed, in one bulk write."""

    pot: AD5206Model
    written: dict[int, int]  # the last code written to each channel, as far as this session knows

    def write_codes(self, codes: dict[int, int]) -> None:
        raise NotImplementedError

    def program(self, conductances: dict[int, float]) -> dict[int, float]:
        """Set each channel to the realisable conductance nearest the one asked; returns those."""
        codes = {channel: self.pot.code_for(channel, g) for channel, g in conductances.items()}
        changed = {channel: code for channel, code in codes.items() if self.written.get(channel) != code}
        if changed:
            self.write_codes(changed)
        return {channel: self.pot.conductance(channel, code) for channel, code in codes.items()}


def format_all(codes: list[int]) -> str:
    return ",".join(str(code) for code in codes)


def format_set(codes: dict[int, int]) -> str:
    return ",".join(f"{channel}={code}" for channel, code in sorted(codes.items()))


class PotBridge(PotBankDriver, Instrument):
    """The microcontroller bridge, `PotBank` role, over a serial line (see the protocol above)."""

    model = "POTBRIDGE"
    line = LineFormat("\n", "\n", 2.0)
    error_query = "SYST:ERR?"
    taps = TAPS
    RESET: ClassVar[str] = "*RST"
    ALL: ClassVar[str] = "POT:ALL {codes}"
    SET: ClassVar[str] = "POT:SET {codes}"
    CODE: ClassVar[str] = "POT{channel}:CODE {code}"
    CODE_QUERY: ClassVar[str] = "POT{channel}:CODE?"
    IDN_TRIES: ClassVar[int] = 3

    channel_count = measurement("POT:COUN?", "Channels the bridge drives.", int)

    def __init__(self, transport: Transport, name: str, pot: AD5206Model | None = None) -> None:
        Instrument.__init__(self, transport, name)
        self.pot = pot or AD5206Model()
        self.channels = self.pot.channels
        self.written = {}
        self._code = strict_integer(0, self.taps - 1)
        self._channel = strict_integer(1, self.channels)

    def identify(self) -> str:
        """`*IDN?` (tried `IDN_TRIES` times: a board that reset on open may still be printing its
        boot banner), then refuse a bridge that drives fewer channels than the model says."""
        problem = ""
        for _ in range(self.IDN_TRIES):
            try:
                idn = self.ask("*IDN?")
            except TransportError as exc:
                problem = str(exc)
            else:
                if self.model in idn:
                    self.idn = idn
                    break
                problem = f"*IDN? answered {idn!r}"
            drain = getattr(self.transport, "drain", None)
            if drain is not None:
                drain()  # the rest of a banner, or the answer that came after it
        else:
            raise InstrumentError(
                f"{self.name}: no bridge identity after {self.IDN_TRIES} tries ({problem}): the board may "
                "still be booting (raise boot_seconds in its [instruments] table) or not run "
                "drivers/firmware/potbridge.py; check the address in the bench config"
            )
        count = self.channel_count
        if count < self.channels:
            raise InstrumentError(
                f"{self.name}: the bridge drives {count} pots, the bench config needs {self.channels}"
            )
        return self.idn

    def reset(self) -> None:
        self.write(self.RESET)
        self.wait_complete()
        self.written = {}  # the safe code is the firmware's: next program() writes every channel

    def write_codes(self, codes: dict[int, int]) -> None:
        checked = {
            self._checked_channel(channel): self._checked_code(channel, code)
            for channel, code in codes.items()
        }
        if not checked:
            return
        if set(checked) == set(range(1, self.channels + 1)):
            self.write(self.ALL.format(codes=format_all([checked[n] for n in range(1, self.channels + 1)])))
        else:
            self.write(self.SET.format(codes=format_set(checked)))
        self.wait_complete()
        self.written.update(checked)

    def write_code(self, channel: int, code: int) -> None:
        self.write(
            self.CODE.format(channel=self._checked_channel(channel), code=self._checked_code(channel, code))
        )
        self.wait_complete()
        self.written[channel] = code

    def read_code(self, channel: int) -> int:
        return int(self.ask(self.CODE_QUERY.format(channel=self._checked_channel(channel))))

    def _checked_channel(self, channel: int) -> int:
        try:
            return self._channel(channel)
        except ValueError:
            raise ValueError(
                f"{self.name}: pot channel {channel!r} does not exist (1-{self.channels})"
            ) from None

    def _checked_code(self, channel: int, code: int) -> int:
        try:
            return self._code(code)
        except ValueError:
            raise ValueError(
                f"{self.name}: code {code!r} for pot {channel} is not in [0, {self.taps - 1}]"
            ) from None
