"""The uploader (``upload/uploader.py``): the retry matrix, pauses, replay, loss reports, and
acknowledgement per destination.

Tests drive ``Uploader.step()`` directly with a fake clock and injected jitter, so minutes of
backoff take no time and nothing sleeps. The destinations are the recording ones of
``telemetry_client.testing``, told what to answer; the native collector's wire behaviour is
in ``test_native_collector.py``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import time
from collections.abc import Callable
from email.utils import format_datetime
from pathlib import Path

import orjson
import pytest
import upload_kit
from upload_kit import (
    SettingsFactory,
    assert_released,
    envelope,
    pending_names,
    seal,
    seal_n,
)

from telemetry_client.encode.encoder import format_ts
from telemetry_client.spool import Spool
from telemetry_client.testing import FakeClock, FixedJitter, InMemoryCollector, RecordingDestination
from telemetry_client.upload import Control, Outcome, SendResult, Uploader
from telemetry_client.upload.destination import Acks
from telemetry_client.upload.uploader import IDLE_POLL_S, REPORT_EVERY_S

FIRST_BACKOFF_S = 0.5  # upload_backoff_initial, FixedJitter(1.0): the first failure's wait

# The shared fixtures (upload_kit).
clock = upload_kit.clock
make_settings = upload_kit.make_settings
make_uploader = upload_kit.make_uploader
spool = upload_kit.spool


@pytest.fixture
def dest() -> RecordingDestination:
    return RecordingDestination("dest")


@pytest.fixture
def up(make_uploader: Callable[..., Uploader], dest: RecordingDestination) -> Uploader:
    """An uploader with one recording destination (200 unless told otherwise)."""
    return make_uploader(destinations=[dest])


# --- 2xx ----------------------------------------------------------------------------------------


def test_2xx_acks_the_batch_and_counts_it(
    spool: Spool, make_uploader: Callable[..., Uploader]
) -> None:
    """A 2xx answer removes the batch from the spool and counts its events, batches and bytes."""
    collector = InMemoryCollector()
    name = seal_n(spool, 3)
    up = make_uploader(destinations=[collector])

    step = up.step()

    assert step.outcome is Outcome.SENT
    assert (step.events, step.bytes, step.wait_s) == (3, name.n_bytes, 0.0)
    assert step.result is not None
    assert step.result.status == 200
    assert spool.pending().batches == 0
    assert spool.dead_letters() == []
    assert [e["id"] for e in collector.events] == ["e-0000", "e-0001", "e-0002"]
    c = up.counters
    assert (c.uploaded, c.uploaded_batches, c.uploaded_bytes, c.retries) == (3, 1, name.n_bytes, 0)
    assert up.step().outcome is Outcome.IDLE
    assert collector.batch_ids == [name.batch_id]
    assert spool.check() == []


def test_step_outcomes_compare_equal_to_their_names() -> None:
    """``Outcome`` is a str enum: code that compares outcomes with strings keeps working."""
    assert Outcome.SENT == "sent"
    assert {o.value for o in Outcome} >= {"sent", "idle", "retry", "dead_letter", "paused"}


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [SendResult(None, "ConnectError")]
    + [SendResult(s) for s in (408, 425, 429, 500, 502, 503, 504)],
    ids=lambda r: str(r.status or r.error),
)
def test_retryable_answers_release_and_back_off(
    spool: Spool, up: Uploader, dest: RecordingDestination, answer: SendResult
) -> None:
    """No answer, 408/425/429/5xx without Retry-After: batch released (not acked), soft backoff."""
    dest.answer(answer)
    name = seal_n(spool, 2)

    step = up.step()

    assert step.outcome is Outcome.RETRY
    assert step.result == answer
    assert not step.hard
    assert step.wait_s == 0.5  # first failure: the top of uniform(0, initial)
    assert (up.counters.retries, up.counters.uploaded) == (1, 0)
    assert_released(spool, name)


def test_backoff_grows_with_consecutive_failures_up_to_the_cap(
    spool: Spool,
    clock: FakeClock,
    dest: RecordingDestination,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """Consecutive failures double the top of the jitter range until the cap; success resets."""
    dest.answer(*([503] * 7), 200, 503)
    seal_n(spool, 1, "a")
    seal_n(spool, 1, "b")
    settings = make_settings(upload_backoff_initial=0.5, upload_backoff_max=4.0, replay_rate=0)
    up = make_uploader(settings, destinations=[dest], rng=FixedJitter(1.0))

    waits = []
    for _ in range(7):
        step = up.step()
        assert (step.outcome, step.hard) == (Outcome.RETRY, False)
        waits.append(step.wait_s)
        clock.advance(step.wait_s)
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]

    assert up.step().outcome is Outcome.SENT
    assert up.step().wait_s == 0.5  # the streak starts over after a success


def test_backoff_waits_stay_within_full_jitter_bounds(
    spool: Spool,
    clock: FakeClock,
    dest: RecordingDestination,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """With real jitter, the n-th wait lies in [0, min(max, initial * 2**(n-1))] and varies."""
    dest.answer(500)
    seal_n(spool, 1)
    up = make_uploader(
        make_settings(upload_backoff_max=8.0), destinations=[dest], rng=random.Random(42)
    )

    waits = []
    for n in range(1, 13):
        step = up.step()
        assert 0.0 <= step.wait_s <= min(8.0, 0.5 * 2 ** (n - 1))
        waits.append(step.wait_s)
        clock.advance(step.wait_s)
    assert len(set(waits)) == len(waits)  # jittered, not a fixed schedule


def test_every_attempt_hands_the_same_batch_id_in_every_process(
    spool: Spool, clock: FakeClock, make_uploader: Callable[..., Uploader]
) -> None:
    """Every attempt at a batch, by this uploader or another one on the spool, carries its id
    (the native collector sends it as ``Idempotency-Key``)."""
    dest = RecordingDestination()
    dest.answer(503, 503, 503, 200)
    name = seal_n(spool, 2)
    first, second = make_uploader(destinations=[dest]), make_uploader(destinations=[dest])

    for _ in range(2):
        clock.advance(first.step().wait_s)
    clock.advance(second.step().wait_s)  # another process picks the batch up
    assert second.step().outcome is Outcome.SENT

    assert dest.batch_ids == [name.batch_id] * 4
    assert spool.pending().batches == 0


# --- Retry-After --------------------------------------------------------------------------------


def http_date(unix_s: float) -> str:
    return format_datetime(dt.datetime.fromtimestamp(unix_s, dt.timezone.utc), usegmt=True)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_pauses_every_batch(
    spool: Spool,
    clock: FakeClock,
    up: Uploader,
    dest: RecordingDestination,
    status: int,
    form: str,
) -> None:
    """Retry-After (seconds or HTTP-date): a hard wait that long; nothing sent until it passes."""
    value = "120" if form == "seconds" else http_date(clock.time() + 120)
    dest.answer(SendResult(status, retry_after=value), 200)
    name = seal_n(spool, 1, "a")
    seal_n(spool, 1, "b")

    step = up.step()
    assert (step.outcome, step.wait_s, step.hard) == (Outcome.RETRY, 120.0, True)
    assert_released(spool, name, pending=2)

    # The pause is for the endpoint, not the batch: the other batch is not tried either.
    for advance in (0.0, 60.0, 59.0):
        clock.advance(advance)
        paused = up.step()
        assert paused.outcome is Outcome.PAUSED
        assert paused.hard
        assert paused.wait_s == pytest.approx(120.0 - clock.monotonic() + 1000.0)
    assert len(dest.sent) == 1

    clock.advance(1.0)
    assert up.step().outcome is Outcome.SENT
    assert dest.batch_ids == [name.batch_id, name.batch_id]


def test_retry_after_is_capped_by_retry_after_max(
    spool: Spool,
    dest: RecordingDestination,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """A Retry-After beyond ``retry_after_max`` waits ``retry_after_max``."""
    dest.answer(SendResult(429, retry_after="86400"))
    seal_n(spool, 1)

    step = make_uploader(make_settings(retry_after_max=30), destinations=[dest]).step()

    assert (step.outcome, step.wait_s, step.hard) == (Outcome.RETRY, 30.0, True)


def test_garbage_retry_after_falls_back_to_backoff(
    spool: Spool, up: Uploader, dest: RecordingDestination
) -> None:
    """An unparseable Retry-After is ignored: the normal (soft) backoff applies."""
    dest.answer(SendResult(503, retry_after="later, maybe"))
    seal_n(spool, 1)

    step = up.step()

    assert (step.outcome, step.wait_s, step.hard) == (Outcome.RETRY, 0.5, False)


@pytest.mark.parametrize("value", ["0", "past-date"])
def test_zero_retry_after_does_not_retry_back_to_back(
    spool: Spool, clock: FakeClock, up: Uploader, dest: RecordingDestination, value: str
) -> None:
    """Retry-After 0 or a date already past (clock skew) must not cancel the backoff.

    Otherwise an overloaded collector answering 503 is hammered with back-to-back retries.
    """
    header = "0" if value == "0" else http_date(clock.time() - 3600)
    dest.answer(SendResult(503, retry_after=header))
    seal_n(spool, 1)

    waits = []
    for _ in range(3):
        step = up.step()
        assert step.outcome is Outcome.RETRY
        waits.append(step.wait_s)
        clock.advance(step.wait_s)
    assert waits == [0.5, 1.0, 2.0]


# --- refused for good: dead letter ------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 409, 410, 413, 415, 422])
def test_refusal_for_good_dead_letters_the_batch(
    spool: Spool,
    clock: FakeClock,
    up: Uploader,
    dest: RecordingDestination,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Other 4xx, and a final 413 (the destination split what it could): the batch moves to
    ``dead/`` (listed, kept), counted rejected, never retried."""
    caplog.set_level(logging.WARNING, logger="telemetry_client")
    dest.answer(status)
    name = seal_n(spool, 3)

    step = up.step()

    assert step.outcome is Outcome.DEAD_LETTER
    assert step.events == 3
    assert [n.batch_id for n in spool.dead_letters()] == [name.batch_id]
    assert (spool.root / "dead" / name.filename).is_file()
    assert spool.pending().batches == 0
    assert (up.counters.rejected, up.counters.uploaded, up.counters.retries) == (3, 0, 0)
    clock.advance(3600)
    assert up.step().outcome is Outcome.IDLE
    assert len(dest.sent) == 1
    assert f"HTTP {status}" in caplog.text
    assert spool.check() == []


