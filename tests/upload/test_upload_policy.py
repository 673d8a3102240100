"""The retry matrix (``telemetry_client.upload.policy``): pure functions, no network, no waiting."""

from __future__ import annotations

import datetime as dt
import random
import re
from email.utils import format_datetime
from pathlib import Path

import pytest

from telemetry_client.testing import FixedJitter
from telemetry_client.upload import Action, Backoff, SendResult, classify, parse_disable, policy
from telemetry_client.upload import parse_retry_after as retry_after
from telemetry_client.upload.policy import MAX_DISABLE_S, endpoint_problem

NOW = 1_700_000_000.0  # a whole second, so HTTP dates (1 s resolution) are exact


def http_date(unix_s: float) -> str:
    return format_datetime(dt.datetime.fromtimestamp(unix_s, dt.timezone.utc), usegmt=True)


# --- classify ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_classify_2xx_is_ack(status: int) -> None:
    """Any 2xx answer acknowledges the batch."""
    assert classify(SendResult(status)) is Action.ACK


def test_classify_network_error_is_retry() -> None:
    """No HTTP answer at all (connection refused, timeout) is retried."""
    assert classify(SendResult(None, "ConnectError")) is Action.RETRY
    assert classify(SendResult(None, "ReadTimeout")) is Action.RETRY


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_classify_retryable_statuses(status: int) -> None:
    """408, 425, 429 and the transient 5xx are retried with backoff."""
    assert classify(SendResult(status)) is Action.RETRY


def test_classify_413_splits() -> None:
    """413 Payload Too Large splits the batch."""
    assert classify(SendResult(413)) is Action.SPLIT


@pytest.mark.parametrize("status", [401, 403])
def test_classify_auth_statuses_pause(status: int) -> None:
    """401/403 pause uploads and keep everything (a bad token never loses data)."""
    assert classify(SendResult(status)) is Action.AUTH_PAUSE


@pytest.mark.parametrize("status", [404, 405])
def test_classify_wrong_endpoint_statuses_pause_for_the_endpoint(status: int) -> None:
    """404/405 (a wrong path, a URL that takes no POST) pause as a wrong endpoint, not as
    an auth refusal, and never dead-letter: the batch is not at fault."""
    assert classify(SendResult(status)) is Action.ENDPOINT_PAUSE


def test_endpoint_problem_names_status_url_and_the_variable_to_check() -> None:
    """The 404/405 text says the status, the URL it is given and which setting's path to check."""
    url = "http://127.0.0.1:8787/"
    text = endpoint_problem(404, url)
    assert text.startswith(f"HTTP 404 at {url}: check the path of TELEMETRY_ENDPOINT")
    assert "/api/v1/events" in text
    assert "TOKEN" not in text
    assert "does not accept POST" in endpoint_problem(405, url)
    other = endpoint_problem(404, url, "TELEMETRY_ATTACHMENTS_ENDPOINT")
    assert "check the path of TELEMETRY_ATTACHMENTS_ENDPOINT" in other


@pytest.mark.parametrize("status", [400, 409, 410, 411, 415, 422, 431, 451, 499])
def test_classify_other_4xx_dead_letter(status: int) -> None:
    """Any other 4xx refuses the batch for good: it goes to the dead-letter area."""
    assert classify(SendResult(status)) is Action.DEAD_LETTER


@pytest.mark.parametrize("status", [100, 199, 301, 302, 304, 307, 308, 501, 505, 511, 599, 600])
def test_classify_odd_statuses_retry(status: int) -> None:
    """1xx, 3xx (redirects are not followed) and other 5xx are retried, never dropped."""
    assert classify(SendResult(status)) is Action.RETRY


def _docstring_rows() -> list[tuple[list[int], Action]]:
    """(explicit statuses, action) of every row of the matrix table in policy's docstring."""
    doc = policy.__doc__ or ""
    rows = []
    for line in doc.splitlines():
        match = re.fullmatch(r"(.+?)\s{2,}``([A-Z_]+)``.*", line)
        if match is None or match.group(1) == "answer":
            continue
        statuses: list[int] = []
        for low, high in re.findall(r"\b(\d{3})(?:-(\d{3}))?\b", match.group(1)):
            statuses.extend(range(int(low), int(high or low) + 1))
        rows.append((statuses, Action[match.group(2)]))
    return rows


def test_docstring_matrix_matches_classify_and_design_doc() -> None:
    """Every status named in policy's docstring table classifies as its row says, and every
    row with statuses of its own (413, 401/403, 404/405) is a row of docs/design.md too."""
    rows = _docstring_rows()
    assert {action for _statuses, action in rows} == set(Action)
    design = (Path(__file__).parent.parent.parent / "docs" / "design.md").read_text()
    for statuses, action in rows:
        for status in statuses:
            assert classify(SendResult(status)) is action, (status, action)
        if statuses and action is not Action.RETRY:
            assert f"| {', '.join(map(str, statuses))} |" in design, statuses


