"""``telemetry-client proxy``: an OpenAI-compatible recording proxy (README, "proxy").

Clients point their base URL at ``http://HOST:PORT/v1``; every request under ``/v1/`` is
forwarded to the upstream and its answer relayed as it arrives, byte for byte; each LLM
request becomes one ``llm_call`` event in the proxy's spool (so tools that cannot import
this SDK feed the same telemetry and ``telemetry-client stats``). Parts, one job each:
``config`` (``TELEMETRY_PROXY_*`` and flags), ``guard`` (keys, rate limit, error shape),
``forward`` (upstream client, relay), ``stream_usage`` (usage on OpenAI streams),
``record`` (the shared :mod:`telemetry_client.llm` call), ``metrics``, ``app`` (ASGI) and
``server`` (uvicorn, graceful stop). Design: docs/proxy.md.
"""

from telemetry_client.proxy.app import ProxyApp
from telemetry_client.proxy.config import ProxyConfig
from telemetry_client.proxy.server import serve

__all__ = ["ProxyApp", "ProxyConfig", "serve"]
