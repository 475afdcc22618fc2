"""The digital-pot bank: the AD5206 model and its calibration, the bridge driver's exact commands,
and the driver against the emulated bridge."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import benchconfig
from drivers.instrument import InstrumentError
from drivers.pots import AD5206Model, Calibration, PotBridge
from drivers.roles import PotBank
from drivers.transport import LoopbackTransport, scripted
from hil import config
from sim.virtual.bench import VirtualBench
from sim.virtual.circuit import EmulatedCircuit
from sim.virtual.pot_emulators import PotBridgeEmulator
from sim.virtual.state import BenchState, PotBankState

IDN = "EQPROP-HIL,POTBRIDGE,SN0042,1.0"
MODEL = AD5206Model(r_ab=10e3, r_w=50.0, channels=6)


def nominal(code: int) -> float:
    return 1.0 / (50.0 + 10e3 * code / 256)


# ---------------------------------------------------------------------------------------- the model
def test_nominal_conductance_is_the_rheostat_formula():
    assert MODEL.conductance(1, 0) == pytest.approx(1 / 50.0)
    assert MODEL.conductance(3, 128) == pytest.approx(1 / 5050.0)
    assert MODEL.conductance(6, 255) == pytest.approx(1 / (50 + 10e3 * 255 / 256))
    assert list(MODEL.codes) == list(range(256))


def test_every_code_round_trips():
    for code in MODEL.codes:
        assert MODEL.code_for(2, MODEL.conductance(2, code)) == code


def test_conductance_goes_to_the_nearest_code():
    g10, g11 = nominal(10), nominal(11)
    assert MODEL.code_for(1, g10 - 0.4 * (g10 - g11)) == 10
    assert MODEL.code_for(1, g10 - 0.6 * (g10 - g11)) == 11


def test_conductance_outside_the_calibrated_range_is_refused_not_clipped():
    with pytest.raises(
        ValueError, match=r"pot channel 1: 0\.05 S is outside the calibrated range \[9\.989.*, 0\.02\] S"
    ):
        MODEL.code_for(1, 0.05)
    with pytest.raises(ValueError, match="outside the calibrated range"):
        MODEL.code_for(1, 1e-6)
    with pytest.raises(ValueError, match="does not exist"):
        MODEL.code_for(7, 1e-3)


def test_a_measured_calibration_replaces_the_formula_on_its_channel():
    measured = Calibration({0: 0.019, 64: 3.9e-4, 128: 1.95e-4, 255: 1.01e-4})
    pot = AD5206Model(r_ab=10e3, r_w=50.0, calibrations={2: measured})
    assert pot.code_for(2, 3.0e-4) == 64  # only measured codes are realisable
    assert pot.conductance(2, 128) == 1.95e-4
    assert pot.code_for(1, 3.0e-4) == MODEL.code_for(1, 3.0e-4)  # other channels stay nominal
    with pytest.raises(ValueError, match="not in the calibration table"):
        pot.conductance(2, 10)
    with pytest.raises(ValueError, match="outside the calibrated range"):
        pot.code_for(2, 0.02)


@pytest.mark.parametrize("table", [{}, {256: 1e-3}, {-1: 1e-3}, {3: 0.0}, {3: -1e-3}])
def test_bad_calibrations_are_refused(table):
    with pytest.raises(ValueError):
        Calibration(table)


def test_bad_models_are_refused():
    with pytest.raises(ValueError):
        AD5206Model(r_ab=0.0)
    with pytest.raises(ValueError, match="does not exist"):
        AD5206Model(channels=6, calibrations={7: Calibration({0: 1e-3})})


# ---------------------------------------------------------------------------------------- the driver
def bridge(exchange: list[tuple[str, str | None]]) -> PotBridge:
    return PotBridge(scripted(exchange), "pots", MODEL)


def test_bridge_session_sends_the_protocol():
    targets = {n: nominal(code) for n, code in zip(range(1, 7), (10, 20, 30, 40, 50, 60), strict=True)}
    moved = {**targets, 2: nominal(21), 5: nominal(49)}
    b = bridge(
        [
            ("*IDN?", IDN),
            ("POT:COUN?", "6"),
            ("*RST", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", '0,"No error"'),
            ("POT:ALL 10,20,30,40,50,60", None),
            ("*OPC?", "1"),
            ("POT:SET 2=21,5=49", None),
            ("*OPC?", "1"),
            ("POT3:CODE?", "30"),
            ("*RST", None),
            ("*OPC?", "1"),
        ]
    )
    assert isinstance(b, PotBank)
    assert b.identify() == IDN
    b.reset()
    b.check_errors()
    assert b.program(targets) == {n: MODEL.conductance(n, MODEL.code_for(n, g)) for n, g in targets.items()}
    assert b.program(moved) == {n: MODEL.conductance(n, MODEL.code_for(n, g)) for n, g in moved.items()}
    assert b.program(moved) == b.program(moved)  # nothing changed: nothing sent
    assert b.read_code(3) == 30
    b.reset()
    b.transport.assert_done()
    assert b.transport.traffic.writes == 4


def test_program_returns_the_quantised_conductances():
    b = bridge([("POT:SET 1=128,4=0", None), ("*OPC?", "1")])
    got = b.program({1: 1.9801e-4, 4: 0.02})
    assert got == {1: MODEL.conductance(1, 128), 4: MODEL.conductance(4, 0)}
    assert got[1] != 1.9801e-4
    b.transport.assert_done()


def test_after_reset_every_channel_is_written_again():
    g = {n: nominal(100) for n in range(1, 7)}
    b = bridge(
        [
            ("POT:ALL 100,100,100,100,100,100", None),
            ("*OPC?", "1"),
            ("*RST", None),
            ("*OPC?", "1"),
            ("POT:ALL 100,100,100,100,100,100", None),
            ("*OPC?", "1"),
        ]
    )
    b.program(g)
    b.reset()
    b.program(g)
    b.transport.assert_done()


def test_single_channel_write():
    b = bridge([("POT6:CODE 255", None), ("*OPC?", "1")])
    b.write_code(6, 255)
    assert b.written == {6: 255}
    b.transport.assert_done()


@pytest.mark.parametrize(
    "codes", [{1: 256}, {1: -1}, {1: 1.5}, {1: True}, {0: 10}, {7: 10}, {1: 10, 2: 300}, {"1": 10}]
)
def test_bad_codes_and_channels_are_refused_before_sending(codes):
    b = bridge([])
    with pytest.raises(ValueError, match="pots: "):
        b.write_codes(codes)
    b.transport.assert_done()
    assert b.written == {}


def test_conductance_out_of_range_is_refused_before_sending():
    b = bridge([])
    with pytest.raises(ValueError, match="outside the calibrated range"):
        b.program({1: 1e-3, 2: 0.5})
    with pytest.raises(ValueError, match="does not exist"):
        b.read_code(9)
    b.transport.assert_done()


def test_bridge_errors_become_instrument_errors_with_code_and_text():
    b = bridge(
        [
            ("SYST:ERR?", '-222,"Data out of range; code 300 for pot 2"'),
            ("SYST:ERR?", '-113,"Undefined header; BLAH"'),
            ("SYST:ERR?", '0,"No error"'),
        ]
    )
    with pytest.raises(
        InstrumentError, match=r"pots reports -222: Data out of range; code 300 for pot 2; -113: Undef"
    ):
        b.check_errors()
    b.transport.assert_done()


def test_identity_and_channel_count_are_checked():
    other = "KEITHLEY INSTRUMENTS INC.,MODEL 2450,1,1"
    with pytest.raises(InstrumentError, match=r"no bridge identity after 3 tries \(\*IDN\? answered 'KEITH"):
        bridge([("*IDN?", other)] * 3).identify()
    small = bridge([("*IDN?", IDN), ("POT:COUN?", "4")])
    with pytest.raises(InstrumentError, match="drives 4 pots, the bench config needs 6"):
        small.identify()
    small.transport.assert_done()


def test_an_unfinished_operation_is_an_error():
    b = bridge([("*RST", None), ("*OPC?", "0")])
    with pytest.raises(InstrumentError, match=r"\*OPC\? answered '0'"):
        b.reset()
    b.transport.assert_done()


# ---------------------------------------------------------------------------------------- emulator
HandlerTransport = LoopbackTransport


def emulated(channels: int = 6) -> tuple[PotBridge, PotBankState, BenchState]:
    bench = BenchState()
    pots = bench.pots.setdefault("pots", PotBankState([128] * channels, 200))
    driver = PotBridge(HandlerTransport(PotBridgeEmulator(pots, bench, serial="VB1")), "pots", MODEL)
    return driver, pots, bench


def test_driver_against_emulator():
    b, pots, bench = emulated()
    assert b.identify() == "EQPROP-HIL,POTBRIDGE,VB1,1.0"
    b.reset()
    assert pots.codes == [200] * 6
    wanted = {1: 1e-3, 2: 2e-4, 3: 5e-3, 4: 1e-4, 5: 0.015, 6: 3.3e-4}
    version = bench.version
    got = b.program(wanted)
    assert bench.version == version + 1  # one bulk command, one change of the circuit
    assert pots.codes == [MODEL.code_for(n, wanted[n]) for n in range(1, 7)]
    assert got == {n: MODEL.conductance(n, pots.codes[n - 1]) for n in range(1, 7)}
    b.program({**wanted, 3: 4e-3})
    assert pots.codes[2] == MODEL.code_for(3, 4e-3)
    assert [b.read_code(n) for n in range(1, 7)] == pots.codes
    b.check_errors()
    assert b.transport.traffic.writes == 3  # *RST, POT:ALL, POT:SET, no more


def test_emulator_errors_reach_the_driver():
    b, pots, _ = emulated()
    b.write("POT:SET 2=9,3=300")  # one bad entry: nothing moves
    b.write("POT:FLY 3")
    assert pots.codes == [128] * 6
    with pytest.raises(
        InstrumentError, match=r"pots reports -222: Data out of range; code 300 for pot 3; -113"
    ):
        b.check_errors()
    b.check_errors()


def test_emulator_identity_can_be_configured():
    bench = BenchState()
    pots = PotBankState([0] * 6, 255)
    emu = PotBridgeEmulator(pots, bench, "EQPROP-HIL,POTBRIDGE,VB00007,2.0")
    assert emu.handle("*IDN?") == "EQPROP-HIL,POTBRIDGE,VB00007,2.0"
    assert emu.handle("*rst") is None and pots.codes == [255] * 6
    assert emu.errors == []


# ---------------------------------------------------------------------------------------- bounds
def test_the_first_and_last_code_and_channel_are_sent():
    b = bridge([("POT:SET 1=0,6=255", None), ("*OPC?", "1"), ("POT1:CODE 255", None), ("*OPC?", "1")])
    b.write_codes({1: 0, 6: 255})
    b.write_code(1, 255)
    assert b.written == {1: 255, 6: 255}
    b.transport.assert_done()


def test_the_ends_of_the_calibrated_range_are_realised_and_just_beyond_them_refused():
    g_min, g_max = MODEL.conductance(1, 255), MODEL.conductance(1, 0)
    b = bridge([("POT:SET 1=255,2=0", None), ("*OPC?", "1")])
    assert b.program({1: g_min, 2: g_max}) == {1: g_min, 2: g_max}
    for beyond in (g_min * (1 - 1e-9), g_max * (1 + 1e-9)):
        with pytest.raises(ValueError, match="outside the calibrated range"):
            b.program({3: beyond})
    b.transport.assert_done()


def test_a_bridge_with_exactly_the_channels_needed_is_taken():
    b = bridge([("*IDN?", IDN), ("POT:COUN?", "6")])
    assert b.identify() == IDN
    b.transport.assert_done()
    with pytest.raises(InstrumentError, match="drives 5 pots, the bench config needs 6"):
        bridge([("*IDN?", IDN), ("POT:COUN?", "5")]).identify()


def test_the_emulated_bridge_takes_every_code_and_channel_it_has_and_refuses_the_next():
    b, pots, _ = emulated()
    b.write("POT:SET 1=0,6=255")
    assert pots.codes[0] == 0 and pots.codes[5] == 255
    b.check_errors()
    b.write("POT1:CODE 256")
    b.write("POT7:CODE 0")
    with pytest.raises(InstrumentError, match=r"-222: Data out of range; code 256 for pot 1; -114"):
        b.check_errors()
    assert pots.codes[0] == 0


# ---------------------------------------------------------------------------------------- the circuit
def pot_bench(configs):
    """bench-virtual.toml's virtual bench at an operating point: sources on, the probe on node 9."""
    bench = benchconfig.read(configs / "bench-virtual.toml")
    net = config.load(configs / "bench-virtual.toml").network()
    virtual = VirtualBench(bench, net)
    state = virtual.state
    with state.lock:
        for source, level in zip(net.sources, net.source_values(np.array([2.0, -2.0])), strict=True):
            smu = state.smus[bench.sources[source.name]]
            smu.function, smu.voltage, smu.current_limit, smu.output = "V", float(level), 0.2, True
        probe = state.smus[bench.probe_channel]
        probe.function, probe.current, probe.voltage_limit, probe.output = "I", 0.0, 5.0, True
        state.relays["matrix"].closed.add(bench.probe_routes["9"][0])
        state.pots["pots"].codes[:] = [40, 80, 120, 160, 200, 240, 60, 100]
        state.changed()
    return virtual, bench.probe_channel


