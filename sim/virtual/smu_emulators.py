"""Emulated SMUs: the Keithley 2450 (SCPI), 2600B (TSP) and Keysight B2900 (SCPI) command sets,
answering readings from the emulated circuit.

Each emulator takes one line at a time (`handle`) and returns the reply, or None for a command
that has none. Unknown or malformed commands go to the error queue, as on the instruments.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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

    def _scpi_error(self) -> str:
        if not self.errors:
            return '0,"No error"'
        code, text = self.errors.pop(0)
        return f'{code},"{text}"'


class Emulated2450(_Emulator):
    """One 2450; its channel key is the instrument name."""

    def __init__(self, name: str, idn: str, bench: BenchState, reading: Reading) -> None:
        super().__init__(idn, bench, reading)
        self.key = name
        self.sense = "CURR"
        self.ranges: dict[str, float | str] = {}
        bench.smus.setdefault(name, SmuState())

    def command(self, cmd: str) -> str | None:
        c = cmd.upper()
        s = self.bench.smus[self.key]
        if c == "*IDN?":
            return self.idn
        if c == "*LANG?":
            return "SCPI"
        if c == "*RST":
            self._set(self.key, function="V", level=0.0, output=False)
            return None
        if c in (":SYST:ERR?", "SYST:ERR?", ":SYST:ERR:NEXT?"):
            return self._scpi_error()
        if c == ":OUTP?":
            return "1" if s.output else "0"
        if m := re.fullmatch(r":OUTP(?::STAT)? (ON|OFF|1|0)", c):
            self._set(self.key, output=m[1] in ("ON", "1"))
            return None
        if m := re.fullmatch(r":SOUR:FUNC (VOLT|CURR)", c):
            self._set(self.key, function="V" if m[1] == "VOLT" else "I", level=0.0)
            return None
        if c == ":SOUR:FUNC?":
            return "VOLT" if s.function == "V" else "CURR"
        if m := re.fullmatch(r":SOUR:(VOLT|CURR) (\S+)", c):
            if (m[1] == "VOLT") != (s.function == "V"):
                self.errors.append((-221, "Settings conflict"))
                return None
            self._set(self.key, level=_num(m[2]))
            return None
        if m := re.fullmatch(r":SOUR:VOLT:ILIM (\S+)", c):
            self._set(self.key, current_limit=_num(m[1]))
            return None
        if m := re.fullmatch(r":SOUR:CURR:VLIM (\S+)", c):
            self._set(self.key, voltage_limit=_num(m[1]))
            return None
        if m := re.fullmatch(r":SENS:(?:CURR|VOLT):NPLC (\S+)", c):
            self._set(self.key, nplc=_num(m[1]))
            return None
        if c in (":SOUR:VOLT:ILIM:TRIP?", ":SOUR:CURR:VLIM:TRIP?"):
            return "1" if self.reading(self.key)[2] else "0"
        if m := re.fullmatch(r':SENS:FUNC "(VOLT|CURR)(?::DC)?"', c):
            self.sense = m[1]
            return None
        if c == ":SENS:FUNC?":
            return f'"{self.sense}:DC"'
        if m := re.fullmatch(r"(:SOUR:VOLT:RANG|:SENS:CURR:RANG(?::AUTO)?) (\S+)", c):
            self.ranges[m[1]] = m[2]  # ranges change resolution on a real 2450, not the reading here
            return None
        if c in (":MEAS:VOLT?", ":MEAS:CURR?", ":READ?"):
            v, i, _ = self.reading(self.key)
            return _fmt(v if c == ":MEAS:VOLT?" or (c == ":READ?" and self.sense == "VOLT") else i)
        self.errors.append(self.undefined)
        return None


class Emulated2600B(_Emulator):
    """One 2600B with channels a and b, keys `<name>.a` and `<name>.b`."""

    def __init__(self, name: str, idn: str, bench: BenchState, reading: Reading) -> None:
        super().__init__(idn, bench, reading)
        self.name = name
        for ch in "ab":
            bench.smus.setdefault(f"{name}.{ch}", SmuState())

    def _split(self, line: str) -> list[str]:
        return [line]  # TSP: one chunk per line

    def command(self, cmd: str) -> str | None:
        if cmd == "*IDN?":
            return self.idn
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
            self._set(f"{self.name}.{m[1]}", function="V", level=0.0, output=False)
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
        s = self.bench.smus[key]
        if attribute == "source.func":
            self._set(key, function="V" if number == 1.0 else "I", level=0.0)
        elif attribute == "source.output":
            self._set(key, output=number == 1.0)
        elif attribute in ("source.levelv", "source.leveli"):
            if (attribute == "source.levelv") != (s.function == "V"):
                self.errors.append((-221, "Settings conflict"))
            else:
                self._set(key, level=number)
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
            "source.levelv": s.level if s.function == "V" else 0.0,
            "source.leveli": s.level if s.function == "I" else 0.0,
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

    def __init__(self, name: str, idn: str, bench: BenchState, reading: Reading) -> None:
        super().__init__(idn, bench, reading)
        self.name = name
        for ch in "12":
            bench.smus.setdefault(f"{name}.{ch}", SmuState())

    def command(self, cmd: str) -> str | None:
        c = cmd.upper()
        if c == "*IDN?":
            return self.idn
        if c in (":SYST:ERR?", "SYST:ERR?", ":SYST:ERR:NEXT?"):
            return self._scpi_error()
        if m := re.fullmatch(r":OUTP([12])(?::STAT)? (ON|OFF|1|0)", c):
            self._set(f"{self.name}.{m[1]}", output=m[2] in ("ON", "1"))
            return None
        if m := re.fullmatch(r":OUTP([12])\?", c):
            return "1" if self.bench.smus[f"{self.name}.{m[1]}"].output else "0"
        if m := re.fullmatch(r":SOUR([12]):FUNC:MODE (VOLT|CURR)", c):
            self._set(f"{self.name}.{m[1]}", function="V" if m[2] == "VOLT" else "I", level=0.0)
            return None
        if m := re.fullmatch(r":SOUR([12]):(VOLT|CURR) (\S+)", c):
            key = f"{self.name}.{m[1]}"
            if (m[2] == "VOLT") != (self.bench.smus[key].function == "V"):
                self.errors.append((-221, "Settings conflict"))
                return None
            self._set(key, level=_num(m[3]))
            return None
        if m := re.fullmatch(r":SENS([12]):CURR:PROT (\S+)", c):
            self._set(f"{self.name}.{m[1]}", current_limit=_num(m[2]))
            return None
        if m := re.fullmatch(r":SENS([12]):VOLT:PROT (\S+)", c):
            self._set(f"{self.name}.{m[1]}", voltage_limit=_num(m[2]))
            return None
        if m := re.fullmatch(r":SENS([12]):(?:CURR|VOLT):NPLC (\S+)", c):
            self._set(f"{self.name}.{m[1]}", nplc=_num(m[2]))
            return None
        if m := re.fullmatch(r":SENS([12]):(?:CURR|VOLT):PROT:TRIP\?", c):
            return "1" if self.reading(f"{self.name}.{m[1]}")[2] else "0"
        if m := re.fullmatch(r":MEAS:(VOLT|CURR)\? \(@([12])\)", c):
            v, i, _ = self.reading(f"{self.name}.{m[2]}")
            return _fmt(v if m[1] == "VOLT" else i)
        self.errors.append(self.undefined)
        return None
