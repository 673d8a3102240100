"""The reference collector (extra ``[collector]``): a FastAPI app that receives telemetry.

``telemetry-collector --data-dir DIR --token TOKEN`` (or ``python -m
telemetry_client.collector``) serves the native v1 protocol (docs/protocol.md): batches of
events with auth (tokens with roles and teams), size limits, rate limits and dedupe on
``Idempotency-Key``; attachments stored by sha256; events and sessions queries; health
and Prometheus metrics. Storage is SQLite in the data dir, or PostgreSQL with
``--database-url`` (replicas sharing one database); a batch is durable before any 2xx
(docs/collector-store.md). ``telemetry-collector import DIR`` upgrades a 0.1 data dir.

In Python::

    with running_collector(CollectorConfig(data_dir=path, tokens=["secret"])) as c:
        ...  # c.url, c.events_url, c.attachments_url, c.health_url, c.state

Named tokens with roles and a team: ``CollectorConfig(..., principals=[TokenSpec(token,
"ci", frozenset({"ingest"}), team="red")])``.
"""

try:
    import fastapi as _fastapi  # noqa: F401
    import uvicorn as _uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "telemetry_client.collector needs the [collector] extra:"
        " pip install 'telemetry-client[collector]'"
    ) from exc

from telemetry_client.collector._auth import TokenSpec
from telemetry_client.collector._config import CollectorConfig
from telemetry_client.collector._serve import main, running_collector
from telemetry_client.collector.app import create_app

__all__ = ["CollectorConfig", "TokenSpec", "create_app", "main", "running_collector"]
