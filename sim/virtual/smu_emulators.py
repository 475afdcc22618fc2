"""Emulated SMUs: the Keithley 2450 (SCPI), 2600B (TSP) and Keysight B2900 (SCPI) command sets,
answering readings from the emulated circuit.

Each emulator takes one line at a time (`handle`) and returns the reply, or None for a command
that has none. Unknown or malformed commands go to the error queue, as on the instruments.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from sim.virtual.state import BenchState, SmuState

# (voltage at the HI terminal, current out of HI into the circuit, in compliance) for a channel key
Reading = Callable[[str], tuple[float, float, bool]]


def _num(text: str) -> float:
    return float(text)


def _fmt(x: float) -> str:
    return f"{x:.9E}"


class _Emulator:
    def __init__(self, idn: str, bench: BenchState, reading: Reading) -> None:
        self.idn = idn
        self.bench = bench
        self.reading = reading
        self.errors: list[tuple[int, str]] = []

    def handle(self, line: str) -> str | None:
        replies = [r for part in self._split(line) if (r := self._one(part.strip())) is not None]
        return ";".join(replies) if replies else None

    def _split(self, line: str) -> list[str]:
        return [p for p in line.split(";") if p.strip()]

    def _one(self, cmd: str) -> str | None:
        try:
            return self.command(cmd)
        except (ValueError, KeyError, IndexError):
            self.errors.append(self.bad_data)
            return None

    bad_data = (-222, "Data out of range")
    undefined = (-113, "Undefined header")

    def command(self, cmd: str) -> str | None:
        raise NotImplementedError

    def _set(self, key: str, **changes: object) -> None:
        with self.bench.lock:
            state = self.bench.smus[key]
            for name, value in changes.items():
                setattr(state, name, value)
            self.bench.changed()

    def _reset(self, key: str, defaults: dict[str, Any]) -> None:
        """Every setting of a channel back to the instrument's reset value."""
        fresh = SmuState(**defaults)
        self._set(key, **{f.name: getattr(fresh, f.name) for f in fields(SmuState)})

    def _scpi_error(self) -> str:
        if not self.errors:
            return '0,"No error"'
        code, text = self.errors.pop(0)
        return f'{code},"{text}"'


