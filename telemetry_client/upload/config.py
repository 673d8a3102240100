"""What the upload stage needs from the settings, and nothing more (docs/upload.md).

:class:`UploadConfig` is a frozen value built once by :meth:`UploadConfig.from_settings`,
so the uploader and its destinations never see the rest of ``TelemetrySettings`` and
tests build one directly. The token is kept out of ``repr`` (it must never reach a log).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telemetry_client.settings import TelemetrySettings

__all__ = ["UploadConfig"]


@dataclass(frozen=True, slots=True)
class UploadConfig:
    """Endpoints, credentials, timing and encoding of uploads (defaults as in the settings)."""

    endpoint: str  # the native collector's events URL
    attachments_endpoint: str  # resolved: the configured URL or the endpoint's sibling
    attachments_endpoint_set: bool = False  # configured explicitly (names the variable in errors)
    token: str | None = field(default=None, repr=False)
    timeout: float = 10.0  # one request, seconds
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    compression: Literal["zstd", "gzip"] = "zstd"
    replay_rate: float = 10.0  # batches per second while draining a backlog (0: unpaced)
    auth_pause: float = 300.0  # pause after 401/403/404/405, seconds
    retry_after_max: float = 600.0  # longest Retry-After honoured, seconds
    fsync: bool = True  # fsync the kill switch file

    @classmethod
    def from_settings(cls, settings: TelemetrySettings) -> UploadConfig:
        """The upload part of ``settings``; ``ValueError`` without any endpoint (native or
        OTLP; ``endpoint`` is empty when only ``TELEMETRY_OTLP_ENDPOINT`` is set)."""
        endpoint = settings.endpoint or ""
        if not endpoint and not settings.otlp_endpoint:
            raise ValueError("the uploader needs TELEMETRY_ENDPOINT or TELEMETRY_OTLP_ENDPOINT")
        return cls(
            endpoint=endpoint,
            attachments_endpoint=settings.resolved_attachments_endpoint or "",
            attachments_endpoint_set=settings.attachments_endpoint is not None,
            token=settings.token.get_secret_value() if settings.token else None,
            timeout=settings.upload_timeout,
            backoff_initial=settings.upload_backoff_initial,
            backoff_max=settings.upload_backoff_max,
            compression="gzip" if settings.upload_compression == "gzip" else "zstd",
            replay_rate=settings.replay_rate,
            auth_pause=settings.auth_pause,
            retry_after_max=settings.retry_after_max,
            fsync=settings.fsync == "batch",
        )
