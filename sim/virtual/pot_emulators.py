"""Command handler of the emulated pot bridge. It runs the bridge's own firmware parser
(`drivers.firmware.potbridge`), so the virtual bench exercises the protocol the board speaks;
the firmware's wiper shadow is the bench's `PotBankState.codes`, changed under the bench's lock.

The emulated parts (`EmulatedPot`, `draw_parts`) differ from the nominal formula the driver assumes
when the bench config gives a tolerance: each channel's R_AB within r_ab·(1 ± r_ab_tolerance) and
its R_W within r_w_range, uniformly, from `part_seed` and the bank's name (one bench, the same parts
in every run, whatever the training's seed), as the AD5206's ±30 % R_AB tolerance and its R_W of up
to 100 Ω (data sheet Rev. C, Table 1) make real parts differ.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from drivers.benchconfig import InstrumentSpec
from drivers.firmware.potbridge import PotBridgeFirmware, PotWriter
from drivers.pots import TAPS
from sim.virtual.state import BenchState, PotBankState


@dataclass(frozen=True)
class EmulatedPot:
    """One channel's true rheostat, W to B."""

    r_ab: float  # Ω
    r_w: float  # Ω

    def conductance(self, code: int) -> float:
        return 1.0 / (self.r_w + self.r_ab * code / TAPS)


def draw_parts(spec: InstrumentSpec) -> list[EmulatedPot]:
    """Channel 1…N's true parts (index 0 is channel 1); nominal when the spec gives no tolerance."""
    rng = np.random.default_rng([spec.part_seed, zlib.crc32(spec.name.encode())])
    low, high = spec.r_w_range if spec.r_w_range is not None else (spec.r_w, spec.r_w)
    r_ab = spec.r_ab * (1.0 + spec.r_ab_tolerance * rng.uniform(-1.0, 1.0, spec.channels))
    r_w = rng.uniform(low, high, spec.channels) if high > low else np.full(spec.channels, low)
    return [EmulatedPot(float(a), float(w)) for a, w in zip(r_ab, r_w, strict=True)]


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
