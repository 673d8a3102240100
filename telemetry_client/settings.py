"""The one configuration object, read from ``TELEMETRY_*`` variables (CONTRACT §3).

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
"""

from __future__ import annotations

import getpass
import json
import math
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

from telemetry_client._internal.log import logger
from telemetry_client._internal.units import format_size, parse_duration_s, parse_size
from telemetry_client.errors import ConfigError

__all__ = ["TelemetrySettings"]

KiB, MiB = 1024, 1024**2
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_APP_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CROSS_FIELD = "telemetry_cross_field"
_warned: set[str] = set()  # warnings about ignored settings already logged by this process


class _Problem(NamedTuple):
    """One invalid setting: what the operator reads, and what to drop to retry without it."""

    variable: str | None  # the environment variable, None for an unknown argument
    text: str  # "VARIABLE=value: reason" (the token shown as <redacted>)
    fields: tuple[str, ...] = ()  # the fields involved (two for a cross-field rule)
    unknown_key: str | None = None  # an argument that is no setting at all


def _os_user() -> str:
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no $USER and no passwd entry (containers): OSError/KeyError by version
        return "unknown"


# --- coercers: run before pydantic, raise ValueError with the reason shown to the operator ---


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _do_not_track(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE | {""}
    return _bool(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip()


def _optional_str(value: Any) -> str | None:
    return None if value is None else (_str(value) or None)


def _required_str(value: Any) -> str:
    if not (text := _str(value)):
        raise ValueError("must not be empty")
    return text


def _url(value: Any) -> str | None:
    if value is None or not (text := _str(value)):
        return None
    hint = "expected an http:// or https:// URL with a host"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValueError(hint) from None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname or " " in text:
        raise ValueError(hint)
    return text


def _token(value: Any) -> SecretStr | None:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or not (text := _str(value)):
        return None
    if not all("!" <= ch <= "~" for ch in text):
        raise ValueError("must be printable ASCII without spaces (it is sent as an HTTP header)")
    return SecretStr(text)


def _app(value: Any) -> str:
    text = _str(value)
    if not _APP_RE.fullmatch(text) or text in {".", ".."}:
        raise ValueError("expected 1-64 characters from A-Z a-z 0-9 . _ - (not '.' or '..')")
    return text


def _path(value: Any) -> Path | None:
    if value is None or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)) or "\0" in str(value):
        raise ValueError("expected a directory path")
    return Path(value)


def _size(low: int, high: int | None = None) -> BeforeValidator:
    def check(value: Any) -> int:
        size = parse_size(value)
        if size < low or (high is not None and size > high):
            bound = f"between {format_size(low)} and {format_size(high)}" if high else None
            raise ValueError(f"must be {bound or f'at least {format_size(low)}'} ({size} bytes)")
        return size

    return BeforeValidator(check)


def _integer(low: int, high: int) -> BeforeValidator:
    def check(value: Any) -> int:
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise TypeError
            number = int(value.strip()) if isinstance(value, str) else int(value)
            if number != value and not isinstance(value, str):
                raise TypeError  # 2.5 events
        except (TypeError, ValueError, OverflowError):
            raise ValueError("expected a whole number like 1000") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return BeforeValidator(check)


def _float(*, zero_ok: bool) -> BeforeValidator:
    """A finite number, > 0 (or >= 0 with ``zero_ok``, where 0 means unlimited)."""

    def check(value: Any) -> float:
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("expected a number like 7 or 0.5") from None
        if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
            bound = ">= 0 (0 = unlimited)" if zero_ok else "greater than 0"
            raise ValueError(f"must be a finite number {bound}")
        return number

    return BeforeValidator(check)


def _choice(*options: str) -> BeforeValidator:
    """One of ``options``, case-insensitive."""

    def check(value: Any) -> str:
        text = _str(value).lower()
        if text not in options:
            raise ValueError("expected " + " or ".join(repr(o) for o in options))
        return text

    return BeforeValidator(check)


def _duration(low: float, high: float | None, unit: Literal["ms", "s"]) -> BeforeValidator:
    scale = 1000.0 if unit == "ms" else 1.0

    def check(value: Any) -> float:
        amount = parse_duration_s(value, default_unit=unit) * scale
        if unit == "ms":
            amount = round(amount)
        if amount < low or (high is not None and amount > high):
            limit = (
                f"between {low:g}{unit} and {high:g}{unit}" if high else f"at least {low:g}{unit}"
            )
            raise ValueError(f"must be {limit}")
        return amount

    return BeforeValidator(check)


