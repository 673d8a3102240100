"""HTTP I/O for the uploader: one method per request, results as values, never raises.

The only place httpx appears on the client side. Every transport failure is translated
here, once, into a :class:`SendResult` with ``status=None``; the token lives only in the
``Authorization`` header of the ``httpx.Client`` and is never part of a result, a log
line or an exception message.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from telemetry_client._internal.urls import display_url
from telemetry_client._version import __version__

__all__ = ["SendResult", "Sender"]


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one request did. ``status`` is ``None`` when no HTTP answer arrived."""

    status: int | None
    error: str | None = None  # transport failure, e.g. "ConnectTimeout"
    retry_after: str | None = None  # raw Retry-After header
    disable: str | None = None  # raw X-Telemetry-Disable header
    elapsed_s: float = 0.0
    url: str = ""  # the request's URL as :func:`display_url` shows it (no credentials)
    cause: str | None = None  # why a connection failed, e.g. "connection refused"
    allow: str | None = None  # raw Allow header (probe answers)
    final: bool = False  # the destination's protocol says: never retry this answer (OTLP)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        """No connection could be made at all (refused, unknown host, no route)."""
        return self.status is None and self.error == "ConnectError"

    def describe(self) -> str:
        """Short human text for logs and ``status`` (no URL, no token)."""
        if self.status is None:
            return f"network error ({self.error}{': ' + self.cause if self.cause else ''})"
        return f"HTTP {self.status}"


class Sender:
    """Talks to the collector's events and attachments endpoints."""

    def __init__(
        self,
        *,
        endpoint: str,
        attachments_endpoint: str | None,
        token: str | None,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``headers`` go on every request (secrets allowed: like the token, never shown)."""
        self.endpoint = endpoint
        self.attachments_endpoint = (attachments_endpoint or "").rstrip("/")
        self.timeout = timeout
        headers = {"User-Agent": f"telemetry-client/{__version__}", **(headers or {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            trust_env=True,
        )

    def close(self) -> None:
        self._client.close()

    def send_batch(
        self,
        body: bytes,
        *,
        batch_id: str,
        encoding: str,
        timeout: float | None = None,
    ) -> SendResult:
        """POST one batch (NDJSON, already compressed with ``encoding``)."""
        headers = {
            "Content-Type": "application/x-ndjson",
            "Content-Encoding": encoding,
            "Idempotency-Key": batch_id,
        }
        return self._request("POST", self.endpoint, body, headers, timeout)

    def has_attachment(self, sha256: str, *, timeout: float | None = None) -> SendResult:
        """HEAD the attachment: 200 when the collector already has it."""
        return self._request("HEAD", f"{self.attachments_endpoint}/{sha256}", None, {}, timeout)

    def send_attachment(
        self,
        body: bytes,
        *,
        sha256: str,
        content_type: str,
        encoding: str,
        timeout: float | None = None,
    ) -> SendResult:
        """POST one blob (compressed with ``encoding``); the collector verifies the hash."""
        headers = {
            "Content-Type": content_type,
            "Content-Encoding": encoding,
            "X-Attachment-SHA256": sha256,
        }
        return self._request("POST", self.attachments_endpoint, body, headers, timeout)

    def probe(self, *, timeout: float | None = None) -> SendResult:
        """``OPTIONS`` the events endpoint: does it exist, and does it take ``POST``?

        Stores nothing anywhere. The reference collector answers 204 with ``Allow`` (401
        for a refused token); other servers answer 404 for a wrong path, and 405 with
        ``Allow`` (RFC 9110) when they do not implement ``OPTIONS``.
        """
        result, _body = self._exchange("OPTIONS", self.endpoint, None, {}, timeout)
        return result

    def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        timeout: float | None = None,
    ) -> tuple[SendResult, bytes]:
        """``POST`` ``body`` to ``url``: the result and the response body (OTLP reads it)."""
        return self._exchange("POST", url, body, headers, timeout)

    def query_events(
        self, params: Mapping[str, str | int], *, timeout: float | None = None
    ) -> tuple[SendResult, bytes]:
        """``GET`` the events endpoint (the query API in docs/protocol.md) and its body."""
        return self._exchange("GET", self.endpoint, None, {}, timeout, params=params)

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float | None,
    ) -> SendResult:
        return self._exchange(method, url, body, headers, timeout)[0]

    def _exchange(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float | None,
        *,
        params: Mapping[str, str | int] | None = None,
    ) -> tuple[SendResult, bytes]:
        start = time.monotonic()
        shown = display_url(url)
        try:
            response = self._client.request(
                method,
                url,
                content=body,
                headers=headers,
                params=params,
                timeout=httpx.Timeout(self.timeout if timeout is None else timeout),
            )
            content = response.read()
        except Exception as exc:  # httpx errors; a broken proxy setting, a bad URL: never raised
            failed = SendResult(
                None,
                type(exc).__name__,
                elapsed_s=time.monotonic() - start,
                url=shown,
                cause=_cause(exc),
            )
            return failed, b""
        result = SendResult(
            response.status_code,
            retry_after=response.headers.get("Retry-After"),
            disable=response.headers.get("X-Telemetry-Disable"),
            elapsed_s=time.monotonic() - start,
            url=shown,
            allow=response.headers.get("Allow"),
        )
        return result, content


def _cause(exc: BaseException) -> str | None:
    """Why a connection failed, from the OS error behind an httpx exception (no URL in it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, socket.gaierror):
            return "host name not found"
        if isinstance(current, OSError) and current.strerror:
            return str(current.strerror).lower()
        current = current.__cause__ or current.__context__
    return None
