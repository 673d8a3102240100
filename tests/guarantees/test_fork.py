"""Fork safety: a client used across ``os.fork()`` loses, duplicates and wedges nothing.

Every scenario runs in its own process (``tests/_procs/fork_driver.py``) so pytest's
process never forks. The parent's events, written by the parent only (the child drops
the parent's in-memory events), and each child's events, written by its own lazily
restarted writer thread, must all be in the spool exactly once; the spool stays healthy
(``check() == []``: the child never wrote through the parent's in-flight tmp file).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from conftest import child_env

from telemetry_client import Spool

DRIVER = Path(__file__).parent.parent / "_procs" / "fork_driver.py"
MAX_BYTES = 256 * 1024 * 1024
WRITER_THREAD = "telemetry-spool-writer"


def _run_driver(
    tmp_path: Path, *args: object, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    env = child_env(
        tmp_path / "spool",
        TELEMETRY_SPOOL_MAX_BYTES=str(MAX_BYTES),
        TELEMETRY_LINGER_MS="20",
        TELEMETRY_USER_ID="fork-test",
        **(extra_env or {}),
    )
    proc = subprocess.run(
        [sys.executable, str(DRIVER), *(str(a) for a in args)],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=90,
        check=False,
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"driver exited {proc.returncode}: {stderr[-3000:]}"
    return orjson.loads(proc.stdout.decode().splitlines()[-1])  # type: ignore[no-any-return]


def _child_report(tmp_path: Path, who: str) -> dict[str, Any]:
    report: dict[str, Any] = orjson.loads((tmp_path / f"{who}.json").read_bytes())
    assert "error" not in report, report.get("error")
    return report


def _spooled_events(tmp_path: Path) -> list[dict[str, Any]]:
    """Every event in the spool (``data`` plus ``seq``), after checking the spool is healthy."""
    spool = Spool(tmp_path / "spool", max_bytes=MAX_BYTES)
    assert spool.check() == []
    assert spool.quarantined() == []
    assert os.listdir(tmp_path / "spool" / "tmp") == []
    assert spool.dropped().events == 0
    events = []
    for _, raw in spool.iter_batches_newest_first():
        for line in raw.splitlines():
            ev = orjson.loads(line)
            events.append({**ev["data"], "seq": ev["seq"], "id": ev["id"]})
    # iter_batches_newest_first() skips unreadable batches: none may have been skipped.
    assert len(events) == spool.pending().events
    assert len({e["id"] for e in events}) == len(events), "two events share an id across the fork"
    return events


def _assert_exactly_once(events: list[dict[str, Any]], who: str, n: int, pid: int) -> None:
    mine = [e for e in events if e["who"] == who]
    counts = Counter(e["i"] for e in mine)
    duplicated = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(set(range(n)) - set(counts))
    assert duplicated == [], f"{who}: {len(duplicated)} events twice, e.g. {duplicated[:5]}"
    assert missing == [], f"{who}: {len(missing)} events missing, e.g. {missing[:5]}"
    assert len(mine) == n
    assert {e["pid"] for e in mine} == {pid}, f"{who}: events from another process"


def _check_forks_run(tmp_path: Path, report: dict[str, Any], child_n: int) -> None:
    assert report["closed"], report
    assert set(report["exit_codes"].values()) == {0}, report["exit_codes"]
    events = _spooled_events(tmp_path)
    parent_pid = report["pid"]
    _assert_exactly_once(events, "parent", report["parent_events"], parent_pid)
    assert report["stats"]["emitted"] == report["parent_events"]
    assert report["stats"]["spooled"] == report["parent_events"]
    assert report["stats"]["dropped"] == 0
    for who, pid in report["children"].items():
        child = _child_report(tmp_path, who)
        assert child["pid"] == pid != parent_pid
        _assert_exactly_once(events, who, 2 * child_n, pid)
        # The child's counters and seq are its own, not a copy of the parent's.
        assert child["stats"]["emitted"] == 2 * child_n, child["stats"]
        assert child["stats"]["spooled"] == 2 * child_n, child["stats"]
        assert sorted(e["seq"] for e in events if e["who"] == who) == list(
            range(1, 2 * child_n + 1)
        )
        # The writer thread did not survive the fork; it restarted on the child's first emit.
        assert WRITER_THREAD not in child["threads_at_start"]
        assert child["writer_alive_after_emit"]
        assert child["flushed"]
        assert child["visible_after_flush"] == child_n
        assert child["closed"]


def test_parent_and_child_events_are_each_spooled_once(tmp_path: Path) -> None:
    """Fork with unflushed parent events: the parent writes them, the child only its own."""
    report = _run_driver(tmp_path, "forks", tmp_path, 500, 200, 500, 1, 0)
    _check_forks_run(tmp_path, report, child_n=200)
    assert report["parent_events"] == 1000


def test_client_started_before_fork_keeps_working_in_child(tmp_path: Path) -> None:
    """Repeated forks while the parent's writer is busy with big batches (in-flight writes).

    Each child's writer restarts lazily: ``flush_sync()`` in the child succeeds, its events
    are on disk before it closes, and the parent's batches are never torn by a child.
    """
    report = _run_driver(
        tmp_path,
        "forks",
        tmp_path,
        2000,  # events emitted (not flushed) before each fork
        300,
        1000,
        5,  # forks
        2000,  # pad: ~2 KB per event, so the writer is mid-batch at the forks
        extra_env={"TELEMETRY_BATCH_MAX_EVENTS": "400"},
    )
    _check_forks_run(tmp_path, report, child_n=300)
    assert report["parent_events"] == 5 * 2000 + 1000
    inherited = {who: _child_report(tmp_path, who)["inherited_fds"] for who in report["children"]}
    print(f"tmp files at the forks: {report['tmp_files_at_forks']}; spool fds a child")
    print(f"still had after the fork hook: {inherited}")


def test_fork_while_writer_waits_for_the_global_lock(tmp_path: Path) -> None:
    """A child forked while the parent's writer waits for ``.lock`` must not keep it locked.

    Regression: the lock fd, not yet recorded for closing in the child, stayed open there;
    closing it in the parent did not release the lock, so every process on the spool
    (and the child itself) blocked until the child exited.
    """
    report = _run_driver(tmp_path, "lock-held", tmp_path)
    assert report["parent_flush_while_child_alive"], report
    assert report["closed"]
    assert report["exit_codes"] == {"child0": 0}
    child = _child_report(tmp_path, "child0")
    assert child["closed"], child
    events = _spooled_events(tmp_path)
    _assert_exactly_once(events, "parent", 3, report["pid"])
    _assert_exactly_once(events, "child0", 5, report["children"]["child0"])


def test_fork_during_recovery_keeps_recovered_batch_claimable(tmp_path: Path) -> None:
    """A child forked while the writer recovers a dead writer's tmp file must not pin it.

    Regression: the child kept a copy of the recovery fd (with its flock), so the
    recovered batch could not be claimed (uploaded) nor evicted while the child lived.
    """
    report = _run_driver(tmp_path, "recover-held", tmp_path)
    assert report["claimed_while_child_alive"] == ["dead", "parent"], report
    assert report["exit_codes"] == {"child": 0}
    assert report["closed"]
    assert report["pending_after"] == 0
    assert Spool(tmp_path / "spool", max_bytes=MAX_BYTES).check() == []
