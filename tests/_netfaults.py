"""A TCP proxy on 127.0.0.1 that injects network faults between a client and a server.

Real sockets, real timeouts: the client under test talks to the proxy exactly as it would
to the collector. Each new connection is handled by the mode in force when it arrives:

- ``"pass"``: forward both ways;
- ``"reset"``: close at once with a TCP reset (endpoint down / connection refused-like);
- ``"blackhole"``: accept and read, never answer (a hung server);
- ``"hold"``: forward the request to the server, withhold the response (slow ack) for
  ``hold_s`` seconds (``None``: until the proxy stops), applied to the next
  ``hold_count`` connections, then back to ``"pass"``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

from _listener import ThreadedListener

__all__ = ["FaultProxy"]


class FaultProxy(ThreadedListener):
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        super().__init__()
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.hold_s: float | None = None
        self.hold_count = 0
        self.connections = 0
        self.request_seen = threading.Event()  # some request bytes reached the proxy
        self._start()

    def events_url(self) -> str:
        return f"{self.url}/api/v1/events"

    # -- internals ------------------------------------------------------------------------

    def _on_accept(self, client: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            mode = self.mode
            hold = False
            if mode == "hold":
                if self.hold_count > 0:
                    self.hold_count -= 1
                    hold = True
                if self.hold_count <= 0:
                    self.mode = "pass"
        self._track(client)
        if mode == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        if mode == "blackhole":
            self._spawn(self._drain, client)
            return
        try:
            upstream = self._track(socket.create_connection(self.upstream, timeout=5))
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._spawn(self._pump, client, upstream, 0.0, True)
        self._spawn(self._pump, upstream, client, self.hold_s if hold else 0.0, False)

    def _drain(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                data = conn.recv(65536)
                if not data:
                    break
                self.request_seen.set()

    def _pump(
        self, src: socket.socket, dst: socket.socket, hold_s: float | None, from_client: bool
    ) -> None:
        start = time.monotonic()
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if from_client:
                    self.request_seen.set()
                # A held response: wait out the delay (fault injection, not synchronisation).
                while hold_s != 0.0 and not self._stop.is_set():
                    if hold_s is not None and time.monotonic() - start >= hold_s:
                        break
                    self._stop.wait(0.02)
                if self._stop.is_set():
                    break
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
