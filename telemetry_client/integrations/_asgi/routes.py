"""Route templates: what a request or WebSocket matched, as ``/api/users/{user_id}``.

``route`` is the template of what matched, mount and ``include_router`` prefixes included,
for FastAPI and Starlette routes, mounts and hosts alike. After routing, the scope names
what matched (``scope["route"]``, ``scope["endpoint"]``); an index of the app's routes,
built once (and rebuilt, at most every few seconds, when a matched route is missing from
it), maps those objects to their full templates. A request nothing matched gets
:data:`UNMATCHED_ROUTE` and ``matched: false``; optionally its path is recorded with the
segments that may hold ids replaced by ``{id}`` (raw paths carry ids and explode
cardinality).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from starlette.routing import Host, Mount, Router, compile_path
from starlette.types import Scope

from telemetry_client.integrations._asgi.failures import failed

__all__ = ["MAX_PATH_CHARS", "UNMATCHED_ROUTE", "RouteNamer", "unmatched_path"]

#: ``route`` of a request or WebSocket that no route matched (404, slash redirects).
UNMATCHED_ROUTE = "<unmatched>"
#: Unmatched paths recorded with ``record_unmatched_paths=True`` are cut to this length.
MAX_PATH_CHARS = 200

_iter_route_contexts: Callable[[Sequence[Any]], Iterable[Any]] | None
try:  # newer FastAPI keeps included routers unflattened; this flattens them (public)
    from fastapi.routing import iter_route_contexts as _iter_route_contexts
except ImportError:  # older FastAPI (routes already flat) or a Starlette-only app
    _iter_route_contexts = None

#: Rebuild the route index at most this often when a matched route is missing from it.
_INDEX_REBUILD_S = 5.0
_INDEX_MAX_TEMPLATES = 10_000
_INDEX_MAX_DEPTH = 16
# A path segment that may hold an id: a digit or an @ in it, or long.
_ID_SEGMENT = re.compile(r"[^/]*[0-9@][^/]*|[^/]{25,}")


class _Template:
    """One full route template: ``format`` (``/api/users/{user_id}``) and its regex."""

    __slots__ = ("format", "mount", "regex", "router_mount")

    def __init__(self, raw: str, *, mount: bool = False, router_mount: bool = False) -> None:
        self.regex, self.format, _ = compile_path(raw)
        self.mount = mount  # a Mount's own template, ``prefix/{path}``
        self.router_mount = router_mount  # ... of a mounted app that routes itself


def _route_entries(routes: Sequence[Any]) -> list[tuple[Any, Any, Any]]:
    """``(route as routing sets it in the scope, its full path or None, the route to read)``.

    FastAPI's ``include_router`` keeps the included router's routes as they are and
    applies the prefix when matching; ``iter_route_contexts`` gives each with its full path.
    """
    if _iter_route_contexts is not None:
        with contextlib.suppress(Exception):
            return [(c.original_route, c.path, c) for c in _iter_route_contexts(routes)]
    return [(route, getattr(route, "path", None), route) for route in routes]


class _RouteIndex:
    """The full templates of one router's routes, by ``id()`` of route and endpoint.

    After routing, the scope names what matched: ``scope["route"]`` (FastAPI's
    ``APIRoute``, any route of a Starlette ``Router``; a mount's inner router overwrites
    its mount) and ``scope["endpoint"]`` (a Starlette ``Route``'s endpoint, a ``Mount``'s
    app). Both map to the templates they are reachable under (mount and include prefixes
    composed); when several, the one whose regex matches the path wins.
    """

    def __init__(self, router: Router) -> None:
        self._router = router
        self._by_id: dict[int, list[_Template]] = {}
        self._keep: list[object] = []  # the keyed objects, so their ids stay theirs
        self._built = -_INDEX_REBUILD_S
        self._lock = threading.Lock()
        self._build()

    def _build(self) -> None:
        with self._lock:
            if time.monotonic() - self._built < _INDEX_REBUILD_S:
                return
            by_id: dict[int, list[_Template]] = {}
            keep: list[object] = []
            self._add(self._router.routes, "", 0, by_id, keep)
            self._by_id, self._keep = by_id, keep
            self._built = time.monotonic()

    def _add(
        self,
        routes: Sequence[Any],
        prefix: str,
        depth: int,
        by_id: dict[int, list[_Template]],
        keep: list[object],
    ) -> None:
        if depth > _INDEX_MAX_DEPTH:
            return
        for original, path, route in _route_entries(routes):
            if len(keep) >= _INDEX_MAX_TEMPLATES:
                return
            try:
                if isinstance(original, Host):
                    self._add(getattr(route, "routes", ()), prefix, depth + 1, by_id, keep)
                    continue
                if not isinstance(path, str):
                    continue
                if isinstance(original, Mount):
                    inner = getattr(route, "routes", None) or ()
                    template = _Template(
                        prefix + path + "/{path:path}", mount=True, router_mount=bool(inner)
                    )
                    keys = (original, getattr(original, "app", None), getattr(route, "app", None))
                    self._key(template, keys, by_id, keep)
                    self._add(inner, prefix + path, depth + 1, by_id, keep)
                else:
                    endpoint = getattr(route, "endpoint", None)
                    self._key(_Template(prefix + path), (original, endpoint), by_id, keep)
            except Exception as exc:  # a route this walk cannot read: the fallback names it
                failed("route-index", exc)

    @staticmethod
    def _key(
        template: _Template,
        keys: Iterable[object],
        by_id: dict[int, list[_Template]],
        keep: list[object],
    ) -> None:
        for key in dict.fromkeys(id(k) for k in keys if k is not None):
            by_id.setdefault(key, []).append(template)
        keep.extend(k for k in keys if k is not None)

    def lookup(self, scope: Scope, root_path: str) -> tuple[str, bool] | None:
        """``(template, matched)``; None: something matched that the index does not know."""
        route = scope.get("route")
        endpoint = scope.get("endpoint")
        if route is None and endpoint is None:
            return UNMATCHED_ROUTE, False
        by_id = self._by_id
        found = by_id.get(id(route)) if route is not None else None
        if (found is None or found[0].mount) and endpoint is not None:
            # A mount in scope["route"] may be stale: the mounted app's router may have
            # matched a route it does not record there (FastAPI for Starlette routes).
            via_endpoint = by_id.get(id(endpoint))
            if via_endpoint is not None:
                found = via_endpoint if found is None else via_endpoint + found
        if found is None:
            return None
        template = found[0]
        if len(found) > 1:  # reachable under several prefixes: the one the path matches
            path = _route_path(scope, root_path)
            for candidate in sorted(found, key=lambda t: t.mount):
                if candidate.regex.match(path):
                    template = candidate
                    break
        if template.router_mount:  # the mounted app's own router matched nothing
            return UNMATCHED_ROUTE, False
        return template.format, True

    def rebuild_if_stale(self) -> bool:
        """Rebuild when the last build is old enough (routes added later); True: rebuilt."""
        if time.monotonic() - self._built < _INDEX_REBUILD_S:
            return False
        self._build()
        return True


def _route_path(scope: Scope, root_path: str) -> str:
    """The path below ``root_path``, as Starlette's routers match it."""
    path = str(scope.get("path", ""))
    if root_path and path.startswith(root_path):
        if path == root_path:
            return ""
        if path[len(root_path)] == "/":
            return path[len(root_path) :]
    return path


