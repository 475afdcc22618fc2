"""SMU drivers against the exact exchanges their manuals define."""

import json
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from drivers import benchconfig
from drivers.instrument import Control, InstrumentError
from drivers.smu import Keithley2450, Keithley2600B, Keithley2600BChannel, KeysightB2900, KeysightB2900Channel
from drivers.transport import LoopbackTransport, ProtocolMismatch, scripted
from hil import config
from hil.backends import open_backend
from sim.virtual.bench import VirtualBench
from sim.virtual.circuit import EmulatedCircuit
from sim.virtual.smu_emulators import Emulated2450, Emulated2600B, EmulatedB2900
from sim.virtual.state import BenchState

IDN_2450 = "KEITHLEY INSTRUMENTS,MODEL 2450,04096218,1.7.12b"
IDN_2602B = "Keithley Instruments Inc., Model 2602B, 4381234, 3.3.5"
IDN_B2902 = "Keysight Technologies,B2902A,MY51140001,3.4.2011.5100"


def test_2450_voltage_source_session():
    t = scripted(
        [
            ("*IDN?", IDN_2450),
            ("*LANG?", "SCPI"),
            (":SOUR:VOLT:ILIM 0.001", None),  # compliance before the function and before output on
            (":SOUR:FUNC VOLT", None),
            (":SOUR:VOLT 0.0", None),
            (":OUTP ON", None),
            (":SOUR:VOLT -2.0", None),
            (":MEAS:CURR?", "-1.234560E-04"),
            (":MEAS:VOLT?", "-1.999999E+00"),
            (":SOUR:VOLT:ILIM:TRIP?", "0"),
            (":SYST:ERR?", '0,"No error"'),
            (":SOUR:VOLT 0.0", None),
            (":OUTP OFF", None),
        ]
    )
    smu = Keithley2450(t, "smu1")
    assert smu.identify() == IDN_2450
    smu.source_voltage(current_limit=1e-3)
    smu.output(True)
    smu.set_level(-2.0)
    assert smu.measure_current() == pytest.approx(-1.23456e-4)
    assert smu.measure_voltage() == pytest.approx(-1.999999)
    assert smu.tripped() is False
    smu.check_errors()
    smu.safe()
    t.assert_done()


def test_2450_current_source_keeps_full_precision_and_refuses_out_of_range():
    t = scripted(
        [
            (":SOUR:CURR:VLIM 2.0", None),
            (":SOUR:FUNC CURR", None),
            (":SOUR:CURR 0.0", None),
            (":SOUR:CURR 1.23456789e-07", None),
            (":SOUR:CURR:VLIM:TRIP?", "1"),
        ]
    )
    smu = Keithley2450(t, "smu")
    smu.source_current(voltage_limit=2.0)
    smu.set_level(1.23456789e-7)
    with pytest.raises(ValueError, match="outside"):
        smu.set_level(2.0)  # nothing is sent: the script has no exchange for it
    assert smu.tripped() is True
    t.assert_done()


def test_2450_refuses_a_wrong_model_and_the_tsp_command_set():
    with pytest.raises(InstrumentError, match="not a MODEL 2450"):
        Keithley2450(scripted([("*IDN?", IDN_2602B)]), "smu").identify()
    t = scripted([("*IDN?", IDN_2450), ("*LANG?", "TSP")])
    with pytest.raises(InstrumentError, match="other than SCPI"):
        Keithley2450(t, "smu").identify()
    t.assert_done()


def test_2450_error_queue_is_drained_and_raised_with_codes():
    t = scripted(
        [
            (":SYST:ERR?", '-222,"Data out of range"'),
            (":SYST:ERR?", '5001,"Output interlock asserted"'),
            (":SYST:ERR?", '0,"No error"'),
        ]
    )
    with pytest.raises(InstrumentError, match=r"-222: Data out of range; 5001: Output interlock asserted"):
        Keithley2450(t, "smu").check_errors()
    t.assert_done()


def test_2600b_tsp_session_on_channel_b():
    t = scripted(
        [
            ("*IDN?", IDN_2602B),
            ("smub.source.limiti = 0.0005", None),
            ("smub.source.func = 1", None),
            ("smub.source.levelv = 0.0", None),
            ("smub.source.output = 1", None),
            ("smub.source.levelv = 1.5", None),
            ("print(smub.measure.i())", "2.50000e-05"),
            ("print(smub.source.compliance)", "false"),
            ("smub.source.limitv = 3.0", None),
            ("smub.source.func = 0", None),
            ("smub.source.leveli = 0.0", None),
            ("smub.source.leveli = -1e-06", None),
            ("print(smub.measure.v())", "4.20000e-01"),
            ("print(errorqueue.next())", "0.00000e+00\tQueue Is Empty\t0.00000e+00\t0.00000e+00"),
            ("smub.source.leveli = 0.0", None),
            ("smub.source.output = 0", None),
        ]
    )
    inst = Keithley2600B(t, "k26")
    assert inst.identify() == IDN_2602B
    b = inst.channel("b")
    b.source_voltage(5e-4)
    b.output(True)
    b.set_level(1.5)
    assert b.measure_current() == pytest.approx(2.5e-5)
    assert b.tripped() is False
    b.source_current(3.0)
    b.set_level(-1e-6)
    assert b.measure_voltage() == pytest.approx(0.42)
    b.check_errors()
    b.safe()
    t.assert_done()


def test_2600b_errors_and_channels():
    t = scripted(
        [
            ("print(errorqueue.next())", "-2.85000e+02\tProgram syntax\t2.00000e+01\t1.00000e+00"),
            ("print(errorqueue.next())", "0.00000e+00\tQueue Is Empty\t0.00000e+00\t0.00000e+00"),
        ]
    )
    inst = Keithley2600B(t, "k26")
    with pytest.raises(InstrumentError, match="-285: Program syntax"):
        inst.check_errors()
    with pytest.raises(ValueError, match="channels a and b"):
        inst.channel("c")
    t.assert_done()


def test_b2900_session_on_channel_2():
    t = scripted(
        [
            ("*IDN?", IDN_B2902),
            (":SENS2:CURR:PROT 0.01", None),
            (":SOUR2:FUNC:MODE VOLT", None),
            (":SOUR2:VOLT 0.0", None),
            (":OUTP2 ON", None),
            (":SOUR2:VOLT 0.75", None),
            (":MEAS:CURR? (@2)", "+1.000000E-03"),
            (":SENS2:CURR:PROT:TRIP?", "0"),
            (":SYST:ERR?", '+0,"No error"'),
            (":SOUR2:VOLT 0.0", None),
            (":OUTP2 OFF", None),
        ]
    )
    inst = KeysightB2900(t, "b29")
    assert inst.identify() == IDN_B2902
    ch = inst.channel("2")
    ch.source_voltage(0.01)
    ch.output(True)
    ch.set_level(0.75)
    assert ch.measure_current() == pytest.approx(1e-3)
    assert not ch.tripped()
    ch.check_errors()
    ch.safe()
    t.assert_done()


def test_scripted_transport_catches_a_wrong_or_missing_exchange():
    t = scripted([(":OUTP OFF", None), (":OUTP?", "0")])
    with pytest.raises(ProtocolMismatch, match="expected ':OUTP OFF'"):
        Keithley2450(t, "smu").output(True)
    t = scripted([(":OUTP OFF", None), (":OUTP?", "0")])
    Keithley2450(t, "smu").output(False)
    with pytest.raises(ProtocolMismatch, match="not made"):
        t.assert_done()


def test_2450_sense_function_read_ranges_and_integration():
    t = scripted(
        [
            (':SENS:FUNC "VOLT"', None),
            (":SENS:FUNC?", '"VOLT:DC"'),
            (":READ?", "1.250000E-01"),
            (":SOUR:VOLT:RANG 2.0", None),
            (":SENS:CURR:RANG:AUTO OFF", None),
            (":SENS:CURR:RANG 0.0001", None),
            (":SENS:VOLT:NPLC 2.0", None),  # NPLC is per measure function: both the bench reads
            (":SENS:CURR:NPLC 2.0", None),
        ]
    )
    smu = Keithley2450(t, "smu")
    smu.sense_function = "VOLT"
    assert smu.sense_function == "VOLT"
    assert smu.reading == pytest.approx(0.125)
    smu.voltage_range = 2.0
    smu.current_autorange = False
    smu.current_range = 1e-4
    with pytest.raises(ValueError, match="outside"):
        smu.current_range = 2.0
    smu.integrate(2.0)
    t.assert_done()


