"""OTLP export: the spool delivered to any OpenTelemetry backend (docs/otlp.md).

The destination (``otlp.destination.OtlpDestination``) and the mapping
(``otlp.mapping.map_events``) need the ``opentelemetry-proto`` package (extra ``[otlp]``);
this package's top level does not, so the client and ``status`` import it freely and only a
configured ``TELEMETRY_OTLP_ENDPOINT`` loads them, through :func:`make_destination`.
:class:`Rejections` holds the ``partial_success`` counts that ``status`` shows.
"""

from telemetry_client.upload.otlp.config import DESTINATION_NAME, OtlpConfig, parse_headers
from telemetry_client.upload.otlp.factory import make_destination
from telemetry_client.upload.otlp.rejections import Rejections

__all__ = [
    "DESTINATION_NAME",
    "OtlpConfig",
    "Rejections",
    "make_destination",
    "parse_headers",
]
