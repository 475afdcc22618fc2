"""Byte pipes to instruments: VISA sessions (pyvisa over pyvisa-py), serial lines (pyserial), and
a scripted pipe for protocol tests.

A transport moves one line at a time; terminators and timeouts come from the driver. Every
transport counts what crossed it, so benchmarks can report round trips. A failure is a one-line
`TransportError` that says which of the things that go wrong on a line went wrong: the connection
refused or lost, no answer in time, an answer that is not text.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pyvisa.resources import MessageBasedResource


class TransportError(ConnectionError):
    """The instrument could not be reached or did not answer."""


def one_line(text: object) -> str:
    """An error's text on one line (some libraries' messages span several)."""
    return " ".join(str(text).split())


CHECK_ADDRESS = "check that the instrument is on and its address in the bench config"
CHECK_LINK = "check the instrument's power and its cable"
LOST = (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.ESHUTDOWN)


def _lost(exc: BaseException) -> bool:
    """A write or read failed because the other end is gone (not a bad address)."""
    return isinstance(exc, OSError) and exc.errno in LOST


def _not_text(address: str, line: str, exc: UnicodeDecodeError) -> str:
    return (
        f"{address}: answered {exc.object[:24]!r} to {line!r}, which is not text: noise on the line, "
        "or another device at this address"
    )


def peer_closed(sock: socket.socket | None) -> bool:
    """True when the other end closed the connection (an EOF waits to be read)."""
    if sock is None:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except OSError:
        return True


@dataclass
class Traffic:
    writes: int = 0  # lines sent that expect no answer
    queries: int = 0  # round trips: a line sent and a line read back

    def reset(self) -> None:
        self.writes = self.queries = 0


class Transport(Protocol):
    traffic: Traffic

    def write(self, line: str) -> None: ...

    def query(self, line: str) -> str: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LineFormat:
    """How a driver's lines end and how long it waits for an answer."""

    write_termination: str = "\n"
    read_termination: str = "\n"
    timeout_s: float = 5.0


class VisaTransport:
    """A VISA resource through the pure-Python pyvisa-py backend, e.g.
    `TCPIP::192.168.0.20::5025::SOCKET` or `TCPIP::192.168.0.21::INSTR`."""

    def __init__(self, address: str, line: LineFormat) -> None:
        import pyvisa

        self.traffic = Traffic()
        self.address = address
        self.line = line
        try:
            self._rm = pyvisa.ResourceManager("@py")
            # A line-level instrument: a message-based resource (SOCKET, INSTR, ASRL).
            self._res: MessageBasedResource = self._rm.open_resource(  # type: ignore[assignment]
                address,
                write_termination=line.write_termination,
                read_termination=line.read_termination,
                timeout=int(line.timeout_s * 1000),
            )
        except Exception as exc:  # pyvisa raises several unrelated types for a bad address
            raise TransportError(one_line(f"cannot open {address}: {exc}: {CHECK_ADDRESS}")) from exc
        self._no_delay()

    def _socket(self) -> socket.socket | None:
        """The TCP socket under a pyvisa-py SOCKET session, when it has one."""
        session = getattr(self._res.visalib, "sessions", {}).get(self._res.session)
        sock = getattr(session, "interface", None)
        return sock if isinstance(sock, socket.socket) else None

    def _no_delay(self) -> None:
        """Send each line at once. With Nagle's algorithm a query right after a write waits for
        the instrument's delayed ACK (~40 ms a time); pyvisa-py has no attribute for it, so set the
        option on its socket when the session has one."""
        sock = self._socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, line: str) -> None:
        try:
            self._res.write(line)
        except Exception as exc:
            raise TransportError(self._failure("sending", line, exc)) from exc
        self.traffic.writes += 1

    def query(self, line: str) -> str:
        try:
            reply = self._res.query(line)
        except Exception as exc:
            raise TransportError(self._failure("awaiting the answer to", line, exc)) from exc
        self.traffic.queries += 1
        return reply.strip()

    def _failure(self, doing: str, line: str, exc: Exception) -> str:
        """Which failure it was. pyvisa-py reports a connection the instrument closed as a
        timeout, so a timeout is checked against the socket before it is called one."""
        from pyvisa import constants

        if isinstance(exc, UnicodeDecodeError):
            return _not_text(self.address, line, exc)
        timeout = getattr(exc, "error_code", None) == constants.StatusCode.error_timeout
        if _lost(exc) or (timeout and peer_closed(self._socket())):
            return f"{self.address}: connection lost {doing} {line!r}: {CHECK_LINK}"
        if timeout:
            return (
                f"{self.address}: no answer to {line!r} within {self.line.timeout_s:g} s: the instrument "
                f"stalls or is busy; {CHECK_ADDRESS}"
            )
        return one_line(f"{self.address}: no answer to {line!r} ({exc}): {CHECK_ADDRESS}")

    def close(self) -> None:
        try:
            self._res.close()
        finally:
            self._rm.close()