# --- Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5), ("0.25", 0.25)],
)
def test_retry_after_seconds(header: str, expected: float) -> None:
    """Delta-seconds, whole or fractional, with surrounding blanks, are read as seconds."""
    assert retry_after(header, now=NOW, ceiling=600) == expected


def test_retry_after_http_date_in_the_future() -> None:
    """An HTTP-date is converted to the seconds left from ``now``."""
    assert retry_after(http_date(NOW + 90), now=NOW, ceiling=600) == 90.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    """A date already past means no wait (never a negative one)."""
    assert retry_after(http_date(NOW - 3600), now=NOW, ceiling=600) == 0.0


def test_retry_after_negative_seconds_is_zero() -> None:
    """A negative delay is clamped to zero."""
    assert retry_after("-30", now=NOW, ceiling=600) == 0.0


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "soon",
        "nan",
        "inf",
        "-inf",
        "12 seconds",
        "Wed, 99 Foo 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00",  # no zone: not an HTTP-date
    ],
)
def test_retry_after_garbage_is_none(header: str | None) -> None:
    """A missing or unparseable header gives ``None``: the normal backoff applies."""
    assert retry_after(header, now=NOW, ceiling=600) is None


def test_retry_after_is_capped_by_the_ceiling() -> None:
    """Seconds and dates beyond the ceiling are cut to the ceiling."""
    assert retry_after("86400", now=NOW, ceiling=600) == 600.0
    assert retry_after(http_date(NOW + 86400), now=NOW, ceiling=600) == 600.0
    assert retry_after("30", now=NOW, ceiling=0) == 0.0


# --- X-Telemetry-Disable ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"), [("60", 60.0), (" 3600 ", 3600.0), ("0", 0.0), ("2.5", 2.5)]
)
def test_parse_disable_seconds(header: str, expected: float) -> None:
    """Seconds to stay disabled; ``0`` is a valid value (it lifts the kill switch)."""
    assert parse_disable(header) == expected


@pytest.mark.parametrize("header", [None, "", "off", "-5", "nan", "inf", "1 day"])
def test_parse_disable_garbage_is_none(header: str | None) -> None:
    """Absent, negative, non-finite or non-numeric values are ignored."""
    assert parse_disable(header) is None


def test_parse_disable_is_capped_at_30_days() -> None:
    """A kill switch longer than 30 days is taken as 30 days."""
    assert parse_disable(str(365 * 86400)) == MAX_DISABLE_S == 30 * 86400.0


# --- Backoff ----------------------------------------------------------------------------------


def upper_bound(initial: float, maximum: float, failures: int) -> float:
    return min(maximum, initial * 2 ** (failures - 1))


@pytest.mark.parametrize("failures", [1, 2, 3, 5, 8, 12])
def test_backoff_full_jitter_bounds_with_default_rng(failures: int) -> None:
    """Without an injected RNG, every delay lies in ``[0, min(max, initial * 2**(n-1))]``."""
    backoff = Backoff(0.5, 60.0)
    high = upper_bound(0.5, 60.0, failures)
    samples = [backoff.delay(failures) for _ in range(300)]
    assert all(0.0 <= s <= high for s in samples)
    assert max(samples) > high * 0.5  # jitter spreads over the range, not stuck at 0
    assert len(set(samples)) > 1


@pytest.mark.parametrize("failures", [1, 2, 3, 5, 8, 12])
def test_backoff_full_jitter_bounds_with_injected_rng(failures: int) -> None:
    """With an injected RNG, delays stay within the same bounds and are reproducible."""
    high = upper_bound(0.5, 60.0, failures)
    a = [Backoff(0.5, 60.0, rng=random.Random(7)).delay(failures) for _ in range(3)]
    b = Backoff(0.5, 60.0, rng=random.Random(7))
    seq = [b.delay(failures) for _ in range(200)]
    assert all(0.0 <= s <= high for s in seq)
    assert a[0] == a[1] == a[2] == seq[0]


def test_backoff_grows_exponentially_then_stops_at_the_cap() -> None:
    """The top of the jitter range doubles per failure from ``initial`` until ``max``."""
    backoff = Backoff(0.5, 60.0, rng=FixedJitter(1.0))
    assert [backoff.delay(n) for n in range(1, 10)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        60.0,
        60.0,
    ]
    assert Backoff(0.5, 60.0, rng=FixedJitter(0.0)).delay(6) == 0.0


def test_backoff_zero_failures_counts_as_first() -> None:
    """``failures`` below 1 is treated as the first failure."""
    backoff = Backoff(0.5, 60.0, rng=FixedJitter(1.0))
    assert backoff.delay(0) == backoff.delay(1) == 0.5


@pytest.mark.parametrize("rng", [None, random.Random(3), FixedJitter(1.0)])
def test_backoff_cap_holds_after_very_long_outages(rng: random.Random | None) -> None:
    """Thousands of consecutive failures (a day offline) still give a delay <= max, no error."""
    backoff = Backoff(0.5, 60.0, rng=rng)
    for failures in (1023, 1024, 1100, 5000, 10**6):
        assert 0.0 <= backoff.delay(failures) <= 60.0
