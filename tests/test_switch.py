"""Switch-matrix drivers: exact command sequences, channel validation, and the drivers against
their emulators."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import benchconfig
from drivers.instrument import Control, InstrumentError
from drivers.roles import SwitchMatrix
from drivers.switch import Keithley707B, Keithley3706A, Keysight34980A
from drivers.transport import LoopbackTransport, ProtocolMismatch, scripted
from hil import config
from sim.virtual.bench import VirtualBench
from sim.virtual.circuit import EmulatedCircuit
from sim.virtual.state import BenchState, RelayState
from sim.virtual.switch_emulators import Keithley707BEmulator, Keysight34980AEmulator

IDN_707B = "KEITHLEY INSTRUMENTS INC.,MODEL 707B,04123456,1.3.4"
IDN_3706A = "KEITHLEY INSTRUMENTS INC.,MODEL 3706A,04447336,01.53a"
IDN_34980A = "Agilent Technologies,34980A,MY44012345,2.51-2.43-2.09-1.00"
TSP_EMPTY = "0.00000e+00\tQueue Is Empty\t0.00000e+00\t0.00000e+00"


HandlerTransport = LoopbackTransport


# ---------------------------------------------------------------------------------------- 707B
def test_707b_session_sends_the_manuals_commands():
    t = scripted(
        [
            ("*IDN?", IDN_707B),
            ('channel.open("allslots")', None),
            ("print(errorqueue.next())", TSP_EMPTY),
            ('channel.close("1A01,1B02")', None),
            ('print(channel.getclose("allslots"))', "1A01;1B02"),
            ('channel.open("1A01")', None),
            ('print(channel.getclose("allslots"))', "1B02"),
            ('channel.open("allslots")', None),
            ('print(channel.getclose("allslots"))', "nil"),
        ]
    )
    matrix = Keithley707B(t, "matrix")
    assert isinstance(matrix, SwitchMatrix)
    assert matrix.identify() == IDN_707B
    matrix.open_all()
    matrix.check_errors()
    matrix.close_channels(["1A01", "1B02"])
    assert matrix.closed_channels() == {"1A01", "1B02"}
    matrix.open_channels(["1A01"])
    assert matrix.closed_channels() == {"1B02"}
    matrix.open_all()
    assert matrix.closed_channels() == set()
    t.assert_done()


def test_wait_complete_asks_opc():
    for matrix in (
        Keithley707B(scripted([("*OPC?", "1")]), "a"),
        Keysight34980A(scripted([("*OPC?", "1")]), "b"),
    ):
        matrix.wait_complete()
        matrix.transport.assert_done()


def test_707b_driver_also_takes_a_3706a():
    t = scripted([("*IDN?", IDN_3706A)])
    assert Keithley707B(t, "matrix").identify() == IDN_3706A
    t.assert_done()


def test_707b_refuses_another_instrument():
    t = scripted([("*IDN?", "KEITHLEY INSTRUMENTS INC.,MODEL 2450,04400000,1.7.0")])
    with pytest.raises(InstrumentError, match=r"matrix: .*MODEL 2450.*not a 707B or 3706A"):
        Keithley707B(t, "matrix").identify()
    t.assert_done()


def test_707b_error_queue_becomes_instrument_error_with_code_and_text():
    t = scripted(
        [
            ("print(errorqueue.next())", "-2.86000e+02\tTSP Runtime error at line 1: invalid channel\t2\t1"),
            ("print(errorqueue.next())", "1.11500e+03\tParameter error\t2\t1"),
            ("print(errorqueue.next())", TSP_EMPTY),
        ]
    )
    with pytest.raises(InstrumentError) as caught:
        Keithley707B(t, "matrix").check_errors()
    message = str(caught.value)
    assert "-286: TSP Runtime error at line 1: invalid channel" in message
    assert "1115: Parameter error" in message
    t.assert_done()


@pytest.mark.parametrize(
    "channels",
    [
        ["1I01"],
        ["1A13"],
        ["1A00"],
        ["7A01"],
        ["0A01"],
        ["A101"],
        ["1a01"],
        ["1A1"],
        [""],
        ["1A01", "1A01"],
        "1A01",
    ],
)
def test_707b_refuses_malformed_crosspoints_before_sending(channels):
    t = scripted([])
    matrix = Keithley707B(t, "matrix")
    with pytest.raises(ValueError, match=r"707B|repeated|list"):
        matrix.close_channels(channels)
    with pytest.raises(ValueError, match=r"707B|repeated|list"):
        matrix.open_channels(channels)
    t.assert_done()  # nothing was sent: the script is empty and refuses any line


def test_empty_lists_send_nothing():
    for matrix in (Keithley707B(scripted([]), "a"), Keysight34980A(scripted([]), "b")):
        matrix.close_channels([])
        matrix.open_channels([])
        matrix.transport.assert_done()


def test_scripted_transport_catches_a_wrong_command():
    # the protocol tests can fail: a driver that sent something else would be caught here
    t = scripted([('channel.close("1A01")', None)])
    with pytest.raises(ProtocolMismatch):
        Keithley707B(t, "matrix").close_channels(["1A02"])


# ---------------------------------------------------------------------------------------- 34980A
def test_34980a_session_sends_the_manuals_commands():
    t = scripted(
        [
            ("*IDN?", IDN_34980A),
            ("ROUT:OPEN:ALL", None),
            ("SYST:ERR?", '+0,"No error"'),
            ("ROUT:CLOS (@1101,1202)", None),
            ("ROUT:CLOS? (@1101,1202)", "1,1"),
            ("ROUT:OPEN (@1101)", None),
            ("ROUT:CLOS? (@1202)", "1"),
            ("ROUT:OPEN:ALL", None),
        ]
    )
    matrix = Keysight34980A(t, "matrix")
    assert isinstance(matrix, SwitchMatrix)
    assert matrix.identify() == IDN_34980A
    matrix.open_all()
    matrix.check_errors()
    matrix.close_channels(["1101", "1202"])
    assert matrix.closed_channels() == {"1101", "1202"}
    matrix.open_channels(["1101"])
    assert matrix.closed_channels() == {"1202"}
    matrix.open_all()
    assert matrix.closed_channels() == set()  # nothing closed by this session: no query
    t.assert_done()


def test_34980a_closed_channels_trusts_the_instrument_over_memory():
    t = scripted(
        [("ROUT:CLOS (@1101,1102)", None), ("ROUT:CLOS? (@1101,1102)", "0,1"), ("ROUT:CLOS? (@1102)", "1")]
    )
    matrix = Keysight34980A(t, "matrix")
    matrix.close_channels(["1101", "1102"])
    assert matrix.closed_channels() == {"1102"}
    assert matrix.closed_channels() == {"1102"}
    t.assert_done()


def test_34980a_short_state_reply_is_an_error():
    t = scripted([("ROUT:CLOS (@1101,1102)", None), ("ROUT:CLOS? (@1101,1102)", "1")])
    matrix = Keysight34980A(t, "matrix")
    matrix.close_channels(["1101", "1102"])
    with pytest.raises(InstrumentError, match="1 states for 2 channels"):
        matrix.closed_channels()
    t.assert_done()


def test_34980a_error_queue_becomes_instrument_error_with_code_and_text():
    t = scripted([("SYST:ERR?", '-222,"Data out of range"'), ("SYST:ERR?", '+0,"No error"')])
    with pytest.raises(InstrumentError, match=r"matrix reports -222: Data out of range$"):
        Keysight34980A(t, "matrix").check_errors()
    t.assert_done()


def test_34980a_refuses_another_instrument():
    t = scripted([("*IDN?", IDN_707B)])
    with pytest.raises(InstrumentError, match="not a 34980A"):
        Keysight34980A(t, "matrix").identify()
    t.assert_done()


@pytest.mark.parametrize(
    "channels",
    [["1001"], ["1100"], ["9101"], ["0101"], ["110"], ["11011"], ["1A01"], ["1101", "1101"], "1101"],
)
def test_34980a_refuses_malformed_crosspoints_before_sending(channels):
    t = scripted([])
    matrix = Keysight34980A(t, "matrix")
    with pytest.raises(ValueError, match=r"34980A|repeated|list"):
        matrix.close_channels(channels)
    with pytest.raises(ValueError, match=r"34980A|repeated|list"):
        matrix.open_channels(channels)
    t.assert_done()


# ---------------------------------------------------------------------------------------- emulators
def test_707b_emulator_keeps_relays_and_queues_errors_instead_of_raising():
    bench = BenchState()
    relays = bench.relays.setdefault("matrix", RelayState())
    emu = Keithley707BEmulator(relays, bench, slots=(1, 2))
    assert emu.handle("*IDN?").startswith("KEITHLEY INSTRUMENTS INC.,MODEL 707B")
    version = bench.version
    assert emu.handle('channel.close("1A01,2H12")') is None
    assert relays.closed == {"1A01", "2H12"} and bench.version > version
    assert emu.handle('print(channel.getclose("allslots"))') == "1A01;2H12"
    assert emu.handle('print(channel.getclose("1A01"))') == "1A01"
    assert emu.handle("print(errorqueue.next())") == TSP_EMPTY  # numbers printed at 6 digits
    assert emu.handle("*OPC?") == "1"
    for bad in ('channel.close("3A01")', 'channel.close("1Z01")', "channel.explode()", "print(x"):
        assert emu.handle(bad) is None
    assert relays.closed == {"1A01", "2H12"}
    codes = [int(float(emu.handle("print(errorqueue.next())").split("\t")[0])) for _ in range(4)]
    assert codes == [-286, -286, -286, -285]  # a bad channel and a missing function are run-time errors
    assert emu.handle('channel.open("allslots")') is None
    assert relays.closed == set()
    assert emu.handle('print(channel.getclose("allslots"))') == "nil"


def test_34980a_emulator_keeps_relays_and_queues_errors_instead_of_raising():
    bench = BenchState()
    relays = RelayState()
    emu = Keysight34980AEmulator(relays, bench, identity="Keysight Technologies,34980A,X,3.0", slots=(1, 2))
    assert emu.handle("*IDN?") == "Keysight Technologies,34980A,X,3.0"
    assert emu.handle("ROUTe:CLOSe (@1101:1103,2201)") is None
    assert relays.closed == {"1101", "1102", "1103", "2201"}
    assert emu.handle("ROUT:CLOS? (@1101,1104,2201)") == "1,0,1"
    assert emu.handle("ROUT:OPEN? (@1101,1104)") == "0,1"
    assert emu.handle("ROUT:OPEN:ALL 2") is None
    assert relays.closed == {"1101", "1102", "1103"}
    for bad in ("ROUT:CLOS (@3101)", "ROUT:CLOS", "ROUT:CLOS 1101", "ROUT:FLIP (@1101)", "*IDN? 1"):
        assert emu.handle(bad) is None
    errors = [emu.handle("SYST:ERR?") for _ in range(6)]
    assert [int(e.split(",")[0]) for e in errors] == [-222, -109, -102, -113, -108, 0]
    assert errors[-1] == '+0,"No error"'
    assert emu.handle("ROUT:OPEN:ALL") is None and relays.closed == set()


# ---------------------------------------------------------------------------------------- drivers × emulators
def matrices() -> tuple[Keithley707B, Keysight34980A, RelayState, RelayState]:
    bench = BenchState()
    keithley_relays, keysight_relays = RelayState(), RelayState()
    keithley = Keithley707B(HandlerTransport(Keithley707BEmulator(keithley_relays, bench)), "k707b")
    keysight = Keysight34980A(HandlerTransport(Keysight34980AEmulator(keysight_relays, bench)), "k34980a")
    return keithley, keysight, keithley_relays, keysight_relays


def test_drivers_against_emulators_agree():
    keithley, keysight, keithley_relays, keysight_relays = matrices()
    # the same crosspoints of a 2 x 3 matrix, in each instrument's names
    names = {(r, c): (f"1{'AB'[r]}0{c + 1}", f"1{r + 1}0{c + 1}") for r in range(2) for c in range(3)}
    keithley.identify()
    keysight.identify()
    steps = [
        ("close", [(0, 0), (1, 2)]),
        ("close", [(0, 1)]),
        ("open", [(0, 0)]),
        ("close", [(1, 0), (1, 1)]),
    ]
    for verb, points in steps:
        for matrix, which in ((keithley, 0), (keysight, 1)):
            channels = [names[p][which] for p in points]
            (matrix.close_channels if verb == "close" else matrix.open_channels)(channels)
        closed_k = {p for p, (k, _) in names.items() if k in keithley.closed_channels()}
        closed_s = {p for p, (_, s) in names.items() if s in keysight.closed_channels()}
        assert closed_k == closed_s
        assert {names[p][0] for p in closed_k} == keithley_relays.closed
        assert {names[p][1] for p in closed_s} == keysight_relays.closed
    assert closed_k == {(0, 1), (1, 2), (1, 0), (1, 1)}
    for matrix in (keithley, keysight):
        matrix.wait_complete()
        matrix.check_errors()
        matrix.open_all()
        assert matrix.closed_channels() == set()
    assert keithley_relays.closed == keysight_relays.closed == set()


def test_drivers_raise_what_the_emulators_queue():
    keithley, keysight, _, _ = matrices()
    keithley.write("channel.explode()")
    with pytest.raises(InstrumentError, match=r"k707b reports -286: TSP Runtime error.*call field `explode'"):
        keithley.check_errors()
    keithley.check_errors()  # drained
    keysight.write("ROUT:CLOS (@9101)")
    with pytest.raises(InstrumentError, match="k34980a reports -222: Data out of range"):
        keysight.check_errors()
    keysight.check_errors()


# ---------------------------------------------------------------------------------------- bounds
# Each end of each field of a crosspoint name is accepted; the first name past it is refused
# before anything is sent.
@pytest.mark.parametrize(
    "make, accepted, refused",
    [
        (Keithley707B, ["1A01", "6H12", "6A12", "1H01"], ["0A01", "7A01", "1I01", "1A00", "1A13", "6H13"]),
        (Keysight34980A, ["1101", "8999", "1199", "8901"], ["0101", "9101", "1001", "1100", "8900"]),
    ],
)
def test_crosspoint_names_at_each_bound_are_sent_and_the_next_beyond_is_refused(make, accepted, refused):
    for name in accepted:
        close = 'channel.close("{}")' if make is Keithley707B else "ROUT:CLOS (@{})"
        t = scripted([(close.format(name), None)])
        make(t, "matrix").close_channels([name])
        t.assert_done()
    for name in refused:
        t = scripted([])
        with pytest.raises(ValueError, match="crosspoint"):
            make(t, "matrix").close_channels([name])
        t.assert_done()


@pytest.mark.parametrize(
    "emulator, close, query, names, beyond",
    [
        (
            Keithley707BEmulator,
            'channel.close("{}")',
            'print(channel.getclose("{}"))',
            ["1A01", "6H12"],
            "7A01",
        ),
        (Keysight34980AEmulator, "ROUT:CLOS (@{})", "ROUT:CLOS? (@{})", ["1101", "8999"], "9101"),
    ],
)
def test_emulated_matrices_take_every_slot_they_have_and_refuse_the_next(
    emulator, close, query, names, beyond
):
    bench = BenchState()
    relays = RelayState()
    emu = emulator(relays, bench)
    for name in names:
        assert emu.handle(close.format(name)) is None
    assert relays.closed == set(names) and emu.errors == []
    assert emu.handle(close.format(beyond)) is None
    assert relays.closed == set(names) and len(emu.errors) == 1


# ---------------------------------------------------------------------------------------- the circuit
# The emulated circuit caches its readings until an instrument changes: every relay change must
# reach the next reading. bench-virtual.toml's board with its 707B, or a 34980A in its place.
KEYSIGHT_NAMES = {
    "1A01": "1101",
    "1A02": "1102",
    "1A03": "1103",
    "1A04": "1104",
    "1B01": "1201",
    "1B02": "1202",
}


def switch_bench(configs, tmp_path, model, closed):
    text = (configs / "bench-virtual.toml").read_text()
    text = text.replace('experiment = "xor-bench.toml"', f'experiment = "{configs / "xor-bench.toml"}"')
    if model == "keysight-34980a":
        text = text.replace('model = "keithley-707b"', 'model = "keysight-34980a"')
        for keithley, keysight in KEYSIGHT_NAMES.items():
            text = text.replace(f'"{keithley}"', f'"{keysight}"')
    (tmp_path / "bench.toml").write_text(text)
    bench = benchconfig.read(tmp_path / "bench.toml")
    net = config.load(tmp_path / "bench.toml").network()
    virtual = VirtualBench(bench, net)
    state = virtual.state
    with state.lock:  # sources on at a sample's levels, nudge and probe at 0 A, the given relays closed
        for source, level in zip(net.sources, net.source_values(np.array([2.0, -2.0])), strict=True):
            smu = state.smus[bench.sources[source.name]]
            smu.function, smu.voltage, smu.current_limit, smu.output = "V", float(level), 0.2, True
        for key in (bench.nudges["11"], bench.probe_channel):
            smu = state.smus[key]
            smu.function, smu.current, smu.voltage_limit, smu.output = "I", 0.0, 5.0, True
        state.relays["matrix"].closed.update(closed)
        state.pots["pots"].codes[:] = [40, 80, 120, 160, 200, 240, 60, 100]
        state.changed()
    return virtual


PROBE = "k26d.b"
# (relays closed before, the line, in 707B names; the 34980A's are translated)
RELAY_CHANGES = {
    "open only": (["1A03"], 'channel.open("1A03")', "ROUT:OPEN (@1103)"),
    "close only": ([], 'channel.close("1A03")', "ROUT:CLOS (@1103)"),
    "open all": (["1A03"], 'channel.open("allslots")', "ROUT:OPEN:ALL"),
    "reset": (["1A03"], "*RST", "*RST"),
    "tsp reset": (["1A03"], "reset()", None),
    "slot open": (["1A03"], None, "ROUT:OPEN:ALL 1"),
    "invert only": (["1A03"], 'channel.close("1B01")', "ROUTe:CLOSe (@1201)"),
    "un-invert only": (["1A03", "1B01"], 'channel.open("1B01")', "ROUT:OPEN (@1201)"),
    "range close": (["1A03"], None, "ROUT:CLOS (@1201:1202)"),
}
CASES = [
    pytest.param(model, closed, line, id=f"{model} {change}")
    for change, (closed, keithley, keysight) in RELAY_CHANGES.items()
    for model, line in (("keithley-707b", keithley), ("keysight-34980a", keysight))
    if line is not None
]


@pytest.mark.parametrize("model, closed, line", CASES)
def test_every_relay_change_reaches_the_next_reading(configs, tmp_path, model, closed, line):
    if model == "keysight-34980a":
        closed = [KEYSIGHT_NAMES[name] for name in closed]
    virtual = switch_bench(configs, tmp_path, model, closed)
    matrix = virtual.emulators["matrix"]
    before = virtual.circuit.reading(PROBE)
    assert matrix.handle(line) is None and matrix.errors == []
    after = virtual.circuit.reading(PROBE)
    fresh = EmulatedCircuit(virtual.circuit.network, virtual.circuit.wiring, virtual.state).reading(PROBE)
    assert after[:2] == pytest.approx(fresh[:2], rel=1e-9, abs=1e-12)
    assert after[0] != pytest.approx(before[0], rel=1e-6, abs=1e-9)  # the change moved the probe


@pytest.mark.parametrize("model", ["keithley-707b", "keysight-34980a"])
def test_a_relay_query_changes_nothing_and_solves_nothing(configs, tmp_path, model):
    closed = ["1A03"] if model == "keithley-707b" else ["1103"]
    virtual = switch_bench(configs, tmp_path, model, closed)
    virtual.circuit.reading(PROBE)
    solves, version = virtual.circuit.solves, virtual.state.version
    query = 'print(channel.getclose("allslots"))' if model == "keithley-707b" else "ROUT:CLOS? (@1103)"
    assert virtual.emulators["matrix"].handle(query) in ("1A03", "1")
    virtual.circuit.reading(PROBE)
    assert (virtual.circuit.solves, virtual.state.version) == (solves, version)


# ---------------------------------------------------------------------------------------- manual audit
# Every command the matrix drivers send, with the manual section that defines it: 707B reference
# manual 707B-901-01 §7 (ICL commands, "channel" functions), Series 3700A reference manual
# 3700AS-901-01 §8 (TSP commands; §5 channel specifiers), 34980A programmer's reference (ROUTe,
# SYSTem subsystems). Every template must be cited; the emulators take every one.
R707B = "707B-901-01 §7 "
R3706A = "3700AS-901-01 §8 "
R34980A = "34980A programmer's reference "
CITED = {
    Keithley707B: {
        'channel.close("{value}")': R707B + "channel.close()",
        'channel.open("{value}")': R707B + "channel.open()",
        'print(channel.getclose("allslots"))': R707B + "channel.getclose()",
        "print(channel.connectrule)": R707B + "channel.connectrule",
        "channel.connectrule = {value}": R707B + "channel.connectrule",
        'channel.open("allslots")': R707B + "channel.open() (allslots)",
        "print(errorqueue.next())": R707B + "errorqueue.next()",
        "reset()": R707B + "reset()",
        "errorqueue.clear()": R707B + "errorqueue.clear()",
        "*IDN?": R707B + "*IDN? (common commands)",
        "*OPC?": R707B + "*OPC? (common commands)",
    },
    Keysight34980A: {
        "ROUT:CLOS (@{value})": R34980A + "ROUTe:CLOSe",
        "ROUT:OPEN (@{value})": R34980A + "ROUTe:OPEN",
        "ROUT:OPEN:ALL": R34980A + "ROUTe:OPEN:ALL",
        "ROUT:CLOS? (@{channels})": R34980A + "ROUTe:CLOSe?",
        "SYST:ERR?": R34980A + "SYSTem:ERRor?",
        "*RST": R34980A + "*RST",
        "*CLS": R34980A + "*CLS",
        "*IDN?": R34980A + "*IDN?",
        "*OPC?": R34980A + "*OPC?",
    },
}
# The 3706A sends the 707B's commands (3700A RM §8 channel.close(), .open(), .getclose(),
# .connectrule, reset(), errorqueue): only its channel names differ (3700A RM §5).
CITED[Keithley3706A] = {
    template: R3706A + ref.split(" ", 1)[1] for template, ref in CITED[Keithley707B].items()
}


def templates(cls) -> set[str]:
    found = {"*IDN?", "*OPC?", cls.error_query, *cls.reset_lines}
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if isinstance(value, Control):
                found.update(t for t in (value.get, value.set) if t is not None)
            elif name in ("OPEN_ALL", "STATE_QUERY"):
                found.add(value)
    return found


@pytest.mark.parametrize("cls", CITED, ids=lambda c: c.__name__)
def test_every_command_template_of_every_matrix_driver_cites_its_manual_section(cls):
    assert templates(cls) == set(CITED[cls])


@pytest.mark.parametrize(
    "make, emulator, idn, names",
    [
        (Keithley707B, Keithley707BEmulator, IDN_707B, ["1A01", "2H12"]),
        (Keithley707B, Keithley707BEmulator, IDN_3706A, ["1101", "2616", "31412"]),
        (Keysight34980A, Keysight34980AEmulator, IDN_34980A, ["1101", "2899"]),
    ],
)
def test_a_whole_session_of_every_template_is_taken_by_the_emulator(make, emulator, idn, names):
    bench, relays = BenchState(), RelayState()
    emu = emulator(relays, bench, identity=idn)
    matrix = make(LoopbackTransport(emu), "matrix")
    matrix.identify()
    matrix.reset_and_clear()
    matrix.prepare()
    matrix.close_channels(names)
    assert matrix.closed_channels() == set(names) == relays.closed
    matrix.open_channels(names[:1])
    matrix.wait_complete()
    settings = matrix.applied_settings()
    matrix.open_all()
    matrix.check_errors()
    assert relays.closed == set() and emu.errors == []
    if make is Keithley707B:
        assert settings == {"connect_rule": 1, "closed_crosspoints": sorted(names[1:])}


def test_a_3706a_is_driven_with_its_own_channel_names_and_refuses_the_707b_ones():
    bench, relays = BenchState(), RelayState()
    emu = Keithley707BEmulator(relays, bench, identity=IDN_3706A)
    matrix = Keithley707B(LoopbackTransport(emu), "matrix")
    matrix.identify()
    with pytest.raises(ValueError, match="not a 3706A crosspoint"):
        matrix.close_channels(["1A01"])  # a 707B name: nothing is sent
    assert (
        emu.handle('channel.close("1A01")') is None and emu.errors[-1][0] == -286
    )  # and the 3706A refuses it
    matrix.close_channels(["1101"])
    assert relays.closed == {"1101"}
    three = Keithley3706A(scripted([('channel.close("1101")', None)]), "m")
    three.close_channels(["1101"])
    three.transport.assert_done()


def test_reset_and_clear_and_prepare_send_the_manuals_lines():
    t = scripted(
        [("reset()", None), ("errorqueue.clear()", None), ("*OPC?", "1"), ("channel.connectrule = 1", None)]
    )
    matrix = Keithley707B(t, "matrix")
    matrix.reset_and_clear()
    matrix.prepare()
    t.assert_done()
    t = scripted([("*RST", None), ("*CLS", None), ("*OPC?", "1")])
    Keysight34980A(t, "matrix").reset_and_clear()
    t.assert_done()


@pytest.mark.parametrize(
    "line, closed",
    [
        ('channel.close("1A01:1B02")', {"1A01", "1A02", "1B01", "1B02"}),  # a range: rows x columns
        ("channel.close('1A01;1C03')", {"1A01", "1C03"}),  # single quotes, ';' between channels
        ('  channel.close ( "1A01" )  ', {"1A01"}),
        ('channel.close("1A01") channel.close("1A02")', {"1A01", "1A02"}),
        ('channel.exclusiveclose("1B05")', {"1B05"}),
        ('channel.close("1A01") reset()', set()),
    ],
)
def test_the_707b_emulator_takes_tsp_as_scripts_write_it(line, closed):
    bench, relays = BenchState(), RelayState()
    relays.closed.add("1H12")
    emu = Keithley707BEmulator(relays, bench)
    if "exclusive" not in line and "reset" not in line:
        closed = closed | {"1H12"}
    assert emu.handle(line) is None
    assert relays.closed == closed and emu.errors == []


def test_the_34980a_emulator_takes_long_forms_and_answers_488_2():
    bench, relays = BenchState(), RelayState()
    emu = Keysight34980AEmulator(relays, bench)
    assert emu.handle("rout:close (@1101);:ROUTE:CLOSE? (@1101,1102)") == "1,0"
    assert emu.handle("CLOSe:EXCLusive (@1203)") is None and relays.closed == {"1203"}
    assert emu.handle("*ESR?;*OPC?;SYSTEM:ERROR?") == '128;1;+0,"No error"'  # power-on bit, once
    assert emu.handle("*CLS;*ESR?") == "0"
    assert emu.handle("ROUT:OPEN:ALL 9") is None and emu.errors[-1][0] == -222
    assert emu.handle("*ESR?") == "16"  # an execution error