class Emulated2450(_Emulator):
    """One 2450; its channel key is the instrument name."""

    # *RST values (2450 reference manual): source V at 0, limits 105 µA and 21 V, 1 PLC.
    DEFAULTS: dict[str, Any] = {"current_limit": 105e-6, "voltage_limit": 21.0}  # noqa: RUF012
    SOURCE_VOLTAGE_RANGES = (0.02, 0.2, 2.0, 20.0, 200.0)
    SENSE_CURRENT_RANGES = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)

    def __init__(self, name: str, idn: str, bench: BenchState, reading: Reading) -> None:
        super().__init__(idn, bench, reading)
        self.key = name
        bench.smus.setdefault(name, SmuState(**self.DEFAULTS))
        self._reset_measure()

    def _reset_measure(self) -> None:
        self.sense = "CURR"
        self.source_voltage_range = 0.02  # autoranged to hold 0 V
        self.current_range = 1e-4
        self.current_autorange = True

    @staticmethod
    def _range(value: float, ranges: tuple[float, ...]) -> float:
        """The smallest range that holds `value` (the instrument rounds up); beyond the top, an error."""
        for full_scale in ranges:
            if abs(value) <= full_scale * (1 + 1e-9):
                return full_scale
        raise ValueError(f"{value} is beyond every range")

    def command(self, cmd: str) -> str | None:
        c = cmd.upper()
        s = self.bench.smus[self.key]
        if c == "*IDN?":
            return self.idn
        if c == "*LANG?":
            return "SCPI"
        if c == "*RST":
            self._reset(self.key, self.DEFAULTS)
            self._reset_measure()
            return None
        if c in (":SYST:ERR?", "SYST:ERR?", ":SYST:ERR:NEXT?"):
            return self._scpi_error()
        if c == ":OUTP?":
            return "1" if s.output else "0"
        if m := re.fullmatch(r":OUTP(?::STAT)? (ON|OFF|1|0)", c):
            self._set(self.key, output=m[1] in ("ON", "1"))
            return None
        if m := re.fullmatch(r":SOUR:FUNC (VOLT|CURR)", c):
            self._set(self.key, function="V" if m[1] == "VOLT" else "I")  # that function's own level
            return None
        if c == ":SOUR:FUNC?":
            return "VOLT" if s.function == "V" else "CURR"
        if m := re.fullmatch(r":SOUR:(VOLT|CURR) (\S+)", c):
            if (m[1] == "VOLT") != (s.function == "V"):
                self.errors.append((-221, "Settings conflict"))
                return None
            self._set(self.key, level=_num(m[2]))
            return None
        if c in (":SOUR:VOLT?", ":SOUR:CURR?"):
            return _fmt(s.voltage if c == ":SOUR:VOLT?" else s.current)
        if m := re.fullmatch(r":SOUR:VOLT:ILIM (\S+)", c):
            self._set(self.key, current_limit=_num(m[1]))
            return None
        if m := re.fullmatch(r":SOUR:CURR:VLIM (\S+)", c):
            self._set(self.key, voltage_limit=_num(m[1]))
            return None
        if c in (":SOUR:VOLT:ILIM?", ":SOUR:CURR:VLIM?"):
            return _fmt(s.current_limit if c == ":SOUR:VOLT:ILIM?" else s.voltage_limit)
        if m := re.fullmatch(r":SENS:(?:CURR|VOLT):NPLC (\S+)", c):
            self._set(self.key, nplc=_num(m[1]))
            return None
        if c in (":SENS:CURR:NPLC?", ":SENS:VOLT:NPLC?"):
            return _fmt(s.nplc)
        if c in (":SOUR:VOLT:ILIM:TRIP?", ":SOUR:CURR:VLIM:TRIP?"):
            return "1" if self.reading(self.key)[2] else "0"
        if m := re.fullmatch(r':SENS:FUNC "(VOLT|CURR)(?::DC)?"', c):
            self.sense = m[1]
            return None
        if c == ":SENS:FUNC?":
            return f'"{self.sense}:DC"'
        # Ranges change resolution on a real 2450, not the reading here.
        if m := re.fullmatch(r":SOUR:VOLT:RANG (\S+)", c):
            self.source_voltage_range = self._range(_num(m[1]), self.SOURCE_VOLTAGE_RANGES)
            return None
        if m := re.fullmatch(r":SENS:CURR:RANG (\S+)", c):
            self.current_range = self._range(_num(m[1]), self.SENSE_CURRENT_RANGES)
            self.current_autorange = False  # a range chosen by hand ends autoranging
            return None
        if m := re.fullmatch(r":SENS:CURR:RANG:AUTO (ON|OFF|1|0)", c):
            self.current_autorange = m[1] in ("ON", "1")
            return None
        if c == ":SOUR:VOLT:RANG?":
            return _fmt(self.source_voltage_range)
        if c == ":SENS:CURR:RANG?":
            return _fmt(self.current_range)
        if c == ":SENS:CURR:RANG:AUTO?":
            return "1" if self.current_autorange else "0"
        if c in (":MEAS:VOLT?", ":MEAS:CURR?", ":READ?"):
            v, i, _ = self.reading(self.key)
            return _fmt(v if c == ":MEAS:VOLT?" or (c == ":READ?" and self.sense == "VOLT") else i)
        self.errors.append(self.undefined)
        return None


