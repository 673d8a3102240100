"""Delivery: the uploader, its destinations, the retry policy, shared upload state.

Design and diagram: docs/upload.md.
"""

from telemetry_client.upload._sender import Sender, SendResult
from telemetry_client.upload.config import UploadConfig
from telemetry_client.upload.control import Control, KillSwitch, LastUpload
from telemetry_client.upload.destination import (
    ClaimedBatch,
    Destination,
    OutgoingBatch,
    TrustedBatches,
)
from telemetry_client.upload.native import NativeCollector
from telemetry_client.upload.policy import (
    Action,
    Backoff,
    classify,
    parse_disable,
    parse_retry_after,
)
from telemetry_client.upload.step import Outcome, Step, UploadCounters
from telemetry_client.upload.uploader import ClaimQueue, LossReporter, Uploader

__all__ = [
    "Action",
    "Backoff",
    "ClaimQueue",
    "ClaimedBatch",
    "Control",
    "Destination",
    "KillSwitch",
    "LastUpload",
    "LossReporter",
    "NativeCollector",
    "Outcome",
    "OutgoingBatch",
    "SendResult",
    "Sender",
    "Step",
    "TrustedBatches",
    "UploadConfig",
    "UploadCounters",
    "Uploader",
    "classify",
    "parse_disable",
    "parse_retry_after",
]
