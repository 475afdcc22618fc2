"""Command handler of the emulated pot bridge. It runs the bridge's own firmware parser
(`drivers.firmware.potbridge`), so the virtual bench exercises the protocol the board speaks;
the firmware's wiper shadow is the bench's `PotBankState.codes`, changed under the bench's lock.
"""

from __future__ import annotations

from drivers.firmware.potbridge import PotBridgeFirmware, PotWriter
from sim.virtual.state import BenchState, PotBankState


class _ChangeFlag(PotWriter):
    """Stands in for the SPI chips: the firmware already wrote the shadow, which is the state."""

    def __init__(self) -> None:
        self.moved = False

    def write(self, channel: int, code: int) -> None:
        self.moved = True


class PotBridgeEmulator:
    """`handle(line)` answers as the bridge firmware would."""

    def __init__(
        self,
        pots: PotBankState,
        bench: BenchState,
        identity: str | None = None,
        serial: str = "VIRTUAL0001",
        version: str = "1.0",
    ) -> None:
        self.pots = pots
        self.bench = bench
        self._flag = _ChangeFlag()
        self.firmware = PotBridgeFirmware(
            self._flag,
            channels=len(pots.codes),
            safe_code=pots.safe_code,
            serial=serial,
            version=version,
            codes=pots.codes,
        )
        if identity is not None:
            self.firmware.identity = identity

    def handle(self, line: str) -> str | None:
        with self.bench.lock:
            self._flag.moved = False
            reply = self.firmware.handle(line)
            if self._flag.moved:
                self.bench.changed()
        return reply

    @property
    def errors(self) -> list[tuple[int, str]]:
        return list(self.firmware.errors)
