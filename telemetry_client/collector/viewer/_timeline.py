"""A page of stored events as a tree the templates render: runs, chunk blocks, pairs.

Every event stays one node (one element with ``data-event-id``), in the order given. What
is grouped: a run (``started`` .. ``completed``) holds the events between; consecutive
``response_chunk`` events form one block; a ``tool_result`` whose ``call_id`` matches a
``tool_call`` of the page, a ``bash_output`` after its ``bash_command`` and a
``change_decision`` naming a ``file_operation``'s ``op_id`` are shown inside it.

Pages are built one at a time, so a group may span two pages: the caller passes what was
open at the end of the previous page (:class:`Context`) and the page starts with a
*continuation* node (``cont``) the browser merges into the open group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from telemetry_client.collector.viewer._format import parse_ts

__all__ = ["Context", "Node", "build", "ts_us"]

_PAIRED = {"tool_result": "call_id", "change_decision": "op_id"}


@dataclass(frozen=True, slots=True)
class Context:
    """What the previous page left open: a run (its start, epoch µs; 0 unknown) and, as
    the last node of the open container, a block of response chunks."""

    run_start_us: int | None = None
    chunks: bool = False


@dataclass(slots=True)
class Node:
    """``kind``: ``event`` (one event, ``paired`` shown inside it), ``run`` (``event`` is
    its ``started``, None for a continuation; ``end`` its ``completed``) or ``chunks``."""

    kind: str
    event: dict[str, Any] | None = None
    children: list[Node] = field(default_factory=list)
    paired: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    cont: bool = False
    start_us: int = 0

    @property
    def status(self) -> str:
        """A run's status: ``running`` until its ``completed`` arrives."""
        if self.end is None:
            return "running"
        status = _data(self.end).get("status")
        return str(status) if status is not None else "completed"

    @property
    def duration_ms(self) -> float | None:
        """A run's duration: ``completed.duration_ms``, else the time between the two."""
        if self.end is None:
            return None
        stated = _data(self.end).get("duration_ms")
        if isinstance(stated, (int, float)) and not isinstance(stated, bool):
            return float(stated)
        end_us = ts_us(self.end)
        if end_us and self.start_us:
            return (end_us - self.start_us) / 1000
        return None


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else {}


def ts_us(event: dict[str, Any]) -> int:
    """The event's ``ts`` as epoch microseconds (0 when unreadable)."""
    return parse_ts(event.get("ts"))


def build(events: Iterable[dict[str, Any]], context: Context = Context()) -> list[Node]:
    """The page's top-level nodes (see the module docstring)."""
    top: list[Node] = []
    run: Node | None = None
    if context.run_start_us is not None:
        run = Node("run", cont=True, start_us=context.run_start_us)
        top.append(run)
    chunks: Node | None = None
    if context.chunks:
        chunks = Node("chunks", cont=True)
        (run.children if run is not None else top).append(chunks)
    owners: dict[tuple[str, str], Node] = {}
    last_bash: Node | None = None
    for event in events:
        etype = event.get("type")
        container = run.children if run is not None else top
        if etype == "response_chunk":
            if chunks is None or not container or container[-1] is not chunks:
                chunks = Node("chunks")
                container.append(chunks)
            chunks.children.append(Node("event", event))
            continue
        chunks = None
        if etype == "started":
            run = Node("run", event, start_us=ts_us(event))
            top.append(run)
            last_bash = None
            continue
        if etype == "completed" and run is not None:
            run.end = event
            run = None
            continue
        owner = _owner(event, owners, last_bash)
        if owner is not None:
            owner.paired.append(event)
            continue
        node = Node("event", event)
        container.append(node)
        last_bash = node if etype == "bash_command" else None
        for key in ("call_id", "op_id"):
            value = _data(event).get(key)
            if isinstance(value, str) and etype in ("tool_call", "file_operation"):
                owners[(key, value)] = node
    return top


def _owner(
    event: dict[str, Any], owners: dict[tuple[str, str], Node], last_bash: Node | None
) -> Node | None:
    etype = event.get("type")
    if etype == "bash_output":
        return last_bash
    key = _PAIRED.get(str(etype))
    if key is None:
        return None
    value = _data(event).get(key)
    return owners.get((key, value)) if isinstance(value, str) else None
