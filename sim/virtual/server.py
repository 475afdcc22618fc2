"""A line-oriented TCP server for one emulated instrument: what a VISA `::SOCKET` resource or a
pyserial `socket://` URL talks to."""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Protocol


class LineHandler(Protocol):
    def handle(self, line: str) -> str | None: ...


class _Connection(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
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
                self.server.lines += 1
                reply = self.server.emulator.handle(line)
                if reply is not None:
                    self.request.sendall(reply.encode("ascii") + b"\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: LineHandler) -> None:
        self.emulator = emulator
        self.lines = 0
        super().__init__(address, _Connection)


class LineServer:
    """Serves one emulator on 127.0.0.1 (port 0: a free port) in a background thread."""

    def __init__(self, emulator: LineHandler, port: int = 0, host: str = "127.0.0.1") -> None:
        self._server = _Server((host, port), emulator)
        bound = self._server.server_address
        self.host, self.port = str(bound[0]), int(bound[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name=f"emulator:{self.port}"
        )

    @property
    def lines(self) -> int:
        """Lines received so far (commands and queries)."""
        return self._server.lines

    def start(self) -> LineServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
