"""Parsing and validation of ``TELEMETRY_*`` values, for :class:`TelemetrySettings`.

Each function runs before pydantic (as a ``BeforeValidator``) and raises ``ValueError``
whose text is the reason the operator reads after ``VARIABLE=value:``; the settings module
adds the variable, the value (never the token's) and how to switch telemetry off.
Factories (``size``, ``integer``, ``number``, ``choice``, ``duration``) take the bounds.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, SecretStr

from telemetry_client._internal.units import format_size, parse_duration_s, parse_size

__all__ = [
    "app_name",
    "boolean",
    "choice",
    "directory",
    "do_not_track",
    "duration",
    "integer",
    "number",
    "optional_text",
    "redact_keys",
    "redact_patterns",
    "required_text",
    "size",
    "stripped",
    "token",
    "url",
]

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_APP_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def boolean(value: Any) -> bool:
    """1/0, true/false, yes/no, on/off (any case), or a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def do_not_track(value: Any) -> bool:
    """Fails closed: any text except 0/false/no/off (or empty) means do not track."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE | {""}
    return boolean(value)


def stripped(value: Any) -> str:
    """A string, stripped."""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip()


def optional_text(value: Any) -> str | None:
    """A string, stripped; empty means unset."""
    return None if value is None else (stripped(value) or None)


def required_text(value: Any) -> str:
    """A non-empty string, stripped."""
    if not (text := stripped(value)):
        raise ValueError("must not be empty")
    return text


def url(value: Any) -> str | None:
    """An http(s) URL with a host; empty means unset."""
    if value is None or not (text := stripped(value)):
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


def token(value: Any) -> SecretStr | None:
    """A bearer token (printable ASCII, no spaces: it goes into a header), kept secret."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or not (text := stripped(value)):
        return None
    if not all("!" <= ch <= "~" for ch in text):
        raise ValueError("must be printable ASCII without spaces (it is sent as an HTTP header)")
    return SecretStr(text)


def app_name(value: Any) -> str:
    """An application name that is safe as a directory name."""
    text = stripped(value)
    if not _APP_RE.fullmatch(text) or text in {".", ".."}:
        raise ValueError("expected 1-64 characters from A-Z a-z 0-9 . _ - (not '.' or '..')")
    return text


def directory(value: Any) -> Path | None:
    """A directory path (not checked on disk); empty means unset."""
    if value is None or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)) or "\0" in str(value):
        raise ValueError("expected a directory path")
    return Path(value)


def size(low: int, high: int | None = None) -> BeforeValidator:
    """A size in bytes (``256MiB``, ``64k``, ``1000``) within [low, high]."""

    def check(value: Any) -> int:
        size = parse_size(value)
        if size < low or (high is not None and size > high):
            bound = f"between {format_size(low)} and {format_size(high)}" if high else None
            raise ValueError(f"must be {bound or f'at least {format_size(low)}'} ({size} bytes)")
        return size

    return BeforeValidator(check)


def integer(low: int, high: int) -> BeforeValidator:
    """A whole number within [low, high]."""

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


def number(*, zero_ok: bool) -> BeforeValidator:
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


def choice(*options: str) -> BeforeValidator:
    """One of ``options``, case-insensitive."""

    def check(value: Any) -> str:
        text = stripped(value).lower()
        if text not in options:
            raise ValueError("expected " + " or ".join(repr(o) for o in options))
        return text

    return BeforeValidator(check)


def duration(low: float, high: float | None, unit: Literal["ms", "s"]) -> BeforeValidator:
    """A duration (``500ms``, ``2s``, ``1m``; a bare number is in ``unit``) within bounds."""
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


def redact_keys(value: Any) -> list[str]:
    """Key names: a JSON array of strings, or comma-separated."""
    return [key.strip() for key in _string_list(value, allow_csv=True) if key.strip()]


def redact_patterns(value: Any) -> list[str]:
    """Regular expressions: a JSON array of strings, each of which must compile."""
    patterns = _string_list(value, allow_csv=False)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from None
    return patterns
