"""Emulated SMUs: the Keithley 2450 (SCPI), the Keithley 2600B series (TSP) and the Keysight B2900
series (SCPI), answering readings from the emulated circuit.

Each speaks its instrument's grammar through `sim.virtual.grammar` (any client's spelling: long
and short forms, optional nodes, any case, compound lines; TSP assignments however spaced), keeps
its settings the way the instrument does (each source function its own level; NPLC per measure
function on a 2450, one per channel on a 2600B and a B2900), answers a query for every setting
it takes, and refuses what the instrument refuses with the instrument's error: a level or limit
beyond the model's range, a channel the model does not have. The shared state (`SmuState`) holds
what the circuit needs; the rest (ranges, sense function, output-off mode, ...) stays here.

Output-off states (each model's `_off_limit` and `_zero_amp_limit`): a 0 V state holds its node at
0 V up to a current limit (`SmuState.off_limit`, which the circuit solves); high impedance opens
the output relay, and a 0 A state (2600B OUTPUT_NORMAL with OUTPUT_DCAMPS, 2450 GUARd) keeps it
closed and draws nothing up to a voltage limit: to the circuit both draw nothing. What the circuit
does not solve is kept in each channel's `OffRecord`: how often its output relay opened, the
largest node a 0 A off state sat on, and every time that node was beyond the state's voltage limit
(the instrument would clamp the node there and sink current through the relays joining them; read
as the output goes on again, and flagged by the compliance query while off).

Manual references are to: Keithley 2450 reference manual 2450-901-01 (§6 SCPI command
reference), Series 2600B reference manual 2600BS-901-01 (§7 TSP command reference), Keysight
B2900 SCPI command reference (B2961A/B2962A edition 6 where the series shares it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

from sim.virtual.grammar import (
    CONFLICT,
    OUT_OF_RANGE,
    SUFFIX,
    Call,
    Refused,
    Scpi,
    ScpiFrontEnd,
    TspFrontEnd,
    Value,
    keyword,
    nr1,
    nr3,
    refuse,
    runtime,
)
from sim.virtual.state import BenchState, SmuState

# (voltage at the HI terminal, current out of HI into the circuit, in compliance) for a channel key
Reading = Callable[[str], tuple[float, float, bool]]

# What changes what the circuit sees (and so needs a new solve); other settings do not.
_CIRCUIT = {"function", "voltage", "current", "current_limit", "voltage_limit", "output", "off_limit"}


@dataclass
class OffRecord:
    """What a channel's output-off states did that the circuit does not solve (module doc)."""

    relay_openings: int = 0  # outputs switched off with the output relay opening
    largest_off_volts: float = 0.0  # the largest |V| on the channel while off in a 0 A state
    limit_hits: list[tuple[float, float]] = field(default_factory=list)  # (V, that state's limit)


class _Channels:
    """Shared-state access for the channels of one emulated SMU."""

    bench: BenchState
    reading: Reading

    def off_record(self, key: str) -> OffRecord:
        records: dict[str, OffRecord] = self.__dict__.setdefault("off_records", {})
        return records.setdefault(key, OffRecord())

    def _switch_output(
        self, key: str, on: bool, opens_relay: bool, zero_amp_limit: Callable[[float], float] | None
    ) -> None:
        """The output on or off, booked: an output going off with `opens_relay` opens the output
        relay; an output going on from a 0 A off state (`zero_amp_limit`: its voltage limit for a
        node at V) is checked against the node it sat on while off, which is where the route it
        was switched onto closed."""
        state, record = self._state(key), self.off_record(key)
        if on and not state.output and zero_amp_limit is not None:
            volts = self.reading(key)[0]  # off and drawing nothing: the node as it is
            record.largest_off_volts = max(record.largest_off_volts, abs(volts))
            limit = zero_amp_limit(volts)
            if abs(volts) > limit:
                record.limit_hits.append((volts, limit))
        if not on and state.output and opens_relay:
            record.relay_openings += 1
        self._set(key, output=on)

    def _off_at_limit(self, key: str, zero_amp_limit: Callable[[float], float] | None) -> bool:
        """Off in a 0 A state on a node beyond its voltage limit (what its compliance flag says)."""
        if self._state(key).output or zero_amp_limit is None:
            return False
        volts = self.reading(key)[0]
        return abs(volts) > zero_amp_limit(volts)

    def _state(self, key: str) -> SmuState:
        return self.bench.smus[key]

    def _set(self, key: str, **changes: Any) -> None:
        with self.bench.lock:
            state = self.bench.smus[key]
            for name, value in changes.items():
                setattr(state, name, value)
            if _CIRCUIT & set(changes):
                self.bench.changed()

    def _hold_off(self, key: str, limit: float | None) -> None:
        """What the channel's output-off mode leaves on its terminals (`SmuState.off_limit`)."""
        state = self._state(key)
        if state.off_limit == limit:
            return
        if state.output:  # nothing the circuit sees changes until the output goes off
            with self.bench.lock:
                state.off_limit = limit
        else:
            self._set(key, off_limit=limit)

    def _reset_channel(self, key: str, defaults: dict[str, Any]) -> None:
        """Every setting of a channel back to the instrument's reset value."""
        fresh = SmuState(**defaults)
        self._set(key, **{f.name: getattr(fresh, f.name) for f in fields(SmuState)})


def _range(value: float, ranges: tuple[float, ...], headroom: float) -> float:
    """The smallest range that holds `value` (the instruments round up); beyond the top, -222."""
    for full_scale in ranges:
        if abs(value) <= full_scale * (1 + 1e-9):
            return full_scale
    if abs(value) <= ranges[-1] * headroom:
        return ranges[-1]
    raise refuse(OUT_OF_RANGE, f"{value:g} is beyond the {ranges[-1]:g} range")


def _resistance(v: float, i: float) -> float:
    return v / i if i else 9.9e37  # SCPI's "not a number" for an open circuit


# ---------------------------------------------------------------------------------------- 2450
@dataclass
class _Local2450:
    """The 2450 settings the circuit does not need (2450 RM §6; values are *RST's)."""

    sense: str = "CURR"  # [:SENSe[1]]:FUNCtion: current after *RST
    source_range: dict[str, float] | None = None
    source_autorange: dict[str, bool] | None = None
    measure_range: dict[str, float] | None = None
    measure_autorange: dict[str, bool] | None = None
    rsense: dict[str, bool] | None = None
    resistance_nplc: float = 1.0
    off_mode: dict[str, str] | None = None
    delay: dict[str, float] | None = None
    delay_auto: dict[str, bool] | None = None
    readback: dict[str, bool] | None = None
    average: dict[str, bool] | None = None
    average_count: dict[str, int] | None = None
    average_type: dict[str, str] | None = None
    terminals: str = "FRON"
    precision: int = 0
    last: float = 0.0

    def __post_init__(self) -> None:
        both = ("VOLT", "CURR")
        self.source_range = {"VOLT": 0.02, "CURR": 1e-8}
        self.source_autorange = dict.fromkeys(both, True)
        self.measure_range = {"VOLT": 0.02, "CURR": 1e-4, "RES": 2e5}
        self.measure_autorange = {"VOLT": True, "CURR": True, "RES": True}
        self.rsense = {"VOLT": False, "CURR": False, "RES": False}
        self.off_mode = dict.fromkeys(both, "NORM")
        self.delay = dict.fromkeys(both, 0.0)
        self.delay_auto = dict.fromkeys(both, True)
        self.readback = dict.fromkeys(both, True)
        self.average = {"VOLT": False, "CURR": False, "RES": False}
        self.average_count = {"VOLT": 10, "CURR": 10, "RES": 10}
        self.average_type = {"VOLT": "REP", "CURR": "REP", "RES": "REP"}