def _string_list(value: Any, *, allow_csv: bool) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if allow_csv and not text.startswith("["):
            return [item.strip() for item in text.split(",") if item.strip()]
        try:
            value = json.loads(text)
        except ValueError:
            value = None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        example = (
            '["api_key", "session"] or api_key,session' if allow_csv else '["sk-[A-Za-z0-9]+"]'
        )
        raise ValueError(f"expected a JSON array of strings like {example}")
    return list(value)


def _redact_keys(value: Any) -> list[str]:
    return [key.strip() for key in _string_list(value, allow_csv=True) if key.strip()]


def _redact_patterns(value: Any) -> list[str]:
    patterns = _string_list(value, allow_csv=False)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from None
    return patterns


class TelemetrySettings(BaseSettings):
    """Client configuration; see the README for each ``TELEMETRY_*`` variable and its default."""

    model_config = SettingsConfigDict(
        env_prefix="TELEMETRY_",
        env_ignore_empty=True,
        frozen=True,
        extra="forbid",
    )

    enabled: Annotated[bool, BeforeValidator(_bool)] = True
    do_not_track: Annotated[bool, BeforeValidator(_do_not_track)] = Field(
        # Both choices resolve to the DO_NOT_TRACK variable (lookup is case-insensitive); the
        # alias keeps TELEMETRY_DO_NOT_TRACK from being read and still allows do_not_track=...
        default=False,
        validation_alias=AliasChoices("do_not_track", "DO_NOT_TRACK"),
    )
    endpoint: Annotated[str | None, BeforeValidator(_url)] = None
    attachments_endpoint: Annotated[str | None, BeforeValidator(_url)] = None
    token: Annotated[SecretStr | None, BeforeValidator(_token)] = None
    user_id: Annotated[str, BeforeValidator(_required_str)] = Field(default_factory=_os_user)
    app: Annotated[str, BeforeValidator(_app)] = "default"
    app_version: Annotated[str | None, BeforeValidator(_optional_str)] = None
    session_id: Annotated[str | None, BeforeValidator(_optional_str)] = None
    machine_id: Annotated[str | None, BeforeValidator(_optional_str)] = None
    spool_dir: Annotated[Path | None, BeforeValidator(_path)] = None
    spool_max_bytes: Annotated[int, _size(64 * KiB)] = 256 * MiB
    retention_days: Annotated[float, _float(zero_ok=False)] = 7.0
    batch_max_events: Annotated[int, _integer(1, 100_000)] = 1000
    batch_max_bytes: Annotated[int, _size(KiB, 64 * MiB)] = MiB  # uncompressed JSONL
    linger_ms: Annotated[int, _duration(1, 1000, "ms")] = 250
    inline_max_bytes: Annotated[int, _size(256)] = 64 * KiB
    attachment_max_bytes: Annotated[int, _size(256)] = 32 * MiB
    upload_timeout: Annotated[float, _duration(0.1, 600, "s")] = 10.0
    shutdown_timeout: Annotated[float, _duration(0, 600, "s")] = 5.0
    upload_compression: Annotated[Literal["zstd", "gzip"], _choice("zstd", "gzip")] = "zstd"
    upload_backoff_initial: Annotated[float, _duration(0.001, 3600, "s")] = 0.5
    upload_backoff_max: Annotated[float, _duration(0.001, 86400, "s")] = 60.0
    retry_after_max: Annotated[float, _duration(0, 86400, "s")] = 600.0
    auth_pause: Annotated[float, _duration(0.001, 86400, "s")] = 300.0
    replay_rate: Annotated[float, _float(zero_ok=True)] = 10.0
    buffer_max_events: Annotated[int, _integer(100, 10_000_000)] = 10_000
    fsync: Annotated[Literal["batch", "off"], _choice("batch", "off")] = "batch"
    redact: Annotated[bool, BeforeValidator(_bool)] = True
    redact_patterns: Annotated[list[str], NoDecode, BeforeValidator(_redact_patterns)] = Field(
        default_factory=list
    )
    redact_keys: Annotated[list[str], NoDecode, BeforeValidator(_redact_keys)] = Field(
        default_factory=list
    )
    log_cooldown_s: Annotated[float, _duration(0, None, "s")] = 60.0

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

    @property
    def health_url(self) -> str | None:
        """The collector's health check: the endpoint's sibling ``.../health``."""
        return self._sibling_url("health", keep_query=False) if self.endpoint else None

    def _sibling_url(self, name: str, *, keep_query: bool = True) -> str:
        assert self.endpoint is not None
        parts = urlsplit(self.endpoint)
        parent = parts.path.rstrip("/").rpartition("/")[0]
        parts = parts._replace(path=f"{parent}/{name}", fragment="")
        return urlunsplit(parts if keep_query else parts._replace(query=""))

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
    if field == "token":
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
