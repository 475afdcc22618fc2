"""Other people's drivers against the emulators, over real sockets (pyvisa-py, `::SOCKET`): what
a lab script would do. PyMeasure's Keithley2450 and Keithley2600 run a standard session (reset,
source with a limit, read the settings back, measure, output off); every line they send must be
taken (nothing in the error queue) and every reading must be Ohm's law across the resistor on the
terminals.

QCoDeS is not used: its 2450 and 2600 drivers ask, when they connect, for dozens of settings
(buffers, trigger models, display) that these emulators do not keep.
"""

from __future__ import annotations

import warnings

import pytest

from sim.virtual.server import LineServer
from sim.virtual.smu_emulators import Emulated2450, Emulated2600B
from sim.virtual.state import BenchState

pymeasure = pytest.importorskip("pymeasure")
from pymeasure.instruments.keithley import Keithley2450, Keithley2600  # noqa: E402

LOAD_OHMS = 1e3


def resistor(bench: BenchState):
    """The channel's terminals across a 1 kΩ resistor: Ohm's law, clipped at the compliance."""

    def reading(key: str) -> tuple[float, float, bool]:
        s = bench.smus[key]
        if not s.output:
            return 0.0, 0.0, False
        if s.function == "V":
            i = s.voltage / LOAD_OHMS
            if abs(i) > s.current_limit:
                i = s.current_limit if i > 0 else -s.current_limit
                return i * LOAD_OHMS, i, True
            return s.voltage, i, False
        v = s.current * LOAD_OHMS
        if abs(v) > s.voltage_limit:
            v = s.voltage_limit if v > 0 else -s.voltage_limit
            return v, v / LOAD_OHMS, True
        return v, s.current, False

    return reading


class Recording:
    """An emulator that remembers every line it was sent."""

    def __init__(self, emulator) -> None:
        self.emulator = emulator
        self.lines: list[str] = []

    def handle(self, line: str) -> str | None:
        self.lines.append(line)
        return self.emulator.handle(line)


def serve(emulator):
    recording = Recording(emulator)
    server = LineServer(recording).start()
    address = f"TCPIP::{server.host}::{server.port}::SOCKET"
    return recording, server, address


def connect(driver, address: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PyMeasure's "SCPI support unknown" notice
        return driver(
            address, visa_library="@py", read_termination="\n", write_termination="\n", timeout=5000
        )


def test_pymeasure_keithley2450_runs_a_standard_session():
    bench = BenchState()
    emulator = Emulated2450("smu", "KEITHLEY INSTRUMENTS,MODEL 2450,04096218,1.7.12b", bench, resistor(bench))
    recording, server, address = serve(emulator)
    try:
        smu = connect(Keithley2450, address)
        assert "MODEL 2450" in smu.id
        smu.reset()  # *RST;:stat:pres;:*CLS;
        smu.apply_voltage(compliance_current=1e-3)
        smu.source_voltage = 0.5
        smu.enable_source()
        assert smu.source_voltage == pytest.approx(0.5)
        assert smu.compliance_current == pytest.approx(1e-3)
        assert smu.source_mode == "voltage" and smu.source_enabled
        smu.measure_current(nplc=2)
        assert smu.current_nplc == pytest.approx(2.0)
        assert smu.current == pytest.approx(0.5e-3, rel=1e-9)  # 0.5 V across 1 kΩ
        smu.measure_voltage()
        assert smu.voltage == pytest.approx(0.5, rel=1e-9)
        smu.source_voltage = 2.0  # 2 mA wanted, 1 mA allowed: the current limit holds
        smu.measure_current()
        assert smu.current == pytest.approx(1e-3, rel=1e-9)
        assert smu.ask(":SOUR:VOLT:ILIM:TRIP?").strip() == "1"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smu.ramp_to_voltage(0.0, steps=3, pause=0.0)
        smu.stop_buffer()
        smu.disable_source()
        assert smu.check_errors() == []
        smu.adapter.close()
    finally:
        server.stop()
    assert emulator.errors == [], recording.lines
    assert not bench.smus["smu"].output and bench.smus["smu"].voltage == 0.0
    # what the session sent, in its own spelling: lower case, quotes, trailing ';', long forms
    assert "*RST;:stat:pres;:*CLS;" in recording.lines
    assert ":SENS:FUNC 'CURR';:SENS:CURR:NPLC 2.000000;" in recording.lines
    assert "OUTPUT OFF" in recording.lines


def test_pymeasure_keithley2600_runs_a_standard_session_on_both_channels():
    bench = BenchState()
    emulator = Emulated2600B(
        "k26", "Keithley Instruments Inc., Model 2602B, 4381234, 3.3.5", bench, resistor(bench)
    )
    recording, server, address = serve(emulator)
    try:
        smu = connect(Keithley2600, address)
        assert "Model 2602B" in smu.id
        smu.reset()  # *RST
        for channel, volts in ((smu.ChA, 0.25), (smu.ChB, -1.5)):
            channel.apply_voltage(compliance_current=2e-3)
            channel.source_voltage = volts
            channel.source_output = "ON"
            assert channel.source_voltage == pytest.approx(volts)
            assert channel.compliance_current == pytest.approx(2e-3)
            assert channel.source_mode == "voltage" and channel.source_output == "ON"
            channel.measure_current(nplc=2)
            # (PyMeasure's measure_nplc maps its reading through its value range: asked directly)
            assert float(smu.ask(f"print(smu{channel.channel}.measure.nplc)")) == pytest.approx(2.0)
            # printed at the instrument's 6 significant digits after a reset
            assert channel.current == pytest.approx(volts / LOAD_OHMS, rel=1e-5)
            channel.measure_voltage()
            assert channel.voltage == pytest.approx(volts, rel=1e-5)
            channel.ramp_to_voltage(0.0, steps=3, pause=0.0)
            channel.source_output = "OFF"
        channel = smu.ChA
        channel.apply_current(compliance_voltage=1.0)
        channel.source_current = 2e-3  # 2 V wanted across 1 kΩ, 1 V allowed
        channel.source_output = "ON"
        assert channel.voltage == pytest.approx(1.0, rel=1e-5)
        channel.source_current = 0.0
        channel.source_output = "OFF"
        assert smu.check_errors() == []
        smu.adapter.close()
    finally:
        server.stop()
    assert emulator.errors == [], recording.lines
    for key in ("k26.a", "k26.b"):
        assert not bench.smus[key].output and bench.smus[key].level == 0.0
    assert "smua.source.func=1" in recording.lines and "smub.source.output=0" in recording.lines


def test_the_emulators_refuse_what_a_client_gets_wrong_and_the_client_sees_it():
    """The same path refuses: PyMeasure's own check reads the emulator's error back."""
    bench = BenchState()
    emulator = Emulated2600B(
        "k26", "Keithley Instruments Inc., Model 2602B, 4381234, 3.3.5", bench, resistor(bench)
    )
    _, server, address = serve(emulator)
    try:
        smu = connect(Keithley2600, address)
        smu.ChA.write("source.levelv=100")  # a 2602B sources ±40.4 V
        errors = smu.check_errors()
        smu.adapter.close()
    finally:
        server.stop()
    assert [code for code, _ in errors] == [1011]
    assert bench.smus["k26.a"].voltage == 0.0