class Emulated2600B(_Emulator):
    """One 2600B with channels a and b, keys `<name>.a` and `<name>.b`."""

    # smuX.reset() values (2600B reference manual, smuX.source.limitY): the 2601B/2602B/2604B limit
    # at 40 V and 1 A, the others at 20 V and 100 mA; levels 0 V and 0 A, volts, output off, 1 PLC.
    LOW_VOLTAGE_MODELS = ("2601B", "2602B", "2604B")

    def __init__(self, name: str, idn: str, bench: BenchState, reading: Reading) -> None:
        super().__init__(idn, bench, reading)
        self.name = name
        low_voltage = any(f"Model {model}" in idn for model in self.LOW_VOLTAGE_MODELS)
        self.defaults: dict[str, Any] = (
            {"voltage_limit": 40.0, "current_limit": 1.0}
            if low_voltage
            else {"voltage_limit": 20.0, "current_limit": 0.1}
        )
        for ch in "ab":
            bench.smus.setdefault(f"{name}.{ch}", SmuState(**self.defaults))

    def _split(self, line: str) -> list[str]:
        return [line]  # TSP: one chunk per line

    def command(self, cmd: str) -> str | None:
        if cmd == "*IDN?":
            return self.idn
        if cmd in ("*RST", "reset()"):
            for ch in "ab":
                self._reset(f"{self.name}.{ch}", self.defaults)
            return None
        if cmd == "print(errorqueue.next())":
            if not self.errors:
                return "0.00000e+00\tQueue Is Empty\t0.00000e+00\t0.00000e+00"
            code, text = self.errors.pop(0)
            return f"{float(code):.5e}\t{text}\t2.00000e+01\t1.00000e+00"
        if cmd == "print(errorqueue.count)":
            return f"{float(len(self.errors)):.5e}"
        if cmd == "errorqueue.clear()":
            self.errors.clear()
            return None
        if m := re.fullmatch(r"smu([ab])\.(source\.\w+|measure\.nplc) = (\S+)", cmd):
            self._assign(f"{self.name}.{m[1]}", m[2], m[3])
            return None
        if m := re.fullmatch(r"print\(smu([ab])\.(measure\.[vi]\(\)|source\.\w+|measure\.nplc)\)", cmd):
            return self._print(f"{self.name}.{m[1]}", m[2])
        if m := re.fullmatch(r"smu([ab])\.reset\(\)", cmd):
            self._reset(f"{self.name}.{m[1]}", self.defaults)
            return None
        self.errors.append((-285, "Program syntax"))
        return None

    def _assign(self, key: str, attribute: str, value: str) -> None:
        constants = {
            "1": 1.0,
            "0": 0.0,
            f"smu{key[-1]}.OUTPUT_ON": 1.0,
            f"smu{key[-1]}.OUTPUT_OFF": 0.0,
            f"smu{key[-1]}.OUTPUT_DCVOLTS": 1.0,
            f"smu{key[-1]}.OUTPUT_DCAMPS": 0.0,
        }
        number = constants[value] if value in constants else _num(value)
        if attribute == "source.func":
            self._set(key, function="V" if number == 1.0 else "I")  # that function's own level
        elif attribute == "source.output":
            self._set(key, output=number == 1.0)
        elif attribute == "source.levelv":  # kept for when the function is volts (manual)
            self._set(key, voltage=number)
        elif attribute == "source.leveli":
            self._set(key, current=number)
        elif attribute == "source.limiti":
            self._set(key, current_limit=number)
        elif attribute == "source.limitv":
            self._set(key, voltage_limit=number)
        elif attribute == "measure.nplc":
            self._set(key, nplc=number)
        else:
            self.errors.append((-285, "Program syntax"))

    def _print(self, key: str, what: str) -> str | None:
        s = self.bench.smus[key]
        if what in ("measure.v()", "measure.i()"):
            v, i, _ = self.reading(key)
            return f"{(v if what == 'measure.v()' else i):.9e}"
        values = {
            "source.func": 1.0 if s.function == "V" else 0.0,
            "source.output": 1.0 if s.output else 0.0,
            "source.levelv": s.voltage,
            "source.leveli": s.current,
            "source.limiti": s.current_limit,
            "source.limitv": s.voltage_limit,
            "measure.nplc": s.nplc,
        }
        if what == "source.compliance":
            return "true" if self.reading(key)[2] else "false"
        if what not in values:
            self.errors.append((-285, "Program syntax"))
            return None
        return f"{values[what]:.9e}"