@pytest.mark.parametrize(
    "make, ch, line",
    [
        (Keithley2600B, "a", "smua.measure.nplc = 0.5"),
        (KeysightB2900, "1", ":SENS1:CURR:NPLC 0.5"),
    ],
)
def test_integration_time_on_multichannel_smus(make, ch, line):
    t = scripted([(line, None)])
    make(t, "smu").channel(ch).integrate(0.5)
    t.assert_done()


# ---------------------------------------------------------------------------------------- bounds
# Every validator of every SMU model, at both ends: the bound itself is sent, the next float beyond
# it is refused before anything is sent (the script has no exchange for it). The bounds are the
# manuals': 2450 reference manual (2450-901-01) §6, 2600B reference manual (2600BS-901-01) §9
# smuX.source.levelY/limitY/measure.nplc, B2900 SCPI command reference.
IDN_2612B = "Keithley Instruments Inc., Model 2612B, 4381235, 3.3.5"
IDN_2636B = "Keithley Instruments Inc., Model 2636B, 4381236, 3.3.5"


def _k2450(t):
    return Keithley2450(t, "smu")


def _k2600b(t, identified=True):
    inst = Keithley2600B(t, "k26")
    if identified:
        inst.identify()
    return inst.channel("a")


def _b2900(t):
    return KeysightB2900(t, "b29").channel("1")


def _unidentified_2600b(t):
    return _k2600b(t, identified=False)


# (a driver on a transport, the exchanges before its first command)
Maker = tuple[Callable[..., Any], list[tuple[str, str | None]]]
K2450: Maker = (_k2450, [])
K2602B = (_k2600b, [("*IDN?", IDN_2602B)])
K2612B = (_k2600b, [("*IDN?", IDN_2612B)])
K2636B = (_k2600b, [("*IDN?", IDN_2636B)])
K2600B_UNKNOWN: Maker = (_unidentified_2600b, [])  # before *IDN?: only what every 2600B model accepts
B2900: Maker = (_b2900, [])
BOUNDS = {
    "2450 voltage": (*K2450, "voltage", -210, 210, ":SOUR:VOLT {}"),
    "2450 current": (*K2450, "current", -1.05, 1.05, ":SOUR:CURR {}"),
    "2450 current limit": (*K2450, "current_limit", 1e-9, 1.05, ":SOUR:VOLT:ILIM {}"),
    "2450 voltage limit": (*K2450, "voltage_limit", 0.02, 210, ":SOUR:CURR:VLIM {}"),
    "2450 nplc": (*K2450, "nplc", 0.01, 10, ":SENS:VOLT:NPLC {}"),
    "2450 current nplc": (*K2450, "current_nplc", 0.01, 10, ":SENS:CURR:NPLC {}"),
    "2450 voltage range": (*K2450, "voltage_range", 0.02, 200, ":SOUR:VOLT:RANG {}"),
    "2450 current range": (*K2450, "current_range", 1e-8, 1.0, ":SENS:CURR:RANG {}"),
    "2602B voltage": (*K2602B, "voltage", -40.4, 40.4, "smua.source.levelv = {}"),
    "2602B current": (*K2602B, "current", -3.03, 3.03, "smua.source.leveli = {}"),
    "2602B current limit": (*K2602B, "current_limit", 10e-9, 3.0, "smua.source.limiti = {}"),
    "2602B voltage limit": (*K2602B, "voltage_limit", 10e-3, 40.0, "smua.source.limitv = {}"),
    "2602B nplc": (*K2602B, "nplc", 0.001, 25, "smua.measure.nplc = {}"),
    "2602B off voltage limit": (*K2602B, "off_voltage_limit", 10e-3, 40.0, "smua.source.offlimitv = {}"),
    "2612B voltage": (*K2612B, "voltage", -202, 202, "smua.source.levelv = {}"),
    "2612B current": (*K2612B, "current", -1.515, 1.515, "smua.source.leveli = {}"),
    "2612B current limit": (*K2612B, "current_limit", 10e-9, 3.0, "smua.source.limiti = {}"),
    "2612B voltage limit": (*K2612B, "voltage_limit", 20e-3, 200.0, "smua.source.limitv = {}"),
    "2612B off voltage limit": (*K2612B, "off_voltage_limit", 20e-3, 200.0, "smua.source.offlimitv = {}"),
    "2636B voltage": (*K2636B, "voltage", -202, 202, "smua.source.levelv = {}"),
    "2636B current": (*K2636B, "current", -1.515, 1.515, "smua.source.leveli = {}"),
    "2636B current limit": (*K2636B, "current_limit", 100e-12, 1.5, "smua.source.limiti = {}"),
    "2636B voltage limit": (*K2636B, "voltage_limit", 20e-3, 200.0, "smua.source.limitv = {}"),
    "2600B unidentified voltage": (*K2600B_UNKNOWN, "voltage", -40.4, 40.4, "smua.source.levelv = {}"),
    "2600B unidentified current": (*K2600B_UNKNOWN, "current", -1.515, 1.515, "smua.source.leveli = {}"),
    "2600B unidentified current limit": (
        *K2600B_UNKNOWN,
        "current_limit",
        10e-9,
        1.5,
        "smua.source.limiti = {}",
    ),
    "2600B unidentified voltage limit": (
        *K2600B_UNKNOWN,
        "voltage_limit",
        20e-3,
        40.0,
        "smua.source.limitv = {}",
    ),
    "B2900 voltage": (*B2900, "voltage", -210, 210, ":SOUR1:VOLT {}"),
    "B2900 current": (*B2900, "current", -3.03, 3.03, ":SOUR1:CURR {}"),
    "B2900 current limit": (*B2900, "current_limit", 1e-9, 3.03, ":SENS1:CURR:PROT {}"),
    "B2900 voltage limit": (*B2900, "voltage_limit", 0.02, 210, ":SENS1:VOLT:PROT {}"),
    "B2900 nplc": (*B2900, "nplc", 4e-4, 100, ":SENS1:CURR:NPLC {}"),
}


@pytest.mark.parametrize("make, prelude, attribute, low, high, line", BOUNDS.values(), ids=BOUNDS)
def test_each_bound_is_sent_and_the_next_value_beyond_it_is_refused_before_sending(
    make, prelude, attribute, low, high, line
):
    for bound, beyond in ((low, math.nextafter(low, -math.inf)), (high, math.nextafter(high, math.inf))):
        t = scripted([*prelude, (line.format(repr(float(bound))), None)])
        smu = make(t)
        setattr(smu, attribute, bound)
        with pytest.raises(ValueError, match="outside"):
            setattr(smu, attribute, beyond)
        t.assert_done()  # the bound was sent, and nothing after it


def test_a_2450_level_beyond_its_range_is_refused_through_the_role_before_anything_is_sent():
    t = scripted([(":SOUR:VOLT:ILIM 0.001", None), (":SOUR:FUNC VOLT", None), (":SOUR:VOLT 0.0", None)])
    smu = Keithley2450(t, "smu")
    smu.source_voltage(current_limit=1e-3)
    for volts in (math.nextafter(210.0, math.inf), -math.nextafter(210.0, math.inf), 211.0, 2100.0):
        with pytest.raises(ValueError, match=r"outside \[-210, 210\] V"):
            smu.set_level(volts)
    t.assert_done()


@pytest.mark.parametrize(
    "make, attribute, value",
    [
        (_k2450, "function", "RES"),
        (_k2450, "sense_function", "RES"),
        (_k2450, "output_state", "ON"),
        (_unidentified_2600b, "function", "2"),
        (_b2900, "function", "RES"),
        (_b2900, "output_state", "1"),
    ],
)
def test_a_setting_outside_its_set_is_refused_before_sending(make, attribute, value):
    t = scripted([])
    with pytest.raises(ValueError, match="is not one of"):
        setattr(make(t), attribute, value)
    t.assert_done()


def test_a_2600b_model_the_driver_has_no_ratings_for_is_refused_at_identify():
    t = scripted([("*IDN?", "Keithley Instruments Inc., Model 2651A, 1234567, 1.0.0")])
    with pytest.raises(InstrumentError, match=r"2651A.*ratings"):
        Keithley2600B(t, "k26").identify()
    t.assert_done()


