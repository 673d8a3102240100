"""Feeds a client's LLM calls into the shared usage store without slowing ``emit()`` down.

``emit()`` hands every ``events.LLMCall`` and ``events.ChatTurn`` to
:meth:`UsageRecorder.add`: one ``time.time()`` and one ``deque.append`` (well under a
microsecond), no I/O, no lock; a chat turn without provider and model is ignored there. A
small daemon thread (``telemetry-usage``, started on the first LLM call, so an app that
never calls an LLM has no such thread) merges what piled up into the store about once a
second (:meth:`UsageStore.merge`: flock, read, merge, prune, coalesce, atomic replace,
unlock, typically a few milliseconds); ``flush()`` and ``close()`` merge the rest on the
caller's thread. A dedicated thread rather than the spool writer: the writer's latency
budget (``TELEMETRY_LINGER_MS``) must not wait on a lock other processes hold.

Chat turns count too: an ``events.ChatTurn`` naming both a ``provider`` and a ``model`` is
one request (its tokens when given, no bytes; an error when its ``status`` is ``"error"``
or ``"failed"``), unless this process emitted an ``llm_call`` for the same provider and
model (case-insensitive) in the same session since that session's previous turn for them:
then the call was already counted, with the provider's exact figures
(``usage_turns_covered`` counts those turns). The merge applies this rule in emit order,
keyed by session, provider and model, for at most :data:`MAX_TRACKED_KEYS` keys (the least
recently used are forgotten). Calls another process recorded (a proxy on the same spool)
are not matched: an app behind one should leave ``provider``/``model`` out of its turns.

Failures never reach the caller: a merge that fails (read-only or full disk, lock timeout)
is counted (``usage_errors``), logged once per cooldown, and retried a second later with
the same records, of which at most :data:`MAX_RETAINED` are kept (the oldest beyond are
dropped and counted, ``usage_dropped``), so memory stays bounded. A store that could not
be read is started over by the store; that is logged once per cooldown (``usage_resets``).

Fork safety: the child drops the parent's pending records (the parent merges them), gets
fresh locks and starts its own thread on its first LLM call.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Any

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.events import ChatTurn, LLMCall
from telemetry_client.usage.store import UsageRecord, UsageStore

__all__ = ["MAX_RETAINED", "MAX_TRACKED_KEYS", "MERGE_INTERVAL_S", "UsageRecorder"]

MERGE_INTERVAL_S = 1.0
MAX_RETAINED = 10_000  # records kept for a retry while the store keeps failing
LOCK_TIMEOUT_S = 5.0  # the background thread's patience with other processes' merges
MAX_TRACKED_KEYS = 4_096  # (session, provider, model) keys remembered for the chat-turn rule

_Key = tuple[str | None, str, str]


class UsageRecorder:
    """Pending LLM calls of one client and the thread that merges them into the store."""

    def __init__(self, store: UsageStore, log: RateLimitedLogger) -> None:
        self.store = store
        self._log = log
        self.pending: deque[tuple[float, LLMCall | ChatTurn, str | None]] = deque()
        self._init_sync()

    def _init_sync(self) -> None:
        """(Re)create everything a forked child must not share with its parent."""
        self._merge_lock = threading.Lock()  # one merge at a time in this process
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._retry: list[UsageRecord] = []  # taken from pending, not merged yet
        # llm_calls since the key's last chat turn (only the merging thread touches it)
        self._calls_since_turn: OrderedDict[_Key, int] = OrderedDict()
        self.turns_covered = 0  # chat turns not counted: captured as llm_calls already
        self.merged = 0
        self.merges = 0
        self.errors = 0
        self.resets = 0
        self.dropped = 0

    # -- the emitting thread ------------------------------------------------------------

    def add(self, event: LLMCall | ChatTurn, session: str | None = None) -> None:
        """Hot path (from ``emit()``): remember the call; the thread merges it later.

        ``session`` is the event's session id (the chat-turn rule matches within one).
        """
        if type(event) is ChatTurn and not (event.provider and event.model):
            return  # not attributable to a provider:model: not counted
        self.pending.append((time.time(), event, session))
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            t = threading.Thread(target=self._run, name="telemetry-usage", daemon=True)
            self._thread = t
            t.start()

    # -- merging ------------------------------------------------------------------------

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(MERGE_INTERVAL_S):
            try:
                if self.pending or self._retry:
                    self.merge(LOCK_TIMEOUT_S)
            except Exception as exc:  # pragma: no cover - the loop must never die
                self._log.error("usage-loop", "telemetry usage stats: unexpected error: %r", exc)

    def merge(self, timeout: float) -> bool:
        """Merge everything pending now into the store; False if it failed (kept for a retry)."""
        if not self._merge_lock.acquire(timeout=max(0.0, timeout)):
            return False
        try:
            return self._merge_locked(timeout)
        finally:
            self._merge_lock.release()

    def _merge_locked(self, timeout: float) -> bool:
        # Records move from ``pending`` to ``_retry`` and leave it only once merged, so
        # ``usage_pending`` counts them all along and a flush() racing the thread's merge
        # waits for it (the merge lock) instead of returning early.
        records = self._retry
        pending = self.pending
        for _ in range(len(pending)):  # only we pop (left); emit() appends (right)
            ts, event, session = pending[0]
            record = UsageRecord.from_event(event, ts)
            if self._counts(record, session, turn=type(event) is ChatTurn):
                records.append(record)
            pending.popleft()
        if not records:
            return True
        try:
            result = self.store.merge(records, timeout=timeout)
        except Exception as exc:  # never into the caller: count, log once, retry later
            self.errors += 1
            if len(records) > MAX_RETAINED:
                self.dropped += len(records) - MAX_RETAINED
                del records[:-MAX_RETAINED]
            self._log.warning(
                "usage-store",
                "telemetry usage stats %s: cannot update (%s); will retry",
                self.store.path,
                getattr(exc, "strerror", None) or exc,
            )
            return False
        self._retry = []
        self.merges += 1
        self.merged += result.merged
        if result.reset is not None:
            self.resets += 1
            self._log.warning(
                "usage-reset",
                "telemetry usage stats %s were unreadable (%s); moved aside, started over",
                self.store.path,
                result.reset,
            )
        return True

    def _counts(self, record: UsageRecord, session: str | None, *, turn: bool) -> bool:
        """The chat-turn rule: False for a turn whose call was captured as an llm_call."""
        key = (session, record.provider.lower(), record.model.lower())
        seen = self._calls_since_turn
        if turn:
            if seen.pop(key, 0):
                self.turns_covered += 1
                return False
            return True
        seen[key] = seen.pop(key, 0) + 1  # (re)inserted last: the most recently used
        if len(seen) > MAX_TRACKED_KEYS:
            seen.popitem(last=False)
        return True

    def flush(self, timeout: float) -> bool:
        """Merge what is pending now (bounded by ``timeout``); False if something is left."""
        if not self.pending and not self._retry:
            return True
        return self.merge(timeout)

    def close(self, timeout: float) -> None:
        """Stop the thread and merge the rest; what still fails is dropped (counted)."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._start_lock:
            self._closed = True
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(max(0.0, deadline - time.monotonic()))
        self.flush(max(0.0, deadline - time.monotonic()))
        left = len(self.pending) + len(self._retry)
        if left:
            self.dropped += left
            self.pending.clear()
            self._retry = []

    # -- fork and introspection ---------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """The child starts fresh: the parent merges its own pending records."""
        self.pending = deque()
        self.store.forget_inherited_fd()
        self._init_sync()

    def describe(self) -> dict[str, Any]:
        """Counters for ``stats()`` (this process only)."""
        return {
            "usage_pending": len(self.pending) + len(self._retry),
            "usage_merged": self.merged,
            "usage_merges": self.merges,
            "usage_errors": self.errors,
            "usage_resets": self.resets,
            "usage_dropped": self.dropped,
            "usage_turns_covered": self.turns_covered,
        }
