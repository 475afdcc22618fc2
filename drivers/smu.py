"""Source-measure units: Keithley 2450 (SCPI), Keithley 2600B (TSP, smua/smub), Keysight B2900
(SCPI, channels 1–2). Each class lists its commands, one line each, as in the manual; the role
methods (`drivers.roles.SourceMeter`) are shared by `SmuRole`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

from drivers.instrument import (
    Channel,
    Control,
    Instrument,
    InstrumentError,
    measurement,
    on_off,
    strict_range,
    strict_set,
)
from drivers.transport import LineFormat, Transport


class SmuRole:
    """The `SourceMeter` role on top of a model's controls.

    A model defines the controls `function`, `voltage`, `current`, `current_limit`,
    `voltage_limit`, `output_state`, `measured_voltage`, `measured_current`, `current_tripped`,
    `voltage_tripped`, and the values `VOLTS` and `AMPS` its `function` takes.
    """

    VOLTS: ClassVar[str]
    AMPS: ClassVar[str]
    mode: str | None = None  # "V" or "I" once configured
    # What each model's controls provide (declared here for the role methods below).
    name: str
    function: str
    voltage: float
    current: float
    current_limit: float
    voltage_limit: float
    nplc: float
    output_state: bool
    measured_voltage: float
    measured_current: float
    current_tripped: bool
    voltage_tripped: bool

    def source_voltage(self, current_limit: float) -> None:
        self.current_limit = current_limit  # compliance before anything can drive the load
        self.function = self.VOLTS
        self.voltage = 0.0
        self.mode = "V"

    def source_current(self, voltage_limit: float) -> None:
        self.voltage_limit = voltage_limit
        self.function = self.AMPS
        self.current = 0.0
        self.mode = "I"

    def set_level(self, value: float) -> None:
        if self.mode == "V":
            self.voltage = value
        elif self.mode == "I":
            self.current = value
        else:
            raise InstrumentError(f"{self.name}: set a source function before a level")

    def output(self, on: bool) -> None:
        self.output_state = on

    def integrate(self, nplc: float) -> None:
        """Integration time of every reading, in power-line cycles: longer is quieter."""
        self.nplc = nplc

    def measure_voltage(self) -> float:
        return self.measured_voltage

    def measure_current(self) -> float:
        return self.measured_current

    def tripped(self) -> bool:
        if self.mode == "V":
            return bool(self.current_tripped)
        if self.mode == "I":
            return bool(self.voltage_tripped)
        return False

    def high_impedance_off(self) -> None:
        """Output off opens the output relay: an off channel then draws no current from a node a
        relay connects it to (each model's normal off state holds 0 V at a current limit). Every
        manual warns that this wears the output relay when the output goes off and on often."""
        raise InstrumentError(f"{self.name}: this model has no high-impedance output-off state in the driver")

    def zero_amp_off_limit(self, volts: float) -> float | None:
        """The voltage limit this model's 0 A output-off state (output relay closed) holds when
        asked for `volts`, the least it can be whatever the readings autorange to; None: the
        model has no such state (each model says why)."""
        return None

    def zero_amp_off(self, volts: float) -> None:
        """Output off sources 0 A with the output relay closed, up to a voltage limit of at least
        `volts`: no relay moves, and an off channel draws nothing from a node within the limit.
        Refused, nothing sent, where `zero_amp_off_limit(volts)` is below `volts` or None."""
        raise InstrumentError(f"{self.name}: this model has no 0 A output-off state in the driver")

    def _refuse_zero_amp_off(self, volts: float) -> None:
        held = self.zero_amp_off_limit(volts)
        if held is None or held < volts:
            raise ValueError(
                f"{self.name}: a 0 A output-off state limited at {volts:g} V is not one this model holds "
                f"({'none' if held is None else f'it holds {held:g} V'})"
            )

    def safe(self) -> None:
        if self.mode is not None:
            self.set_level(0.0)
        self.output(False)


def _switch(command: str, doc: str) -> Control:
    """An ON/OFF setting and its query (SCPI boolean: ON, OFF, 1, 0)."""
    return Control(
        f"{command}?",
        f"{command} {{value}}",
        doc,
        strict_set((True, False)),
        on_off,
        lambda v: "ON" if v else "OFF",
    )


def _tsp_switch(attribute: str, doc: str) -> Control:
    """A TSP attribute that takes 0 or 1 (the model's OFF/ON constants)."""
    return Control(
        f"print(smu{{ch}}.{attribute})",
        f"smu{{ch}}.{attribute} = {{value}}",
        doc,
        strict_set((True, False)),
        lambda r: float(r) != 0,
        lambda v: "1" if v else "0",
    )


# ---------------------------------------------------------------------------------------- Keithley 2450
class Keithley2450(SmuRole, Instrument):
    """Keithley 2450 in its SCPI command set (`*LANG?` must answer SCPI, not TSP or SCPI2400)."""

    model = "MODEL 2450"
    line = LineFormat("\n", "\n", 5.0)
    VOLTS, AMPS = "VOLT", "CURR"

    function = Control(
        ":SOUR:FUNC?", ":SOUR:FUNC {value}", "Source function.", strict_set(("VOLT", "CURR")), str
    )
    voltage = Control(
        ":SOUR:VOLT?", ":SOUR:VOLT {value}", "Forced voltage, V.", strict_range(-210, 210, " V")
    )
    current = Control(
        ":SOUR:CURR?", ":SOUR:CURR {value}", "Forced current, A.", strict_range(-1.05, 1.05, " A")
    )
    current_limit = Control(
        ":SOUR:VOLT:ILIM?",
        ":SOUR:VOLT:ILIM {value}",
        "Compliance while forcing V, A.",
        strict_range(1e-9, 1.05),
    )
    voltage_limit = Control(
        ":SOUR:CURR:VLIM?",
        ":SOUR:CURR:VLIM {value}",
        "Compliance while forcing I, V.",
        strict_range(0.02, 210),
    )
    # NPLC is kept per measure function (2450 RM §6 [:SENSe[1]]:<function>:NPLCycles): the bench
    # reads voltages, so `nplc` is the voltage function's; `integrate` sets both.
    nplc = Control(
        ":SENS:VOLT:NPLC?",
        ":SENS:VOLT:NPLC {value}",
        "Voltage integration time, PLC.",
        strict_range(0.01, 10),
    )
    current_nplc = Control(
        ":SENS:CURR:NPLC?",
        ":SENS:CURR:NPLC {value}",
        "Current integration time, PLC.",
        strict_range(0.01, 10),
    )
    output_state = Control(
        ":OUTP?",
        ":OUTP {value}",
        "Output relay.",
        strict_set((True, False)),
        on_off,
        lambda v: "ON" if v else "OFF",
    )
    measured_voltage = measurement(":MEAS:VOLT?", "A voltage reading, V.")
    measured_current = measurement(":MEAS:CURR?", "A current reading, A.")
    current_tripped = measurement(":SOUR:VOLT:ILIM:TRIP?", "In current compliance.", on_off)
    voltage_tripped = measurement(":SOUR:CURR:VLIM:TRIP?", "In voltage compliance.", on_off)
    language = measurement("*LANG?", "Command set in use.", str)
    sense_function = Control(
        ":SENS:FUNC?",
        ':SENS:FUNC "{value}"',
        "What :READ? measures.",
        strict_set(("VOLT", "CURR")),
        lambda r: r.strip('"').split(":")[0],
    )
    reading = measurement(":READ?", "One reading of the sense function.")
    voltage_range = Control(
        ":SOUR:VOLT:RANG?", ":SOUR:VOLT:RANG {value}", "Source voltage range, V.", strict_range(0.02, 200)
    )
    current_range = Control(
        ":SENS:CURR:RANG?", ":SENS:CURR:RANG {value}", "Measure current range, A.", strict_range(1e-8, 1.0)
    )
    current_autorange = _switch(":SENS:CURR:RANG:AUTO", "Measure current autorange.")
    voltage_autorange = _switch(":SENS:VOLT:RANG:AUTO", "Measure voltage autorange.")
    remote_sense = _switch(":SENS:VOLT:RSEN", "4-wire (remote) sensing of voltage readings.")
    source_voltage_autorange = _switch(":SOUR:VOLT:RANG:AUTO", "Source voltage autorange.")
    source_current_autorange = _switch(":SOUR:CURR:RANG:AUTO", "Source current autorange.")
    voltage_off_mode = Control(
        ":OUTP:VOLT:SMOD?",
        ":OUTP:VOLT:SMOD {value}",
        "What output off leaves while sourcing voltage.",
        strict_set(("HIMP", "NORM", "ZERO", "GUAR")),
        str,
    )
    current_off_mode = Control(
        ":OUTP:CURR:SMOD?",
        ":OUTP:CURR:SMOD {value}",
        "What output off leaves while sourcing current.",
        strict_set(("HIMP", "NORM", "ZERO", "GUAR")),
        str,
    )
    recorded = (
        "language",
        "function",
        "voltage",
        "current",
        "current_limit",
        "voltage_limit",
        "nplc",
        "current_nplc",
        "sense_function",
        "voltage_autorange",
        "remote_sense",
        "source_voltage_autorange",
        "source_current_autorange",
        "voltage_off_mode",
        "current_off_mode",
        "output_state",
    )

    def __init__(self, transport: Transport, name: str) -> None:
        Instrument.__init__(self, transport, name)

    def integrate(self, nplc: float) -> None:
        self.nplc = nplc
        self.current_nplc = nplc

    def prepare(self) -> None:
        """Voltage readings (the bench reads node voltages; :MEAS:VOLT? would switch to them at
        the first reading anyway), autoranged, 2-wire; sources autoranged; output off leaves the
        instrument's normal off state (0 V at a small limit), as after *RST, but not by default."""
        self.sense_function = "VOLT"
        self.voltage_autorange = True
        self.remote_sense = False
        self.source_voltage_autorange = True
        self.source_current_autorange = True
        self.voltage_off_mode = "NORM"
        self.current_off_mode = "NORM"

    def high_impedance_off(self) -> None:
        """2450 RM §6 :OUTPut[1]:<function>:SMODe HIMPedance: the output relay opens when the
        output goes off. The state is kept per source function (§2 "Output-off state"): both are
        set, so a change of function keeps it. §2 "High-impedance output-off state": not for
        tests that turn the output off and on frequently (relay wear)."""
        self.voltage_off_mode = "HIMP"
        self.current_off_mode = "HIMP"

    # 2450 RM §6 :OUTPut[1]:<function>:SMODe GUARd (and §2 "Guard output-off state"): output off
    # selects the current source at 0 A with the voltage limit at 10 % of full scale of the present
    # voltage range; only HIMPedance opens the output relay. The limit is not settable, and the
    # bench autoranges (`prepare`), so the present range may be the 20 mV one: 2 mV is all it
    # guarantees. A fixed 200 V range would give 20 V, at a hundredth of the 2 V range's
    # resolution, which the nudge's few mV cannot afford: on a 2450 the probe stays high impedance
    # unless every node it lands on is within 2 mV.
    GUARD_LIMIT_FRACTION = 0.1
    SMALLEST_VOLTAGE_RANGE = 0.02

    def zero_amp_off_limit(self, volts: float) -> float | None:
        return self.GUARD_LIMIT_FRACTION * self.SMALLEST_VOLTAGE_RANGE

    def zero_amp_off(self, volts: float) -> None:
        """GUARd for both source functions (the state is kept per function)."""
        self._refuse_zero_amp_off(volts)
        self.voltage_off_mode = "GUAR"
        self.current_off_mode = "GUAR"

    def identify(self) -> str:
        idn = Instrument.identify(self)
        if self.language != "SCPI":
            raise InstrumentError(
                f"{self.name}: the 2450 runs a command set other than SCPI: choose SCPI in its System menu"
            )
        return idn


# ---------------------------------------------------------------------------------------- Keithley 2600B
# The series' models differ in what they source: a channel's levels and limits are those of the model
# `identify` found (2600B reference manual, smuX.source.levelY and smuX.source.limitY); before that,
# only what every model accepts.
def _levelv(volts: float) -> Control:
    return Control(
        "print(smu{ch}.source.levelv)",
        "smu{ch}.source.levelv = {value}",
        "Forced V.",
        strict_range(-volts, volts, " V"),
    )


def _leveli(amps: float) -> Control:
    return Control(
        "print(smu{ch}.source.leveli)",
        "smu{ch}.source.leveli = {value}",
        "Forced A.",
        strict_range(-amps, amps, " A"),
    )


def _limiti(low: float, high: float) -> Control:
    return Control(
        "print(smu{ch}.source.limiti)",
        "smu{ch}.source.limiti = {value}",
        "Current compliance, A.",
        strict_range(low, high, " A"),
    )


def _limitv(low: float, high: float) -> Control:
    return Control(
        "print(smu{ch}.source.limitv)",
        "smu{ch}.source.limitv = {value}",
        "Voltage compliance, V.",
        strict_range(low, high, " V"),
    )


def _offlimitv(low: float, high: float) -> Control:
    # The manual gives smuX.source.offlimitY no range of its own: the model's smuX.source.limitv
    # range is taken (the emulator refuses the same).
    return Control(
        "print(smu{ch}.source.offlimitv)",
        "smu{ch}.source.offlimitv = {value}",
        "Voltage limit of the normal output-off state's 0 A source, V.",
        strict_range(low, high, " V"),
    )


class Keithley2600BChannel(SmuRole, Channel):
    """A channel of a 2600B whose model is not known yet: only what every 2600B model accepts."""

    VOLTS, AMPS = "1", "0"  # smuX.OUTPUT_DCVOLTS, smuX.OUTPUT_DCAMPS

    function = Control(
        "print(smu{ch}.source.func)",
        "smu{ch}.source.func = {value}",
        "1 volts, 0 amps.",
        strict_set(("1", "0")),
        lambda r: str(int(float(r))),
    )
    voltage = _levelv(40.4)
    current = _leveli(1.515)
    current_limit = _limiti(10e-9, 1.5)
    voltage_limit = _limitv(20e-3, 40.0)
    nplc = Control(
        "print(smu{ch}.measure.nplc)",
        "smu{ch}.measure.nplc = {value}",
        "Integration, PLC.",
        strict_range(0.001, 25),
    )
    output_state = Control(
        "print(smu{ch}.source.output)",
        "smu{ch}.source.output = {value}",
        "Output.",
        strict_set((True, False)),
        lambda r: float(r) != 0,
        lambda v: "1" if v else "0",
    )
    measured_voltage = measurement("print(smu{ch}.measure.v())", "A voltage reading, V.")
    measured_current = measurement("print(smu{ch}.measure.i())", "A current reading, A.")
    compliance = measurement("print(smu{ch}.source.compliance)", "At a limit.", lambda r: r.strip() == "true")
    # One flag for either limit: the one that applies to the source function in use.
    current_tripped = voltage_tripped = compliance
    remote_sense = _tsp_switch("sense", "4-wire sensing (smuX.SENSE_REMOTE, 1) or 2-wire (SENSE_LOCAL, 0).")
    measure_autorangev = _tsp_switch("measure.autorangev", "Voltage readings autoranged.")
    source_autorangev = _tsp_switch("source.autorangev", "Source voltage autoranged.")
    source_autorangei = _tsp_switch("source.autorangei", "Source current autoranged.")
    off_mode = Control(
        "print(smu{ch}.source.offmode)",
        "smu{ch}.source.offmode = {value}",
        "Output off: 0 OUTPUT_NORMAL, 1 OUTPUT_ZERO, 2 OUTPUT_HIGH_Z.",
        strict_set((0, 1, 2)),
        lambda r: int(float(r)),
    )
    off_function = Control(
        "print(smu{ch}.source.offfunc)",
        "smu{ch}.source.offfunc = {value}",
        "Normal output-off source: 0 OUTPUT_DCAMPS (0 A at offlimitv), 1 OUTPUT_DCVOLTS (0 V at offlimiti).",
        strict_set((0, 1)),
        lambda r: int(float(r)),
    )
    off_voltage_limit = _offlimitv(20e-3, 40.0)
    recorded = (
        "function",
        "voltage",
        "current",
        "current_limit",
        "voltage_limit",
        "nplc",
        "remote_sense",
        "measure_autorangev",
        "source_autorangev",
        "source_autorangei",
        "off_mode",
        "off_function",
        "off_voltage_limit",
        "output_state",
    )

    def prepare(self) -> None:
        """2-wire, autoranged readings and sources, the normal output-off state, as after
        smuX.reset() but not left to it."""
        self.remote_sense = False
        self.measure_autorangev = True
        self.source_autorangev = True
        self.source_autorangei = True
        self.off_mode = 0

    def high_impedance_off(self) -> None:
        """2600B RM §7 smuX.source.offmode = smuX.OUTPUT_HIGH_Z (2): the output relay opens when
        the output goes off (OUTPUT_NORMAL sources 0 V at smuX.source.offlimiti, 1 mA by default).
        User's manual "High-impedance output-off mode": not for tests that turn the output off and
        on frequently (relay wear)."""
        self.off_mode = 2

    def zero_amp_off_limit(self, volts: float) -> float | None:
        """The limit is settable (smuX.source.offlimitv): `volts`, if the model takes it."""
        try:
            type(self).off_voltage_limit.validator(volts)
        except ValueError:
            return None
        return float(volts)

    def zero_amp_off(self, volts: float) -> None:
        """2600B RM §7 smuX.source.offmode = smuX.OUTPUT_NORMAL (0) with smuX.source.offfunc =
        smuX.OUTPUT_DCAMPS (0): output off sources 0 A, its voltage limit smuX.source.offlimitv
        (40 V after a reset); only OUTPUT_HIGH_Z opens the output relay. The limit first, so the
        state never holds another one."""
        self.off_voltage_limit = volts
        self.off_function = 0
        self.off_mode = 0

    def identify(self) -> str:
        return self.parent.identify()

    def check_errors(self) -> None:
        self.parent.check_errors()


class Keithley260xBChannel(Keithley2600BChannel):
    """2601B, 2602B, 2604B: ±40.4 V, ±3.03 A; limits 10 mV–40 V and 10 nA–3 A."""

    voltage = _levelv(40.4)
    current = _leveli(3.03)
    current_limit = _limiti(10e-9, 3.0)
    voltage_limit = _limitv(10e-3, 40.0)
    off_voltage_limit = _offlimitv(10e-3, 40.0)


class Keithley261xBChannel(Keithley2600BChannel):
    """2611B, 2612B, 2614B: ±202 V, ±1.515 A; limits 20 mV–200 V and 10 nA–3 A."""

    voltage = _levelv(202.0)
    current = _leveli(1.515)
    current_limit = _limiti(10e-9, 3.0)
    voltage_limit = _limitv(20e-3, 200.0)
    off_voltage_limit = _offlimitv(20e-3, 200.0)


class Keithley263xBChannel(Keithley2600BChannel):
    """2634B, 2635B, 2636B (low current): ±202 V, ±1.515 A; limits 20 mV–200 V and 100 pA–1.5 A."""

    voltage = _levelv(202.0)
    current = _leveli(1.515)
    current_limit = _limiti(100e-12, 1.5)
    voltage_limit = _limitv(20e-3, 200.0)
    off_voltage_limit = _offlimitv(20e-3, 200.0)


# model -> (its channels, how each is rated)
KEITHLEY_2600B_MODELS: dict[str, tuple[str, type[Keithley2600BChannel]]] = {
    "2601B": ("a", Keithley260xBChannel),
    "2602B": ("ab", Keithley260xBChannel),
    "2604B": ("ab", Keithley260xBChannel),
    "2611B": ("a", Keithley261xBChannel),
    "2612B": ("ab", Keithley261xBChannel),
    "2614B": ("ab", Keithley261xBChannel),
    "2634B": ("ab", Keithley263xBChannel),
    "2635B": ("a", Keithley263xBChannel),
    "2636B": ("ab", Keithley263xBChannel),
}


class Keithley2600B(Instrument):
    """Keithley 2600B series in TSP; each of smua, smub is a `SourceMeter` (`channel("a")`), rated
    for the model `identify` found."""

    model = "Model 26"
    line = LineFormat("\n", "\n", 5.0)
    error_query = "print(errorqueue.next())"
    reset_lines = ("reset()", "errorqueue.clear()")  # 2600B RM §7 reset(), errorqueue.clear()
    # Digits of every printed number: 6 after reset() (2600B RM §7 format.asciiprecision), which
    # rounds a 2 V reading to 10 µV; 12 keeps every digit the instrument resolves.
    ascii_precision = Control(
        "print(format.asciiprecision)",
        "format.asciiprecision = {value}",
        "Significant digits of printed numbers.",
        strict_set(range(1, 17)),
        lambda r: int(float(r)),
    )
    recorded = ("ascii_precision",)
    PRECISION = 12

    def __init__(self, transport: Transport, name: str) -> None:
        super().__init__(transport, name)
        self._channels: dict[str, Keithley2600BChannel] = {}
        self.channel_names: tuple[str, ...] = ("a", "b")
        self.rated: type[Keithley2600BChannel] = Keithley2600BChannel

    def identify(self) -> str:
        """`*IDN?`, then the model's ratings: a 2600 model without them in the driver is refused."""
        idn = Instrument.identify(self)
        channels, self.rated = KEITHLEY_2600B_MODELS[
            _known_model(self.name, idn, r"Model (26\d\d[A-Z]?)", KEITHLEY_2600B_MODELS)
        ]
        self.channel_names = tuple(channels)
        self._channels = {}  # channels made before this were rated for any model
        return idn

    def parse_error(self, reply: str) -> tuple[int, str]:
        """`errorqueue.next()` prints code, message, severity and node, tab-separated."""
        fields = reply.split("\t")
        return int(float(fields[0])), fields[1].strip() if len(fields) > 1 else ""

    def prepare(self) -> None:
        self.ascii_precision = self.PRECISION

    def channel(self, ch: str) -> Keithley2600BChannel:
        _check_channel(self.name, ch, self.channel_names, "2600B")
        return self._channels.setdefault(ch, self.rated(self, ch))


def _known_model(name: str, idn: str, pattern: str, models: Mapping[str, object]) -> str:
    """The model `*IDN?` names (the pattern's first group), refused unless the driver rates it."""
    found = re.search(pattern, idn)
    model = found[1] if found else idn
    if model not in models:
        raise InstrumentError(
            f"{name}: *IDN? answered {idn!r}: the driver has no ratings for a {model} "
            f"(it knows {', '.join(models)})"
        )
    return model


def _check_channel(name: str, ch: str, channels: tuple[str, ...], series: str) -> None:
    if ch not in channels:
        listed = " and ".join(channels)
        raise ValueError(f"{name}: channel {ch!r} does not exist: this {series} has channels {listed}")


# ---------------------------------------------------------------------------------------- Keysight B2900
# model -> its channels. Every one sources ±210 V and ±3.03 A DC (B2900 user's guide "Source output
# ranges"; B2961A/B2962A SCPI reference Table 2-4); the BL models (21 V) are not in the driver.
KEYSIGHT_B2900_MODELS: dict[str, str] = {
    "B2901A": "1",
    "B2902A": "12",
    "B2911A": "1",
    "B2912A": "12",
    "B2901B": "1",
    "B2902B": "12",
    "B2911B": "1",
    "B2912B": "12",
    "B2961A": "1",
    "B2962A": "12",
}


class KeysightB2900(Instrument):
    """Keysight B2900 series in SCPI; channel 1, and 2 on two-channel models (`channel("1")`)."""

    model = "B29"
    line = LineFormat("\n", "\n", 5.0)

    def __init__(self, transport: Transport, name: str) -> None:
        super().__init__(transport, name)
        self._channels: dict[str, KeysightB2900Channel] = {}
        self.channel_names: tuple[str, ...] = ("1", "2")

    def identify(self) -> str:
        """`*IDN?`, then the model's channels: a B29 model the driver does not know is refused."""
        idn = Instrument.identify(self)
        model = _known_model(self.name, idn, r"(B29\d\d[A-Z]*)", KEYSIGHT_B2900_MODELS)
        self.channel_names = tuple(KEYSIGHT_B2900_MODELS[model])
        return idn

    def channel(self, ch: str) -> KeysightB2900Channel:
        _check_channel(self.name, ch, self.channel_names, "B2900")
        return self._channels.setdefault(ch, KeysightB2900Channel(self, ch))


class KeysightB2900Channel(SmuRole, Channel):
    VOLTS, AMPS = "VOLT", "CURR"

    function = Control(
        ":SOUR{ch}:FUNC:MODE?",
        ":SOUR{ch}:FUNC:MODE {value}",
        "Source function.",
        strict_set(("VOLT", "CURR")),
        str,
    )
    voltage = Control(":SOUR{ch}:VOLT?", ":SOUR{ch}:VOLT {value}", "Forced V.", strict_range(-210, 210, " V"))
    current = Control(
        ":SOUR{ch}:CURR?", ":SOUR{ch}:CURR {value}", "Forced A.", strict_range(-3.03, 3.03, " A")
    )
    current_limit = Control(
        ":SENS{ch}:CURR:PROT?",
        ":SENS{ch}:CURR:PROT {value}",
        "Current compliance, A.",
        strict_range(1e-9, 3.03),
    )
    voltage_limit = Control(
        ":SENS{ch}:VOLT:PROT?",
        ":SENS{ch}:VOLT:PROT {value}",
        "Voltage compliance, V.",
        strict_range(0.02, 210),
    )
    nplc = Control(
        ":SENS{ch}:CURR:NPLC?", ":SENS{ch}:CURR:NPLC {value}", "Integration, PLC.", strict_range(4e-4, 100)
    )
    output_state = Control(
        ":OUTP{ch}?",
        ":OUTP{ch} {value}",
        "Output.",
        strict_set((True, False)),
        on_off,
        lambda v: "ON" if v else "OFF",
    )
    measured_voltage = measurement(":MEAS:VOLT? (@{ch})", "A voltage reading, V.")
    measured_current = measurement(":MEAS:CURR? (@{ch})", "A current reading, A.")
    current_tripped = measurement(":SENS{ch}:CURR:PROT:TRIP?", "In current compliance.", on_off)
    voltage_tripped = measurement(":SENS{ch}:VOLT:PROT:TRIP?", "In voltage compliance.", on_off)
    # ON after *RST: any measurement (:MEAS?, :READ?, :INIT) switches the output back on.
    auto_on = _switch(":OUTP{ch}:ON:AUTO", "Output switched on by a measurement.")
    remote_sense = _switch(":SENS{ch}:REM", "4-wire (remote) sensing.")
    source_voltage_autorange = _switch(":SOUR{ch}:VOLT:RANG:AUTO", "Source voltage autorange.")
    source_current_autorange = _switch(":SOUR{ch}:CURR:RANG:AUTO", "Source current autorange.")
    # B2961A/B2962A SCPI reference :OUTPut:OFF:MODE; B2900 user's guide "Output-Off Status"
    # (Table 6-1): ZERO holds 0 V at 100 µA with the output relay closed, NORMal and HIZ open it.
    off_mode = Control(
        ":OUTP{ch}:OFF:MODE?",
        ":OUTP{ch}:OFF:MODE {value}",
        "What output off leaves: ZERO, HIZ or NORM.",
        strict_set(("ZERO", "HIZ", "NORM")),
        str,
    )
    recorded = (
        "function",
        "voltage",
        "current",
        "current_limit",
        "voltage_limit",
        "nplc",
        "auto_on",
        "remote_sense",
        "source_voltage_autorange",
        "source_current_autorange",
        "off_mode",
        "output_state",
    )

    def prepare(self) -> None:
        """No automatic output-on: a channel the bench switched off stays off through the next
        reading. 2-wire; sources autoranged."""
        self.auto_on = False
        self.remote_sense = False
        self.source_voltage_autorange = True
        self.source_current_autorange = True

    def high_impedance_off(self) -> None:
        """B2900 :OUTPut:OFF:MODE HIZ: the output relay opens when the output goes off."""
        self.off_mode = "HIZ"

    # No 0 A output-off state (`zero_amp_off_limit` None): B2900 user's guide Table 6-1 lists HIGH
    # Z (output relay open), NORMAL (0 V at 100 µA, output relay open) and ZERO (0 V at 100 µA),
    # all of them voltage sources or an open relay. ZERO would hold a node it lands on at 0 V and
    # pass up to 100 µA through the matrix relay as it closes: the probe stays high impedance.

    def identify(self) -> str:
        return self.parent.identify()

    def check_errors(self) -> None:
        self.parent.check_errors()