def test_a_single_channel_2600b_has_no_channel_b_and_a_new_identity_rerates_its_channels():
    t = scripted(
        [
            ("*IDN?", "Keithley Instruments Inc., Model 2601B, 1, 3.3.5"),
            ("*IDN?", IDN_2612B),
            ("smub.source.levelv = 202.0", None),
        ]
    )
    inst = Keithley2600B(t, "k26")
    before = inst.channel("a")
    inst.identify()
    with pytest.raises(ValueError, match=r"this 2600B has channels a$"):
        inst.channel("b")
    for name in ("", "ab"):
        with pytest.raises(ValueError, match="does not exist"):
            inst.channel(name)
    assert inst.channel("a") is not before and inst.channel("a") is inst.channel("a")
    inst.identify()  # another model at the address now: its channels, its ratings
    inst.channel("b").voltage = 202.0
    t.assert_done()


# ---------------------------------------------------------------------------------------- emulators
# The emulated SMUs with their drivers wired in memory. Readings come from a stand-in here; the
# emulated circuit is exercised below.
def _no_circuit(key):
    return (0.0, 0.0, False)


def emulated_2450():
    bench = BenchState()
    emu = Emulated2450("smu", IDN_2450, bench, _no_circuit)
    return Keithley2450(LoopbackTransport(emu), "smu"), bench.smus["smu"], emu


def emulated_2602b():
    bench = BenchState()
    emu = Emulated2600B("k26", IDN_2602B, bench, _no_circuit)
    inst = Keithley2600B(LoopbackTransport(emu), "k26")
    inst.identify()
    return inst.channel("a"), bench.smus["k26.a"], emu


def emulated_b2900():
    bench = BenchState()
    emu = EmulatedB2900("b29", IDN_B2902, bench, _no_circuit)
    return KeysightB2900(LoopbackTransport(emu), "b29").channel("1"), bench.smus["b29.1"], emu


EMULATED = {"2450": emulated_2450, "2602B": emulated_2602b, "B2900": emulated_b2900}


@pytest.mark.parametrize("make", EMULATED.values(), ids=EMULATED)
def test_a_function_change_sources_that_functions_own_level_not_the_last_one(make):
    """Each source function keeps its own level (2450 "source configuration list", 2600B
    smuX.source.levelY, B2900 :SOUR:<func>): switching V -> I must not force 2 V worth of amps."""
    smu, state, _ = make()
    smu.source_voltage(current_limit=1e-3)
    smu.output(True)
    smu.set_level(2.0)
    smu.source_current(voltage_limit=5.0)  # compliance, then the function, then level 0
    assert state.function == "I" and state.level == 0.0
    smu.function = smu.VOLTS  # back to volts: its own level is still 2 V
    assert state.function == "V" and state.level == 2.0
    smu.function = smu.AMPS
    assert state.level == 0.0
    smu.check_errors()


@pytest.mark.parametrize("make", EMULATED.values(), ids=EMULATED)
def test_a_function_change_alone_never_carries_the_level_across(make):
    smu, state, _ = make()
    smu.function = smu.VOLTS
    smu.voltage = 1.5
    smu.function = smu.AMPS  # nothing else sent: the current level is the one it always had
    assert state.level == 0.0 and smu.current == 0.0
    assert smu.voltage == 1.5  # the voltage level is kept for when the function comes back
    smu.check_errors()


@pytest.mark.parametrize("make", EMULATED.values(), ids=EMULATED)
def test_every_setting_the_driver_can_set_it_can_read_back_from_the_emulator(make):
    smu, _, _ = make()
    values = {
        "current_limit": 2.5e-3,
        "voltage_limit": 3.5,
        "nplc": 2.0,
        "function": smu.AMPS,
        "current": -1.25e-4,
        "output_state": True,
    }
    values_after = {"function": smu.VOLTS, "voltage": -0.75}
    for name, value in [*values.items(), *values_after.items()]:
        setattr(smu, name, value)
        assert getattr(smu, name) == value, name
    assert smu.current == -1.25e-4  # still there after the function changed
    smu.check_errors()


def test_2450_emulator_reads_back_its_sense_function_and_ranges():
    smu, _, _ = emulated_2450()
    smu.sense_function = "VOLT"
    assert smu.sense_function == "VOLT"
    smu.voltage_range = 1.5  # the instrument takes the range that holds the value
    assert smu.voltage_range == 2.0
    smu.current_autorange = False
    smu.current_range = 1e-4
    assert smu.current_range == 1e-4 and smu.current_autorange is False
    smu.current_autorange = True
    assert smu.current_autorange is True
    smu.check_errors()


RESET_LINES = {"2450": ["*RST"], "2602B": ["smua.reset()", "reset()", "*RST"], "B2900": ["*RST"]}
# What each model comes back to (manuals: 2450 defaults 105 µA / 21 V; 2602B smuX.source.limitY
# defaults 1 A / 40 V; B2900 100 µA / 2 V).
RESET_LIMITS = {"2450": (105e-6, 21.0), "2602B": (1.0, 40.0), "B2900": (100e-6, 2.0)}
# ... and their integration time: 1 PLC, but 0.1 PLC on a B2900 (SCPI reference, :SENSe:<CURRent|
# VOLTage>:NPLCycles: "default is 0.1 PLC").
RESET_NPLC = {"2450": 1.0, "2602B": 1.0, "B2900": 0.1}


@pytest.mark.parametrize("model, line", [(m, line) for m, lines in RESET_LINES.items() for line in lines])
def test_a_reset_puts_every_setting_back_to_the_instruments_default(model, line):
    smu, state, emu = EMULATED[model]()
    smu.source_voltage(current_limit=2e-3)
    smu.set_level(1.0)
    smu.source_current(voltage_limit=3.0)
    smu.set_level(1e-3)
    smu.nplc = 5.0
    smu.output(True)
    emu.handle(line)
    assert (state.function, state.level, state.output, state.nplc) == ("V", 0.0, False, RESET_NPLC[model])
    assert smu.voltage == 0.0 and smu.current == 0.0
    assert (smu.current_limit, smu.voltage_limit) == pytest.approx(RESET_LIMITS[model])
    assert smu.output_state is False
    smu.check_errors()


def test_2450_reset_also_restores_the_sense_function_and_autorange():
    smu, _, emu = emulated_2450()
    smu.sense_function = "VOLT"
    smu.current_autorange = False
    smu.current_range = 1e-6
    emu.handle("*RST")
    assert smu.sense_function == "CURR" and smu.current_autorange is True


@pytest.mark.parametrize("make", EMULATED.values(), ids=EMULATED)
def test_output_off_keeps_every_setting(make):
    smu, state, _ = make()
    smu.source_voltage(current_limit=1e-3)
    smu.output(True)
    smu.set_level(1.25)
    smu.output(False)
    assert state.output is False and state.level == 1.25 and smu.voltage == 1.25
    assert smu.current_limit == 1e-3


# ---------------------------------------------------------------------------------------- the circuit
# The emulated circuit caches its readings until an instrument changes: every change an SMU can
# make must reach the next reading. A bench with one SMU of each model: 2602Bs hold the inputs and
# probe, a B2900 the biases, a 2450 nudges the output.
def mixed_bench(configs, tmp_path):
    text = (configs / "bench-virtual.toml").read_text()
    text = text.replace('experiment = "xor-bench.toml"', f'experiment = "{configs / "xor-bench.toml"}"')
    text = text.replace(
        '[instruments.k26c]\nmodel = "keithley-2600b"', '[instruments.k26c]\nmodel = "keysight-b2900"'
    )
    text = text.replace('Vbias1 = "k26c.a"', 'Vbias1 = "k26c.1"').replace(
        'Vbias2 = "k26c.b"', 'Vbias2 = "k26c.2"'
    )
    text = text.replace('"11" = "k26d.a"', '"11" = "k24"')
    text += '\n[instruments.k24]\nmodel = "keithley-2450"\naddress = "TCPIP::192.168.10.25::5025::SOCKET"\n'
    (tmp_path / "bench.toml").write_text(text)
    bench = benchconfig.read(tmp_path / "bench.toml")
    net = config.load(tmp_path / "bench.toml").network()
    virtual = VirtualBench(bench, net)
    state = virtual.state
    with state.lock:  # an operating point: sources on at a sample's levels, nudge and probe at 0 A
        for source, level in zip(net.sources, net.source_values(np.array([2.0, -2.0])), strict=True):
            smu = state.smus[bench.sources[source.name]]
            smu.function, smu.voltage, smu.current_limit, smu.output = "V", float(level), 0.2, True
        for key in (bench.nudges["11"], bench.probe_channel or ""):
            smu = state.smus[key]
            smu.function, smu.current, smu.voltage_limit, smu.output = "I", 0.0, 5.0, True
        state.relays["matrix"].closed.add(bench.probe_routes["9"][0])
        state.pots["pots"].codes[:] = [40, 80, 120, 160, 200, 240, 60, 100]
        state.changed()
    return virtual