class Emulated2450(_Channels, ScpiFrontEnd):
    """One 2450 in its SCPI command set; its channel key is the instrument name."""

    # *RST values (2450 RM §6 :SOURce[1]:<function>:<x>LIMit): source V at 0, limits 105 µA and
    # 21 V, 1 PLC for every measure function.
    DEFAULTS: dict[str, Any] = {"current_limit": 105e-6, "voltage_limit": 21.0}  # noqa: RUF012
    # Source and measure ranges (2450 RM §6 :SOURce[1]:<function>:RANGe, [:SENSe[1]]:<function>:
    # RANGe[:UPPer]); a level may reach 105 % of the top range: ±210 V, ±1.05 A.
    SOURCE_VOLTAGE_RANGES = (0.02, 0.2, 2.0, 20.0, 200.0)
    SOURCE_CURRENT_RANGES = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    SENSE_CURRENT_RANGES = SOURCE_CURRENT_RANGES
    SENSE_RESISTANCE_RANGES = (20.0, 200.0, 2e3, 2e4, 2e5, 2e6, 2e7, 2e8)
    LIMITS = {"VOLT": (1e-9, 1.05), "CURR": (0.02, 210.0)}  # noqa: RUF012 - ILIMit, VLIMit
    MAXIMUM = {"VOLT": 210.0, "CURR": 1.05}  # noqa: RUF012

    def __init__(self, name: str, idn: str, bench: BenchState, reading: Reading) -> None:
        self.key = name
        self.bench, self.reading = bench, reading
        self.identity = idn
        self.language = "SCPI"
        bench.smus.setdefault(name, SmuState(**self.DEFAULTS))
        self.local = _Local2450()
        super().__init__()
        self._hold_off(self.key, self._off_limit())

    def handle(self, line: str) -> str | None:
        try:
            return super().handle(line)
        finally:  # whatever the line changed (function, off mode, range, *RST), the off state follows
            self._hold_off(self.key, self._off_limit())

    def _off_limit(self) -> float | None:
        """What output off leaves (2450 RM §6 :OUTPut[1]:<function>:SMODe, kept per source
        function): NORMal 0 V at 10 % of the present current range, ZERO 0 V with the current DAC
        at the range's full scale; HIMPedance opens the output relay and GUARd sources 0 A, so
        neither draws from the node."""
        mode = self._d("off_mode")["VOLT" if self.s.function == "V" else "CURR"]
        current_range = float(self._d("measure_range")["CURR"])
        return {"NORM": 0.1 * current_range, "ZERO": current_range}.get(mode)

    def _zero_amp_limit(self) -> Callable[[float], float] | None:
        """GUARd (2450 RM §6 :OUTPut[1]:<function>:SMODe): 0 A at 10 % of full scale of the present
        voltage range; autoranged, the present range is the one a reading of the node selects."""
        if self._d("off_mode")["VOLT" if self.s.function == "V" else "CURR"] != "GUAR":
            return None
        ranges = self.SOURCE_VOLTAGE_RANGES

        def limit(volts: float) -> float:
            if self._d("measure_autorange")["VOLT"]:
                return 0.1 * next((r for r in ranges if abs(volts) <= r), ranges[-1])
            return 0.1 * float(self._d("measure_range")["VOLT"])

        return limit

    def _opens_relay(self) -> bool:
        return self._d("off_mode")["VOLT" if self.s.function == "V" else "CURR"] == "HIMP"

    # Kept for the tests that read them.
    @property
    def sense(self) -> str:
        return self.local.sense

    def reset(self) -> None:
        self._reset_channel(self.key, self.DEFAULTS)
        self.local = _Local2450()

    def common(self) -> dict[str, Callable[[], str | None]]:
        return {**super().common(), "*LANG?": lambda: self.language}

    def _common(self, header: str, rest: str) -> str | None:
        if header == "*LANG":
            # takes effect at the next power-up (2450 RM §6 *LANG); this session stays SCPI
            keyword(rest.strip(), ("SCPI", "TSP", "SCPI2400"), header)
            return None
        return super()._common(header, rest)

    @property
    def s(self) -> SmuState:
        return self._state(self.key)

    def _ranges(self, function: str, source: bool) -> tuple[float, ...]:
        if function == "VOLT":
            return self.SOURCE_VOLTAGE_RANGES
        if function == "RES":
            return self.SENSE_RESISTANCE_RANGES
        return self.SOURCE_CURRENT_RANGES if source else self.SENSE_CURRENT_RANGES

    def table(self) -> list[Scpi]:
        t: list[Scpi] = [
            Scpi(
                ":SOURce#:FUNCtion[:MODE]", self._set_function, self._get_function, "§6 :SOURce[1]:FUNCtion"
            ),
            Scpi("[:SENSe#]:FUNCtion[:ON]", self._set_sense, self._get_sense, "§6 [:SENSe[1]]:FUNCtion[:ON]"),
            Scpi("[:SENSe#]:NPLCycles", self._set_all_nplc, None, "§6 [:SENSe[1]]:<function>:NPLCycles"),
            Scpi(":OUTPut#[:STATe]", self._set_output, self._get_output, "§6 :OUTPut[1][:STATe]"),
            Scpi(":MEASure", None, lambda c: self._measure(c, None), "§6 :MEASure?"),
            Scpi(":READ", None, lambda c: self._measure(c, self.local.sense), "§6 :READ?"),
            Scpi(":FETCh", None, lambda c: nr3(self.local.last), "§6 :FETCh?"),
            Scpi(":INITiate[:IMMediate]", self._initiate, None, "§6 :INITiate"),
            Scpi(":ABORt", lambda c: c.count(0), None, "§6 :ABORt"),
            Scpi(":SYSTem:ERRor[:NEXT]", None, lambda c: self.next_error(), "§6 :SYSTem:ERRor[:NEXT]?"),
            Scpi(":SYSTem:ERRor:COUNt", None, lambda c: str(len(self.queue)), "§6 :SYSTem:ERRor:COUNt?"),
            Scpi(":SYSTem:ERRor:CLEar", lambda c: self.queue.entries.clear(), None, "§6 :SYSTem:CLEar"),
            Scpi(":SYSTem:CLEar", lambda c: self.queue.entries.clear(), None, "§6 :SYSTem:CLEar"),
            Scpi(":SYSTem:BEEPer[:IMMediate]", lambda c: c.count(2), None, "§6 :SYSTem:BEEPer[:IMMediate]"),
            Scpi(":STATus:PRESet", lambda c: c.count(0), None, "§6 :STATus:PRESet"),
            Scpi(":STATus:CLEar", lambda c: c.count(0), None, "§6 :STATus:CLEar"),
            Scpi(
                ":ROUTe:TERMinals", self._set_terminals, lambda c: self.local.terminals, "§6 :ROUTe:TERMinals"
            ),
            Scpi(
                ":FORMat:ASCii:PRECision",
                lambda c: setattr(self.local, "precision", int(c.number(0, 0, 16, 0))),
                lambda c: str(self.local.precision),
                "§6 :FORMat:ASCii:PRECision",
            ),
        ]
        for f, name, limit in (("VOLT", "VOLTage", "ILIMit"), ("CURR", "CURRent", "VLIMit")):
            base = f":SOURce#:{name}"
            t += [
                Scpi(
                    f"{base}[:LEVel][:IMMediate][:AMPLitude]",
                    self._setter_level(f),
                    self._getter_level(f),
                    "§6 :SOURce[1]:<function>[:LEVel][:IMMediate][:AMPLitude]",
                ),
                Scpi(
                    f"{base}:RANGe",
                    self._setter_source_range(f),
                    partial(self._show_source_range, f),
                    "§6 :SOURce[1]:<function>:RANGe",
                ),
                Scpi(
                    f"{base}:RANGe:AUTO",
                    self._flag("source_autorange", f),
                    self._get_flag("source_autorange", f),
                    "§6 :SOURce[1]:<function>:RANGe:AUTO",
                ),
                Scpi(
                    f"{base}:{limit}[:LEVel]",
                    self._setter_limit(f),
                    self._getter_limit(f),
                    f"§6 :SOURce[1]:{name}:{limit}[:LEVel]",
                ),
                Scpi(
                    f"{base}:{limit}[:LEVel]:TRIPped",
                    None,
                    partial(self._show_tripped, f),
                    f"§6 :SOURce[1]:{name}:{limit}[:LEVel]:TRIPped?",
                ),
                Scpi(
                    f"{base}:DELay",
                    self._setter_delay(f),
                    partial(self._show, "delay", f, nr3),
                    "§6 :SOURce[1]:<function>:DELay",
                ),
                Scpi(
                    f"{base}:DELay:AUTO",
                    self._flag("delay_auto", f),
                    self._get_flag("delay_auto", f),
                    "§6 :SOURce[1]:<function>:DELay:AUTO",
                ),
                Scpi(
                    f"{base}:READ:BACK",
                    self._flag("readback", f),
                    self._get_flag("readback", f),
                    "§6 :SOURce[1]:<function>:READ:BACK",
                ),
                Scpi(
                    f":OUTPut#:{name}:SMODe",
                    self._setter_off_mode(f),
                    partial(self._show, "off_mode", f, str),
                    "§6 :OUTPut[1]:<function>:SMODe",
                ),
            ]
        t.append(
            Scpi(
                ":OUTPut#:SMODe",
                self._set_every_off_mode,
                lambda c: self._d("off_mode")["VOLT" if self.s.function == "V" else "CURR"],
                "§6 :OUTPut[1]:<function>:SMODe (no <function>: every function's)",
            )
        )
        for m, name in (("VOLT", "VOLTage[:DC]"), ("CURR", "CURRent[:DC]"), ("RES", "RESistance")):
            base = f"[:SENSe#]:{name}"
            t += [
                Scpi(
                    f"{base}:NPLCycles",
                    self._setter_nplc(m),
                    self._getter_nplc(m),
                    "§6 [:SENSe[1]]:<function>:NPLCycles",
                ),
                Scpi(
                    f"{base}:RANGe[:UPPer]",
                    self._setter_measure_range(m),
                    partial(self._show, "measure_range", m, nr3),
                    "§6 [:SENSe[1]]:<function>:RANGe[:UPPer]",
                ),
                Scpi(
                    f"{base}:RANGe:AUTO",
                    self._flag("measure_autorange", m),
                    self._get_flag("measure_autorange", m),
                    "§6 [:SENSe[1]]:<function>:RANGe:AUTO",
                ),
                Scpi(
                    f"{base}:RSENse",
                    self._flag("rsense", m),
                    self._get_flag("rsense", m),
                    "§6 [:SENSe[1]]:<function>:RSENse",
                ),
                Scpi(
                    f"{base}:AVERage[:STATe]",
                    self._flag("average", m),
                    self._get_flag("average", m),
                    "§6 [:SENSe[1]]:<function>:AVERage",
                ),
                Scpi(
                    f"{base}:AVERage:COUNt",
                    self._setter_average_count(m),
                    partial(self._show, "average_count", m, str),
                    "§6 [:SENSe[1]]:<function>:AVERage:COUNt",
                ),
                Scpi(
                    f"{base}:AVERage:TCONtrol",
                    self._setter_average_type(m),
                    partial(self._show, "average_type", m, str),
                    "§6 [:SENSe[1]]:<function>:AVERage:TCONtrol",
                ),
                Scpi(f":MEASure:{name}", None, partial(self._measure_as, m), "§6 :MEASure:<function>?"),
            ]
        return t

    # -- helpers over the local settings
    def _show(self, attribute: str, key: str, form: Callable[[Any], str], c: Call) -> str:
        return form(self._d(attribute)[key])

    def _show_source_range(self, f: str, c: Call) -> str:
        return nr3(self._source_range(f))

    def _show_tripped(self, f: str, c: Call) -> str:
        return nr1(self._tripped(f))

    def _initiate(self, c: Call) -> None:
        c.count(0, 1)
        self._take(self.local.sense)

    def _measure_as(self, function: str, c: Call) -> str:
        return self._measure(c, function)

    def _d(self, attribute: str) -> dict[str, Any]:
        value = getattr(self.local, attribute)
        assert isinstance(value, dict)
        return value

    def _flag(self, attribute: str, key: str) -> Callable[[Call], None]:
        def set_flag(c: Call) -> None:
            c.count(1)
            self._d(attribute)[key] = c.boolean()

        return set_flag

    def _get_flag(self, attribute: str, key: str) -> Callable[[Call], str]:
        return lambda c: nr1(self._d(attribute)[key])

    def _one_channel(self, c: Call) -> None:
        if any(suffix != 1 for suffix in c.suffixes):
            raise refuse(SUFFIX, c.header)

    # -- source
    def _set_function(self, c: Call) -> None:
        self._one_channel(c)
        c.count(1)
        function = c.choice(("VOLTage", "CURRent"))
        self._set(self.key, function="V" if function == "VOLT" else "I")  # that function's own level

    def _get_function(self, c: Call) -> str:
        return "VOLT" if self.s.function == "V" else "CURR"

    def _setter_level(self, f: str) -> Callable[[Call], None]:
        def set_level(c: Call) -> None:
            self._one_channel(c)
            c.count(1)
            value = c.number(0, -self.MAXIMUM[f], self.MAXIMUM[f], 0.0)
            if (f == "VOLT") != (self.s.function == "V"):
                raise refuse(CONFLICT, f"the source function is not {f}")
            if not self._d("source_autorange")[f]:
                top = self._d("source_range")[f] * 1.05
                if abs(value) > top:
                    raise refuse(
                        OUT_OF_RANGE, f"{value:g} is beyond the {self._d('source_range')[f]:g} range"
                    )
            self._set(self.key, **{"voltage" if f == "VOLT" else "current": value})

        return set_level

    def _getter_level(self, f: str) -> Callable[[Call], str]:
        return lambda c: nr3(self.s.voltage if f == "VOLT" else self.s.current)

    def _source_range(self, f: str) -> float:
        if self._d("source_autorange")[f]:
            level = self.s.voltage if f == "VOLT" else self.s.current
            return _range(level, self._ranges(f, source=True), 1.05)
        return float(self._d("source_range")[f])

    def _setter_source_range(self, f: str) -> Callable[[Call], None]:
        def set_range(c: Call) -> None:
            c.count(1)
            ranges = self._ranges(f, source=True)
            value = c.number(0, -ranges[-1] * 1.05, ranges[-1] * 1.05)
            self._d("source_range")[f] = _range(value, ranges, 1.05)
            self._d("source_autorange")[f] = False  # a range chosen by hand ends autoranging

        return set_range

    def _setter_limit(self, f: str) -> Callable[[Call], None]:
        low, high = self.LIMITS[f]

        def set_limit(c: Call) -> None:
            c.count(1)
            value = c.number(0, low, high, self.DEFAULTS["current_limit" if f == "VOLT" else "voltage_limit"])
            self._set(self.key, **{"current_limit" if f == "VOLT" else "voltage_limit": value})

        return set_limit

    def _getter_limit(self, f: str) -> Callable[[Call], str]:
        return lambda c: nr3(self.s.current_limit if f == "VOLT" else self.s.voltage_limit)

    def _tripped(self, f: str) -> bool:
        # The limit of the function in use trips; the other function's limit is not in force.
        function = "VOLT" if self.s.function == "V" else "CURR"
        return function == f and self.s.output and self.reading(self.key)[2]

    def _setter_delay(self, f: str) -> Callable[[Call], None]:
        def set_delay(c: Call) -> None:
            c.count(1)
            self._d("delay")[f] = c.number(0, 0.0, 10e3, 0.0)
            self._d("delay_auto")[f] = False

        return set_delay

    def _setter_off_mode(self, f: str) -> Callable[[Call], None]:
        def set_mode(c: Call) -> None:
            c.count(1)
            self._d("off_mode")[f] = c.choice(("HIMPedance", "NORMal", "ZERO", "GUARd"))

        return set_mode

    def _set_every_off_mode(self, c: Call) -> None:
        c.count(1)
        mode = c.choice(("HIMPedance", "NORMal", "ZERO", "GUARd"))
        self._d("off_mode").update(VOLT=mode, CURR=mode)

    def _set_output(self, c: Call) -> None:
        self._one_channel(c)
        c.count(1)
        self._switch_output(self.key, c.boolean(), self._opens_relay(), self._zero_amp_limit())

    def _get_output(self, c: Call) -> str:
        return nr1(self.s.output)

    def _set_terminals(self, c: Call) -> None:
        c.count(1)
        self.local.terminals = c.choice(("FRONt", "REAR"))

    # -- measure
    def _set_sense(self, c: Call) -> None:
        c.count(1)
        self.local.sense = self._measure_name(c.string())

    @staticmethod
    def _measure_name(text: str) -> str:
        head, _, tail = text.upper().partition(":")
        name = keyword(head, ("VOLTage", "CURRent", "RESistance"), "function")
        if tail and (name == "RES" or tail not in ("DC",)):
            raise refuse(OUT_OF_RANGE, f"measure function {text!r}")
        return name

    def _get_sense(self, c: Call) -> str:
        return f'"{self.local.sense}:DC"' if self.local.sense != "RES" else '"RES"'

    def _setter_nplc(self, m: str) -> Callable[[Call], None]:
        def set_nplc(c: Call) -> None:
            c.count(1)
            value = c.number(0, 0.01, 10.0, 1.0)
            if m == "VOLT":
                self._set(self.key, voltage_nplc=value)
            elif m == "CURR":
                self._set(self.key, current_nplc=value)
            else:
                self.local.resistance_nplc = value

        return set_nplc

    def _set_all_nplc(self, c: Call) -> None:
        c.count(1)
        value = c.number(0, 0.01, 10.0, 1.0)
        self._set(self.key, voltage_nplc=value, current_nplc=value)
        self.local.resistance_nplc = value

    def _getter_nplc(self, m: str) -> Callable[[Call], str]:
        def get_nplc(c: Call) -> str:
            if m == "VOLT":
                return nr3(self.s.voltage_nplc)
            return nr3(self.s.current_nplc if m == "CURR" else self.local.resistance_nplc)

        return get_nplc

    def _setter_measure_range(self, m: str) -> Callable[[Call], None]:
        def set_range(c: Call) -> None:
            c.count(1)
            ranges = self._ranges(m, source=False)
            value = c.number(0, -ranges[-1] * 1.05, ranges[-1] * 1.05)
            self._d("measure_range")[m] = _range(value, ranges, 1.05)
            self._d("measure_autorange")[m] = False

        return set_range

    def _setter_average_count(self, m: str) -> Callable[[Call], None]:
        def set_count(c: Call) -> None:
            c.count(1)
            self._d("average_count")[m] = int(c.number(0, 1, 100, 10))

        return set_count

    def _setter_average_type(self, m: str) -> Callable[[Call], None]:
        def set_type(c: Call) -> None:
            c.count(1)
            self._d("average_type")[m] = c.choice(("REPeat", "MOVing"))

        return set_type

    def _take(self, function: str) -> float:
        v, i, _ = self.reading(self.key)
        value = v if function == "VOLT" else i if function == "CURR" else _resistance(v, i)
        self.local.last = value
        return value

    def _measure(self, c: Call, function: str | None) -> str:
        """`:MEASure:<function>?` selects that function first and it stays selected (§6
        :MEASure:<function>?); a buffer name, and the elements asked of it, are accepted."""
        c.count(0, 15)
        if function is not None:
            self.local.sense = function
        return nr3(self._take(self.local.sense))


