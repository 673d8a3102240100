"""Reference collector, who may do what: token roles, team-scoped reads, the ingest stamp.

A real collector under uvicorn with named tokens (``principals``): ingest-only tokens get
403 on every read, read-only tokens 403 on every write, a read token with a team sees
only what its team ingested, admin and unteamed readers see everything; every stored
event carries the collector's ``ingest`` stamp, which a client cannot set.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import httpx
import orjson
import pytest
from conftest import CollectorHandle, collector_event

from telemetry_client.collector import TokenSpec

NDJSON = {"Content-Type": "application/x-ndjson"}
BARE = "bare-token-0123"
TOKENS = {
    "red-in": TokenSpec("tok-red-in-1", "red-ingest", frozenset({"ingest"}), "red"),
    "blue-in": TokenSpec("tok-blue-in-2", "blue-ingest", frozenset({"ingest"}), "blue"),
    "red-read": TokenSpec("tok-red-read-3", "red-reader", frozenset({"read"}), "red"),
    "all-read": TokenSpec("tok-all-read-4", "reader", frozenset({"read"})),
    "admin": TokenSpec("tok-admin-5", "root", frozenset({"admin"}), "red"),
}
RED_BLOB = b"red team's attachment"
BLUE_BLOB = b"blue team's attachment"


def sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@pytest.fixture
def teams(collector_factory: Any) -> CollectorHandle:
    handle: CollectorHandle = collector_factory(tokens=[BARE], principals=list(TOKENS.values()))
    return handle


def auth(who: str) -> dict[str, str]:
    token = BARE if who == "bare" else TOKENS[who].token
    return {"Authorization": f"Bearer {token}"}


def http(handle: CollectorHandle, who: str) -> httpx.Client:
    return httpx.Client(base_url=handle.url, headers=auth(who), timeout=10)


def post(handle: CollectorHandle, who: str, events: list[dict[str, Any]]) -> httpx.Response:
    body = b"".join(orjson.dumps(e) + b"\n" for e in events)
    with http(handle, who) as client:
        return client.post("/api/v1/events", content=body, headers=NDJSON)


def attach(handle: CollectorHandle, who: str, blob: bytes) -> httpx.Response:
    with http(handle, who) as client:
        return client.post(
            "/api/v1/attachments", content=blob, headers={"X-Attachment-SHA256": sha(blob)}
        )


def ref(blob: bytes) -> dict[str, Any]:
    return {"$attachment": {"sha256": sha(blob), "size": len(blob)}}


def seed(handle: CollectorHandle) -> None:
    """Red posts session s-red (with an attachment), blue s-blue, the bare token s-bare."""
    assert attach(handle, "red-in", RED_BLOB).status_code == 200
    assert attach(handle, "blue-in", BLUE_BLOB).status_code == 200
    red = [collector_event(i, session_id="s-red", data={"f": ref(RED_BLOB)}) for i in range(3)]
    blue = [
        collector_event(10 + i, session_id="s-blue", data={"f": ref(BLUE_BLOB)}) for i in (0, 1)
    ]
    assert post(handle, "red-in", red).json() == {"accepted": 3, "duplicate": False}
    assert post(handle, "blue-in", blue).json() == {"accepted": 2, "duplicate": False}
    assert post(handle, "bare", [collector_event(20, session_id="s-bare")]).status_code == 200


def seen(handle: CollectorHandle, who: str) -> tuple[list[str], list[str], int]:
    """(sessions of the events, sessions listed, total) that ``who`` may read."""
    with http(handle, who) as client:
        events = client.get("/api/v1/events").json()
        sessions = client.get("/api/v1/sessions").json()["sessions"]
    return (
        sorted({e["session_id"] for e in events["events"]}),
        sorted(s["session_id"] for s in sessions),
        events["total"],
    )


READS = [
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/sessions"),
    ("GET", f"/api/v1/attachments/{sha(RED_BLOB)}"),
    ("GET", "/metrics"),
]
WRITES = [
    ("POST", "/api/v1/events"),
    ("POST", "/api/v1/attachments"),
    ("HEAD", f"/api/v1/attachments/{sha(RED_BLOB)}"),
]


def test_an_ingest_only_token_gets_403_on_every_read(teams: CollectorHandle) -> None:
    """Ingest-only: 403 with a detail naming the missing role on each read endpoint; its
    writes, the HEAD before an upload and the OPTIONS probe work."""
    seed(teams)
    with http(teams, "red-in") as client:
        for method, path in READS:
            response = client.request(method, path)
            assert response.status_code == 403, (method, path)
            assert response.json() == {"detail": "this token lacks the read role (it has ingest)"}
        assert client.head(f"/api/v1/attachments/{sha(RED_BLOB)}").status_code == 200
        assert client.options("/api/v1/events").status_code == 204
    assert teams.state.metrics.value("rejections_total", "forbidden") == len(READS)


def test_a_read_only_token_gets_403_on_every_write(teams: CollectorHandle) -> None:
    """Read-only: 403 on posting events and attachments and on HEAD; nothing is stored."""
    with http(teams, "all-read") as client:
        for method, path in WRITES:
            response = client.request(method, path, content=b"{}")
            assert response.status_code == 403, (method, path)
            if method != "HEAD":  # a HEAD answer has no body
                assert "lacks the ingest role" in response.json()["detail"]
        assert client.options("/api/v1/events").status_code == 204  # any valid token
        assert client.get("/api/v1/events").json()["total"] == 0


def test_a_team_reader_sees_only_its_teams_events_sessions_and_attachments(
    teams: CollectorHandle,
) -> None:
    """read+team red: red's events and sessions only, red's attachment, blue's is 404."""
    seed(teams)
    assert seen(teams, "red-read") == (["s-red"], ["s-red"], 3)
    with http(teams, "red-read") as client:
        assert client.get(f"/api/v1/attachments/{sha(RED_BLOB)}").content == RED_BLOB
        assert client.get(f"/api/v1/attachments/{sha(BLUE_BLOB)}").status_code == 404
        filtered = client.get("/api/v1/events", params={"session_id": "s-blue"}).json()
        assert (filtered["events"], filtered["total"]) == ([], 0)
        assert (
            client.get("/api/v1/sessions", params={"user_id": "alice"}).json()["sessions"][0][
                "session_id"
            ]
            == "s-red"
        )


