"""The one configuration object, read from ``TELEMETRY_*`` variables (README, "Configuration").

Precedence: constructor arguments > environment > defaults; an empty variable counts as unset.
Any invalid value raises :class:`ConfigError` naming the variable and the offending value, never a
pydantic exception, because operators meet these at startup and as the CLI's exit-2 line; the
message also says how to switch telemetry off, since a telemetry setting should never be what
keeps an app down. The token is never echoed, not even when it is the invalid value.
``DO_NOT_TRACK`` fails closed: any value except ``0/false/no/off`` disables, since it is a
cross-tool privacy switch we don't own.

Disabled means disabled: when ``TELEMETRY_ENABLED`` (or ``DO_NOT_TRACK``) turns telemetry off,
invalid values of the other settings do not raise. They fall back to their defaults (valid ones
are kept, so ``status`` still shows the configured spool) and one warning per process names them
(:attr:`TelemetrySettings.ignored_problems` lists them too).

Each value is parsed and checked by ``_internal/setting_values.py``; this module names the
variable and the value in the error.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from telemetry_client._internal import setting_values as sv
from telemetry_client._internal.log import logger
from telemetry_client.errors import ConfigError

__all__ = ["TelemetrySettings"]

KiB, MiB = 1024, 1024**2
_CROSS_FIELD = "telemetry_cross_field"
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_warned: set[str] = set()  # warnings about ignored settings already logged by this process


class _Problem(NamedTuple):
    """One invalid setting: what the operator reads, and what to drop to retry without it."""

    variable: str | None  # the environment variable, None for an unknown argument
    text: str  # "VARIABLE=value: reason" (the token shown as <redacted>)
    fields: tuple[str, ...] = ()  # the fields involved (two for a cross-field rule)
    unknown_key: str | None = None  # an argument that is no setting at all


def _otlp_headers(value: Any) -> SecretStr | None:
    """``key=value,key2=value2`` (values URL-encoded, as ``OTEL_EXPORTER_OTLP_HEADERS``)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or not (text := str(value).strip()):
        return None
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, _ = item.partition("=")
        if not sep or not _HEADER_NAME.fullmatch(key.strip()):
            raise ValueError("expected key=value pairs separated by commas (HTTP header names)")
    return SecretStr(text)


def _os_user() -> str:
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no $USER and no passwd entry (containers): OSError/KeyError by version
        return "unknown"


