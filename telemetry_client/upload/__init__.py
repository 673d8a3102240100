"""Delivery: the uploader loop, its retry policy, the HTTP sender, shared upload state."""

from ._sender import Sender, SendResult
from .control import Control, LastUpload
from .policy import Action, Backoff, classify, parse_disable, parse_retry_after
from .uploader import Step, UploadCounters, Uploader

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