# ---------------------------------------------------------------------------------------- 2600B
@dataclass(frozen=True)
class Rating2600B:
    """What one 2600B model sources (2600B RM §7 smuX.source.levelY, smuX.source.limitY)."""

    volts: float  # |levelv| at most
    amps: float  # |leveli| at most
    limitv: tuple[float, float]
    limiti: tuple[float, float]
    reset_limits: tuple[float, float]  # (limitv, limiti) after smuX.reset()


_LOW_VOLTAGE = Rating2600B(40.4, 3.03, (10e-3, 40.0), (10e-9, 3.0), (40.0, 1.0))
_HIGH_VOLTAGE = Rating2600B(202.0, 1.515, (20e-3, 200.0), (10e-9, 3.0), (20.0, 0.1))
_LOW_CURRENT = Rating2600B(202.0, 1.515, (20e-3, 200.0), (100e-12, 1.5), (20.0, 0.1))
RATINGS_2600B: dict[str, tuple[str, Rating2600B]] = {
    "2601B": ("a", _LOW_VOLTAGE),
    "2602B": ("ab", _LOW_VOLTAGE),
    "2604B": ("ab", _LOW_VOLTAGE),
    "2611B": ("a", _HIGH_VOLTAGE),
    "2612B": ("ab", _HIGH_VOLTAGE),
    "2614B": ("ab", _HIGH_VOLTAGE),
    "2634B": ("ab", _LOW_CURRENT),
    "2635B": ("a", _LOW_CURRENT),
    "2636B": ("ab", _LOW_CURRENT),
}
# TSP's own codes for a parameter beyond what the instrument takes: "1011 Parameter too big" as a
# 2600-series instrument reports it; below the minimum, its counterpart.
TOO_BIG = (1011, "Parameter too big")
TOO_SMALL = (1012, "Parameter too small")

