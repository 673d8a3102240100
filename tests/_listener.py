"""A TCP listener on 127.0.0.1 that hands each connection to a thread: the lifecycle the
tests' fault proxies share (``_netfaults.FaultProxy``, ``_fault_proxy.HttpFaultProxy``).

Subclasses implement ``_on_accept(conn)`` and call ``_start()`` once set up. ``close()``
(or leaving ``with``) stops accepting, shuts every tracked socket down (so blocked reads
return) and joins the threads.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = ["ThreadedListener"]

_L = TypeVar("_L", bound="ThreadedListener")


class ThreadedListener:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.settimeout(0.1)  # the accept loop notices close() within 0.1 s
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def _start(self) -> None:
        self._spawn(self._accept_loop)

    def _on_accept(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        for t in list(self._threads):
            t.join(5)
        self._listener.close()

    def __enter__(self: _L) -> _L:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _track(self, s: socket.socket) -> socket.socket:
        """``s`` is shut down by ``close()``."""
        with self._lock:
            self._sockets.add(s)
        return s

    @contextlib.contextmanager
    def _tracked(self, s: socket.socket) -> Iterator[socket.socket]:
        """``s`` tracked for the block, then closed."""
        self._track(s)
        try:
            yield s
        finally:
            with self._lock:
                self._sockets.discard(s)
            with contextlib.suppress(OSError):
                s.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._on_accept(conn)