def _find_router(app: Any) -> Router | None:
    """The router below ``app``, following ``.app`` through the middleware stack."""
    for _ in range(32):
        if isinstance(app, Router):
            return app
        router = getattr(app, "router", None)
        if isinstance(router, Router):
            return router
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _redacted_path(path: str) -> str:
    """``path`` with segments that may hold ids (a digit, an @, long) as ``{id}``."""
    return _ID_SEGMENT.sub("{id}", path[:MAX_PATH_CHARS])


def unmatched_path(scope: Scope, root_path: str) -> str:
    """The path of an unmatched request as recorded: below ``root_path``, redacted."""
    return _redacted_path(_route_path(scope, root_path))


class RouteNamer:
    """Names what routing chose for the connections of one app (one per middleware).

    The route index is searched for lazily, below ``app`` (through the middleware stack)
    or on the scope's app, at the first connection.
    """

    __slots__ = ("_app", "_index", "_searched", "record_unmatched_paths")

    def __init__(self, app: Any, *, record_unmatched_paths: bool) -> None:
        self._app = app
        self._index: _RouteIndex | None = None
        self._searched = False
        #: Add the redacted ``path`` of unmatched requests to their events.
        self.record_unmatched_paths = record_unmatched_paths

    def route(self, scope: Scope, root_path: str) -> tuple[str, bool]:
        """``(template, matched)`` of what routing chose for this connection (it may raise:
        the callers guard it)."""
        if not self._searched:
            self._searched = True
            router = _find_router(self._app) or getattr(scope.get("app"), "router", None)
            if isinstance(router, Router):
                self._index = _RouteIndex(router)
        index = self._index
        if index is not None:
            found = index.lookup(scope, root_path)
            if found is None and index.rebuild_if_stale():
                found = index.lookup(scope, root_path)
            if found is not None:
                return found
        elif scope.get("route") is None and scope.get("endpoint") is None:
            return UNMATCHED_ROUTE, False
        # Matched, but not through the index: the route's own template (no prefix).
        fmt = getattr(scope.get("route"), "path_format", None)
        return (fmt if isinstance(fmt, str) else UNMATCHED_ROUTE), True

    def data(self, scope: Scope, root_path: str) -> dict[str, Any]:
        """``{"route", "matched"}`` and, when recorded, the unmatched ``path``."""
        route, matched = self.route(scope, root_path)
        data: dict[str, Any] = {"route": route, "matched": matched}
        if not matched and self.record_unmatched_paths:
            data["path"] = unmatched_path(scope, root_path)
        return data
