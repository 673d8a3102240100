"""uvicorn as the collector and the proxy run it: our own socket and our own signals.

Both bind the listening socket before uvicorn starts, so ``port=0`` can be reported as
the real port, and both need a callback once uvicorn accepts connections. uvicorn
re-raises a captured SIGTERM after a graceful stop, which would end a CLI with status
-15. Here a signal only asks for the graceful stop, and a second one stops waiting for
open connections. Imported only by the packages whose extras install uvicorn.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

__all__ = ["Server", "bind"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: the kernel picks a free one).

    The protocol comes from getaddrinfo (IPPROTO_TCP, not 0): asyncio sets TCP_NODELAY
    only on sockets whose proto says TCP, and without it every response written in two
    parts waits ~40 ms for a delayed ACK.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Server(uvicorn.Server):
    """uvicorn with a startup callback and the signal handling above."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:  # a second signal: stop waiting for open connections
            self.force_exit = True
        self.should_exit = True
