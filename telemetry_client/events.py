"""The event schema: the envelope (docs/protocol.md) and typed payloads for every event type.

A typed event is a small slotted dataclass: cheap to build on the caller's thread (the
caller pays for construction, ``emit()`` only queues a reference). Its ``TYPE`` names
the wire ``type``; its non-``None`` fields become the envelope's ``data``. Free-form
events skip this module: ``client.emit("my_type", {...})``.

Every serialised event (one JSON object per line in a batch) has this envelope:

=============  =================================================================
``id``         UUIDv7 string, unique, sorts by emit time
``type``       snake_case event type (``chat_turn``, ``tool_call``, ...)
``ts``         emit time, RFC 3339 UTC with microseconds (``...T10:20:30.123456Z``)
``session_id`` the session the event belongs to
``user_id``    ``TELEMETRY_USER_ID`` (default: the OS user name)
``machine_id`` stable, anonymised machine identifier
``app``        ``TELEMETRY_APP``
``app_version`` ``TELEMETRY_APP_VERSION`` or the git SHA when discoverable
``seq``        per-process counter, in emit order
``data``       the payload (a JSON object)
=============  =================================================================

Emitting takes ownership of the payload: do not mutate a dict after passing it to
``emit()``; it is serialised later on the writer thread (as ``logging`` does with its
arguments).
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "ENVELOPE_FIELDS",
    "EVENT_TYPES",
    "BashCommand",
    "BashOutput",
    "ChangeDecision",
    "ChatTurn",
    "Completed",
    "Error",
    "Event",
    "FileOperation",
    "FileRead",
    "FileWrite",
    "LLMCall",
    "PromptSent",
    "ResponseChunk",
    "ResponseComplete",
    "RunEvent",
    "SessionStart",
    "Started",
    "TelemetryDropped",
    "Thinking",
    "ToolCall",
    "ToolResult",
    "payload_of",
]

#: The keys of every serialised event, in wire order.
ENVELOPE_FIELDS = (
    "id",
    "type",
    "ts",
    "session_id",
    "user_id",
    "machine_id",
    "app",
    "app_version",
    "seq",
    "data",
)


@dataclass(slots=True, kw_only=True)
class Event:
    """Base of typed events. ``attributes`` carries free-form extra fields."""

    TYPE: ClassVar[str] = ""
    attributes: Mapping[str, Any] | None = None


_FIELDS: dict[type[Event], tuple[str, ...]] = {}


def payload_of(event: Event) -> dict[str, Any]:
    """The ``data`` object of a typed event: its non-``None`` fields, attributes merged in."""
    cls = type(event)
    names = _FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(event) if f.name != "attributes")
        _FIELDS[cls] = names
    data = {n: v for n in names if (v := getattr(event, n)) is not None}
    if event.attributes:
        for k, v in event.attributes.items():
            data.setdefault(k, v)
    return data


@dataclass(slots=True, kw_only=True)
class RunEvent(Event):
    """Base of the events an agent run emits (``RunRecorder`` stamps both fields).

    ``run_id`` names the run; ``run_seq`` orders its events (1, 2, 3, ... in emit order:
    ``started`` is 1). Outside a run both stay ``None`` and are left out of ``data``.
    """

    run_id: str | None = None
    run_seq: int | None = None


@dataclass(slots=True, kw_only=True)
class SessionStart(Event):
    """A user session began (per WebSocket/REST session or per process)."""

    TYPE: ClassVar[str] = "session_start"
    app_version: str | None = None
    os: str | None = None
    os_version: str | None = None
    python_version: str | None = None
    hostname: str | None = None


@dataclass(slots=True, kw_only=True)
class ChatTurn(Event):
    """One user prompt and the assistant's final answer.

    With ``provider`` and ``model`` it counts as an LLM request in ``telemetry-client
    stats`` (with its tokens), unless the same process already recorded that call as an
    ``llm_call`` (see :mod:`telemetry_client.usage`).
    """

    TYPE: ClassVar[str] = "chat_turn"
    model: str | None = None
    provider: str | None = None
    user_prompt: str | None = None
    assistant_final: str | None = None
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    status: str | None = None


@dataclass(slots=True, kw_only=True)
class LLMCall(Event):
    """One request to an LLM API (recorded by ``integrations.httpx``); feeds usage stats.

    Tokens follow the OpenTelemetry GenAI conventions: ``input_tokens`` counts every prompt
    token, cached ones included (``cache_read_input_tokens`` read from the provider's cache,
    ``cache_creation_input_tokens`` written to it); ``output_tokens`` counts every generated
    token, ``reasoning_tokens`` included. ``prompt``/``answer`` are recorded only when
    configured (large ones become attachments). A call that ended before its answer did
    carries ``closed_early`` (``cancelled`` when the caller's task was cancelled, e.g. its
    client disconnected), and ``partial`` says the answer and usage are what had arrived.
    """

    TYPE: ClassVar[str] = "llm_call"
    provider: str
    model: str | None = None
    endpoint: str | None = None  # URL path, e.g. /v1/chat/completions (no query, no secrets)
    status: int | None = None  # HTTP status; None when no answer arrived
    error: str | None = None
    latency_ms: float | None = None
    streamed: bool = False
    request_bytes: int = 0
    response_bytes: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    prompt: Any = None
    answer: str | None = None
    closed_early: bool | None = None
    cancelled: bool | None = None
    partial: bool | None = None


@dataclass(slots=True, kw_only=True)
class ToolCall(RunEvent):
    """The agent called a tool; ``result`` may be large (moved to an attachment)."""

    TYPE: ClassVar[str] = "tool_call"
    tool_name: str
    call_id: str | None = None
    args: Any = None
    result: Any = None
    duration_ms: float | None = None
    error: str | None = None


@dataclass(slots=True, kw_only=True)
class FileOperation(Event):
    """A file was written, edited or deleted, with full before/after content and diff."""

    TYPE: ClassVar[str] = "file_operation"
    path: str
    op: str  # write | edit | delete | create | rename
    op_id: str | None = None
    before: str | None = None
    after: str | None = None
    diff: str | None = None
    loc_added: int | None = None
    loc_removed: int | None = None
    binary: bool | None = None  # True: contents summarised by size/sha256, not diffed
    before_size: int | None = None
    after_size: int | None = None
    before_sha256: str | None = None
    after_sha256: str | None = None


@dataclass(slots=True, kw_only=True)
class ChangeDecision(Event):
    """The user accepted, rejected or reverted a file operation."""

    TYPE: ClassVar[str] = "change_decision"
    op_id: str
    decision: str  # accept | reject | revert (anything else was coerced to invalid)
    reason: str | None = None
    raw_decision: str | None = None  # the value passed, when it had to be coerced


@dataclass(slots=True, kw_only=True)
class Error(RunEvent):
    """An error with its stack trace; build one with :meth:`from_exception`."""

    TYPE: ClassVar[str] = "error"
    error_type: str
    message: str
    stack_trace: str | None = None
    context: Mapping[str, Any] | None = None

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, context: Mapping[str, Any] | None = None
    ) -> Error:
        """Capture type, message and formatted traceback of ``exc``."""
        return cls(
            error_type=type(exc).__qualname__,
            message=str(exc),
            stack_trace="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            context=context,
        )


# --- the LLM run stream (one agent invocation, e.g. a Claude/Codex adapter run) ---


@dataclass(slots=True, kw_only=True)
class Started(RunEvent):
    """A run began."""

    TYPE: ClassVar[str] = "started"
    toolchain: str | None = None
    model: str | None = None


@dataclass(slots=True, kw_only=True)
class PromptSent(RunEvent):
    """The prompt sent to the model."""

    TYPE: ClassVar[str] = "prompt_sent"
    prompt: str | None = None
    tokens: int | None = None


@dataclass(slots=True, kw_only=True)
class ResponseChunk(RunEvent):
    """Streamed model output (possibly several coalesced chunks)."""

    TYPE: ClassVar[str] = "response_chunk"
    content: str | None = None
    index: int | None = None  # ordinal of the first raw chunk in this event
    chunks: int | None = None  # raw chunks coalesced into this event


@dataclass(slots=True, kw_only=True)
class ResponseComplete(RunEvent):
    """The model's full response."""

    TYPE: ClassVar[str] = "response_complete"
    content: str | None = None
    tokens: int | None = None