# smuX constants (2600B RM §7): what `smua.OUTPUT_ON` and the like evaluate to.
SMU_CONSTANTS = {
    "OUTPUT_ON": 1.0,
    "OUTPUT_OFF": 0.0,
    "OUTPUT_DCVOLTS": 1.0,
    "OUTPUT_DCAMPS": 0.0,
    "OUTPUT_NORMAL": 0.0,
    "OUTPUT_ZERO": 1.0,
    "OUTPUT_HIGH_Z": 2.0,
    "SENSE_LOCAL": 0.0,
    "SENSE_REMOTE": 1.0,
    "SENSE_CALA": 3.0,
    "AUTORANGE_ON": 1.0,
    "AUTORANGE_OFF": 0.0,
    "AUTOZERO_OFF": 0.0,
    "AUTOZERO_ONCE": 1.0,
    "AUTOZERO_AUTO": 2.0,
    "ENABLE": 1.0,
    "DISABLE": 0.0,
}
_SMU_NAME = re.compile(r"smu([a-z])\.(.+)")


class Emulated2600B(_Channels, TspFrontEnd):
    """One 2600B with the channels its model has (keys `<name>.a`, `<name>.b`), in TSP."""

    LOW_VOLTAGE_MODELS = ("2601B", "2602B", "2604B")

    def __init__(self, name: str, idn: str, bench: BenchState, reading: Reading) -> None:
        super().__init__()
        self.name = name
        self.bench, self.reading = bench, reading
        self.identity = idn
        found = re.search(r"Model (26\d\d[A-Z]?)", idn)
        self.model = found[1] if found and found[1] in RATINGS_2600B else "2602B"
        channels, self.rating = RATINGS_2600B[self.model]
        self.channels = tuple(channels)
        limitv, limiti = self.rating.reset_limits
        self.defaults: dict[str, Any] = {"voltage_limit": limitv, "current_limit": limiti}
        self.linefreq = 60.0
        self.local: dict[str, dict[str, float]] = {}
        for ch in self.channels:
            bench.smus.setdefault(f"{name}.{ch}", SmuState(**self.defaults))
            self.local[ch] = self._local_defaults()

    @staticmethod
    def _local_defaults() -> dict[str, float]:
        """smuX.reset() values of what the circuit does not need (2600B RM §7)."""
        return {
            "source.rangev": 200e-3,
            "source.rangei": 100e-9,
            "source.autorangev": 1.0,
            "source.autorangei": 1.0,
            "source.offmode": 0.0,  # OUTPUT_NORMAL
            "source.offfunc": 1.0,  # OUTPUT_DCVOLTS
            "source.highc": 0.0,
            "source.offlimiti": 1e-3,
            "source.offlimitv": 40.0,
            "measure.rangev": 200e-3,
            "measure.rangei": 100e-9,
            "measure.autorangev": 1.0,
            "measure.autorangei": 1.0,
            "measure.autozero": 2.0,  # AUTOZERO_AUTO
            "measure.count": 1.0,
            "measure.filter.enable": 0.0,
            "measure.filter.count": 1.0,
            "sense": 0.0,  # SENSE_LOCAL
        }

    def reset(self) -> None:
        for ch in self.channels:
            self._reset_smu(ch)

    def _reset_smu(self, ch: str) -> None:
        self._reset_channel(f"{self.name}.{ch}", self.defaults)
        self.local[ch] = self._local_defaults()

    def handle(self, line: str) -> str | None:
        try:
            return super().handle(line)
        finally:  # whatever the line changed (off mode, function, limits, a reset), the off state follows
            for ch in self.channels:
                self._hold_off(f"{self.name}.{ch}", self._off_limit(ch))

    def _off_limit(self, ch: str) -> float | None:
        """What output off leaves (2600B RM §7 smuX.source.offmode): OUTPUT_NORMAL sources 0 V at
        smuX.source.offlimiti (or 0 A, drawing nothing, with smuX.source.offfunc = OUTPUT_DCAMPS);
        OUTPUT_ZERO sources 0 V at the output-on current limit (sourcing current: the level or 10 %
        of the range, whichever is greater); OUTPUT_HIGH_Z opens the output relay."""
        local, s = self.local[ch], self._state(f"{self.name}.{ch}")
        mode = local["source.offmode"]
        if mode == 0.0:
            return local["source.offlimiti"] if local["source.offfunc"] == 1.0 else None
        if mode == 1.0:
            return s.current_limit if s.function == "V" else max(abs(s.current), 0.1 * local["source.rangei"])
        return None

    def _zero_amp_limit(self, ch: str) -> Callable[[float], float] | None:
        """OUTPUT_NORMAL with OUTPUT_DCAMPS (2600B RM §7 smuX.source.offfunc): 0 A, limited at
        smuX.source.offlimitv."""
        local = self.local[ch]
        if local["source.offmode"] != 0.0 or local["source.offfunc"] != 0.0:
            return None
        return lambda volts: local["source.offlimitv"]

    def _channel(self, name: str) -> tuple[str, str] | None:
        m = _SMU_NAME.fullmatch(name)
        if m is None:
            return None
        if m[1] not in self.channels:
            raise runtime(f"attempt to index global `smu{m[1]}' (a nil value)")
        return m[1], m[2]

    # -- names
    def read(self, name: str) -> Value:
        if name == "localnode.model":
            return self.model
        if name == "localnode.linefreq":
            return self.linefreq
        found = self._channel(name)
        if found is None:
            raise LookupError(name)
        ch, attribute = found
        if attribute in SMU_CONSTANTS:
            return SMU_CONSTANTS[attribute]
        s = self._state(f"{self.name}.{ch}")
        shared: dict[str, Value] = {
            "source.func": 1.0 if s.function == "V" else 0.0,
            "source.output": 1.0 if s.output else 0.0,
            "source.levelv": s.voltage,
            "source.leveli": s.current,
            "source.limitv": s.voltage_limit,
            "source.limiti": s.current_limit,
            "measure.nplc": s.nplc,
        }
        if attribute in shared:
            return shared[attribute]
        if attribute == "source.compliance":
            key = f"{self.name}.{ch}"
            on_at_limit = bool(s.output and self.reading(key)[2])
            return on_at_limit or self._off_at_limit(key, self._zero_amp_limit(ch))
        if attribute in self.local[ch]:
            return self.local[ch][attribute]
        raise LookupError(name)

    def write(self, name: str, value: Value) -> None:
        if name == "localnode.linefreq":
            number = self.number(value, name)
            if number not in (50.0, 60.0):
                raise refuse(TOO_BIG if number > 60 else TOO_SMALL, name)
            self.linefreq = number
            return
        found = self._channel(name)
        if found is None:
            raise LookupError(name)
        ch, attribute = found
        key = f"{self.name}.{ch}"
        number = self.number(value, name)
        r = self.rating
        if attribute == "source.func":
            if number not in (0.0, 1.0):
                raise refuse(TOO_BIG, name)
            self._set(key, function="V" if number == 1.0 else "I")  # that function's own level
        elif attribute == "source.output":
            if number not in (0.0, 1.0, 2.0):  # 2: OUTPUT_HIGH_Z where the model has it
                raise refuse(TOO_BIG, name)
            high_z = number == 2.0 or self.local[ch]["source.offmode"] == 2.0
            self._switch_output(key, number == 1.0, high_z, self._zero_amp_limit(ch))
        elif attribute == "source.levelv":  # kept for when the function is volts (manual)
            self._set(key, voltage=self._within(number, -r.volts, r.volts, name))
        elif attribute == "source.leveli":
            self._set(key, current=self._within(number, -r.amps, r.amps, name))
        elif attribute == "source.limitv":
            self._set(key, voltage_limit=self._within(number, *r.limitv, name))
        elif attribute == "source.limiti":
            self._set(key, current_limit=self._within(number, *r.limiti, name))
        elif attribute == "measure.nplc":
            self._set(key, nplc=self._within(number, 0.001, 25.0, name))
        elif attribute == "source.compliance":
            raise runtime(f"attempt to write to a read-only attribute `{attribute}'")
        elif attribute in ("source.offmode", "source.offfunc"):
            # OUTPUT_NORMAL, OUTPUT_ZERO, OUTPUT_HIGH_Z; OUTPUT_DCAMPS, OUTPUT_DCVOLTS (2600B RM §7)
            allowed = (0.0, 1.0, 2.0) if attribute == "source.offmode" else (0.0, 1.0)
            if number not in allowed:
                raise refuse(TOO_BIG if number > allowed[-1] else TOO_SMALL, f"{name} = {number:g}")
            self.local[ch][attribute] = number
        elif attribute == "source.offlimiti":
            self.local[ch][attribute] = self._within(number, *r.limiti, name)
        elif attribute == "source.offlimitv":
            self.local[ch][attribute] = self._within(number, *r.limitv, name)
        elif attribute in self.local[ch]:
            if attribute.startswith(("source.range", "measure.range")):
                unit = r.volts if attribute.endswith("v") else r.amps
                number = self._within(abs(number), 0.0, unit, name)
            self.local[ch][attribute] = number
            if attribute.startswith(("source.range", "measure.range")):  # a range by hand ends autorange
                self.local[ch][attribute.replace("range", "autorange")] = 0.0
        else:
            raise LookupError(name)

    @staticmethod
    def _within(value: float, low: float, high: float, name: str) -> float:
        if value > high:
            raise refuse(TOO_BIG, f"{name} = {value:g} (at most {high:g})")
        if value < low:
            raise refuse(TOO_SMALL, f"{name} = {value:g} (at least {low:g})")
        return value

    def call(self, name: str, args: list[Value]) -> tuple[Value, ...]:
        found = self._channel(name)
        if found is None:
            raise LookupError(name)
        ch, function = found
        key = f"{self.name}.{ch}"
        if function == "reset":
            self._reset_smu(ch)
            return ()
        v, i, _ = self.reading(key)
        values: dict[str, tuple[Value, ...]] = {
            "measure.v": (v,),
            "measure.i": (i,),
            "measure.r": (_resistance(v, i),),
            "measure.p": (v * i,),
            "measure.iv": (i, v),
        }
        if function in values:
            return values[function]
        raise LookupError(name)


