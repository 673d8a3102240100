"""``telemetry-collector import DIR [--database-url URL] [--data-dir DIR]``: 0.1 → database.

Copies the events (each journal record as one batch under its original
``Idempotency-Key``) and attachments of a 0.1 data dir into the database the collector
would use with the same flags: ``--database-url`` (or its variable), else SQLite in
``--data-dir`` (default: ``DIR`` itself, an in-place upgrade). Idempotent: a second run,
or a run after a crash halfway, stores nothing twice. Progress goes to stderr, one
summary line to stdout; exit 0 done, 1 the import failed, 2 a configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from telemetry_client.collector._cli import DATABASE_URL_ENV, ScrubbingParser, database_url_of
from telemetry_client.collector._config import scrub
from telemetry_client.collector.store.base import StorageError, StoreUnavailable

__all__ = ["run_import"]

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = ScrubbingParser(
        prog="telemetry-collector import",
        description="Import a 0.1 collector data dir (journal.jsonl, events/, attachments/)"
        " into the collector's database; safe to run again.",
    )
    p.add_argument("source", type=Path, metavar="DIR", help="the 0.1 data dir to import")
    p.add_argument(
        "--database-url",
        metavar="URL",
        help=f"the database to import into (also {DATABASE_URL_ENV}; default: SQLite in"
        " --data-dir)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="data dir of the default SQLite database (default: the imported DIR)",
    )
    return p


def _say(message: str) -> None:
    print(f"telemetry-collector import: {message}", file=sys.stderr, flush=True)


def run_import(argv: Sequence[str], environ: dict[str, str]) -> int:
    """The ``import`` subcommand; returns the exit status."""
    args = _parser().parse_args(list(argv))
    url = args.database_url or environ.get(DATABASE_URL_ENV)
    try:
        database_url = database_url_of(args, environ)
    except ValueError as exc:
        print(scrub(f"telemetry-collector import: {exc}", url), file=sys.stderr)
        return EXIT_CONFIG
    source: Path = args.source
    if not (source / "journal.jsonl").is_file():
        _say(f"{source} is not a 0.1 collector data dir (it has no journal.jsonl)")
        return EXIT_CONFIG
    # Imported here: serving never needs them, and the importer loads the 0.1 file store.
    from telemetry_client.collector.store.importer import import_data_dir
    from telemetry_client.collector.store.open import open_store

    def progress(done: int, total: int) -> None:
        _say(f"{done} of {total} events")

    try:
        store = open_store(database_url, args.data_dir or source)
        try:
            result = import_data_dir(source, store, progress=progress)
        finally:
            store.close()
    except (OSError, StorageError, StoreUnavailable) as exc:
        print(scrub(f"telemetry-collector import: {exc}", url), file=sys.stderr)
        return EXIT_FAILURE
    print(scrub(f"telemetry-collector import: {source}: {result}", url), flush=True)
    return EXIT_OK