@pytest.mark.parametrize(
    "line", ["POT1:CODE 10", "pot1:code 10", "POT:SET 1=10,3=200", "POT:ALL 1,2,3,4,5,6,7,8", "*RST"]
)
def test_every_wiper_move_reaches_the_next_reading(configs, line):
    virtual, probe = pot_bench(configs)
    before = virtual.circuit.reading(probe)
    emulator = virtual.emulators["pots"]
    assert emulator.handle(line) is None and emulator.errors == []
    after = virtual.circuit.reading(probe)
    fresh = EmulatedCircuit(virtual.circuit.network, virtual.circuit.wiring, virtual.state).reading(probe)
    assert after[:2] == pytest.approx(fresh[:2], rel=1e-9, abs=1e-12)
    assert after[0] != pytest.approx(before[0], rel=1e-6)


@pytest.mark.parametrize("line", ["POT1:CODE?", "POT:COUN?", "POT:SET 1=10,3=300", "POT9:CODE 1", "*IDN?"])
def test_a_query_or_a_refused_command_moves_no_wiper_and_solves_nothing(configs, line):
    virtual, probe = pot_bench(configs)
    virtual.circuit.reading(probe)
    solves, version, codes = (
        virtual.circuit.solves,
        virtual.state.version,
        list(virtual.state.pots["pots"].codes),
    )
    virtual.emulators["pots"].handle(line)
    virtual.circuit.reading(probe)
    assert (virtual.circuit.solves, virtual.state.version) == (solves, version)
    assert virtual.state.pots["pots"].codes == codes


