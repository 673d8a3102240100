"""Encode stage: a record becomes one JSONL line (envelope, coercion, redaction, large
fields moved out as attachments through a ``put_blob`` callable)."""

from telemetry_client.encode.encoder import Encoder
from telemetry_client.encode.envelope import Record, format_ts
from telemetry_client.encode.redact import Redactor

__all__ = ["Encoder", "Record", "Redactor", "format_ts"]
