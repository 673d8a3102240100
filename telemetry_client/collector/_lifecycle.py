"""What the collector does besides answering requests: the 0.1 import and retention.

Both run from the app's lifespan, their work on the "maintenance" worker lane (never on
the event loop, never in a request's slot):

- On startup, a data dir written by 0.1 (it holds ``journal.jsonl``) is imported into the
  store (``store/importer.py``: each 0.1 batch under its key, so a rerun or a crash
  halfway never stores a batch twice). A marker file then records which journal went
  into which database, so later starts skip the import; the import runs before the server
  accepts requests, so queries see the old events from the first request on.
- Retention (``retention_days`` > 0) runs at startup and then hourly in a background
  task: it deletes what is older than ``now - retention_days`` (``Store.retain``) and logs
  what it deleted. A failure is logged and retried at the next pass; it never stops the
  collector.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import anyio
import orjson

from telemetry_client._internal.fs import atomic_write
from telemetry_client.collector._config import scrub
from telemetry_client.collector._state import CollectorState
from telemetry_client.collector.store.base import RetentionResult, StorageError, Store
from telemetry_client.collector.store.importer import ImportResult, import_data_dir
from telemetry_client.collector.store.sql import redact_url

__all__ = [
    "IMPORT_MARKER",
    "RETENTION_INTERVAL_S",
    "import_legacy",
    "legacy_journal",
    "retention_loop",
    "run_retention",
]

_log = logging.getLogger("telemetry_client.collector")

RETENTION_INTERVAL_S = 3600.0
# Written in the data dir after an import: which journal (size, mtime) went into which
# database (redacted URL), so a restart does not re-read a big 0.1 journal for nothing.
IMPORT_MARKER = "imported-0.1.json"
_DAY_S = 86400


def legacy_journal(data_dir: Path) -> Path | None:
    """The 0.1 commit journal in ``data_dir``, if this is a 0.1 data dir."""
    journal = data_dir / "journal.jsonl"
    return journal if journal.is_file() else None


def _stamp(journal: Path, database: str) -> dict[str, Any]:
    info = journal.stat()
    return {"journal_size": info.st_size, "journal_mtime_ns": info.st_mtime_ns, "into": database}


def _import_now(data_dir: Path, store: Store, database: str) -> ImportResult | None:
    """Import unless the marker says this journal, as it is, went into this database."""
    journal = data_dir / "journal.jsonl"
    marker = data_dir / IMPORT_MARKER
    stamp = _stamp(journal, database)
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        if orjson.loads(marker.read_bytes()) == stamp:
            return None

    def progress(done: int, total: int) -> None:
        _log.info("importing the 0.1 data dir %s: %d of %d events", data_dir, done, total)

    _log.info("importing the 0.1 data dir %s into %s", data_dir, database)
    result = import_data_dir(data_dir, store, progress=progress)
    level = logging.WARNING if result.skipped else logging.INFO
    _log.log(level, "imported the 0.1 data dir %s: %s", data_dir, result)
    atomic_write(marker, orjson.dumps(stamp), fsync=True)
    return result


async def import_legacy(state: CollectorState) -> ImportResult | None:
    """Import the 0.1 files of ``config.data_dir`` into the store, once (see the module);
    None when there was nothing (new) to import."""
    config = state.config
    if legacy_journal(config.data_dir) is None:
        return None
    database = "sqlite" if config.database_url is None else redact_url(config.database_url)
    try:
        result: ImportResult | None = await state.run_sync(
            state.timed,
            "import",
            _import_now,
            config.data_dir,
            state.store,
            database,
            lane="maintenance",
        )
    except StorageError as exc:
        raise StorageError(f"importing the 0.1 data dir {config.data_dir}: {exc}") from exc
    return result


def _cutoff_us(state: CollectorState) -> int:
    return int((state.clock() - state.config.retention_days * _DAY_S) * 1_000_000)


async def run_retention(state: CollectorState) -> RetentionResult | None:
    """One retention pass; None when it failed (logged) or retention is off."""
    days = state.config.retention_days
    if days <= 0:
        return None
    cutoff = _cutoff_us(state)
    when = dt.datetime.fromtimestamp(cutoff / 1e6, dt.timezone.utc).isoformat(timespec="seconds")
    try:
        result: RetentionResult = await state.run_sync(
            state.timed, "retain", state.store.retain, cutoff, lane="maintenance"
        )
    except Exception as exc:  # the next pass retries; the collector keeps serving
        why = scrub(str(exc), state.config.database_url)
        _log.warning("retention (older than %s) failed: %s", when, why)
        return None
    metrics = state.metrics
    for kind in ("events", "sessions", "attachments", "batches"):
        metrics.inc("retention_deleted_total", kind, by=getattr(result, kind))
    state.last_retention = result
    state.retention_passes += 1
    _log.info(
        "retention (%d days, older than %s): deleted %d events, %d sessions,"
        " %d attachments, %d batch keys",
        days,
        when,
        result.events,
        result.sessions,
        result.attachments,
        result.batches,
    )
    return result


async def retention_loop(state: CollectorState, interval_s: float = RETENTION_INTERVAL_S) -> None:
    """Retention now, then every ``interval_s`` seconds, until cancelled."""
    while True:
        await run_retention(state)
        await anyio.sleep(interval_s)
