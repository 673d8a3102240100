"""Reference collector attachments: POST (hash-verified, stored once), GET and HEAD by sha256."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import sqlite3
from typing import Any

import pytest
import zstandard
from conftest import CollectorHandle

BLOB = ("def main():\n    print('hello')\n" * 2000).encode()
SHA = hashlib.sha256(BLOB).hexdigest()
ENCODERS = {
    "zstd": zstandard.ZstdCompressor().compress,
    "gzip": gzip.compress,
    "identity": bytes,
}


def upload(
    http: Any, body: bytes, sha256: str | None, *, encoding: str = "identity", **headers: str
) -> Any:
    all_headers = {"Content-Type": "text/x-python", "Content-Encoding": encoding, **headers}
    if sha256 is not None:
        all_headers["X-Attachment-SHA256"] = sha256
    return http.post("/api/v1/attachments", content=body, headers=all_headers)


@pytest.mark.parametrize("encoding", list(ENCODERS))
def test_an_upload_is_verified_stored_and_served_back(
    collector: CollectorHandle, encoding: str
) -> None:
    """POST (zstd/gzip/identity) stores the raw bytes; HEAD finds them, GET returns them."""
    with collector.client() as http:
        assert http.head(f"/api/v1/attachments/{SHA}").status_code == 404
        response = upload(http, ENCODERS[encoding](BLOB), SHA, encoding=encoding)
        assert response.status_code == 200
        assert response.json() == {"sha256": SHA, "size": len(BLOB), "duplicate": False}
        head = http.head(f"/api/v1/attachments/{SHA}")
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(BLOB))
        assert head.content == b""
        got = http.get(f"/api/v1/attachments/{SHA}")
        assert got.status_code == 200
        assert got.content == BLOB
        assert got.headers["Content-Type"] == "text/x-python"
        assert http.get(f"/api/v1/attachments/{SHA.upper()}").content == BLOB
    assert collector.state.store.check() == []


def test_a_second_upload_is_a_duplicate_stored_once(collector: CollectorHandle) -> None:
    """The same content again answers duplicate: true and keeps one copy in the database."""
    with collector.client() as http:
        assert upload(http, BLOB, SHA).json()["duplicate"] is False
        again = upload(http, ENCODERS["zstd"](BLOB), SHA.upper(), encoding="zstd")
        assert again.status_code == 200
        assert again.json() == {"sha256": SHA, "size": len(BLOB), "duplicate": True}
    with contextlib.closing(sqlite3.connect(collector.data_dir / "collector.db")) as db:
        rows = db.execute("SELECT sha256, size FROM attachments").fetchall()
    assert rows == [(SHA, len(BLOB))]
    assert collector.state.metrics.value("duplicates_total", "attachments") == 1
    assert collector.state.store.check() == []


def test_a_hash_mismatch_is_refused_and_nothing_is_kept(collector: CollectorHandle) -> None:
    """A body whose sha256 differs from X-Attachment-SHA256 answers 400; nothing is kept."""
    other = hashlib.sha256(b"something else").hexdigest()
    with collector.client() as http:
        response = upload(http, ENCODERS["gzip"](BLOB), other, encoding="gzip")
        assert response.status_code == 400
        assert response.json() == {
            "detail": f"X-Attachment-SHA256 does not match the body (its sha256 is {SHA})"
        }
        assert http.head(f"/api/v1/attachments/{other}").status_code == 404
        assert http.head(f"/api/v1/attachments/{SHA}").status_code == 404
    assert collector.state.store.check() == []


def test_a_missing_or_ill_formed_hash_header_is_refused(collector: CollectorHandle) -> None:
    """No X-Attachment-SHA256, or one that is not 64 hex digits, answers 400."""
    with collector.client() as http:
        response = upload(http, BLOB, None)
        assert response.status_code == 400
        assert response.json() == {"detail": "X-Attachment-SHA256 is missing"}
        for bad in ("abc", SHA[:-1] + "g", SHA + "0", "../" + SHA[3:]):
            response = upload(http, BLOB, bad)
            assert response.status_code == 400, bad
            assert "must be 64 hex digits" in response.json()["detail"]


def test_a_corrupt_compressed_attachment_is_refused(collector: CollectorHandle) -> None:
    """A body that does not decompress answers 400 like an events body would."""
    with collector.client() as http:
        response = upload(http, b"not zstd", SHA, encoding="zstd")
        assert response.status_code == 400
        assert response.json()["detail"].startswith("body is not valid zstd")


def test_get_and_head_of_unknown_or_ill_formed_hashes(collector: CollectorHandle) -> None:
    """Unknown hash: 404 (GET and HEAD); a path that is not a sha256: 400."""
    unknown = "f" * 64
    with collector.client() as http:
        assert http.get(f"/api/v1/attachments/{unknown}").status_code == 404
        assert http.head(f"/api/v1/attachments/{unknown}").status_code == 404
        for bad in ("xyz", "f" * 63, "%2e%2e%2fjournal.jsonl"):
            assert http.get(f"/api/v1/attachments/{bad}").status_code in (400, 404), bad
        assert http.get("/api/v1/attachments/" + "g" * 64).status_code == 400
        assert http.head("/api/v1/attachments/" + "g" * 64).status_code == 400


def test_an_attachment_over_its_limit_is_413(collector_factory: Any) -> None:
    """A raw size over max_attachment_bytes is refused (413), however small it is compressed."""
    handle = collector_factory(max_attachment_bytes=64 * 1024)
    big = os.urandom(32 * 1024) * 4  # 128 KiB raw, compresses to ~32 KiB
    with handle.client() as http:
        response = upload(
            http, ENCODERS["zstd"](big), hashlib.sha256(big).hexdigest(), encoding="zstd"
        )
        assert response.status_code == 413
        assert response.json() == {"detail": "decompressed body exceeds 65536 bytes"}
        assert upload(http, big, hashlib.sha256(big).hexdigest()).status_code == 413
        assert (
            http.head(f"/api/v1/attachments/{hashlib.sha256(big).hexdigest()}").status_code == 404
        )