# ---------------------------------------------------------------------------------------- B2900
# Models, their channels and ratings (B2900 user's guide "Source output ranges": ±210 V; ±3.03 A
# up to 6 V, ±1.515 A up to 21 V, ±105 mA up to 210 V, DC). The levels are refused beyond ±210 V
# and ±3.03 A; the voltage-dependent envelope is the instrument's compliance, not a refusal.
B2900_CHANNELS = {
    "B2901A": 1,
    "B2902A": 2,
    "B2911A": 1,
    "B2912A": 2,
    "B2901B": 1,
    "B2902B": 2,
    "B2911B": 1,
    "B2912B": 2,
    "B2961A": 1,
    "B2962A": 2,
}


class EmulatedB2900(_Channels, ScpiFrontEnd):
    """One B2900 with the channels its model has (keys `<name>.1`, `<name>.2`)."""

    # *RST values (B2900 SCPI reference): volts at 0, compliance 100 µA and 2 V, output off,
    # 0.1 PLC ("default is 0.1 PLC"), the output switched on by the next measurement (:OUTPut
    # :ON:AUTO "1|ON (default)").
    DEFAULTS: dict[str, Any] = {  # noqa: RUF012
        "current_limit": 100e-6,
        "voltage_limit": 2.0,
        "voltage_nplc": 0.1,
        "current_nplc": 0.1,
    }
    MAXIMUM = {"VOLT": 210.0, "CURR": 3.03}  # noqa: RUF012
    LIMITS = {"CURR": (1e-9, 3.03), "VOLT": (0.02, 210.0)}  # noqa: RUF012 - current, voltage compliance
    VOLTAGE_RANGES = (0.2, 2.0, 20.0, 200.0)
    CURRENT_RANGES = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1.5, 3.0)
    no_error = '+0,"No error"'

    def __init__(self, name: str, idn: str, bench: BenchState, reading: Reading) -> None:
        self.name = name
        self.bench, self.reading = bench, reading
        self.identity = idn
        found = re.search(r"B29\d\d[AB]", idn)
        self.model = found[0] if found and found[0] in B2900_CHANNELS else "B2902A"
        self.channels = tuple(range(1, B2900_CHANNELS[self.model] + 1))
        self.local: dict[int, dict[str, Any]] = {}
        for ch in self.channels:
            bench.smus.setdefault(f"{name}.{ch}", SmuState(**self.DEFAULTS))
            self.local[ch] = self._local_defaults()
        super().__init__()
        self._hold_every_off()

    def handle(self, line: str) -> str | None:
        try:
            return super().handle(line)
        finally:  # whatever the line changed (the off mode, a reset), the off state follows
            self._hold_every_off()

    def _hold_every_off(self) -> None:
        """What output off leaves (B2900 user's guide "Output-Off Status", Table 6-1): ZERO holds
        0 V at 100 µA with the output relay closed; NORMal (0 V, relay open) and HIZ open the relay."""
        for ch in self.channels:
            self._hold_off(self._key(ch), 100e-6 if self.local[ch]["off_mode"] == "ZERO" else None)

    @staticmethod
    def _local_defaults() -> dict[str, Any]:
        return {
            "on_auto": True,
            "off_auto": False,
            "off_mode": "ZERO",
            "protection": False,
            "remote": False,
            "functions": ["VOLT", "CURR"],
            "source_range": {"VOLT": 2.0, "CURR": 1e-4},
            "source_autorange": {"VOLT": True, "CURR": True},
            "measure_range": {"VOLT": 2.0, "CURR": 1e-4},
            "measure_autorange": {"VOLT": True, "CURR": True},
        }

    def reset(self) -> None:
        for ch in self.channels:
            self._reset_channel(f"{self.name}.{ch}", self.DEFAULTS)
            self.local[ch] = self._local_defaults()

    def _ch(self, c: Call) -> int:
        ch = c.suffixes[0] if c.suffixes else 1
        if ch not in self.channels:
            raise refuse(
                SUFFIX,
                f"{c.header}: this {self.model} has channel{'s 1 and 2' if len(self.channels) > 1 else ' 1'}",
            )
        return ch

    def _key(self, ch: int) -> str:
        return f"{self.name}.{ch}"

    def table(self) -> list[Scpi]:
        t: list[Scpi] = [
            Scpi(
                "[:SOURce#]:FUNCtion[:MODE]",
                self._set_function,
                self._get_function,
                "[:SOURce]:FUNCtion:MODE",
            ),
            Scpi(":OUTPut#[:STATe]", self._set_output, self._get_output, ":OUTPut[:STATe]"),
            Scpi(":OUTPut#:ON:AUTO", self._flag("on_auto"), self._get_flag("on_auto"), ":OUTPut:ON:AUTO"),
            Scpi(":OUTPut#:OFF:AUTO", self._flag("off_auto"), self._get_flag("off_auto"), ":OUTPut:OFF:AUTO"),
            Scpi(
                ":OUTPut#:OFF:MODE",
                self._set_off_mode,
                lambda c: self.local[self._ch(c)]["off_mode"],
                ":OUTPut:OFF:MODE",
            ),
            Scpi(
                ":OUTPut#:PROTection[:STATe]",
                self._flag("protection"),
                self._get_flag("protection"),
                ":OUTPut:PROTection[:STATe]",
            ),
            Scpi("[:SENSe#]:REMote", self._flag("remote"), self._get_flag("remote"), "[:SENSe]:REMote"),
            Scpi(
                "[:SENSe#]:FUNCtion[:ON]", self._set_functions, self._get_functions, "[:SENSe]:FUNCtion[:ON]"
            ),
            Scpi("[:SENSe#]:FUNCtion:OFF", self._functions_off, None, "[:SENSe]:FUNCtion:OFF"),
            Scpi(":MEASure", None, lambda c: self._measure(c, None), ":MEASure?"),
            Scpi(":READ", None, lambda c: self._measure(c, None), ":READ?"),
            Scpi(":INITiate[:IMMediate][:ALL]", self._initiate, None, ":INITiate[:IMMediate][:ALL]"),
            Scpi(":ABORt[:ALL]", lambda c: None, None, ":ABORt[:ALL]"),
            Scpi(":SYSTem:ERRor[:NEXT]", None, lambda c: self.next_error(), ":SYSTem:ERRor[:NEXT]?"),
            Scpi(":SYSTem:ERRor:COUNt", None, lambda c: f"{len(self.queue):+d}", ":SYSTem:ERRor:COUNt?"),
            Scpi(":SYSTem:ERRor:ALL", None, self._all_errors, ":SYSTem:ERRor:ALL?"),
        ]
        for f, name in (("VOLT", "VOLTage"), ("CURR", "CURRent")):
            t += [
                Scpi(
                    f"[:SOURce#]:{name}[:LEVel][:IMMediate][:AMPLitude]",
                    self._setter_level(f),
                    self._getter_level(f),
                    "[:SOURce]:<CURRent|VOLTage>[:LEVel][:IMMediate][:AMPLitude]",
                ),
                Scpi(
                    f"[:SOURce#]:{name}:RANGe",
                    self._setter_range("source", f),
                    self._getter_range("source", f),
                    "[:SOURce]:<CURRent|VOLTage>:RANGe",
                ),
                Scpi(
                    f"[:SOURce#]:{name}:RANGe:AUTO",
                    self._range_auto("source", f),
                    self._get_range_auto("source", f),
                    "[:SOURce]:<CURRent|VOLTage>:RANGe:AUTO",
                ),
                Scpi(
                    f"[:SENSe#]:{name}[:DC]:PROTection[:LEVel]",
                    self._setter_limit(f),
                    self._getter_limit(f),
                    "[:SENSe]:<CURRent[:DC]|VOLTage[:DC]>:PROTection[:LEVel]",
                ),
                Scpi(
                    f"[:SENSe#]:{name}[:DC]:PROTection:TRIPped",
                    None,
                    self._getter_tripped(f),
                    "[:SENSe]:<CURRent[:DC]|VOLTage[:DC]>:PROTection:TRIPped?",
                ),
                Scpi(
                    f"[:SENSe#]:{name}[:DC]:NPLCycles",
                    self._set_nplc,
                    self._get_nplc,
                    "[:SENSe]:<CURRent[:DC]|VOLTage[:DC]>:NPLCycles",
                ),
                Scpi(
                    f"[:SENSe#]:{name}[:DC]:RANGe[:UPPer]",
                    self._setter_range("measure", f),
                    self._getter_range("measure", f),
                    "[:SENSe]:<CURRent[:DC]|VOLTage[:DC]>:RANGe[:UPPer]",
                ),
                Scpi(
                    f"[:SENSe#]:{name}[:DC]:RANGe:AUTO",
                    self._range_auto("measure", f),
                    self._get_range_auto("measure", f),
                    "[:SENSe]:<CURRent[:DC]|VOLTage[:DC]>:RANGe:AUTO",
                ),
                Scpi(f":MEASure:{name}[:DC]", None, partial(self._measure_as, f), ":MEASure:<function>?"),
            ]
        t.append(
            Scpi("[:SENSe#]:RESistance:NPLCycles", self._set_nplc, self._get_nplc, "[:SENSe]:RESistance:NPLC")
        )
        return t

    # -- helpers
    def _flag(self, name: str) -> Callable[[Call], None]:
        def set_flag(c: Call) -> None:
            ch = self._ch(c)
            c.count(1)
            self.local[ch][name] = c.boolean()

        return set_flag

    def _get_flag(self, name: str) -> Callable[[Call], str]:
        return lambda c: nr1(self.local[self._ch(c)][name])

    def _set_function(self, c: Call) -> None:
        ch = self._ch(c)
        c.count(1)
        function = c.choice(("VOLTage", "CURRent"))
        self._set(self._key(ch), function="V" if function == "VOLT" else "I")  # its own level

    def _get_function(self, c: Call) -> str:
        return "VOLT" if self._state(self._key(self._ch(c))).function == "V" else "CURR"

    def _setter_level(self, f: str) -> Callable[[Call], None]:
        def set_level(c: Call) -> None:
            ch = self._ch(c)
            c.count(1)
            value = c.number(0, -self.MAXIMUM[f], self.MAXIMUM[f], 0.0)
            local = self.local[ch]
            if not local["source_autorange"][f] and abs(value) > local["source_range"][f] * 1.05:
                raise refuse(OUT_OF_RANGE, f"{value:g} is beyond the {local['source_range'][f]:g} range")
            # each function keeps its level, set whichever function is in use
            self._set(self._key(ch), **{"voltage" if f == "VOLT" else "current": value})

        return set_level

    def _getter_level(self, f: str) -> Callable[[Call], str]:
        def get_level(c: Call) -> str:
            s = self._state(self._key(self._ch(c)))
            return nr3(s.voltage if f == "VOLT" else s.current)

        return get_level

    def _ranges(self, f: str) -> tuple[float, ...]:
        return self.VOLTAGE_RANGES if f == "VOLT" else self.CURRENT_RANGES

    def _setter_range(self, which: str, f: str) -> Callable[[Call], None]:
        def set_range(c: Call) -> None:
            ch = self._ch(c)
            c.count(1)
            ranges = self._ranges(f)
            value = c.number(0, -ranges[-1] * 1.05, ranges[-1] * 1.05)
            self.local[ch][f"{which}_range"][f] = _range(value, ranges, 1.05)
            self.local[ch][f"{which}_autorange"][f] = False

        return set_range

    def _getter_range(self, which: str, f: str) -> Callable[[Call], str]:
        return lambda c: nr3(self.local[self._ch(c)][f"{which}_range"][f])

    def _range_auto(self, which: str, f: str) -> Callable[[Call], None]:
        def set_auto(c: Call) -> None:
            ch = self._ch(c)
            c.count(1)
            self.local[ch][f"{which}_autorange"][f] = c.boolean()

        return set_auto

    def _get_range_auto(self, which: str, f: str) -> Callable[[Call], str]:
        return lambda c: nr1(self.local[self._ch(c)][f"{which}_autorange"][f])

    def _setter_limit(self, f: str) -> Callable[[Call], None]:
        low, high = self.LIMITS[f]

        def set_limit(c: Call) -> None:
            ch = self._ch(c)
            c.count(1)
            default = self.DEFAULTS["current_limit" if f == "CURR" else "voltage_limit"]
            value = c.number(0, low, high, default)
            self._set(self._key(ch), **{"current_limit" if f == "CURR" else "voltage_limit": value})

        return set_limit

    def _getter_limit(self, f: str) -> Callable[[Call], str]:
        def get_limit(c: Call) -> str:
            s = self._state(self._key(self._ch(c)))
            return nr3(s.current_limit if f == "CURR" else s.voltage_limit)

        return get_limit

    def _getter_tripped(self, f: str) -> Callable[[Call], str]:
        def tripped(c: Call) -> str:
            key = self._key(self._ch(c))
            s = self._state(key)
            # current protection trips a voltage source, voltage protection a current source
            in_force = (f == "CURR") == (s.function == "V")
            return nr1(in_force and s.output and self.reading(key)[2])

        return tripped

    def _set_nplc(self, c: Call) -> None:
        ch = self._ch(c)
        c.count(1)
        # "If you specify the value less than MIN or greater than MAX, nplc is automatically set
        # to MIN or MAX" (50 Hz line: 4E-4 to 100).
        self._set(self._key(ch), nplc=c.number(0, 4e-4, 100.0, 0.1, clip=True))

    def _get_nplc(self, c: Call) -> str:
        return nr3(self._state(self._key(self._ch(c))).nplc)

    def _set_off_mode(self, c: Call) -> None:
        ch = self._ch(c)
        c.count(1)
        self.local[ch]["off_mode"] = c.choice(("ZERO", "HIZ", "NORMal"))

    def _set_output(self, c: Call) -> None:
        """Table 6-1: HIGH Z and NORMAL open the output relay; no off state sources 0 A."""
        ch = self._ch(c)
        c.count(1)
        self._switch_output(self._key(ch), c.boolean(), self.local[ch]["off_mode"] != "ZERO", None)

    def _get_output(self, c: Call) -> str:
        return nr1(self._state(self._key(self._ch(c))).output)

    def _set_functions(self, c: Call) -> None:
        ch = self._ch(c)
        c.count(1, 3)
        names = [
            keyword(c.string(k).split(":")[0], ("VOLTage", "CURRent", "RESistance"))
            for k in range(len(c.params))
        ]
        self.local[ch]["functions"] = sorted(set(self.local[ch]["functions"]) | set(names))

    def _functions_off(self, c: Call) -> None:
        ch = self._ch(c)
        c.count(1, 3)
        names = {
            keyword(c.string(k).split(":")[0], ("VOLTage", "CURRent", "RESistance"))
            for k in range(len(c.params))
        }
        self.local[ch]["functions"] = [f for f in self.local[ch]["functions"] if f not in names]

    def _get_functions(self, c: Call) -> str:
        return ",".join(f'"{f}"' for f in self.local[self._ch(c)]["functions"])

    def _listed(self, c: Call) -> list[int]:
        if not c.params:
            return [1]
        c.count(1)
        return c.channels(0, self.channels)

    def _start(self, ch: int) -> None:
        """A measurement switches the output on where automatic output-on is on (:OUTPut:ON:AUTO,
        on after *RST): a channel switched off stays off only once that is switched off."""
        if self.local[ch]["on_auto"] and not self._state(self._key(ch)).output:
            self._set(self._key(ch), output=True)

    def _initiate(self, c: Call) -> None:
        for ch in self._listed(c):
            self._start(ch)

    def _measure_as(self, function: str, c: Call) -> str:
        return self._measure(c, function)

    def _measure(self, c: Call, function: str | None) -> str:
        values = []
        for ch in self._listed(c):
            self._start(ch)
            v, i, _ = self.reading(self._key(ch))
            if function is None:  # every function switched on, in the manual's order
                values += [
                    v if f == "VOLT" else i if f == "CURR" else _resistance(v, i)
                    for f in ("VOLT", "CURR", "RES")
                    if f in self.local[ch]["functions"]
                ]
            else:
                values.append(v if function == "VOLT" else i)
        return ",".join(nr3(x) for x in values)

    def _all_errors(self, c: Call) -> str:
        out = []
        while len(self.queue):
            out.append(self.next_error())
        return ",".join(out) if out else self.no_error


__all__ = [
    "B2900_CHANNELS",
    "RATINGS_2600B",
    "Emulated2450",
    "Emulated2600B",
    "EmulatedB2900",
    "Reading",
    "Refused",
]
