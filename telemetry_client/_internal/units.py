"""Human-friendly sizes and durations for configuration values.

Operators write ``256MiB`` or ``500ms`` in environment variables; the rest of the package only
sees bytes (``int``) and seconds (``float``). Parsing is strict and errors show valid forms,
because a silently misread cap is worse than a clear startup error.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

__all__ = ["format_size", "parse_duration_s", "parse_size"]

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_SIZE_RE = re.compile(rf"{_NUMBER}\s*([a-z]*)", re.IGNORECASE)
_DURATION_RE = re.compile(rf"{_NUMBER}\s*(ms|s|m|h)?", re.IGNORECASE)

# KB/MB/GB/TB are decimal (SI), KiB/MiB/GiB/TiB binary (IEC); the trailing "B" is optional.
_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _power, _prefix in enumerate("kmgt", start=1):
    _SIZE_UNITS[_prefix] = _SIZE_UNITS[_prefix + "b"] = 1000**_power
    _SIZE_UNITS[_prefix + "i"] = _SIZE_UNITS[_prefix + "ib"] = 1024**_power

_DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

_SIZE_HINT = "expected a size like 1048576, 256MiB or 1.5GB"


def _duration_hint(default_unit: str) -> str:
    return f"expected a duration like 250ms, 1.5s, 2m or 1h (a bare number is in {default_unit})"


def parse_size(value: object) -> int:
    """Return a byte count from an int/float or a string such as ``"256 MiB"`` or ``"1.5GB"``."""
    if isinstance(value, bool):
        raise ValueError(_SIZE_HINT)
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(_SIZE_HINT)
        amount = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _SIZE_RE.fullmatch(text)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError("must not be negative" if text.startswith("-") else _SIZE_HINT)
        amount = Decimal(match.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ValueError(_SIZE_HINT)
    if amount < 0:
        raise ValueError("must not be negative")
    return int(amount.to_integral_value())  # "1.3MiB" is not a whole number of bytes: round


def parse_duration_s(value: object, default_unit: str = "s") -> float:
    """Return seconds from a number (in ``default_unit``) or a string like ``"500ms"``/``"2m"``."""
    if default_unit not in _DURATION_UNITS:
        raise ValueError(f"default_unit must be one of {', '.join(_DURATION_UNITS)}")
    hint = _duration_hint(default_unit)
    if isinstance(value, bool):
        raise ValueError(hint)
    if isinstance(value, (int, float)):
        seconds = float(value) * _DURATION_UNITS[default_unit]
    elif isinstance(value, str):
        text = value.strip()
        match = _DURATION_RE.fullmatch(text)
        if match is None:
            raise ValueError("must not be negative" if text.startswith("-") else hint)
        unit = (match.group(2) or default_unit).lower()
        seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    else:
        raise ValueError(hint)
    if not math.isfinite(seconds):
        raise ValueError(hint)
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def format_size(n: int) -> str:
    """Render a byte count for humans in binary units: ``512 B``, ``64 KiB``, ``1.2 MiB``."""
    sign, size = ("-" if n < 0 else ""), abs(n)
    if size < 1024:
        return f"{sign}{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if round(value, 1) < 1024 or unit == "TiB":
            break
    return f"{sign}{value:.1f}".removesuffix(".0") + f" {unit}"
