"""Per-destination retry state: failures, backoff and pauses (docs/upload.md, "Lanes").

Each destination has its own lane, so a destination that is down, rate-limited or refusing
credentials waits alone while the others go on with newer batches (its backlog waits on
disk, under the same cap). A *soft* wait (backoff after a failure) ends early when nothing
else can be done (every lane waits softly: a flush woke the uploader); a *hard* one
(``Retry-After``, auth and endpoint pauses) never does.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Lane", "Lanes"]


@dataclass(slots=True)
class Lane:
    """One destination's state."""

    name: str
    failures: int = 0  # consecutive failed attempts (drives its backoff)
    until: float = 0.0  # wall-clock end of the current wait
    hard: bool = False  # the current wait may not be cut short
    reason: str = ""  # "backoff", "retry_after", "auth", "endpoint"
    detail: str = ""  # what a person must fix (auth, endpoint)

    def waiting(self, now: float) -> bool:
        return self.until > now

    def wait(
        self, now: float, seconds: float, *, hard: bool, reason: str, detail: str = ""
    ) -> None:
        self.until, self.hard, self.reason, self.detail = now + seconds, hard, reason, detail

    def succeeded(self) -> bool:
        """An answer that settled a batch; True if the lane was failing (replay follows)."""
        was_failing = self.failures > 0
        self.failures, self.until, self.hard, self.reason, self.detail = 0, 0.0, False, "", ""
        return was_failing


class Lanes:
    """The lanes of an uploader's destinations, by name."""

    def __init__(self, names: list[str]) -> None:
        self.by_name = {n: Lane(n) for n in names}

    def __getitem__(self, name: str) -> Lane:
        return self.by_name[name]

    def ready(self, now: float) -> frozenset[str]:
        """Destinations that may be sent to now; soft waits end when no lane is ready."""
        lanes = self.by_name.values()
        ready = frozenset(lane.name for lane in lanes if not lane.waiting(now))
        if ready:
            return ready
        return frozenset(lane.name for lane in lanes if not lane.hard)

    def next_ready_in(self, now: float) -> float:
        """Seconds until the first waiting lane may be sent to again (0: none waits)."""
        waits = [lane.until for lane in self.by_name.values() if lane.waiting(now)]
        return max(0.0, min(waits, default=now) - now)

    def blocked(self, now: float) -> Lane | None:
        """A lane paused until a person fixes a setting (auth, endpoint), if any."""
        for lane in self.by_name.values():
            if lane.waiting(now) and lane.reason in ("auth", "endpoint"):
                return lane
        return None