# ---------------------------------------------------------------------------------------- opening the line
class FlakyLine:
    """A line whose first answers are not the bridge's: a timeout, then a boot banner's last line."""

    def __init__(self, replies: list[str | None]) -> None:
        from drivers.transport import Traffic

        self.replies = list(replies)
        self.traffic = Traffic()
        self.drained = 0

    def write(self, line: str) -> None:
        raise AssertionError(f"unexpected write {line!r}")

    def query(self, line: str) -> str:
        from drivers.transport import TransportError

        reply = self.replies.pop(0)
        if reply is None:
            raise TransportError(f"no answer to {line!r} within 2 s")
        return reply

    def drain(self) -> bytes:
        self.drained += 1
        return b""

    def close(self) -> None:
        pass


def test_a_bridge_still_booting_is_asked_again_and_drained_between_tries():
    line = FlakyLine([None, "MicroPython v1.22.0 on 2024-01-01; Raspberry Pi Pico with RP2040", IDN, "6"])
    b = PotBridge(line, "pots", MODEL)  # type: ignore[arg-type]
    assert b.identify() == IDN and b.idn == IDN
    assert line.drained == 2 and line.replies == []


def test_a_bridge_that_never_answers_is_one_line_naming_the_fix():
    line = FlakyLine([None, None, None])
    with pytest.raises(InstrumentError) as err:
        PotBridge(line, "pots", MODEL).identify()  # type: ignore[arg-type]
    text = str(err.value)
    assert "\n" not in text and "no bridge identity after 3 tries" in text
    assert "raise boot_seconds" in text