def assert_fresh_and_moved(virtual, key, before):
    """The circuit's answer after a change: what a circuit solving from scratch says, and not what
    it said before."""
    after = virtual.circuit.reading(key)
    fresh = EmulatedCircuit(virtual.circuit.network, virtual.circuit.wiring, virtual.state).reading(key)
    assert after[:2] == pytest.approx(fresh[:2], rel=1e-9, abs=1e-12) and after[2] == fresh[2]
    assert after[:2] != pytest.approx(before[:2], rel=1e-6, abs=1e-9) or after[2] != before[2]


PROBE, NUDGER, BIAS = "k26d.b", "k24", "k26c.1"
SMU_CHANGES = {
    "2602B level": ("k26a", "smua.source.levelv = -1.5", PROBE),
    "2602B output off": ("k26a", "smua.source.output = 0", PROBE),
    "2602B function change": ("k26a", "smua.source.func = 0", PROBE),
    "2602B current limit": ("k26a", "smua.source.limiti = 1e-8", "k26a.a"),  # its least: 10 nA
    "2602B channel reset": ("k26a", "smua.reset()", PROBE),
    "2602B reset": ("k26a", "reset()", PROBE),
    "B2900 level": ("k26c", ":SOUR1:VOLT 0.25", PROBE),
    "B2900 output off": ("k26c", ":OUTP1 OFF", PROBE),
    "B2900 function change": ("k26c", ":SOUR1:FUNC:MODE CURR", PROBE),
    "B2900 current limit": ("k26c", ":SENS1:CURR:PROT 1e-9", BIAS),
    "B2900 reset": ("k26c", "*RST", PROBE),
    "2450 level": ("k24", ":SOUR:CURR -1e-3", NUDGER),
    "2450 output off": ("k24", ":OUTP OFF", NUDGER),
    "2450 function change": ("k24", ":SOUR:FUNC VOLT", NUDGER),
    "2450 voltage limit": ("k24", ":SOUR:CURR:VLIM 0.02", NUDGER),
    "2450 reset": ("k24", "*RST", NUDGER),
}


@pytest.mark.parametrize("instrument, line, observed", SMU_CHANGES.values(), ids=SMU_CHANGES)
def test_every_smu_change_reaches_the_next_reading(configs, tmp_path, instrument, line, observed):
    virtual = mixed_bench(configs, tmp_path)
    virtual.emulators["k24"].handle(":SOUR:CURR 1e-3")  # a nudge, so that switching it off moves something
    before = virtual.circuit.reading(observed)
    assert virtual.emulators[instrument].handle(line) is None
    assert virtual.emulators[instrument].errors == []
    assert_fresh_and_moved(virtual, observed, before)


def test_an_unchanged_bench_is_not_solved_again(configs, tmp_path):
    virtual = mixed_bench(configs, tmp_path)
    virtual.circuit.reading(PROBE)
    solves = virtual.circuit.solves
    for key in (PROBE, NUDGER, BIAS, "k26a.a"):
        virtual.circuit.reading(key)
    virtual.emulators["k24"].handle(":SOUR:CURR?")  # a query changes nothing
    virtual.emulators["k26a"].handle("print(smua.source.levelv)")
    virtual.circuit.reading(PROBE)
    assert virtual.circuit.solves == solves


# ---------------------------------------------------------------------------------------- manual audit
# Every command template of every SMU driver, with the manual section that defines it. A control
# added without its reference fails the first test; the second sends every template to its
# emulator and asks every query back: none may be refused. Manuals: 2450 reference manual
# 2450-901-01 §6 (SCPI command reference); Series 2600B reference manual 2600BS-901-01 §7 (TSP
# command reference); Keysight B2900 SCPI command reference (subsystem commands).
R2450 = "2450-901-01 §6 "
R2600B = "2600BS-901-01 §7 "
RB2900 = "B2900 SCPI reference "
CITED = {
    Keithley2450: {
        "function": R2450 + ":SOURce[1]:FUNCtion[:MODE]",
        "voltage": R2450 + ":SOURce[1]:<function>[:LEVel][:IMMediate][:AMPLitude]",
        "current": R2450 + ":SOURce[1]:<function>[:LEVel][:IMMediate][:AMPLitude]",
        "current_limit": R2450 + ":SOURce[1]:VOLTage:ILIMit[:LEVel]",
        "voltage_limit": R2450 + ":SOURce[1]:CURRent:VLIMit[:LEVel]",
        "current_tripped": R2450 + ":SOURce[1]:VOLTage:ILIMit[:LEVel]:TRIPped?",
        "voltage_tripped": R2450 + ":SOURce[1]:CURRent:VLIMit[:LEVel]:TRIPped?",
        # fixed: set the current function's only, while every reading is a voltage
        "nplc": R2450 + "[:SENSe[1]]:<function>:NPLCycles (per measure function)",
        "current_nplc": R2450 + "[:SENSe[1]]:<function>:NPLCycles (per measure function)",
        "output_state": R2450 + ":OUTPut[1][:STATe]",
        "measured_voltage": R2450 + ":MEASure:<function>? (selects that function)",
        "measured_current": R2450 + ":MEASure:<function>? (selects that function)",
        "language": R2450 + "*LANG",
        "sense_function": R2450 + "[:SENSe[1]]:FUNCtion[:ON]",
        "reading": R2450 + ":READ?",
        "voltage_range": R2450 + ":SOURce[1]:<function>:RANGe",
        "current_range": R2450 + "[:SENSe[1]]:<function>:RANGe[:UPPer]",
        "current_autorange": R2450 + "[:SENSe[1]]:<function>:RANGe:AUTO",
        "voltage_autorange": R2450 + "[:SENSe[1]]:<function>:RANGe:AUTO",
        "remote_sense": R2450 + "[:SENSe[1]]:<function>:RSENse",
        "source_voltage_autorange": R2450 + ":SOURce[1]:<function>:RANGe:AUTO",
        "source_current_autorange": R2450 + ":SOURce[1]:<function>:RANGe:AUTO",
        "voltage_off_mode": R2450 + ":OUTPut[1]:<function>:SMODe",
        "current_off_mode": R2450 + ":OUTPut[1]:<function>:SMODe",
    },
    Keithley2600B: {"ascii_precision": R2600B + "format.asciiprecision (6 digits after reset)"},
    Keithley2600BChannel: {
        "function": R2600B + "smuX.source.func",
        "voltage": R2600B + "smuX.source.levelY",
        "current": R2600B + "smuX.source.levelY",
        "current_limit": R2600B + "smuX.source.limitY",
        "voltage_limit": R2600B + "smuX.source.limitY",
        "nplc": R2600B + "smuX.measure.nplc",
        "output_state": R2600B + "smuX.source.output",
        "measured_voltage": R2600B + "smuX.measure.Y()",
        "measured_current": R2600B + "smuX.measure.Y()",
        "compliance": R2600B + "smuX.source.compliance",
        "current_tripped": R2600B + "smuX.source.compliance",
        "voltage_tripped": R2600B + "smuX.source.compliance",
        "remote_sense": R2600B + "smuX.sense",
        "measure_autorangev": R2600B + "smuX.measure.autorangeY",
        "source_autorangev": R2600B + "smuX.source.autorangeY",
        "source_autorangei": R2600B + "smuX.source.autorangeY",
        "off_mode": R2600B + "smuX.source.offmode",
        "off_function": R2600B + "smuX.source.offfunc",
        "off_voltage_limit": R2600B + "smuX.source.offlimitY",
    },
    KeysightB2900Channel: {
        "function": RB2900 + "[:SOURce[c]]:FUNCtion:MODE",
        "voltage": RB2900 + "[:SOURce[c]]:<CURRent|VOLTage>[:LEVel][:IMMediate][:AMPLitude]",
        "current": RB2900 + "[:SOURce[c]]:<CURRent|VOLTage>[:LEVel][:IMMediate][:AMPLitude]",
        "current_limit": RB2900 + "[:SENSe[c]]:<CURRent[:DC]|VOLTage[:DC]>:PROTection[:LEVel]",
        "voltage_limit": RB2900 + "[:SENSe[c]]:<CURRent[:DC]|VOLTage[:DC]>:PROTection[:LEVel]",
        "current_tripped": RB2900 + "[:SENSe[c]]:<CURRent[:DC]|VOLTage[:DC]>:PROTection:TRIPped?",
        "voltage_tripped": RB2900 + "[:SENSe[c]]:<CURRent[:DC]|VOLTage[:DC]>:PROTection:TRIPped?",
        "nplc": RB2900 + "[:SENSe[c]]:<CURRent[:DC]|VOLTage[:DC]>:NPLCycles (common to all functions)",
        "output_state": RB2900 + ":OUTPut[c][:STATe]",
        "measured_voltage": RB2900 + ":MEASure[:<function>]? [chanlist] (switches the output on: ON:AUTO)",
        "measured_current": RB2900 + ":MEASure[:<function>]? [chanlist] (switches the output on: ON:AUTO)",
        # new: ON by default, so a reading after output off switched the output back on
        "auto_on": RB2900 + ":OUTPut[c]:ON:AUTO",
        "remote_sense": RB2900 + "[:SENSe[c]]:REMote",
        "source_voltage_autorange": RB2900 + "[:SOURce[c]]:<CURRent|VOLTage>:RANGe:AUTO",
        "source_current_autorange": RB2900 + "[:SOURce[c]]:<CURRent|VOLTage>:RANGe:AUTO",
        "off_mode": RB2900 + ":OUTPut[c]:OFF:MODE",
    },
}
# The session-level templates (drivers.instrument.Instrument and the models' ClassVars).
CITED_SESSION = {
    Keithley2450: {
        "*IDN?": "IEEE 488.2 §10.14; " + R2450 + "*IDN?",
        ":SYST:ERR?": R2450 + ":SYSTem:ERRor[:NEXT]?",
        "*RST": R2450 + "*RST",
        "*CLS": R2450 + "*CLS",
        "*OPC?": R2450 + "*OPC",
    },
    Keithley2600B: {
        "*IDN?": R2600B + "*IDN? (common commands)",
        "print(errorqueue.next())": R2600B + "errorqueue.next()",
        "reset()": R2600B + "reset()",
        "errorqueue.clear()": R2600B + "errorqueue.clear()",
        "*OPC?": R2600B + "*OPC? (common commands)",
    },
    KeysightB2900: {
        "*IDN?": RB2900 + "*IDN?",
        ":SYST:ERR?": RB2900 + ":SYSTem:ERRor[:NEXT]?",
        "*RST": RB2900 + "*RST",
        "*CLS": RB2900 + "*CLS",
        "*OPC?": RB2900 + "*OPC?",
    },
}


