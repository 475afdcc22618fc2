"""SMU drivers against the exact exchanges their manuals define."""

import pytest

from drivers.instrument import InstrumentError
from drivers.smu import Keithley2450, Keithley2600B, KeysightB2900
from drivers.transport import ProtocolMismatch, scripted

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