class SerialTransport:
    """A serial line through pyserial: a device (`/dev/ttyACM0`) or a URL (`socket://host:port`).

    Many boards reset when the port is opened (the DTR line toggles, and an auto-reset circuit on
    ESP32 and Arduino-style boards pulls the chip's reset), then print a boot banner before their
    program runs: `boot_seconds` waits that long after opening, and what the board printed in the
    meantime is drained, so the first query is not answered by a banner line."""

    def __init__(self, url: str, line: LineFormat, baudrate: int = 115200, boot_seconds: float = 0.0) -> None:
        import serial

        if not 0.0 <= boot_seconds <= 60.0:
            raise ValueError(f"boot_seconds = {boot_seconds!r} must be from 0 to 60 s")
        self.traffic = Traffic()
        self.address = url
        self.line = line
        self.baudrate = baudrate
        try:
            self._port = serial.serial_for_url(url, baudrate=baudrate, timeout=line.timeout_s)
        except Exception as exc:  # SerialException, ValueError for a malformed URL, OSError
            raise TransportError(one_line(f"cannot open {url}: {exc}: {CHECK_ADDRESS}")) from exc
        sock = getattr(self._port, "_socket", None)  # socket:// URLs: no Nagle delay (see VisaTransport)
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if boot_seconds > 0:
            time.sleep(boot_seconds)
            self.drain()

    def drain(self, quiet_s: float = 0.05) -> bytes:
        """Whatever the device sent that nobody asked for (a boot banner, a late answer): read
        until it has been quiet for `quiet_s`."""
        got = b""
        timeout = self._port.timeout
        try:
            self._port.timeout = quiet_s
            while True:
                chunk = self._port.read(4096)
                if not chunk:
                    return got
                got += chunk
        except Exception as exc:
            raise TransportError(
                one_line(f"{self.address}: connection lost while draining ({exc}): {CHECK_LINK}")
            ) from exc
        finally:
            self._port.timeout = timeout

    def write(self, line: str) -> None:
        self._send(line)
        self.traffic.writes += 1

    def query(self, line: str) -> str:
        self._send(line)
        reply = self._read_line(line)
        self.traffic.queries += 1
        return reply

    def close(self) -> None:
        sock = getattr(self._port, "_socket", None)
        if isinstance(sock, socket.socket):
            # pyserial's socket:// close sleeps 0.3 s "in case of quick reconnects"; nothing here
            # reconnects that fast, and a bench closes its bridge after every run.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the other end is gone already
            sock.close()
            self._port._socket = None
            self._port.is_open = False
            return
        self._port.close()

    def _send(self, line: str) -> None:
        try:
            self._port.write((line + self.line.write_termination).encode("ascii"))
        except Exception as exc:
            # pyserial wraps the socket's error: a broken pipe arrives as a SerialException.
            raise TransportError(
                one_line(f"{self.address}: connection lost sending {line!r} ({exc}): {CHECK_LINK}")
            ) from exc

    def _read_line(self, line: str) -> str:
        end = self.line.read_termination.encode("ascii")
        try:
            raw = self._port.read_until(end)
        except Exception as exc:  # pyserial's socket:// says "socket disconnected" when the peer closed
            lost = f"{self.address}: connection lost awaiting the answer to {line!r} ({exc}): {CHECK_LINK}"
            raise TransportError(one_line(lost)) from exc
        if not raw.endswith(end):
            raise TransportError(
                f"{self.address}: no answer to {line!r} within {self.line.timeout_s:g} s: the instrument "
                f"stalls or is busy; {CHECK_ADDRESS}"
            )
        try:
            return raw[: -len(end)].decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise TransportError(_not_text(self.address, line, exc)) from exc


class ProtocolMismatch(AssertionError):
    """A driver sent something the scripted exchange did not expect."""


@dataclass
class ScriptedTransport:
    """For protocol tests: the exact exchange a driver must have, as (sent, reply) pairs, reply
    None for a write. Every pair must be consumed, in order; `assert_done` checks the rest."""

    exchange: Sequence[tuple[str, str | None]]
    traffic: Traffic = field(default_factory=Traffic)
    position: int = 0

    def write(self, line: str) -> None:
        self._expect(line, query=False)
        self.traffic.writes += 1

    def query(self, line: str) -> str:
        reply = self._expect(line, query=True)
        self.traffic.queries += 1
        assert reply is not None
        return reply

    def close(self) -> None:
        pass

    def assert_done(self) -> None:
        if self.position != len(self.exchange):
            left = [sent for sent, _ in self.exchange[self.position :]]
            raise ProtocolMismatch(f"expected exchanges not made: {left}")

    def _expect(self, line: str, query: bool) -> str | None:
        if self.position >= len(self.exchange):
            raise ProtocolMismatch(f"unexpected {'query' if query else 'write'} {line!r}: script is done")
        sent, reply = self.exchange[self.position]
        if line != sent:
            raise ProtocolMismatch(f"exchange {self.position}: sent {line!r}, expected {sent!r}")
        if query != (reply is not None):
            kind = "a query" if reply is not None else "a write"
            raise ProtocolMismatch(f"exchange {self.position}: {line!r} should be {kind}")
        self.position += 1
        return reply


class LineHandler(Protocol):
    def handle(self, line: str) -> str | None: ...


class LoopbackTransport:
    """A driver wired in memory to an emulator's `handle`: the driver and the emulator of one
    instrument exercised together without a socket."""

    def __init__(self, handler: LineHandler) -> None:
        self.handler = handler
        self.traffic = Traffic()

    def write(self, line: str) -> None:
        reply = self.handler.handle(line)
        if reply is not None:
            raise ProtocolMismatch(f"{line!r} was sent as a command but answered {reply!r}")
        self.traffic.writes += 1

    def query(self, line: str) -> str:
        reply = self.handler.handle(line)
        if reply is None:
            raise TransportError(f"no answer to {line!r}")
        self.traffic.queries += 1
        return reply

    def close(self) -> None:
        pass


def scripted(pairs: Iterable[tuple[str, str | None]]) -> ScriptedTransport:
    return ScriptedTransport(list(pairs))
