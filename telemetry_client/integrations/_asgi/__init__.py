"""The FastAPI/Starlette integration's parts (pure ASGI), one job per module.

- ``middleware``: :class:`TelemetryMiddleware`, reading ids and dispatching connections;
- ``http`` and ``websocket``: recording one request or one WebSocket connection;
- ``routes``: route templates (``/api/users/{user_id}``) of what matched;
- ``observer``: the status of an answer sent outside the middleware;
- ``errors``: unhandled exceptions as ``error`` events;
- ``sessions``: ``session_start`` and ``bind_session``;
- ``connection``: the connection being handled and ``current_client``;
- ``failures``: the integration's own failures, counted and rate-limit logged.

The public names live in :mod:`telemetry_client.integrations.fastapi`.
"""