def controls(cls) -> set[str]:
    return {
        name for klass in cls.__mro__ for name, value in vars(klass).items() if isinstance(value, Control)
    }


@pytest.mark.parametrize("cls", CITED, ids=lambda c: c.__name__)
def test_every_command_template_of_every_smu_driver_cites_its_manual_section(cls):
    assert controls(cls) == set(CITED[cls])
    for name in CITED[cls]:
        for template in (getattr(cls, name).get, getattr(cls, name).set):
            assert template is None or isinstance(template, str)


@pytest.mark.parametrize("cls", CITED_SESSION, ids=lambda c: c.__name__)
def test_every_session_template_cites_its_manual_section(cls):
    sent = {"*IDN?", "*OPC?", cls.error_query, *cls.reset_lines}
    assert sent == set(CITED_SESSION[cls])


# In an order the instruments take (a level is set in its own function on a 2450).
SETTINGS = [
    ("current_limit", 2.5e-3),
    ("voltage_limit", 3.5),
    ("nplc", 2.0),
    ("current_nplc", 0.5),
    ("function", "AMPS"),
    ("current", -1.25e-4),
    ("function", "VOLTS"),
    ("voltage", 0.75),
    ("output_state", True),
    ("sense_function", "VOLT"),
    ("voltage_range", 2.0),
    ("current_range", 1e-4),
    ("current_autorange", True),
    ("voltage_autorange", True),
    ("remote_sense", False),
    ("source_voltage_autorange", True),
    ("source_current_autorange", True),
    ("voltage_off_mode", "NORM"),
    ("current_off_mode", "HIMP"),
    ("measure_autorangev", True),
    ("source_autorangev", True),
    ("source_autorangei", False),
    ("off_mode", 0),
    ("off_function", 0),
    ("off_voltage_limit", 4.5),
    ("auto_on", False),
]
# Where a model spells a setting its own way.
MODEL_SETTINGS = {("off_mode", "KeysightB2900Channel"): "HIZ"}


@pytest.mark.parametrize("make", EMULATED.values(), ids=EMULATED)
def test_every_template_is_taken_by_the_emulator_and_every_setting_reads_back(make):
    smu, _, emu = make()
    cls = type(smu)
    names = controls(cls)
    for name, value in SETTINGS:
        if name not in names or getattr(cls, name).set is None:
            continue
        value = MODEL_SETTINGS.get((name, cls.__name__), value)
        value = getattr(smu, value) if value in ("AMPS", "VOLTS") else value
        setattr(smu, name, value)
        if getattr(cls, name).get is not None and name not in ("voltage_range", "current_range"):
            assert getattr(smu, name) == value, name
    for name in sorted(names):
        if getattr(cls, name).get is not None:
            getattr(smu, name)  # every query answers
    assert emu.errors == []
    assert {n for n in names if getattr(cls, n).set is not None} <= {n for n, _ in SETTINGS}
    if isinstance(smu, Keithley2600BChannel):
        parent: Any = smu.parent
        parent.ascii_precision = 12
        assert parent.ascii_precision == 12 and emu.errors == []