@pytest.mark.parametrize("who", ["all-read", "admin", "bare"])
def test_admin_and_unteamed_readers_see_everything(teams: CollectorHandle, who: str) -> None:
    """A read token without a team, the bare 0.1-style token and admin (even with a team)
    see every team's events, sessions and attachments."""
    seed(teams)
    assert seen(teams, who) == (["s-bare", "s-blue", "s-red"], ["s-bare", "s-blue", "s-red"], 6)
    with http(teams, who) as client:
        for blob in (RED_BLOB, BLUE_BLOB):
            assert client.get(f"/api/v1/attachments/{sha(blob)}").content == blob


def test_admin_may_ingest_and_its_events_are_stamped_with_its_name_and_team(
    teams: CollectorHandle,
) -> None:
    """Every stored event carries {"token": name, "team": team} of the token that posted it."""
    seed(teams)
    assert post(teams, "admin", [collector_event(30, session_id="s-admin")]).status_code == 200
    with http(teams, "admin") as client:
        events = client.get("/api/v1/events").json()["events"]
    stamps = {e["session_id"]: e["ingest"] for e in events}
    assert stamps == {
        "s-red": {"token": "red-ingest", "team": "red"},
        "s-blue": {"token": "blue-ingest", "team": "blue"},
        "s-bare": {"token": "token-1", "team": None},
        "s-admin": {"token": "root", "team": "red"},
    }
    assert seen(teams, "red-read")[0] == ["s-admin", "s-red"]  # admin's team is red


SPOOFS: list[Any] = [
    {"token": "root", "team": "blue"},
    {"token": "red-ingest"},
    "root",
    None,
    [1, 2],
]


def test_a_client_cannot_spoof_the_ingest_stamp(
    teams: CollectorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """A top-level "ingest" sent by the client is dropped: the query API shows only the
    collector's stamp, the team reader of the posting team sees the events, the rest of
    each event is kept, and the drop is counted."""
    caplog.set_level(logging.DEBUG, logger="telemetry_client.collector")
    events = [
        collector_event(i, session_id="s-spoof", ingest=spoof, data={"ingest": "kept"})
        for i, spoof in enumerate(SPOOFS)
    ]
    assert post(teams, "red-in", events).json() == {"accepted": len(SPOOFS), "duplicate": False}
    with http(teams, "admin") as client:
        stored = client.get("/api/v1/events").json()["events"]
    assert [e["ingest"] for e in stored] == [{"token": "red-ingest", "team": "red"}] * len(SPOOFS)
    assert [e["data"] for e in stored] == [{"ingest": "kept"}] * len(SPOOFS)  # only top level
    assert [{k: v for k, v in e.items() if k != "ingest"} for e in stored] == [
        {k: v for k, v in e.items() if k != "ingest"} for e in events
    ]
    assert seen(teams, "red-read")[2] == len(SPOOFS)
    assert teams.state.metrics.value("ingest_fields_stripped_total") == len(SPOOFS)
    assert 'dropped a client-sent "ingest" field' in caplog.text


def test_a_spoofing_event_is_stamped_with_the_posting_teams_token_only(
    collector_factory: Any,
) -> None:
    """Blue posting an event that claims red's stamp: a red reader never sees it."""
    handle = collector_factory(
        tokens=[BARE],
        principals=[TOKENS["blue-in"], TOKENS["red-read"], TOKENS["admin"]],
    )
    spoof = collector_event(1, ingest={"token": "red-ingest", "team": "red"})
    assert post(handle, "blue-in", [spoof]).status_code == 200
    assert seen(handle, "red-read") == ([], [], 0)
    with http(handle, "admin") as client:
        [stored] = client.get("/api/v1/events").json()["events"]
    assert stored["ingest"] == {"token": "blue-ingest", "team": "blue"}


def test_no_auth_mode_is_an_admin(collector_factory: Any) -> None:
    """--no-auth: requests without a token may write and read everything (development)."""
    handle = collector_factory(tokens=[], allow_no_auth=True)
    body = orjson.dumps(collector_event(1)) + b"\n"
    assert httpx.post(handle.events_url, content=body, headers=NDJSON).status_code == 200
    [event] = httpx.get(handle.events_url).json()["events"]
    assert event["ingest"] == {"token": "anonymous", "team": None}
