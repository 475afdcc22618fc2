"""Pot-bridge firmware: MicroPython on a small board (RP2040, ESP32, …) with AD5206 chips on SPI,
speaking the line protocol documented in `drivers.pots` over its USB serial port.

Copy this file to the board as `main.py`. The parser (`PotBridgeFirmware`) and the serving loop
(`serve`) are plain Python that runs on CPython too, with any object that has `write(channel,
code)` standing in for the chips; only `main()` touches `machine`. Written for MicroPython and
tested under its unix port: no imports at module level, no typing module, no str.partition.

Whatever goes wrong on the board (a malformed line, a parser bug, an SPI write that fails), the
loop keeps serving: every wiper goes back to the safe code, the error is queued for `SYST:ERR?`,
and the board never drops to the REPL with the wipers left where they were.
"""

SERIAL = "0"
VERSION = "1.0"
TAPS = 256
CHIP_CHANNELS = 6  # an AD5206 has RDAC1..RDAC6 (addresses 0..5)
SAFE_CODE = 255  # W–B rheostat at its largest resistance: the least current anywhere
QUEUE_LENGTH = 10

# Board wiring by `sys.platform`: SPI bus id, SCK and MOSI pins, and one chip-select pin per AD5206.
# Raspberry Pi Pico (rp2): SPI0 on GP18 (SCK) and GP19 (TX); ESP32: VSPI is bus 2, SCK 18, MOSI 23
# (bus 0 does not exist on an ESP32: it and bus 1 hold the flash). Two AD5206 per board, 12
# channels, since the XOR bench needs 8 pots: chip selects GP17 and GP20 on a Pico (GP16 is SPI0's
# RX), GPIO5 and GPIO4 on an ESP32. A board with one chip serves its channels 1-6 as they are.
# Change for your board.
BOARDS = {
    "rp2": (0, 18, 19, (17, 20)),
    "esp32": (2, 18, 23, (5, 4)),
}
# The AD5206 clocks data in on SCK's rising edge (SPI mode 0) at up to 10 MHz; 1 MHz leaves margin
# for flying leads.
SPI_BAUD = 1000000

ERRORS = {
    -100: "Command error",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -222: "Data out of range",
    -224: "Illegal parameter value",
    -300: "Device-specific error",
    -350: "Queue overflow",
}


class CommandError(Exception):
    """A command refused whole: its SCPI code and the detail for the error queue."""

    def __init__(self, code: int, detail: str = "") -> None:
        # MicroPython's Exception has no __init__ attribute to call directly: go through super().
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


