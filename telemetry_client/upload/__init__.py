"""Delivery: the uploader loop, its retry policy, the HTTP sender, shared upload state."""

from telemetry_client.upload._sender import Sender, SendResult
from telemetry_client.upload.control import Control, LastUpload
from telemetry_client.upload.policy import (
    Action,
    Backoff,
    classify,
    parse_disable,
    parse_retry_after,
)
from telemetry_client.upload.uploader import Step, UploadCounters, Uploader

__all__ = [
    "Action",
    "Backoff",
    "Control",
    "LastUpload",
    "SendResult",
    "Sender",
    "Step",
    "UploadCounters",
    "Uploader",
    "classify",
    "parse_disable",
    "parse_retry_after",
]
