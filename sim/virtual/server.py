"""A line-oriented TCP server for one emulated instrument: what a VISA `::SOCKET` resource or a
pyserial `socket://` URL talks to.

For fault-injection tests a server can be given a `Fault`: after a number of lines it drops the
connection, stops answering, answers garbage, or runs one of the virtual bench's state changes
(a reset to power-on, a power cycle, a compliance trip). Faults live here, around the emulator, never in its
command logic; a server without one serves every line as the instrument would.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol


class LineHandler(Protocol):
    def handle(self, line: str) -> str | None: ...


# A state change a fault may play: returns the line fault that follows it, or None.
Action = Callable[[], "str | None"]


# What goes wrong on the line itself; other kinds are the bench's state changes (`actions`).
DISCONNECT, STALL, GARBAGE = "disconnect", "stall", "garbage"
LINE_FAULTS = (DISCONNECT, STALL, GARBAGE)
# Bytes no instrument sends: not ASCII, not a number, not a name. Alternated with printable junk,
# which passes a decoder and must be refused by the parsers.
GARBAGE_REPLIES = (b"\xff\xfe\x15#?\x7f", b"#?%GARBLED%?#")


@dataclass(frozen=True)
class Fault:
    """After `after` lines served normally (counted from when the fault is set, over every
    connection), the next line meets `kind`:

    - "disconnect": the connection is closed and that line lost;
    - "stall": that line and every later one on the connection are swallowed, never answered;
    - "garbage": every later reply on the connection is garbage (commands still run);
    - anything else: the server's action of that name runs (the virtual bench's "reset", "trip",
      "power-cycle"); the line then meets the line fault the action returns (a power cycle
      drops the connection), or is served when it returns None.

    `lasting`: the instrument stays that way for every new connection too (a dead or hung
    instrument) until `LineServer.clear_fault`; otherwise a new connection is served normally (a
    dropped link, a wedged session)."""

    kind: str
    after: int
    lasting: bool = False


@dataclass(frozen=True)
class Hit:
    """Where a fault struck: the line number (from 1, over the server's life) and the line."""

    kind: str
    line_number: int
    line: str


class _Connection(socketserver.BaseRequestHandler):
    server: _Server

    def setup(self) -> None:
        self.mode = self.server.mode_for_new_connection()
        self.garbage = 0
        with self.server.guard:
            self.server.connections.add(self.request)

    def finish(self) -> None:
        with self.server.guard:
            self.server.connections.discard(self.request)

    def handle(self) -> None:
        if self.mode == DISCONNECT:
            return  # a dead instrument: the connection closes as soon as it opens
        buffer = b""
        self.request.settimeout(None)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                chunk = self.request.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.decode("ascii", errors="replace").strip("\r ")
                if not line:
                    continue
                struck = self.server.count(line)
                if struck is not None:
                    self.mode = struck
                if self.mode in (DISCONNECT, STALL):
                    if self.mode == DISCONNECT:
                        self._drop()
                        return
                    continue
                reply = self.server.emulator.handle(line)
                if reply is None:
                    continue
                out = self._garbled() if self.mode == GARBAGE else reply.encode("ascii") + b"\n"
                try:
                    self.request.sendall(out)
                except OSError:
                    return

    def _garbled(self) -> bytes:
        self.garbage += 1
        return GARBAGE_REPLIES[self.garbage % len(GARBAGE_REPLIES)] + b"\n"

    def _drop(self) -> None:
        try:
            self.request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], emulator: LineHandler, actions: Mapping[str, Action]
    ) -> None:
        self.emulator = emulator
        self.actions = dict(actions)
        self.lines = 0
        self.guard = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.fault: Fault | None = None
        self.armed_at = 0
        self.lasting = ""  # the line fault every new connection meets, until cleared
        self.hits: list[Hit] = []
        super().__init__(address, _Connection)

    def mode_for_new_connection(self) -> str:
        with self.guard:
            return self.lasting

    def count(self, line: str) -> str | None:
        """Count a line; the line fault it meets, if any (a state change has run by then)."""
        with self.guard:
            self.lines += 1
            fault = self.fault
            if fault is None or self.lines - self.armed_at <= fault.after:
                return None
            self.fault = None
            self.hits.append(Hit(fault.kind, self.lines, line))
            if fault.lasting and fault.kind in LINE_FAULTS:
                self.lasting = fault.kind
        if fault.kind in LINE_FAULTS:
            return fault.kind
        return self.actions[fault.kind]()


class LineServer:
    """Serves one emulator on 127.0.0.1 (port 0: a free port) in a background thread.

    `actions` are the state changes a `Fault` may name besides the line faults (the virtual bench
    passes "reset", "power-cycle" and, for an SMU, "trip")."""

    def __init__(
        self,
        emulator: LineHandler,
        port: int = 0,
        host: str = "127.0.0.1",
        actions: Mapping[str, Action] | None = None,
    ) -> None:
        self._server = _Server((host, port), emulator, actions or {})
        bound = self._server.server_address
        self.host, self.port = str(bound[0]), int(bound[1])
        # A short poll: `stop` waits for the loop to notice, and a bench stops six of these.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True, name=f"emulator:{self.port}"
        )

    @property
    def lines(self) -> int:
        """Lines received so far (commands and queries)."""
        return self._server.lines

    @property
    def hits(self) -> list[Hit]:
        """The faults that struck so far, in order."""
        with self._server.guard:
            return list(self._server.hits)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The fault kinds this server can play."""
        return (*LINE_FAULTS, *self._server.actions)

    def inject(self, fault: Fault) -> None:
        """Set `fault` (replacing one not yet struck); it counts lines from now."""
        if fault.kind not in self.kinds:
            raise ValueError(f"fault {fault.kind!r}: this server plays {', '.join(self.kinds)}")
        if fault.after < 0:
            raise ValueError(f"fault after {fault.after} lines: give 0 or more")
        with self._server.guard:
            self._server.fault = fault
            self._server.armed_at = self._server.lines

    def clear_fault(self) -> None:
        """The instrument is itself again for every new connection (one already wedged stays so)."""
        with self._server.guard:
            self._server.fault = None
            self._server.lasting = ""

    def drop_connections(self) -> None:
        """Close every open connection, as a pulled cable or a power cut would."""
        with self._server.guard:
            open_now = list(self._server.connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def start(self) -> LineServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.drop_connections()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
