"""The panel's logic without HTTP: list the changes under a root, apply decisions.

Decisions (``docs/changes.md`` has the table): accept and reject only record; revert puts
the file back (:mod:`telemetry_client.changes.revert`). A decision is checked, applied and
recorded under the journal lock, so two processes deciding on one op at once are
serialised and the second sees the first. Repeating the op's current decision is a no-op
answered like a success (``changed: false``, no event, no file touched); after a revert,
accept and reject are refused (409): the change is gone. Every decision that changes
something emits one ``change_decision`` (op id, decision; the user and session come from
the request's context, as for any event).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from telemetry_client.agent.decisions import DECISIONS
from telemetry_client.changes.hook import journal_for
from telemetry_client.changes.journal import ChangeJournal, OpRecord
from telemetry_client.changes.revert import Refused, restore, within
from telemetry_client.context import user_id_var

if TYPE_CHECKING:
    from telemetry_client.client import TelemetryClient

__all__ = ["Change", "ChangesPanel", "Outcome", "Refused"]

#: Why an op cannot be reverted, as the panel says it.
UNREVERTABLE = {
    "evicted": "before-content dropped to stay within TELEMETRY_CHANGES_MAX_BYTES (oldest first)",
    "too_large": "before-content larger than TELEMETRY_CHANGES_MAX_BYTES, not kept",
    "unknown": "the file could not be read before the operation",
    "reverted": "already reverted",
}


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


@dataclass(frozen=True, slots=True)
class Change:
    """One listed op: the record, its path relative to the root, and what can be done."""

    rec: OpRecord
    rel: str
    unrevertable: str | None  # a key of UNREVERTABLE, None when a revert may be tried

    def as_json(self) -> dict[str, Any]:
        r = self.rec
        return {
            "op_id": r.op_id,
            "path": self.rel,
            "op": r.op,
            "loc_added": r.loc_added,
            "loc_removed": r.loc_removed,
            "ts": rfc3339(r.ts),
            "decision": r.decision,
            "decided_at": rfc3339(r.decided_ts),
            "binary": r.binary,
            "revertable": self.unrevertable is None,
            "revert_unavailable": UNREVERTABLE.get(self.unrevertable or ""),
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a decision did: ``changed`` False for a repeat (nothing done, no event)."""

    change: Change
    changed: bool

    def as_json(self) -> dict[str, Any]:
        return {**self.change.as_json(), "changed": self.changed}


class ChangesPanel:
    """The changes of one client's spool under ``root``."""

    def __init__(self, client: TelemetryClient, root: str | os.PathLike[str]) -> None:
        self.client = client
        self.root = os.path.realpath(os.fspath(root))
        self.journal: ChangeJournal | None = journal_for(client)

    def _change(self, rec: OpRecord) -> Change | None:
        if not within(rec.path, self.root) or rec.path == self.root:
            return None
        rel = os.path.relpath(rec.path, self.root)
        why: str | None = None
        if rec.decision == "revert":
            why = "reverted"
        elif rec.before_sha256 is not None:
            if rec.kept != "yes":
                why = rec.kept if rec.kept in UNREVERTABLE else "unknown"
            elif self.journal is None or not self.journal.has_content(rec.op_id, ".before"):
                why = "evicted"
        elif rec.kept == "unknown":
            why = "unknown"
        return Change(rec, rel, why)

    def recent(self, limit: int, before: str | None = None) -> tuple[list[Change], str | None]:
        """Up to ``limit`` changes newest first, older than op ``before``; and the next cursor."""
        if self.journal is None:
            return [], None
        ops = list(self.journal.load().values())
        ops.reverse()
        if before is not None:
            ids = [o.op_id for o in ops]
            ops = ops[ids.index(before) + 1 :] if before in ids else []
        out: list[Change] = []
        more = False
        for rec in ops:
            change = self._change(rec)
            if change is None:
                continue
            if len(out) == limit:
                more = True
                break
            out.append(change)
        return out, (out[-1].rec.op_id if more and out else None)

    def get(self, op_id: str) -> Change | None:
        if self.journal is None:
            return None
        rec = self.journal.load().get(op_id)
        return None if rec is None else self._change(rec)

    def diff(self, rec: OpRecord) -> str | None:
        """The op's diff (inline in its record or a kept file); None when no longer kept."""
        if rec.diff is not None or self.journal is None:
            return rec.diff
        data = self.journal.read_content(rec.op_id, ".diff")
        return None if data is None else data.decode("utf-8", "replace")

    def decide(self, op_id: str, decision: str) -> Outcome | None:
        """Apply ``decision`` to op ``op_id``; None for an unknown op (or outside root).

        Raises :class:`Refused` (nothing touched) and ``OSError``/``TimeoutError``.
        """
        if decision not in DECISIONS:
            raise ValueError(decision)
        journal = self.journal
        if journal is None:
            return None
        with journal.locked():
            rec = journal.load().get(op_id)
            change = None if rec is None else self._change(rec)
            if rec is None or change is None:
                return None
            if rec.decision == decision:
                return Outcome(change, changed=False)
            if rec.decision == "revert":
                raise Refused(409, "reverted", "this change was reverted; it cannot be decided")
            if decision == "revert":
                if change.unrevertable is not None:
                    raise Refused(410, change.unrevertable, UNREVERTABLE[change.unrevertable])
                before = None
                if rec.before_sha256 is not None:
                    before = journal.read_content(op_id, ".before")
                    if before is None:
                        raise Refused(410, "evicted", UNREVERTABLE["evicted"])
                restore(
                    rec.path,
                    self.root,
                    after_sha256=rec.after_sha256,
                    before=before,
                    existed=rec.before_sha256 is not None,
                )
            user = user_id_var.get() or self.client.settings.user_id
            rec.decided_ts = journal.append_decision(op_id, decision, user)
            rec.decision, rec.decided_by = decision, user
        self.client.change_decision(op_id, decision, via="changes_panel", path=change.rel)
        return Outcome(self._change(rec) or change, changed=True)
