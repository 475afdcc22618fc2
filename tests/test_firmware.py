"""The pot-bridge firmware's parser, on CPython with a fake pot writer, and its SPI framing."""

from __future__ import annotations

import ast
import inspect

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


@pytest.mark.parametrize(
    ("line", "code"),
    [
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
    ],
)
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
