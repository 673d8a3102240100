"""The uploader's background thread: step, wait what the step says, repeat (docs/upload.md).

Waits are *soft* (backoff after a failure, idle polling: :meth:`UploadLoop.wake` cuts them
short, e.g. for a flush) or *hard* (``Retry-After``, an auth pause, the kill switch, paced
replay: nobody may shorten them). Long hard waits are slept in slices so that the next
step re-reads the kill switch, which another process may lift. The loop never dies of an
exception in a step; it ends when asked, and then closes the destinations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.upload.step import Outcome, Step

__all__ = ["KILL_SWITCH_POLL_S", "Stepper", "UploadLoop"]

KILL_SWITCH_POLL_S = 5.0  # re-read the kill switch at least this often while it is on


class Stepper(Protocol):
    """What the loop drives (the :class:`~.uploader.Uploader`)."""

    def step(self) -> Step: ...

    def close(self) -> None: ...


class UploadLoop:
    """Runs ``stepper.step()`` on a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        stepper: Stepper,
        log: RateLimitedLogger,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stepper = stepper
        self._log = log
        self._monotonic = monotonic
        self._thread: threading.Thread | None = None
        self._init_sync()

    def _init_sync(self) -> None:
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._step_no = 0
        self._in_step = False

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="telemetry-uploader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to stop; wait up to ``timeout``. False if it is still busy.

        A thread stuck in a request is abandoned (daemon): its claim stays on disk and is
        released by the kernel when the process exits. Without a thread, closes now.
        """
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is None:
            self._stepper.close()
            return True
        thread.join(max(0.0, timeout))
        alive = thread.is_alive()
        if not alive:
            self._thread = None
        return not alive

    def wake(self) -> None:
        """Cut a soft wait short (a flush wants delivery now)."""
        self._wake.set()

    def after_fork_in_child(self) -> None:
        """The parent's thread does not exist here; start afresh on demand."""
        self._thread = None
        self._init_sync()

    def wait_progress(self, timeout: float) -> None:
        """Block until another step finished (or ``timeout``)."""
        with self._progress:
            seen = self._step_no
            self._progress.wait_for(lambda: self._step_no != seen, timeout)

    def wait_idle(self, timeout: float) -> None:
        """Block until no step is running (or ``timeout``): a step that just heard the kill
        switch or a refusal finishes recording what it delivered before a waiter judges."""
        with self._progress:
            self._progress.wait_for(lambda: not self._in_step, timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                with self._progress:
                    self._in_step = True
                try:
                    step = self._stepper.step()
                except Exception as exc:  # the loop never dies
                    self._log.error(
                        "upload_loop",
                        "telemetry uploader: unexpected %s: %s",
                        type(exc).__name__,
                        exc,
                    )
                    step = Step(Outcome.ERROR, wait_s=1.0)
                self._notify()
                if step.wait_s > 0:
                    wait = min(step.wait_s, KILL_SWITCH_POLL_S) if step.hard else step.wait_s
                    self._pause(wait, hard=step.hard)
        finally:
            self._stepper.close()
            self._notify()

    def _pause(self, seconds: float, *, hard: bool) -> None:
        end = self._monotonic() + seconds
        while not self._stopping.is_set():
            remaining = end - self._monotonic()
            if remaining <= 0:
                return
            if self._wake.wait(remaining):
                self._wake.clear()
                if not hard:
                    return

    def _notify(self) -> None:
        with self._progress:
            self._in_step = False
            self._step_no += 1
            self._progress.notify_all()