class TelemetrySettings(BaseSettings):
    """Client configuration; see the README for each ``TELEMETRY_*`` variable and its default."""

    model_config = SettingsConfigDict(
        env_prefix="TELEMETRY_",
        env_ignore_empty=True,
        frozen=True,
        extra="forbid",
    )

    enabled: Annotated[bool, BeforeValidator(sv.boolean)] = True
    do_not_track: Annotated[bool, BeforeValidator(sv.do_not_track)] = Field(
        # Both choices resolve to the DO_NOT_TRACK variable (lookup is case-insensitive); the
        # alias keeps TELEMETRY_DO_NOT_TRACK from being read and still allows do_not_track=...
        default=False,
        validation_alias=AliasChoices("do_not_track", "DO_NOT_TRACK"),
    )
    endpoint: Annotated[str | None, BeforeValidator(sv.url)] = None
    attachments_endpoint: Annotated[str | None, BeforeValidator(sv.url)] = None
    token: Annotated[SecretStr | None, BeforeValidator(sv.token)] = None
    user_id: Annotated[str, BeforeValidator(sv.required_text)] = Field(default_factory=_os_user)
    app: Annotated[str, BeforeValidator(sv.app_name)] = "default"
    app_version: Annotated[str | None, BeforeValidator(sv.optional_text)] = None
    session_id: Annotated[str | None, BeforeValidator(sv.optional_text)] = None
    machine_id: Annotated[str | None, BeforeValidator(sv.optional_text)] = None
    spool_dir: Annotated[Path | None, BeforeValidator(sv.directory)] = None
    spool_max_bytes: Annotated[int, sv.size(64 * KiB)] = 256 * MiB
    retention_days: Annotated[float, sv.number(zero_ok=False)] = 7.0
    batch_max_events: Annotated[int, sv.integer(1, 100_000)] = 1000
    batch_max_bytes: Annotated[int, sv.size(KiB, 64 * MiB)] = 4 * MiB  # uncompressed JSONL
    linger_ms: Annotated[int, sv.duration(1, 1000, "ms")] = 250
    inline_max_bytes: Annotated[int, sv.size(256)] = 64 * KiB
    attachment_max_bytes: Annotated[int, sv.size(256)] = 32 * MiB
    upload_timeout: Annotated[float, sv.duration(0.1, 600, "s")] = 10.0
    # The changes panel's journal (docs/changes.md): bytes of before-contents and diffs kept
    # for review and revert; the oldest lose theirs first. 0 keeps none (list only).
    changes_max_bytes: Annotated[int, sv.size(0)] = 32 * MiB
    # OTLP/HTTP export (docs/otlp.md): a base URL (<base>/v1/traces, <base>/v1/logs),
    # headers as OTEL_EXPORTER_OTLP_HEADERS (secret: never shown), one request's timeout.
    otlp_endpoint: Annotated[str | None, BeforeValidator(sv.url)] = None
    otlp_headers: Annotated[SecretStr | None, BeforeValidator(_otlp_headers)] = None
    otlp_timeout: Annotated[float, sv.duration(0.1, 600, "s")] = 10.0
    shutdown_timeout: Annotated[float, sv.duration(0, 600, "s")] = 5.0
    upload_compression: Annotated[Literal["zstd", "gzip"], sv.choice("zstd", "gzip")] = "zstd"
    upload_backoff_initial: Annotated[float, sv.duration(0.001, 3600, "s")] = 0.5
    upload_backoff_max: Annotated[float, sv.duration(0.001, 86400, "s")] = 60.0
    retry_after_max: Annotated[float, sv.duration(0, 86400, "s")] = 600.0
    auth_pause: Annotated[float, sv.duration(0.001, 86400, "s")] = 300.0
    replay_rate: Annotated[float, sv.number(zero_ok=True)] = 10.0
    buffer_max_events: Annotated[int, sv.integer(100, 10_000_000)] = 4_000
    fsync: Annotated[Literal["batch", "off"], sv.choice("batch", "off")] = "batch"
    redact: Annotated[bool, BeforeValidator(sv.boolean)] = True
    redact_patterns: Annotated[list[str], NoDecode, BeforeValidator(sv.redact_patterns)] = Field(
        default_factory=list
    )
    redact_keys: Annotated[list[str], NoDecode, BeforeValidator(sv.redact_keys)] = Field(
        default_factory=list
    )
    log_cooldown_s: Annotated[float, sv.duration(0, None, "s")] = 60.0

    _ignored: tuple[str, ...] = PrivateAttr(default=())

    def __init__(self, **values: Any) -> None:
        problems = self._build(values)
        if not problems:
            return
        ignored = self._build_disabled(values, problems)
        if ignored is not None:
            self._ignored = tuple(p.text for p in ignored)
            _warn_ignored(
                self._ignored, "DO_NOT_TRACK" if self.do_not_track else "TELEMETRY_ENABLED"
            )
            return
        # Raised here, outside any except block, so the pydantic error (which embeds raw
        # input, possibly the token) is not even kept as __context__.
        how = "pass enabled=False" if "enabled" in values else "set TELEMETRY_ENABLED=0"
        message = "; ".join(p.text for p in problems) + f" (or {how} to disable telemetry)"
        raise ConfigError(message, variable=problems[0].variable)

    def _build(self, values: Mapping[str, Any]) -> list[_Problem]:
        """Validate ``values`` + environment into ``self``; the problems, empty on success."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            return _describe(exc, values)
        except SettingsError as exc:  # a source failed before validation (e.g. JSON decoding)
            return [_describe_settings_error(exc)]
        return []

    def _build_disabled(
        self, values: Mapping[str, Any], problems: list[_Problem]
    ) -> list[_Problem] | None:
        """Retry with every failing setting at its default; every problem if that gives
        disabled settings, else None (the caller raises).

        An invalid kill switch falls back to its default too (enabled, tracking allowed), so it
        only ends up disabled when the other switch says so. Each round drops at least one more
        field (a cross-field rule is only checked once the single fields are valid), so the
        loop ends; a problem naming no field (an unparsable source) gives up.
        """
        found = list(problems)
        while True:
            failed = {field for p in found for field in p.fields}
            unknown = {p.unknown_key for p in found}
            retry = {
                k: v
                for k, v in values.items()
                if k not in unknown and _FIELD_BY_KEY.get(k) not in failed
            }
            for field in failed:
                retry[field] = type(self).model_fields[field].get_default(call_default_factory=True)
            more = self._build(retry)
            if not more:
                return None if self.active else found
            if not ({f for p in more for f in p.fields} - failed) and all(
                p.unknown_key is None for p in more
            ):
                return None
            found += more

    @model_validator(mode="after")
    def _check_cross_field(self) -> TelemetrySettings:
        if self.attachment_max_bytes < self.inline_max_bytes:
            raise PydanticCustomError(
                _CROSS_FIELD,
                "{reason}",
                {
                    "fields": ("attachment_max_bytes", "inline_max_bytes"),
                    "reason": f"TELEMETRY_ATTACHMENT_MAX_BYTES={self.attachment_max_bytes} must be"
                    f" >= TELEMETRY_INLINE_MAX_BYTES={self.inline_max_bytes}: a field moved out"
                    " of an event must fit in an attachment",
                },
            )
        if self.upload_backoff_max < self.upload_backoff_initial:
            raise PydanticCustomError(
                _CROSS_FIELD,
                "{reason}",
                {
                    "fields": ("upload_backoff_max", "upload_backoff_initial"),
                    "reason": f"TELEMETRY_UPLOAD_BACKOFF_MAX={self.upload_backoff_max:g}s must be"
                    f" >= TELEMETRY_UPLOAD_BACKOFF_INITIAL={self.upload_backoff_initial:g}s",
                },
            )
        return self

    @classmethod
    def env_var(cls, field: str) -> str:
        """The environment variable that sets ``field`` (``do_not_track`` -> ``DO_NOT_TRACK``)."""
        if field not in cls.model_fields:
            raise KeyError(field)
        return "DO_NOT_TRACK" if field == "do_not_track" else f"TELEMETRY_{field.upper()}"

    @property
    def active(self) -> bool:
        """True unless disabled by ``TELEMETRY_ENABLED`` or ``DO_NOT_TRACK``."""
        return self.enabled and not self.do_not_track

    @property
    def ignored_problems(self) -> tuple[str, ...]:
        """Invalid settings ignored (left at their defaults) because telemetry is disabled.

        One ``"VARIABLE=value: reason"`` line each (the token's value never shown); empty
        when every setting was valid.
        """
        return self._ignored

    @property
    def resolved_attachments_endpoint(self) -> str | None:
        """The attachments URL: the setting, else the endpoint's sibling ``.../attachments``."""
        if self.attachments_endpoint or not self.endpoint:
            return self.attachments_endpoint
        return self._sibling_url("attachments")

    def _sibling_url(self, name: str) -> str:
        assert self.endpoint is not None
        parts = urlsplit(self.endpoint)
        parent = parts.path.rstrip("/").rpartition("/")[0]
        parts = parts._replace(path=f"{parent}/{name}", fragment="")
        return urlunsplit(parts)

    @property
    def resolved_spool_dir(self) -> Path:
        """The spool directory: the setting, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)/app."""
        if self.spool_dir is not None:
            return self.spool_dir.expanduser()
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        # The XDG spec says to ignore a relative value.
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
        return base / "telemetry-client" / self.app


_FIELD_BY_KEY: dict[str, str] = {name: name for name in TelemetrySettings.model_fields}
_FIELD_BY_KEY["DO_NOT_TRACK"] = "do_not_track"


def _show(field: str, value: object) -> str:
    if field in ("token", "otlp_headers"):
        return "<redacted>"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _describe(exc: ValidationError, arguments: Mapping[str, Any]) -> list[_Problem]:
    problems: list[_Problem] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        if error["type"] == _CROSS_FIELD:
            fields = tuple(ctx["fields"])
            variable = TelemetrySettings.env_var(fields[0])
            problems.append(_Problem(variable, str(ctx["reason"]), fields))
            continue
        key = str(error["loc"][0]) if error["loc"] else ""
        field = _FIELD_BY_KEY.get(key)
        if field is None:  # the value of an unknown argument may be a secret: don't show it
            problems.append(_Problem(None, f"unknown setting {key!r}", unknown_key=key))
            continue
        reason = str(ctx["error"]) if error["type"] == "value_error" else error["msg"]
        variable = TelemetrySettings.env_var(field)
        given = [k for k in arguments if _FIELD_BY_KEY.get(k) == field]
        origin = f" (argument {given[0]})" if given else ""
        text = f"{variable}={_show(field, error['input'])}{origin}: {reason}"
        problems.append(_Problem(variable, text, (field,)))
    return problems


def _describe_settings_error(exc: SettingsError) -> _Problem:
    match = re.search(r'field "(\w+)"', str(exc))
    field = _FIELD_BY_KEY.get(match.group(1)) if match else None
    if field is None:
        return _Problem(None, f"invalid configuration: {exc}")
    variable = TelemetrySettings.env_var(field)
    raw = {k.upper(): v for k, v in os.environ.items()}.get(variable)
    return _Problem(variable, f"{variable}={_show(field, raw)}: could not be parsed", (field,))


def _warn_ignored(problems: tuple[str, ...], switch: str) -> None:
    """One warning per process and set of problems: a disabled app must still start, but its
    operator should learn that the configuration will fail once telemetry is switched on."""
    message = (
        f"telemetry is disabled ({switch}), so these invalid settings are ignored and left at"
        f" their defaults: {'; '.join(problems)}"
    )
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)