@dataclass(slots=True, kw_only=True)
class ToolResult(RunEvent):
    """The result of a tool call made during a run."""

    TYPE: ClassVar[str] = "tool_result"
    tool_name: str | None = None
    call_id: str | None = None
    result: Any = None
    is_error: bool | None = None
    duration_ms: float | None = None


@dataclass(slots=True, kw_only=True)
class BashCommand(RunEvent):
    """A shell command the agent ran."""

    TYPE: ClassVar[str] = "bash_command"
    command: str
    cwd: str | None = None


@dataclass(slots=True, kw_only=True)
class BashOutput(RunEvent):
    """Output of a shell command."""

    TYPE: ClassVar[str] = "bash_output"
    output: str | None = None
    stream: str | None = None  # stdout | stderr
    exit_code: int | None = None
    index: int | None = None  # ordinal of the first raw chunk of this stream
    chunks: int | None = None  # raw chunks coalesced into this event


@dataclass(slots=True, kw_only=True)
class FileRead(RunEvent):
    """The agent read a file."""

    TYPE: ClassVar[str] = "file_read"
    path: str
    size: int | None = None
    content: str | None = None


@dataclass(slots=True, kw_only=True)
class FileWrite(RunEvent):
    """The agent wrote a file."""

    TYPE: ClassVar[str] = "file_write"
    path: str
    size: int | None = None
    content: str | None = None


@dataclass(slots=True, kw_only=True)
class Thinking(RunEvent):
    """Model reasoning / planning text."""

    TYPE: ClassVar[str] = "thinking"
    content: str | None = None


@dataclass(slots=True, kw_only=True)
class Completed(RunEvent):
    """A run finished."""

    TYPE: ClassVar[str] = "completed"
    status: str | None = None  # success | error | cancelled
    exit_code: int | None = None
    duration_ms: float | None = None


@dataclass(slots=True, kw_only=True)
class TelemetryDropped(Event):
    """Events were lost (spool cap, retention, disk errors); sent so the collector sees the gap."""

    TYPE: ClassVar[str] = "telemetry_dropped"
    events: int
    bytes: int
    reason: str
    first_ts: str | None = None
    last_ts: str | None = None


#: Every typed event class by its wire ``type``.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        SessionStart,
        ChatTurn,
        LLMCall,
        ToolCall,
        FileOperation,
        ChangeDecision,
        Error,
        Started,
        PromptSent,
        ResponseChunk,
        ResponseComplete,
        ToolResult,
        BashCommand,
        BashOutput,
        FileRead,
        FileWrite,
        Thinking,
        Completed,
        TelemetryDropped,
    )
}