# --- 401/403/404/405: pauses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (401, Outcome.AUTH_PAUSE),
        (403, Outcome.AUTH_PAUSE),
        (404, Outcome.ENDPOINT_PAUSE),
        (405, Outcome.ENDPOINT_PAUSE),
    ],
)
def test_refusals_a_person_must_fix_pause_keep_everything_and_warn_once(
    spool: Spool,
    clock: FakeClock,
    dest: RecordingDestination,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    status: int,
    outcome: Outcome,
) -> None:
    """401/403/404/405: nothing dropped, a hard pause of ``auth_pause`` during which nothing is
    sent, one warning per cooldown carrying the destination's explanation."""
    caplog.set_level(logging.DEBUG, logger="telemetry_client")
    dest.answer(status)
    name = seal_n(spool, 2)
    up = make_uploader(make_settings(auth_pause=120), destinations=[dest])

    for _ in range(3):  # three pauses, all within one log cooldown
        step = up.step()
        assert (step.outcome, step.wait_s, step.hard) == (outcome, 120.0, True)
        assert_released(spool, name)
        paused = up.step()
        assert (paused.outcome, paused.hard) == (Outcome.PAUSED, True)
        assert up.blocked_reason() is not None
        clock.advance(120)
    assert len(dest.sent) == 3
    assert spool.dead_letters() == []
    assert up.counters.rejected == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert f"HTTP {status} from dest" in warnings[0]