class EmulatedB2900(_Emulator):
    """One B2900 with channels 1 and 2, keys `<name>.1` and `<name>.2`."""

    # *RST values (B2900 SCPI reference): volts at 0, compliance 100 µA and 2 V, output off.
    DEFAULTS: dict[str, Any] = {"current_limit": 100e-6, "voltage_limit": 2.0}  # noqa: RUF012

    def __init__(self, name: str, idn: str, bench: BenchState, reading: Reading) -> None:
        super().__init__(idn, bench, reading)
        self.name = name
        for ch in "12":
            bench.smus.setdefault(f"{name}.{ch}", SmuState(**self.DEFAULTS))

    def command(self, cmd: str) -> str | None:
        c = cmd.upper()
        if c == "*IDN?":
            return self.idn
        if c == "*OPC?":
            return "1"
        if c == "*RST":
            for ch in "12":
                self._reset(f"{self.name}.{ch}", self.DEFAULTS)
            return None
        if c == "*CLS":
            self.errors.clear()
            return None
        if c in (":SYST:ERR?", "SYST:ERR?", ":SYST:ERR:NEXT?"):
            return self._scpi_error()
        if m := re.fullmatch(r":OUTP([12])(?::STAT)? (ON|OFF|1|0)", c):
            self._set(f"{self.name}.{m[1]}", output=m[2] in ("ON", "1"))
            return None
        if m := re.fullmatch(r":OUTP([12])\?", c):
            return "1" if self.bench.smus[f"{self.name}.{m[1]}"].output else "0"
        if m := re.fullmatch(r":SOUR([12]):FUNC:MODE (VOLT|CURR)", c):
            self._set(f"{self.name}.{m[1]}", function="V" if m[2] == "VOLT" else "I")  # its own level
            return None
        if m := re.fullmatch(r":SOUR([12]):FUNC:MODE\?", c):
            return "VOLT" if self.bench.smus[f"{self.name}.{m[1]}"].function == "V" else "CURR"
        if m := re.fullmatch(r":SOUR([12]):(VOLT|CURR) (\S+)", c):  # each function keeps its level
            self._set(f"{self.name}.{m[1]}", **{"voltage" if m[2] == "VOLT" else "current": _num(m[3])})
            return None
        if m := re.fullmatch(r":SOUR([12]):(VOLT|CURR)\?", c):
            s = self.bench.smus[f"{self.name}.{m[1]}"]
            return _fmt(s.voltage if m[2] == "VOLT" else s.current)
        if m := re.fullmatch(r":SENS([12]):CURR:PROT (\S+)", c):
            self._set(f"{self.name}.{m[1]}", current_limit=_num(m[2]))
            return None
        if m := re.fullmatch(r":SENS([12]):VOLT:PROT (\S+)", c):
            self._set(f"{self.name}.{m[1]}", voltage_limit=_num(m[2]))
            return None
        if m := re.fullmatch(r":SENS([12]):(CURR|VOLT):PROT\?", c):
            s = self.bench.smus[f"{self.name}.{m[1]}"]
            return _fmt(s.current_limit if m[2] == "CURR" else s.voltage_limit)
        if m := re.fullmatch(r":SENS([12]):(?:CURR|VOLT):NPLC (\S+)", c):
            self._set(f"{self.name}.{m[1]}", nplc=_num(m[2]))
            return None
        if m := re.fullmatch(r":SENS([12]):(?:CURR|VOLT):NPLC\?", c):
            return _fmt(self.bench.smus[f"{self.name}.{m[1]}"].nplc)
        if m := re.fullmatch(r":SENS([12]):(?:CURR|VOLT):PROT:TRIP\?", c):
            return "1" if self.reading(f"{self.name}.{m[1]}")[2] else "0"
        if m := re.fullmatch(r":MEAS:(VOLT|CURR)\? \(@([12])\)", c):
            v, i, _ = self.reading(f"{self.name}.{m[2]}")
            return _fmt(v if m[1] == "VOLT" else i)
        self.errors.append(self.undefined)
        return None