# ---------------------------------------------------------------------------------------- grammar
# What a client other than ours sends, and what the instrument answers (None: no reply, nothing
# queued). Long and short forms, any case, optional nodes, compound lines, MIN/MAX.
GRAMMAR: dict[str, list[tuple[str, str | None]]] = {
    "2450": [
        (":SOURce:FUNCtion:MODE VOLTage;:SOUR:VOLT:LEV 1.5;:sour:volt?", "1.500000000E+00"),
        ("SOUR:VOLT:ILIM 2E-3;ILIM?", "2.000000000E-03"),  # the second header continues the first's branch
        (":SENS:FUNC 'VOLT';:SENS:VOLT:NPLC 2.000000;", None),
        (":SENSE:VOLTAGE:DC:NPLCYCLES?", "2.000000000E+00"),
        (":SENS:CURR:NPLC?", "1.000000000E+00"),  # NPLC is per function
        ("OUTPUT ON;OUTPUT?", "1"),
        (":SOUR:VOLT:ILIM? ;:SOUR:VOLT:ILIM MAX;:SOUR:VOLT:ILIM?", "2.000000000E-03;1.050000000E+00"),
        ("*RST;:stat:pres;:*CLS;*ESR?", "0"),
        (":OUTP?;:SOUR:VOLT?", "0;0.000000000E+00"),
        ("*LANG?", "SCPI"),
    ],
    "2602B": [
        ("smua.source.levelv=1", None),
        ("smua.source.levelv   =   -1.5 print(smua.source.levelv)", "-1.50000e+00"),
        ("smua.source.output = smua.OUTPUT_ON; print(smua.source.output)", "1.00000e+00"),
        (
            "smua.source.func=smua.OUTPUT_DCAMPS print(smua.source.func, smua.source.leveli)",
            "0.00000e+00\t0.00000e+00",
        ),
        ("format.asciiprecision = 10 print(smua.source.levelv)", "-1.500000000e+00"),
        ("smua.measure.v()", None),
        ("print(smua.source.limiti * 1000)", "1.000000000e+03"),
        ("*RST", None),
        ("print(smua.source.output, format.asciiprecision)", "0.00000e+00\t6.00000e+00"),
        ("waitcomplete() print(localnode.model)", "2602B"),
    ],
    "B2900": [
        (":SOUR1:FUNC:MODE VOLT;:SOUR:VOLT 1;:SOUR1:VOLT:LEV:IMM:AMPL?", "1.000000000E+00"),
        (":SENS2:CURR:DC:PROT:LEV 1E-3;:SENS2:CURR:PROT?", "1.000000000E-03"),
        (":SENS:VOLT:NPLC 10;:SENS:CURR:NPLC?", "1.000000000E+01"),  # one NPLC for all functions
        (":SENS:CURR:NPLC 1000;:SENS:CURR:NPLC?", "1.000000000E+02"),  # the manual: clipped to MAX
        (":OUTP1:ON:AUTO?", "1"),
        (":OUTP2:OFF:MODE HIZ;:OUTP2:OFF:MODE?", "HIZ"),
        ("*OPC?;*STB?", "1;0"),
    ],
}
REFUSED = {
    "2450": [
        (":SOUR:VOLT 211", -222),  # beyond ±210 V
        (":SOUR:CURR 1E-3", -221),  # the level of a function that is not sourcing
        (":SOUR:VOLT:ILIM 2", -222),  # beyond 1.05 A
        (":SENS:CURR:NPLC 20", -222),  # 0.01 to 10
        (":SOUR:VOLT:RANG 2;:SOUR:VOLT 3", -222),  # beyond the fixed 2 V range
        (":SOUR2:VOLT 1", -114),  # one channel
        (":SOURCE:VOLTA 1", -113),  # neither the short nor the long form
        (":OUTP MAYBE", -141),
        (":SOUR:VOLT one", -104),
        (":SOUR:VOLT", -109),
        ("*IDN? 1", -108),
    ],
    "2602B": [
        ("smua.source.levelv = 41", 1011),  # a 2602B sources ±40.4 V
        ("smua.source.limiti = 1e-9", 1012),  # at least 10 nA
        ("smua.measure.nplc = 30", 1011),  # 0.001 to 25
        ("smua.source.nonsense = 1", -286),
        ("smua.explode()", -286),
        ("smua.source.levelv = ", -285),
        ("for i=1,3 do smua.source.levelv = i end", -285),  # loops: not a Lua interpreter
    ],
    "B2900": [
        (":SOUR1:VOLT 211", -222),
        (":SOUR3:VOLT 1", -114),  # channels 1 and 2
        (":SOUR:VOLT:RANG 2;:SOUR:VOLT 3", -222),
        (":SENS:CURR:PROT 4", -222),
        (":MEAS:VOLT? (@3)", -222),
        ("*FOO", -113),
    ],
}
MAKERS: dict[str, Callable[[], tuple[Any, Any, Any]]] = {
    "2450": emulated_2450,
    "2602B": emulated_2602b,
    "B2900": emulated_b2900,
}


@pytest.mark.parametrize("model", GRAMMAR)
def test_the_emulators_take_any_clients_spelling(model):
    _, _, emu = MAKERS[model]()
    for line, reply in GRAMMAR[model]:
        assert emu.handle(line) == reply, line
        assert emu.errors == [], (line, emu.errors)


@pytest.mark.parametrize(
    "model, line, code", [(m, line, c) for m, cases in REFUSED.items() for line, c in cases]
)
def test_the_emulators_refuse_what_the_instrument_refuses_with_its_code(model, line, code):
    smu, state, emu = MAKERS[model]()
    before = (state.function, state.voltage, state.current, state.current_limit, state.nplc)
    assert emu.handle(line) is None
    assert [c for c, _ in emu.errors][-1:] == [code]
    if "RANG" not in line:
        assert (state.function, state.voltage, state.current, state.current_limit, state.nplc) == before
    with pytest.raises(InstrumentError, match=str(code)):
        smu.check_errors()


def test_a_2601b_has_no_channel_b_and_a_b2901a_no_channel_2():
    bench = BenchState()
    emu = Emulated2600B("k", "Keithley Instruments Inc., Model 2601B, 1, 3.3.5", bench, _no_circuit)
    assert "k.b" not in bench.smus
    emu.handle("smub.source.levelv = 1")
    assert emu.errors[-1][0] == -286 and "smub" in emu.errors[-1][1]
    b29 = EmulatedB2900("b", "Keysight Technologies,B2901A,MY1,3.4", bench, _no_circuit)
    b29.handle(":OUTP2 ON")
    assert "b.2" not in bench.smus and b29.errors[-1][0] == -114
    inst = KeysightB2900(LoopbackTransport(b29), "b")
    inst.identify()
    with pytest.raises(ValueError, match=r"channels 1$"):
        inst.channel("2")


def test_a_b2900_model_the_driver_has_no_ratings_for_is_refused_at_identify():
    t = scripted([("*IDN?", "Keysight Technologies,B2910BL,MY1,1.0")])
    with pytest.raises(InstrumentError, match=r"B2910BL.*ratings"):
        KeysightB2900(t, "b29").identify()
    t.assert_done()


# ---------------------------------------------------------------------------------------- explicit modes
def test_a_b2900_switches_its_output_back_on_at_a_reading_unless_prepared():
    """:OUTPut:ON:AUTO is ON after *RST: the B2900 turns a switched-off output on again for the next
    measurement. `prepare` switches that off, so output off stays off."""
    smu, state, emu = emulated_b2900()
    smu.source_voltage(current_limit=1e-3)
    smu.output(False)
    smu.measure_voltage()
    assert state.output is True  # the instrument's default, which the bench must not rely on
    smu.prepare()
    smu.output(False)
    smu.measure_voltage()
    smu.measure_current()
    assert state.output is False and smu.auto_on is False
    emu.handle("*RST")
    assert smu.auto_on is True  # a reset brings it back: the bench prepares after every reset


@pytest.mark.parametrize(
    "make, lines",
    [
        (Keithley2450, ["*RST", "*CLS", "*OPC?"]),
        (Keithley2600B, ["reset()", "errorqueue.clear()", "*OPC?"]),
        (KeysightB2900, ["*RST", "*CLS", "*OPC?"]),
    ],
)
def test_reset_and_clear_sends_the_models_reset_and_waits_for_it(make, lines):
    t = scripted([(line, "1" if line.endswith("?") else None) for line in lines])
    make(t, "smu").reset_and_clear()
    t.assert_done()


def test_prepare_sets_every_mode_the_bench_relies_on_in_the_manuals_words():
    t = scripted(
        [
            (':SENS:FUNC "VOLT"', None),
            (":SENS:VOLT:RANG:AUTO ON", None),
            (":SENS:VOLT:RSEN OFF", None),
            (":SOUR:VOLT:RANG:AUTO ON", None),
            (":SOUR:CURR:RANG:AUTO ON", None),
            (":OUTP:VOLT:SMOD NORM", None),
            (":OUTP:CURR:SMOD NORM", None),
            ("format.asciiprecision = 12", None),
            ("smua.sense = 0", None),
            ("smua.measure.autorangev = 1", None),
            ("smua.source.autorangev = 1", None),
            ("smua.source.autorangei = 1", None),
            ("smua.source.offmode = 0", None),
            (":OUTP2:ON:AUTO OFF", None),
            (":SENS2:REM OFF", None),
            (":SOUR2:VOLT:RANG:AUTO ON", None),
            (":SOUR2:CURR:RANG:AUTO ON", None),
        ]
    )
    Keithley2450(t, "k24").prepare()
    k26 = Keithley2600B(t, "k26")
    k26.prepare()
    k26.channel("a").prepare()
    KeysightB2900(t, "b29").channel("2").prepare()
    t.assert_done()


