"""The collector's session viewer: a web UI under ``/ui`` (docs/viewer.md).

Server-rendered Jinja2 pages with one small script and one stylesheet shipped as package
data (no build step, nothing fetched at run time): the sessions list, a session's
timeline with a renderer per event type, paging and a live mode. Pages need a sign-in
cookie (or a ``--no-auth`` collector) and the ``read`` role, and read within the reader's
team scope; every page is sent with a strict Content-Security-Policy.
"""

from telemetry_client.collector.viewer._routes import viewer_router

__all__ = ["viewer_router"]