# --- kill switch ----------------------------------------------------------------------------------


def test_kill_switch_on_the_spool_stops_every_send_until_it_ends(
    spool: Spool, clock: FakeClock, up: Uploader, dest: RecordingDestination
) -> None:
    """The switch in ``state/control.json`` (set by any process): nothing is claimed or sent,
    hard waits of at most the poll interval, until the clock passes its end."""
    name = seal_n(spool, 1)
    Control(spool.root, fsync=False).disable(60, now=clock.time())

    step = up.step()
    assert (step.outcome, step.hard) == (Outcome.KILL_SWITCH, True)
    assert up.kill_switch.until == clock.time() + 60
    assert up.blocked_reason() is not None
    clock.advance(59)
    assert up.step().outcome is Outcome.KILL_SWITCH
    assert dest.sent == []
    assert spool.pending().batches == 1  # spooled data is kept

    clock.advance(1.5)
    assert up.step().outcome is Outcome.SENT
    assert up.kill_switch.until == 0.0
    assert dest.batch_ids == [name.batch_id]


def test_control_sees_a_rewrite_of_the_same_size_within_one_mtime_tick(tmp_path: Path) -> None:
    """Two kill-switch writes of equal size and mtime are still told apart by readers."""
    writer, reader = Control(tmp_path, fsync=False), Control(tmp_path, fsync=False)
    writer.disable(60, now=1_700_000_000.0)
    st = os.stat(writer.path)
    assert reader.disabled_until() == 1_700_000_060.0

    writer.disable(70, now=1_700_000_000.0)  # same JSON length
    os.utime(writer.path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same tick
    assert os.stat(writer.path).st_size == st.st_size

    assert reader.disabled_until() == 1_700_000_070.0


# --- bounded replay -----------------------------------------------------------------------------


def test_replay_after_a_failure_streak_is_paced_until_drained(
    spool: Spool,
    clock: FakeClock,
    dest: RecordingDestination,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """After failures, sends are paced at ~1/replay_rate (jittered, hard) until drained."""
    dest.answer(503, 503, 200)
    for tag in "abcd":
        seal_n(spool, 1, tag)
    up = make_uploader(make_settings(replay_rate=10), destinations=[dest], rng=random.Random(3))

    for _ in range(2):
        step = up.step()
        assert step.outcome is Outcome.RETRY
        clock.advance(step.wait_s)
    paced = []
    for _ in range(4):
        step = up.step()
        assert step.outcome is Outcome.SENT
        assert step.hard
        paced.append(step.wait_s)
        clock.advance(step.wait_s)
    assert all(0.05 <= w <= 0.15 for w in paced)  # 1/rate, jittered by up to half each way
    assert len(set(paced)) > 1

    idle = up.step()
    assert (idle.outcome, idle.wait_s, idle.hard) == (Outcome.IDLE, IDLE_POLL_S, False)
    seal_n(spool, 1, "e")
    assert up.step().wait_s == 0.0  # drained: the replay window is over


def test_replay_is_paced_after_a_kill_switch_ends(
    spool: Spool,
    clock: FakeClock,
    dest: RecordingDestination,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """A fleet-wide kill switch ends at the same moment everywhere: the backlog that waited
    behind it drains paced (hard waits of ~1/replay_rate), not back to back."""
    for tag in "abc":
        seal_n(spool, 1, tag)
    up = make_uploader(make_settings(replay_rate=10), destinations=[dest])
    up.kill_switch.control.disable(30, now=clock.time())

    assert up.step().outcome is Outcome.KILL_SWITCH
    clock.advance(31)
    steps = [up.step() for _ in range(3)]

    assert [s.outcome for s in steps] == [Outcome.SENT] * 3
    assert all(s.hard and 0.05 <= s.wait_s <= 0.15 + 1e-9 for s in steps)


def test_no_pacing_without_a_failure(
    spool: Spool,
    dest: RecordingDestination,
    make_uploader: Callable[..., Uploader],
    make_settings: SettingsFactory,
) -> None:
    """Outside a replay window (no failure yet) batches go back to back."""
    for tag in "abcd":
        seal_n(spool, 1, tag)
    up = make_uploader(make_settings(replay_rate=10), destinations=[dest])

    steps = [up.step() for _ in range(4)]

    assert [(s.outcome, s.wait_s) for s in steps] == [(Outcome.SENT, 0.0)] * 4


# --- loss reports -----------------------------------------------------------------------------


def test_losses_are_reported_as_a_telemetry_dropped_event(
    spool: Spool, make_uploader: Callable[..., Uploader]
) -> None:
    """Unreported losses become one ``telemetry_dropped`` event, sent; the counters clear."""
    collector = InMemoryCollector()
    now_ns = time.time_ns()
    first_ns, last_ns = now_ns - 90 * 10**9, now_ns - 30 * 10**9
    spool.record_loss("cap", 7, 7000, first_ns, last_ns)
    up = make_uploader(destinations=[collector])

    step = up.step()

    assert step.outcome is Outcome.SENT
    (event,) = collector.events
    assert event["type"] == "telemetry_dropped"
    assert event["data"] == {
        "events": 7,
        "bytes": 7000,
        "reason": "cap",
        "first_ts": format_ts(first_ns),
        "last_ts": format_ts(last_ns),
    }
    assert spool.peek_unreported() == {}
    assert spool.dropped().events == 7  # the history stays for status
    assert up.counters.drop_reports == 1
    assert spool.pending().batches == 0
    assert up.step().outcome is Outcome.IDLE
    assert len(collector.sent) == 1


def test_losses_are_looked_for_at_most_every_report_interval(
    spool: Spool, clock: FakeClock, make_uploader: Callable[..., Uploader]
) -> None:
    """A step reports losses at most every ``REPORT_EVERY_S`` (fake clock): a loss recorded
    right after a report waits for the interval, then goes out with the next step."""
    collector = InMemoryCollector()
    up = make_uploader(destinations=[collector])
    spool.record_loss("cap", 1, 100, 1, 2)
    assert up.step().outcome is Outcome.SENT  # the first step looks at once

    spool.record_loss("disk_error", 2, 200, 3, 4)
    clock.advance(REPORT_EVERY_S - 0.5)
    assert up.step().outcome is Outcome.IDLE
    assert "disk_error" in spool.peek_unreported()

    clock.advance(0.5)
    assert up.step().outcome is Outcome.SENT
    assert [e["data"]["reason"] for e in collector.events] == ["cap", "disk_error"]
    assert up.counters.drop_reports == 2


def test_loss_report_is_the_newest_batch_and_repeats_after_a_crash(
    spool: Spool, make_uploader: Callable[..., Uploader], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is stamped now (newer than the lost data, so the cap evicts it last), and
    sealing it without clearing the counters (a crash) reports the loss again: at least once."""
    seal_n(spool, 2)
    spool.record_loss("cap", 3, 300, 1_700_000_000 * 10**9, 1_700_000_050 * 10**9)
    monkeypatch.setattr(Spool, "forget_reported", lambda self, reported: None)
    before_ns = time.time_ns()

    assert make_uploader().report_drops() == 1
    assert make_uploader().report_drops() == 1  # the next process: reported again

    names = pending_names(spool)
    reports = [n for n in names if n.n_events == 1 and n.created_ns >= before_ns - 10**6]
    assert len(reports) == 2
    assert max(n.batch_id for n in names) in {n.batch_id for n in reports}


def test_uploader_without_loss_reports_still_uploads_when_losses_are_pending(
    spool: Spool, make_uploader: Callable[..., Uploader]
) -> None:
    """An uploader that cannot build events leaves losses counted and goes on uploading."""
    collector = InMemoryCollector()
    spool.record_loss("cap", 1, 100, 1, 2)
    seal_n(spool, 2)
    up = make_uploader(destinations=[collector], losses=False)

    assert up.step().outcome is Outcome.SENT
    assert len(collector.events) == 2
    assert "cap" in spool.peek_unreported()


# --- acknowledgement per destination ------------------------------------------------------------


def test_batch_leaves_the_spool_only_when_every_destination_acknowledged_it(
    spool: Spool, clock: FakeClock, make_uploader: Callable[..., Uploader]
) -> None:
    """One destination acks, another fails: the batch stays; its retry goes to the failing
    one only (once its own backoff ended); it is acked in the spool when the last one
    acknowledges."""
    a, b = InMemoryCollector("a"), InMemoryCollector("b")
    b.answer(503, 200)
    name = seal_n(spool, 2)
    up = make_uploader(destinations=[a, b])

    step = up.step()
    assert step.outcome is Outcome.RETRY
    assert step.wait_s == 0  # "a" is healthy: it goes on at once
    assert_released(spool, name)
    assert up.counters.uploaded == 0
    step = up.step()
    assert step.outcome is Outcome.IDLE  # only "b" needs the batch, and "b" backs off
    assert 0 < step.wait_s <= IDLE_POLL_S
    clock.advance(FIRST_BACKOFF_S)

    step = up.step()
    assert step.outcome is Outcome.SENT
    assert step.events == 2
    assert a.batch_ids == [name.batch_id]  # not sent again after the retry
    assert b.batch_ids == [name.batch_id, name.batch_id]
    assert len(a.events) == len(b.events) == 2
    assert spool.pending().batches == 0
    assert up.counters.uploaded == 2


def test_a_failing_destination_does_not_hold_back_the_others(
    spool: Spool, make_uploader: Callable[..., Uploader]
) -> None:
    """The first destination fails: the ones after it still get the batch in the same step."""
    down, up_ = RecordingDestination("down"), InMemoryCollector("up")
    down.answer(SendResult(None, "ConnectError"))
    seal_n(spool, 3)
    up = make_uploader(destinations=[down, up_])

    step = up.step()

    assert step.outcome is Outcome.RETRY
    assert step.result == SendResult(None, "ConnectError")  # the failure decides the step
    assert len(up_.events) == 3
    assert spool.pending().batches == 1


def test_a_refusal_for_good_by_one_destination_dead_letters_once_the_others_settled(
    spool: Spool, clock: FakeClock, make_uploader: Callable[..., Uploader]
) -> None:
    """A destination that refuses a batch for good is not sent it again; the batch moves to
    ``dead/`` once every other destination settled it too (here after a retry)."""
    refusing, slow = RecordingDestination("refusing"), InMemoryCollector("slow")
    refusing.answer(400)
    slow.answer(503, 200)
    name = seal_n(spool, 1)
    up = make_uploader(destinations=[refusing, slow])

    up.step()
    clock.advance(FIRST_BACKOFF_S)
    assert spool.dead_letters() == []
    assert spool.pending().batches == 1

    step = up.step()
    assert step.outcome is Outcome.DEAD_LETTER
    assert refusing.batch_ids == [name.batch_id]
    assert len(slow.events) == 1
    assert [n.batch_id for n in spool.dead_letters()] == [name.batch_id]
    assert up.counters.rejected == 1


def test_another_process_does_not_resend_to_a_destination_that_acked(
    spool: Spool, make_uploader: Callable[..., Uploader]
) -> None:
    """Acknowledgements are kept on disk while a batch waits for another destination: the
    batch retried by another process (a restart, ``flush``) goes to the missing one only."""
    a, b = InMemoryCollector("a"), InMemoryCollector("b")
    b.answer(503, 200)
    seal_n(spool, 2)

    make_uploader(destinations=[a, b]).step()
    assert make_uploader(destinations=[a, b]).step().outcome is Outcome.SENT

    assert (len(a.sent), a.duplicates, len(a.events)) == (1, 0, 2)
    assert len(b.events) == 2
    assert not list((spool.root / "state" / "settled").iterdir())  # gone with the batch


def test_destinations_need_distinct_names(make_uploader: Callable[..., Uploader]) -> None:
    """Acknowledgements are kept by destination name: two with one name are refused."""
    with pytest.raises(ValueError, match="distinct names"):
        make_uploader(destinations=[RecordingDestination("x"), RecordingDestination("x")])
    with pytest.raises(ValueError, match="distinct names"):
        make_uploader(destinations=[])


def test_acks_are_bounded_and_forget_the_oldest_batch() -> None:
    """The per-batch state is small: past its limit the oldest batch's entry goes (a resend)."""
    acks = Acks(limit=2)
    for batch in ("b1", "b2", "b3"):
        acks.record(batch, "a", SendResult(200))
    assert acks.settled("b1") == {}
    assert acks.settled("b3") == {"a": SendResult(200)}
    assert len(acks) == 2
    acks.forget("b3")
    assert len(acks) == 1


def test_attachment_references_go_only_to_destinations_that_upload_them(
    spool: Spool, make_uploader: Callable[..., Uploader]
) -> None:
    """The batch's attachment references are found once and handed to the destinations that
    upload attachments; the others get none."""
    ref = spool.put_blob(b"attachment body " * 100, "text/plain; charset=utf-8")
    event = envelope(0)
    attachment = {"sha256": ref.sha256, "size": ref.size, "content_type": ref.content_type}
    event["data"] = {"log": {"$attachment": attachment}}
    seal(spool, [event])
    native_like = RecordingDestination("native", uploads_attachments=True)
    otlp_like = RecordingDestination("otlp")
    up = make_uploader(destinations=[native_like, otlp_like])

    assert up.step().outcome is Outcome.SENT

    assert [r.sha256 for r in native_like.sent[0].attachments] == [ref.sha256]
    assert otlp_like.sent[0].attachments == ()


def test_destinations_are_closed_when_the_uploader_stops(
    make_uploader: Callable[..., Uploader],
) -> None:
    """``stop()`` (no thread started) closes every destination."""
    a, b = RecordingDestination("a"), RecordingDestination("b")
    up = make_uploader(destinations=[a, b])

    assert up.stop(0)

    assert a.closed
    assert b.closed


def test_a_partial_acknowledgement_is_an_empty_marker_and_counts_per_destination(
    spool: Spool, clock: FakeClock, make_uploader: Callable[..., Uploader]
) -> None:
    """A batch settled by some destinations only leaves an empty marker per settlement under
    ``state/settled/`` (nothing against the cap); pending is counted per destination."""
    a, b = InMemoryCollector("a"), RecordingDestination("b")
    b.answer(503)
    name = seal_n(spool, 1)
    up = make_uploader(destinations=[a, b])

    up.step()

    marks = sorted(p.name for p in (spool.root / "state" / "settled").iterdir())
    assert marks == [f"{name.batch_id}.a.200"]
    assert (spool.root / "state" / "settled" / marks[0]).stat().st_size == 0
    per = spool.pending_by_destination(["a", "b"])
    assert (per["a"].batches, per["b"].batches, per["b"].events) == (0, 1, 1)
    assert spool.check() == []
    last = orjson.loads((spool.root / "state" / "last_upload.json").read_bytes())
    assert last["outcome"] == "retrying"