def test_the_bench_resets_clears_sets_every_mode_and_records_what_each_instrument_answers(configs, tmp_path):
    """A bench left dirty by its last user (errors queued, auto-on, 4-wire, another NPLC, a 6-digit
    print format): after connect every instrument is in the run's state, and the settings each
    one answered are in the backend's identity for the run log."""
    virtual = mixed_bench(configs, tmp_path).start()
    try:
        emus = virtual.emulators
        emus["k24"].handle(":SENS:VOLT:RSEN ON;:SENS:CURR:NPLC 7;:SOUR:VOLT 500")  # and a -222 queued
        emus["k26c"].handle(":SENS1:REM ON;:SOUR1:VOLT 999")
        emus["k26a"].handle("smua.sense = 1 smua.nonsense()")
        text = (tmp_path / "bench.toml").read_text().replace("emulated = true", "emulated = false")
        for name, address in virtual.addresses.items():
            text = re.sub(
                rf'(\[instruments\.{name}\]\nmodel = "[^"]+"\naddress = )"[^"]+"', rf'\1"{address}"', text
            )
        (tmp_path / "served.toml").write_text(text)
        e = config.load(tmp_path / "served.toml")
        backend = open_backend(e)
        try:
            settings = backend.identity().settings
        finally:
            backend.close()
    finally:
        virtual.stop()
    nplc = benchconfig.read(tmp_path / "served.toml").nplc
    k24 = settings["k24"]
    assert (k24["nplc"], k24["current_nplc"], k24["remote_sense"], k24["sense_function"]) == (
        nplc,
        nplc,
        False,
        "VOLT",
    )
    assert k24["function"] == "CURR" and k24["output_state"] is True  # the nudge: a current source
    for ch in ("k26c.1", "k26c.2"):  # both B2900 channels, the unused one too
        assert settings[ch]["auto_on"] is False and settings[ch]["remote_sense"] is False
    assert settings["k26a"]["ascii_precision"] == 12 and settings["k26a.a"]["remote_sense"] is False
    assert settings["k26a.a"]["function"] == "1" and settings["k26a.a"]["nplc"] == nplc
    assert settings["matrix"]["connect_rule"] == 1 and settings["matrix"]["closed_crosspoints"] == []
    smu_keys = {key for key in virtual.state.smus}
    assert smu_keys <= set(settings)
    json.dumps(settings)  # what the run log stores


# ---------------------------------------------------------------------------------------- output-off state
def test_high_impedance_off_sends_each_models_own_command():
    """2450 RM §6 :OUTPut[1]:<function>:SMODe HIMPedance (kept per source function, so both);
    2600B RM §7 smuX.source.offmode = smuX.OUTPUT_HIGH_Z (2); B2961A/B2962A SCPI reference
    :OUTPut[c]:OFF:MODE HIZ. Each opens the output relay when the output goes off."""
    t = scripted(
        [
            (":OUTP:VOLT:SMOD HIMP", None),
            (":OUTP:CURR:SMOD HIMP", None),
            ("smua.source.offmode = 2", None),
            (":OUTP2:OFF:MODE HIZ", None),
        ]
    )
    Keithley2450(t, "k24").high_impedance_off()
    Keithley2600B(t, "k26").channel("a").high_impedance_off()
    KeysightB2900(t, "b29").channel("2").high_impedance_off()
    t.assert_done()


@pytest.mark.parametrize(
    "instrument, normal, high_z",
    [
        ("k26d", "smub.source.offmode = smub.OUTPUT_NORMAL", "smub.source.offmode = smub.OUTPUT_HIGH_Z"),
        ("k24", ":OUTP:CURR:SMOD NORM", ":OUTPut:CURRent:SMODe HIMPedance"),
        ("k26c", ":OUTP1:OFF:MODE ZERO", ":OUTP1:OFF:MODE HIZ"),
    ],
)
def test_an_off_output_in_its_0_v_state_pulls_its_node_and_in_high_impedance_draws_nothing(
    configs, tmp_path, instrument, normal, high_z
):
    """The manuals' output-off states on a node: 2600B OUTPUT_NORMAL sources 0 V at offlimiti
    (1 mA), a 2450's NORMal 0 V at 10 % of its current range, a B2900's ZERO 0 V at 100 µA, so a
    relay closing onto a node with the output off still passes current; OUTPUT_HIGH_Z,
    HIMPedance and HIZ open the output relay: the node keeps its voltage and no current flows."""
    virtual = mixed_bench(configs, tmp_path)
    key = {"k26d": PROBE, "k24": NUDGER, "k26c": BIAS}[instrument]
    emu = virtual.emulators[instrument]
    state = virtual.state.smus[key]
    on_volts = virtual.circuit.reading(PROBE)[0]
    if instrument == "k26d":
        # Routed onto an amplifier's output (node 9), which 1 mA cannot pull: it sits at its limit.
        assert emu.handle(normal) is None
        with virtual.state.lock:
            state.output = False
            virtual.state.changed()
        volts, amps, limited = virtual.circuit.reading(key)
        assert abs(amps) == pytest.approx(1e-3) and limited and abs(volts) > 0.5  # not pulled to 0 V
        with virtual.state.lock:  # then onto hidden node 7, which it can pull
            state.output = True
            virtual.state.relays["matrix"].closed = {"1A01"}
            virtual.state.changed()
    with virtual.state.lock:  # the bias source forces volts: turn it into a 0 A source like the others
        state.function, state.current, state.voltage_limit = "I", 0.0, 5.0
        virtual.state.changed()
    undisturbed = virtual.circuit.reading(key)[0]
    assert emu.handle(normal) is None
    with virtual.state.lock:
        state.output = False
        virtual.state.changed()
    volts, amps, _ = virtual.circuit.reading(key)
    # Pulled toward 0 V (held there, or as far as the limit's current pulls it): current flows.
    assert abs(volts) < abs(undisturbed) - 1e-3 and abs(amps) > 1e-7
    assert abs(amps) <= {"k26d": 1e-3, "k24": 0.1 * 1e-4, "k26c": 100e-6}[instrument] * (1 + 1e-12)
    assert emu.handle(high_z) is None
    volts, amps, _ = virtual.circuit.reading(key)
    assert amps == 0.0 and volts == pytest.approx(undisturbed, abs=1e-9)
    assert emu.errors == []
    assert on_volts != 0.0  # the operating point moves the nodes (the test is not at 0 V throughout)


def test_a_voltage_source_routed_onto_an_amplifier_output_runs_at_its_current_limit(configs, tmp_path):
    """The probe reset to its default voltage function (2600B reference manual, reset(): DCVOLTS,
    0 V) and switched on while routed to an amplifier's output (node 9): the op-amp holds the node,
    so the SMU sources or sinks its limit, reads the node where the amplifier keeps it and flags
    compliance, as the instrument would; the emulated circuit does not take it for a second
    ideal source on the node."""
    virtual = mixed_bench(configs, tmp_path)
    state = virtual.state.smus[PROBE]
    before = virtual.circuit.reading(PROBE)[0]  # a 0 A probe on node 9
    with virtual.state.lock:
        state.function, state.voltage, state.current_limit, state.output = "V", 0.0, 1e-3, True
        virtual.state.changed()
    volts, amps, limited = virtual.circuit.reading(PROBE)
    assert limited and abs(amps) == pytest.approx(1e-3)
    assert abs(before) > 0.05 and abs(volts) > 0.05  # not pulled to 0 V: the amplifier holds it
    assert np.sign(amps) == -np.sign(volts)  # it pulls toward its 0 V level


@pytest.mark.parametrize(
    "make, line, code",
    [
        (emulated_2602b, "smua.source.offmode = 3", 1011),  # only NORMAL, ZERO, HIGH_Z
        (emulated_2602b, "smua.source.offfunc = 2", 1011),  # only DCAMPS, DCVOLTS
        (emulated_2602b, "smua.source.offlimitv = 41", 1011),  # a 2602B's limitv range: 10 mV-40 V
        (emulated_2602b, "smua.source.offlimitv = 0.005", 1012),
        (emulated_2450, ":OUTP:VOLT:SMOD OPEN", -141),  # HIMPedance, NORMal, ZERO, GUARd
        (emulated_b2900, ":OUTP:OFF:MODE GUAR", -141),  # a B2900 has ZERO, HIZ, NORMal, no guard
    ],
)
def test_an_output_off_state_the_manual_does_not_list_is_refused(make, line, code):
    _, _, emu = make()
    assert emu.handle(line) is None
    assert emu.errors and emu.errors[-1][0] == code


