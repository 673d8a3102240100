"""The OTLP destination, loaded only when ``TELEMETRY_OTLP_ENDPOINT`` is set: it needs the
``opentelemetry-proto`` package (extra ``[otlp]``), which nothing else here imports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from telemetry_client._internal.log import RateLimitedLogger
from telemetry_client.errors import ConfigError
from telemetry_client.upload.otlp.config import OtlpConfig

if TYPE_CHECKING:
    from telemetry_client.upload.otlp.destination import OtlpDestination

__all__ = ["make_destination"]


def make_destination(
    config: OtlpConfig, *, spool_root: Path, log: RateLimitedLogger
) -> OtlpDestination:
    """The OTLP destination; a clear error naming the variable when the ``[otlp]`` extra
    (``opentelemetry-proto``) is not installed."""
    try:
        from telemetry_client.upload.otlp.destination import OtlpDestination
    except ImportError as exc:
        raise ConfigError(
            f"TELEMETRY_OTLP_ENDPOINT={config.endpoint!r} needs the opentelemetry-proto"
            f" package ({exc.name or exc}): pip install 'telemetry-client[otlp]'"
        ) from exc
    return OtlpDestination(config, spool_root=spool_root, log=log)