def banner_server(banner: bytes, delay: float) -> tuple[str, object]:
    """A board on a socket that prints `banner` `delay` s after the port opens (it reset), then
    answers *IDN? and POT:COUN? as the bridge does."""
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            time.sleep(delay)
            conn.sendall(banner)
            buffer = b""
            while True:
                data = conn.recv(1024)
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip() == b"*IDN?":
                        conn.sendall(IDN.encode() + b"\n")
                    elif line.strip() == b"POT:COUN?":
                        conn.sendall(b"6\n")

    threading.Thread(target=run, daemon=True).start()
    return f"socket://127.0.0.1:{server.getsockname()[1]}", server


@pytest.mark.parametrize("boot_seconds, drained", [(0.3, True), (0.0, False)])
def test_the_serial_line_waits_for_the_boot_banner_and_drains_it(boot_seconds, drained):
    from drivers.transport import LineFormat, SerialTransport

    address, server = banner_server(b"rst:0x1 (POWERON_RESET),boot:0x13\nets Jun  8 2016\n", 0.1)
    line = SerialTransport(address, LineFormat("\n", "\n", 1.0), boot_seconds=boot_seconds)
    try:
        if drained:  # the banner went before the first query: the first answer is the bridge's
            assert line.query("*IDN?") == IDN
        else:  # without the wait, the first answer is the banner's first line
            import time

            time.sleep(0.3)
            assert line.query("*IDN?").startswith("rst:0x1")
            assert b"ets Jun" in line.drain()
            assert line.query("*IDN?") == IDN
    finally:
        line.close()
        server.close()  # type: ignore[attr-defined]


def test_a_boot_wait_outside_its_window_is_refused():
    from drivers.transport import LineFormat, SerialTransport

    with pytest.raises(ValueError, match="boot_seconds"):
        SerialTransport("socket://127.0.0.1:1", LineFormat(), boot_seconds=-1.0)


def test_the_example_lab_bench_maps_no_more_pots_than_the_firmware_drives(configs):
    from drivers.firmware.potbridge import BOARDS, CHIP_CHANNELS

    bench = benchconfig.read(configs / "bench-lab-example.toml")
    for bank, spec in bench.of_role("pots").items():
        used = [channel for b, channel in bench.pots.values() if b == bank]
        assert max(used) <= spec.channels
        for board, (_, _, _, selects) in BOARDS.items():
            assert spec.channels <= CHIP_CHANNELS * len(selects), board  # else identify() refuses it