class SpiBus:
    """What `AD5206Chips` needs of an SPI bus (`machine.SPI` on the board)."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError


class PotWriter:
    """What the parser drives: sets wiper `channel` (1-based) to `code`."""

    def write(self, channel: int, code: int) -> None:
        raise NotImplementedError


class PotBridgeFirmware:
    """The protocol: one line in, at most one line out (`handle`)."""

    def __init__(
        self,
        writer: PotWriter,
        channels: int = CHIP_CHANNELS,
        safe_code: int = SAFE_CODE,
        serial: str = SERIAL,
        version: str = VERSION,
        codes: list | None = None,
    ) -> None:
        self.writer = writer
        self.channels = channels
        self.safe_code = safe_code
        self.identity = "EQPROP-HIL,POTBRIDGE," + serial + "," + version
        # the chips cannot be read back: this shadow is what CODE? reports
        self.codes = codes if codes is not None else [safe_code] * channels
        self.errors: list = []

    # -- the error queue
    def push_error(self, code: int, detail: str = "") -> None:
        if len(self.errors) >= QUEUE_LENGTH:
            self.errors[-1] = (-350, "")
            return
        self.errors.append((code, detail))

    def next_error(self) -> str:
        if not self.errors:
            return '0,"No error"'
        code, detail = self.errors.pop(0)
        text = ERRORS.get(code, "Error")
        if detail:
            text = text + "; " + detail
        return str(code) + ',"' + text + '"'

    # -- one line
    def handle(self, line: str) -> str | None:
        text = line.strip()
        if not text:
            return None
        parts = text.split(None, 1)
        header = parts[0].upper()
        argument = parts[1].strip() if len(parts) > 1 else ""
        try:
            return self.dispatch(header, argument)
        except CommandError as exc:
            self.push_error(exc.code, exc.detail)
            return None

    def dispatch(self, header: str, argument: str) -> str | None:
        if header in ("*IDN?", "*OPC?", "*RST", "*CLS", "SYST:ERR?", "SYSTEM:ERROR?", "POT:COUN?"):
            if argument:
                raise CommandError(-108, header + " takes no parameter")
            if header == "*IDN?":
                return self.identity
            if header == "*OPC?":
                return "1"
            if header == "*RST":
                self.apply({n: self.safe_code for n in range(1, self.channels + 1)})
                return None
            if header == "*CLS":
                self.errors = []
                return None
            if header == "POT:COUN?":
                return str(self.channels)
            return self.next_error()
        if header == "POT:ALL":
            self.apply(self.parse_all(argument))
            return None
        if header == "POT:SET":
            self.apply(self.parse_set(argument))
            return None
        if header.startswith("POT") and (header.endswith(":CODE") or header.endswith(":CODE?")):
            query = header.endswith("?")
            channel = self.parse_channel(header[3 : header.find(":")])
            if query:
                if argument:
                    raise CommandError(-108, header + " takes no parameter")
                return str(self.codes[channel - 1])
            if not argument:
                raise CommandError(-109, "POT" + str(channel) + ":CODE needs a code")
            self.apply({channel: self.parse_code(argument, channel)})
            return None
        raise CommandError(-113, header)

    # -- parameters
    def parse_channel(self, suffix: str) -> int:
        if not suffix.isdigit():
            raise CommandError(-113, "POT" + suffix)
        channel = int(suffix)
        if not 1 <= channel <= self.channels:
            raise CommandError(-114, "no pot " + suffix + " (1-" + str(self.channels) + ")")
        return channel

    def parse_code(self, text: str, channel: int) -> int:
        word = text.strip()
        digits = word[1:] if word.startswith("-") or word.startswith("+") else word
        if not digits.isdigit():
            raise CommandError(-104, repr(word) + " is not an integer")
        code = int(word)
        if not 0 <= code < TAPS:
            raise CommandError(-222, "code " + word + " for pot " + str(channel))
        return code

    def parse_all(self, argument: str) -> dict:
        if not argument:
            raise CommandError(-109, "POT:ALL needs " + str(self.channels) + " codes")
        words = argument.split(",")
        if len(words) < self.channels:
            raise CommandError(-109, "POT:ALL needs " + str(self.channels) + " codes, got " + str(len(words)))
        if len(words) > self.channels:
            raise CommandError(-108, "POT:ALL takes " + str(self.channels) + " codes, got " + str(len(words)))
        return {n: self.parse_code(words[n - 1], n) for n in range(1, self.channels + 1)}

    def parse_set(self, argument: str) -> dict:
        if not argument:
            raise CommandError(-109, "POT:SET needs <n>=<code> pairs")
        codes = {}
        for entry in argument.split(","):
            pair = entry.split("=")
            if len(pair) != 2:
                raise CommandError(-100, "POT:SET entry " + repr(entry.strip()) + " is not <n>=<code>")
            channel = self.parse_channel(pair[0].strip())
            if channel in codes:
                raise CommandError(-224, "pot " + str(channel) + " given twice")
            codes[channel] = self.parse_code(pair[1], channel)
        return codes

    def apply(self, codes: dict) -> None:
        for channel in sorted(codes):
            self.writer.write(channel, codes[channel])
            self.codes[channel - 1] = codes[channel]

    def fault(self, detail: str) -> None:
        """Something failed mid-command: every wiper to the safe code (each tried on its own, so
        one dead chip does not keep the others where they were) and the fault queued."""
        for channel in range(1, self.channels + 1):
            try:
                self.writer.write(channel, self.safe_code)
                self.codes[channel - 1] = self.safe_code
            except Exception as exc:  # the board must keep serving whatever a chip does
                detail = detail + "; pot " + str(channel) + " not reset: " + str(exc)
        self.push_error(-300, detail)


def serve(firmware: PotBridgeFirmware, readline: object, write: object) -> None:
    """The board's loop: a line in, at most a line out, for ever. `readline()` returns a line, or
    None when there is no more input (only off the board: a serial port always has more)."""
    while True:
        line = readline()  # type: ignore[operator]
        if line is None:
            return
        try:
            reply = firmware.handle(line)
        except Exception as exc:  # a bug or a failed SPI write must not stop the board
            firmware.fault(type(exc).__name__ + ": " + str(exc))
            reply = None
        if reply is not None:
            write(reply + "\n")  # type: ignore[operator]


# ---------------------------------------------------------------------------------------- on the board
class AD5206Chips(PotWriter):
    """AD5206s on one SPI bus, one chip select each; channel n is chip (n-1)//6, RDAC (n-1)%6.

    The AD5206 shifts in an 11-bit word (3 address bits, 8 data bits) and latches the last 11 bits
    on the rising chip select, so two bytes (address, code) do: the 5 leading zeros fall through.
    """

    def __init__(self, spi: SpiBus, chip_selects: list) -> None:
        self.spi = spi
        self.chip_selects = chip_selects
        for pin in chip_selects:
            pin.value(1)

    def write(self, channel: int, code: int) -> None:
        chip, address = (channel - 1) // CHIP_CHANNELS, (channel - 1) % CHIP_CHANNELS
        select = self.chip_selects[chip]
        select.value(0)
        self.spi.write(bytes((address, code)))
        select.value(1)


def main(readline: object = None, write: object = None, board: str = "") -> None:
    """Wire the chips for this board (`sys.platform` unless `board` names one) and serve the serial
    port. Off the board (tests), `readline` and `write` stand in for the port; `readline` returns
    None when the input ends."""
    import sys

    import machine  # only on the board (tests give the unix port a stand-in)

    board = board or sys.platform
    if board not in BOARDS:
        raise SystemExit("potbridge: no wiring for board " + board + ": add it to BOARDS")
    bus, sck, mosi, chip_selects = BOARDS[board]
    spi = machine.SPI(
        bus, baudrate=SPI_BAUD, polarity=0, phase=0, sck=machine.Pin(sck), mosi=machine.Pin(mosi)
    )
    selects = [machine.Pin(number, machine.Pin.OUT) for number in chip_selects]
    serial = "".join(f"{byte:02x}" for byte in machine.unique_id())
    firmware = PotBridgeFirmware(
        AD5206Chips(spi, selects), channels=CHIP_CHANNELS * len(selects), serial=serial, version=VERSION
    )
    # The chips power up at midscale: every wiper to the safe code before the first command.
    pending = ["*RST"]

    def from_port() -> object:
        if pending:
            return pending.pop()
        if readline is not None:
            return readline()  # type: ignore[operator]
        line = ""
        while not line:  # USB serial: an empty read means nothing has arrived yet
            line = sys.stdin.readline()
        return line

    serve(firmware, from_port, write if write is not None else sys.stdout.write)


if __name__ == "__main__":
    main()
