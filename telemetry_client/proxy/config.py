"""The proxy's configuration: ``TELEMETRY_PROXY_*`` variables, overridden by CLI flags.

Every value is checked here, once, at startup; a bad one raises
:class:`~telemetry_client.errors.ConfigError` naming the variable (or the flag) and the
value, so ``telemetry-client proxy`` exits 2 with one line. Keys (``--api-key``,
``TELEMETRY_PROXY_API_KEYS``, ``TELEMETRY_PROXY_UPSTREAM_API_KEY``) are never echoed, not
even when invalid. The proxy's own telemetry (spool, endpoint) is the ordinary
``TELEMETRY_*`` configuration (:class:`~telemetry_client.settings.TelemetrySettings`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from telemetry_client.errors import ConfigError

__all__ = ["DEFAULTS", "ENV", "ProxyConfig"]

MiB = 1024 * 1024

#: Field -> environment variable.
ENV: Mapping[str, str] = {
    "upstream": "TELEMETRY_PROXY_UPSTREAM",
    "host": "TELEMETRY_PROXY_HOST",
    "port": "TELEMETRY_PROXY_PORT",
    "api_keys": "TELEMETRY_PROXY_API_KEYS",
    "upstream_api_key": "TELEMETRY_PROXY_UPSTREAM_API_KEY",
    "rate_limit": "TELEMETRY_PROXY_RATE_LIMIT",
    "timeout": "TELEMETRY_PROXY_TIMEOUT",
    "max_body_bytes": "TELEMETRY_PROXY_MAX_BODY_BYTES",
    "drain_timeout": "TELEMETRY_PROXY_DRAIN_TIMEOUT",
    "provider": "TELEMETRY_PROXY_PROVIDER",
    "capture_content": "TELEMETRY_PROXY_CAPTURE_CONTENT",
    "stream_usage": "TELEMETRY_PROXY_STREAM_USAGE",
}

#: Defaults, as the README lists them.
DEFAULTS: Mapping[str, Any] = {
    "host": "127.0.0.1",
    "port": 8788,
    "rate_limit": 0,  # requests per minute per client; 0 = no limit
    "timeout": 600.0,  # seconds: connect, and each read (time to the head, gaps in a stream)
    "max_body_bytes": 32 * MiB,
    "drain_timeout": 30.0,
    "capture_content": False,
    "stream_usage": True,
}
_SECRET = frozenset(("api_keys", "upstream_api_key"))
_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("0", "false", "no", "off"))


@dataclass(frozen=True)
class ProxyConfig:
    """A checked proxy configuration (build it with :meth:`load`, or directly in tests).

    ``upstream`` is the base URL requests under ``/v1/`` are forwarded to (with its own
    version prefix: ``https://api.openai.com/v1``). ``api_keys``: keys clients must present
    (none: no auth). ``upstream_api_key`` replaces the client's key upstream.
    ``rate_limit``: requests per minute per key (per client address without keys), 0 off.
    ``timeout``: seconds to connect and for each read from the upstream (504 before the
    response head). ``max_body_bytes``: larger request bodies get 413. ``drain_timeout``:
    how long in-flight requests may go on after SIGTERM. ``provider``: the ``llm_call``
    provider (default: from the upstream host). ``capture_content``: record prompts and
    answers. ``stream_usage``: ask the upstream for usage on OpenAI streams the client did
    not ask it for (stripped from what the client gets).
    """

    upstream: str
    host: str = DEFAULTS["host"]
    port: int = DEFAULTS["port"]
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    upstream_api_key: str | None = field(default=None, repr=False)
    rate_limit: int = DEFAULTS["rate_limit"]
    timeout: float = DEFAULTS["timeout"]
    max_body_bytes: int = DEFAULTS["max_body_bytes"]
    drain_timeout: float = DEFAULTS["drain_timeout"]
    provider: str | None = None
    capture_content: bool = DEFAULTS["capture_content"]
    stream_usage: bool = DEFAULTS["stream_usage"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "upstream", _parse("upstream", self.upstream, ENV["upstream"]))

    @property
    def loopback(self) -> bool:
        """Bound to a loopback address only (the default)."""
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    @classmethod
    def load(
        cls, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ProxyConfig:
        """Environment (``TELEMETRY_PROXY_*``), then ``flags`` (non-``None`` values win).

        ``flags`` keys are the field names; ``flag_names`` in it (field -> ``--flag``) name
        them in errors. Raises :class:`ConfigError` naming the variable or flag.
        """
        env = os.environ if environ is None else environ
        given = dict(flags or {})
        names: Mapping[str, str] = given.pop("flag_names", None) or {}
        values: dict[str, Any] = {}
        for name, variable in ENV.items():
            raw = env.get(variable, "")
            if raw.strip():
                values[name] = _parse(name, raw.strip(), variable)
        for name, value in given.items():
            if name not in ENV:
                raise ConfigError(f"unknown proxy setting {name!r}")
            if value is None or value in ([], ()):
                continue
            where = names.get(name, f"--{name.replace('_', '-')}")
            values[name] = _parse(name, value, where)
        if not values.get("upstream"):
            raise ConfigError(
                f"no upstream: pass --upstream URL or set {ENV['upstream']} "
                "(e.g. https://api.openai.com/v1)"
            )
        return cls(**values)


def _shown(name: str, value: Any) -> str:
    return "<redacted>" if name in _SECRET else repr(value)


def _parse(name: str, value: Any, where: str) -> Any:
    """The checked value of field ``name`` from a string (environment) or a flag value."""
    try:
        return _PARSERS[name](value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}={_shown(name, value)}: {exc}") from None


def _url(value: Any) -> str:
    text = str(value).strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL such as https://api.openai.com/v1")
    if parts.query or parts.fragment:
        raise ValueError("the upstream URL takes no query or fragment")
    if parts.username or parts.password:
        raise ValueError(
            "credentials do not belong in the URL: use TELEMETRY_PROXY_UPSTREAM_API_KEY"
        )
    return text.rstrip("/")


def _port(value: Any) -> int:
    n = int(value)
    if not 0 <= n <= 65535:
        raise ValueError("expected a port number, 0 to 65535")
    return n


def _count(value: Any) -> int:
    n = int(value)
    if n < 0:
        raise ValueError("expected a whole number >= 0")
    return n


def _positive_int(value: Any) -> int:
    n = int(value)
    if n < 1:
        raise ValueError("expected a whole number >= 1")
    return n


def _seconds(value: Any) -> float:
    n = float(value)
    if not 0 < n <= 86_400:  # NaN fails this too
        raise ValueError("expected seconds, > 0 and <= 86400")
    return n


def _keys(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    keys = tuple(k.strip() for k in items if str(k).strip())
    if not keys:
        raise ValueError("expected one or more keys, comma-separated")
    if any(any(c.isspace() for c in k) for k in keys):
        raise ValueError("a key contains white space")
    return keys


def _secret(value: Any) -> str:
    text = str(value).strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError("expected one key without white space")
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _host(value: Any) -> str:
    text = str(value).strip()
    if not text or any(c.isspace() or c in "/?#" for c in text):
        raise ValueError("expected a host name or IP address")
    return text


def _provider(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("expected a provider name such as openai")
    return text


_PARSERS: dict[str, Any] = {
    "upstream": _url,
    "host": _host,
    "port": _port,
    "api_keys": _keys,
    "upstream_api_key": _secret,
    "rate_limit": _count,
    "timeout": _seconds,
    "max_body_bytes": _positive_int,
    "drain_timeout": _seconds,
    "provider": _provider,
    "capture_content": _bool,
    "stream_usage": _bool,
}