def test_the_2450_output_off_state_without_a_function_sets_both():
    """2450 RM §6 :OUTPut[1]:<function>:SMODe: "If you send this command without the <function>
    parameter, it will set the output-off state for all functions"."""
    smu, _, emu = emulated_2450()
    assert emu.handle(":OUTP:SMOD HIMP") is None and emu.errors == []
    assert smu.voltage_off_mode == "HIMP" and smu.current_off_mode == "HIMP"


def test_a_reset_brings_back_each_models_normal_output_off_state():
    """After *RST / smuX.reset() the off state is the manuals' default again: 2600B OUTPUT_NORMAL
    (0 V at offlimiti, 1 mA), 2450 NORMal (0 V at 10 % of the 100 µA current range after *RST),
    B2900 ZERO (0 V at 100 µA): what a bench must set again after any reset."""
    for make, high_z, reset, key, limit in [
        (emulated_2602b, "smua.source.offmode = 2", "smua.reset()", "k26.a", 1e-3),
        (emulated_2450, ":OUTP:SMOD HIMP", "*RST", "smu", 1e-5),
        (emulated_b2900, ":OUTP1:OFF:MODE HIZ", "*RST", "b29.1", 100e-6),
    ]:
        _, _, emu = make()
        state = emu.bench.smus[key]
        assert state.off_limit == pytest.approx(limit), key
        emu.handle(high_z)
        assert state.off_limit is None, key
        emu.handle(reset)
        assert state.off_limit == pytest.approx(limit) and emu.errors == [], key


# ---------------------------------------------------------------------------------------- the 0 A off state
def test_the_0_a_output_off_state_is_each_models_own_and_what_it_cannot_hold_is_refused_unsent():
    """The probe's relay-preserving off state, per model:
    - 2600B RM §7 smuX.source.offlimitY (the 0 A source's voltage limit), smuX.source.offfunc =
      smuX.OUTPUT_DCAMPS (0: "Source 0 A"), smuX.source.offmode = smuX.OUTPUT_NORMAL (0: the
      source per offfunc; only OUTPUT_HIGH_Z opens the output relay); the limit is settable, within
      the model's limitv range;
    - 2450 RM §6 :OUTPut[1]:<function>:SMODe GUARd: 0 A with the voltage limit at 10 % of the
      present voltage range, not settable: autoranged down to 20 mV it guarantees 2 mV, and a
      0 A state limited at 5 V is refused before anything is sent;
    - B2900 user's guide Table 6-1 (HIGH Z, NORMAL, ZERO): no 0 A off state at all."""
    t = scripted(
        [
            ("*IDN?", IDN_2602B),
            ("smub.source.offlimitv = 5.0", None),
            ("smub.source.offfunc = 0", None),
            ("smub.source.offmode = 0", None),
            ("print(smub.source.offfunc)", "0.00000e+00"),
            ("print(smub.source.offlimitv)", "5.00000e+00"),
            (":OUTP:VOLT:SMOD GUAR", None),
            (":OUTP:CURR:SMOD GUAR", None),
        ]
    )
    k26 = Keithley2600B(t, "k26")
    k26.identify()
    probe = k26.channel("b")
    assert probe.zero_amp_off_limit(5.0) == 5.0
    assert probe.zero_amp_off_limit(41.0) is None  # beyond a 2602B's 40 V
    probe.zero_amp_off(5.0)
    assert probe.off_function == 0 and probe.off_voltage_limit == 5.0
    with pytest.raises(ValueError, match="outside"):
        probe.zero_amp_off(41.0)
    k24 = Keithley2450(t, "k24")
    assert k24.zero_amp_off_limit(5.0) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match=r"holds 0\.002 V"):
        k24.zero_amp_off(5.0)
    k24.zero_amp_off(1e-3)
    b29 = KeysightB2900(t, "b29").channel("1")
    assert b29.zero_amp_off_limit(5.0) is None
    with pytest.raises(InstrumentError, match="no 0 A output-off state"):
        b29.zero_amp_off(1e-3)
    t.assert_done()


def test_a_2612b_takes_a_0_a_off_limit_up_to_200_v():
    """2600B RM §7 smuX.source.offlimitY on a 200 V model: its limitv range, 20 mV-200 V."""
    t = scripted(
        [
            ("*IDN?", IDN_2612B),
            ("smua.source.offlimitv = 150.0", None),
            ("smua.source.offfunc = 0", None),
            ("smua.source.offmode = 0", None),
        ]
    )
    k26 = Keithley2600B(t, "k26")
    k26.identify()
    assert k26.channel("a").zero_amp_off_limit(150.0) == 150.0
    assert k26.channel("a").zero_amp_off_limit(201.0) is None
    k26.channel("a").zero_amp_off(150.0)
    t.assert_done()


@pytest.mark.parametrize(
    "instrument, zero_amp, high_z",
    [
        (
            "k26d",
            [
                "smub.source.offlimitv = LIMIT",
                "smub.source.offfunc = smub.OUTPUT_DCAMPS",
                "smub.source.offmode = 0",
            ],
            "smub.source.offmode = smub.OUTPUT_HIGH_Z",
        ),
        ("k24", [":OUTPut:CURRent:SMODe GUARd"], ":OUTP:CURR:SMOD HIMP"),
    ],
)
def test_an_off_output_in_its_0_a_state_keeps_its_relay_closed_draws_nothing_and_books_its_limit(
    configs, tmp_path, instrument, zero_amp, high_z
):
    """The emulated 0 A off states (2600B OUTPUT_NORMAL + OUTPUT_DCAMPS at offlimitv; 2450 GUARd at
    10 % of the voltage range a reading of the node selects): off, the channel draws nothing (the
    node keeps its voltage) and its output relay does not open; a node beyond the limit is booked
    as the output goes on again (the instrument would clamp it there, sinking current through the
    route's relays), and the 2600B's compliance flag says so while off. High impedance opens the
    relay at every off."""
    virtual = mixed_bench(configs, tmp_path)
    key = {"k26d": PROBE, "k24": NUDGER}[instrument]
    emu, state = virtual.emulators[instrument], virtual.state.smus[key]
    off, on = {
        "k26d": ("smub.source.output = 0", "smub.source.output = 1"),
        "k24": (":OUTP OFF", ":OUTP ON"),
    }[instrument]
    undisturbed = virtual.circuit.reading(key)[0]
    assert abs(undisturbed) > 0.3  # node 9 (probe) and node 11 (nudge) at this operating point
    limits = {"k26d": 5.0, "k24": 0.1 * 2.0}  # the 2450 autoranges to 2 V for this node: 0.2 V
    for line in zero_amp:
        assert emu.handle(line.replace("LIMIT", "5.0")) is None
    assert emu.handle(off) is None
    volts, amps, _ = virtual.circuit.reading(key)
    assert state.off_limit is None and amps == 0.0 and volts == pytest.approx(undisturbed, abs=1e-9)
    if instrument == "k26d":
        assert emu.handle("print(smub.source.compliance)") == "false"
    assert emu.handle(on) is None
    record = emu.off_record(key)
    assert record.relay_openings == 0 and record.largest_off_volts == pytest.approx(abs(undisturbed))
    beyond = abs(undisturbed) > limits[instrument]
    assert len(record.limit_hits) == int(beyond)  # 5 V holds node 9; 0.2 V cannot hold node 11
    if instrument == "k26d":  # a limit below the node: at its limit while off, booked when on again
        assert emu.handle("smub.source.offlimitv = 0.1") is None
        assert emu.handle(off) is None
        assert emu.handle("print(smub.source.compliance)") == "true"
        assert emu.handle(on) is None
        assert record.limit_hits[-1] == (pytest.approx(undisturbed), 0.1)
    assert emu.handle(high_z) is None
    for _ in range(2):
        assert emu.handle(off) is None and emu.handle(on) is None
    assert record.relay_openings == 2 and emu.errors == []


def test_a_b2900_output_relay_opens_at_hiz_and_normal_not_at_zero():
    """B2900 user's guide Table 6-1: HIGH Z and NORMAL open the output relay ("Output relay: off"),
    ZERO holds 0 V at 100 µA; none of them is a 0 A source."""
    smu, _, emu = emulated_b2900()
    for mode, openings in (("ZERO", 0), ("HIZ", 1), ("NORM", 2)):
        smu.output_state = True
        smu.off_mode = mode
        smu.output_state = False
        assert emu.off_record("b29.1").relay_openings == openings, mode
    assert emu.errors == []
