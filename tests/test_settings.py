"""TelemetrySettings: defaults, precedence, parsing, and errors that name the variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from telemetry_client import settings as settings_module
from telemetry_client._internal.units import format_size, parse_duration_s, parse_size
from telemetry_client.errors import ConfigError
from telemetry_client.settings import TelemetrySettings

SECRET = "s3cr3t-TOKEN-value"  # noqa: S105 - a fake token to look for in output


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without TELEMETRY_*, DO_NOT_TRACK or XDG_CACHE_HOME set."""
    for name in list(os.environ):
        if name.upper().startswith("TELEMETRY_") or name.upper() in {
            "DO_NOT_TRACK",
            "XDG_CACHE_HOME",
        }:
            monkeypatch.delenv(name)


def config_error(**arguments: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        TelemetrySettings(**arguments)
    return info.value


# --- units ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1048576, 1048576),
        (2.0, 2),
        ("1048576", 1048576),
        ("256MiB", 256 * 1024**2),
        ("256 MiB", 256 * 1024**2),
        (" 256 mib ", 256 * 1024**2),
        ("1.5GB", 1_500_000_000),
        ("64KiB", 65536),
        ("64Ki", 65536),
        ("10kb", 10_000),
        ("10k", 10_000),
        ("2MB", 2_000_000),
        ("512B", 512),
        ("1TiB", 1024**4),
        ("0", 0),
    ],
)
def test_parse_size_accepts(text: str | int | float, expected: int) -> None:
    """Sizes accept plain bytes and decimal (KB=1000) or binary (KiB=1024) units, any case."""
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["banana", "", "-1", -1, "1.5XB", "MiB", "1 2MB", True, None, float("nan"), "1e3"]
)
def test_parse_size_rejects(text: object) -> None:
    """Negative, non-numeric, unknown-unit and boolean sizes raise ValueError with examples."""
    with pytest.raises(ValueError, match=r"size like|negative"):
        parse_size(text)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("500ms", "s", 0.5),
        ("10s", "s", 10.0),
        ("1.5s", "s", 1.5),
        ("2m", "s", 120.0),
        ("1h", "s", 3600.0),
        ("10 MS", "s", 0.01),
        ("3", "s", 3.0),
        ("250", "ms", 0.25),
        (250, "ms", 0.25),
        (1.5, "s", 1.5),
    ],
)
def test_parse_duration_accepts(value: str | float, unit: str, expected: float) -> None:
    """Durations take ms/s/m/h suffixes; a bare number is in the default unit."""
    assert parse_duration_s(value, default_unit=unit) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["soon", "-1s", -1, "1d", "250us", True, None, float("inf")])
def test_parse_duration_rejects(value: object) -> None:
    """Unknown units, negatives, booleans and non-numbers raise ValueError."""
    with pytest.raises(ValueError, match=r"duration like|negative"):
        parse_duration_s(value)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (65536, "64 KiB"),
        (1258291, "1.2 MiB"),
        (256 * 1024**2, "256 MiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    """format_size renders binary units with at most one decimal."""
    assert format_size(size) == text


# --- defaults and precedence -----------------------------------------------------------------


def test_defaults() -> None:
    """With no environment, every field has its documented default."""
    s = TelemetrySettings()
    assert s.enabled
    assert not s.do_not_track
    assert s.active
    assert s.endpoint is None
    assert s.token is None
    assert s.resolved_attachments_endpoint is None
    assert s.user_id
    assert s.app == "default"
    assert s.spool_dir is None
    assert (s.spool_max_bytes, s.batch_max_bytes) == (256 * 1024**2, 4 * 1024**2)
    assert (s.inline_max_bytes, s.attachment_max_bytes) == (64 * 1024, 32 * 1024**2)
    assert (s.retention_days, s.batch_max_events, s.linger_ms) == (7, 1000, 250)
    assert (s.upload_timeout, s.buffer_max_events, s.log_cooldown_s) == (10.0, 4_000, 60.0)
    assert (s.fsync, s.redact, s.redact_patterns, s.redact_keys) == ("batch", True, [], [])


@pytest.mark.parametrize(
    ("field", "env", "argument", "expected"),
    [
        # expected: (default, from the environment, from the argument)
        ("spool_max_bytes", "1MiB", "2MiB", (256 * 1024**2, 1024**2, 2 * 1024**2)),
        ("linger_ms", "0.5s", 100, (250, 500, 100)),
        ("upload_timeout", "500ms", 3, (10.0, 0.5, 3.0)),
        ("app", "from-env", "from-arg", ("default", "from-env", "from-arg")),
        ("enabled", "off", True, (True, False, True)),
        ("redact_keys", "a, b", ["c"], ([], ["a", "b"], ["c"])),
        ("fsync", "OFF", "batch", ("batch", "off", "batch")),
    ],
)
def test_precedence(
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    env: str,
    argument: object,
    expected: tuple[object, ...],
) -> None:
    """Arguments override environment variables, which override defaults."""
    default, from_env, from_argument = expected
    assert getattr(TelemetrySettings(), field) == default
    monkeypatch.setenv(TelemetrySettings.env_var(field), env)
    assert getattr(TelemetrySettings(), field) == from_env
    assert getattr(TelemetrySettings(**{field: argument}), field) == from_argument


def test_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty variable (e.g. TELEMETRY_ENDPOINT=) means the default, not an error."""
    monkeypatch.setenv("TELEMETRY_ENDPOINT", "")
    monkeypatch.setenv("TELEMETRY_SPOOL_MAX_BYTES", "")
    s = TelemetrySettings()
    assert s.endpoint is None
    assert s.spool_max_bytes == 256 * 1024**2
    assert TelemetrySettings(endpoint="").endpoint is None


def test_frozen() -> None:
    """Settings are immutable once built."""
    s = TelemetrySettings()
    with pytest.raises(ValueError, match="frozen"):
        s.app = "other"  # type: ignore[misc]


# --- kill switches ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "false", "FALSE", "no", "off", "Off"])
def test_enabled_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """TELEMETRY_ENABLED=0/false/no/off (any case) makes the settings inactive."""
    monkeypatch.setenv("TELEMETRY_ENABLED", value)
    s = TelemetrySettings()
    assert not s.enabled
    assert not s.active


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", "anything"])
def test_do_not_track_disables(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """DO_NOT_TRACK set to anything but a false value disables, even with TELEMETRY_ENABLED=1."""
    monkeypatch.setenv("TELEMETRY_ENABLED", "1")
    monkeypatch.setenv("DO_NOT_TRACK", value)
    s = TelemetrySettings()
    assert s.enabled
    assert s.do_not_track
    assert not s.active


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_do_not_track_false_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """DO_NOT_TRACK=0/false/no/off or empty leaves telemetry active."""
    monkeypatch.setenv("DO_NOT_TRACK", value)
    assert TelemetrySettings().active


def test_do_not_track_argument_overrides_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The do_not_track argument wins over DO_NOT_TRACK; TELEMETRY_DO_NOT_TRACK is not read."""
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    assert TelemetrySettings(do_not_track=False).active
    monkeypatch.delenv("DO_NOT_TRACK")
    monkeypatch.setenv("TELEMETRY_DO_NOT_TRACK", "1")
    assert TelemetrySettings().active


# --- validation errors -----------------------------------------------------------------------

# field -> (bad value via environment or None when every string is valid, bad argument value)
BAD_VALUES: dict[str, tuple[str | None, object]] = {
    "enabled": ("maybe", "maybe"),
    "do_not_track": (None, [1]),
    "endpoint": ("ftp://collector/api", "not a url"),
    "attachments_endpoint": ("https://", "collector.internal/attachments"),
    "token": (f"{SECRET} with spaces", f"{SECRET} x"),
    "user_id": ("   ", ""),
    "app": ("../etc", ".."),
    "app_version": (None, 1.2),
    "session_id": (None, 42),
    "machine_id": (None, ["m"]),
    "spool_dir": (None, 123),
    "spool_max_bytes": ("banana", "1KiB"),
    "retention_days": ("0", -1),
    "batch_max_events": ("0", 100_001),
    "batch_max_bytes": ("100", "65MiB"),
    "linger_ms": ("5s", 0),
    "inline_max_bytes": ("100", "lots"),
    "attachment_max_bytes": ("100", -5),
    "upload_timeout": ("0.01", "1h"),
    "otlp_endpoint": ("ftp://otel:4318", "not a url"),
    "otlp_headers": (f"{SECRET} without equals", f"Authorization Basic {SECRET}"),
    "otlp_timeout": ("0", "1d"),
    "changes_max_bytes": ("lots", "-1"),
    "shutdown_timeout": ("-1", "2h"),
    "upload_compression": ("brotli", "ZSTD!"),
    "upload_backoff_initial": ("0", "2h"),
    "upload_backoff_max": ("-5s", "2d"),
    "retry_after_max": ("-1", "soon"),
    "auth_pause": ("0s", "never"),
    "replay_rate": ("-1", "fast"),
    "buffer_max_events": ("10", "ten"),
    "fsync": ("always", "ALWAYS"),
    "redact": ("perhaps", 2),
    "redact_patterns": ('["ok", "("]', "not json"),
    "redact_keys": ("[1, 2]", [1]),
    "log_cooldown_s": ("-1s", "soon"),
}


def test_bad_values_cover_every_field() -> None:
    """The error table below exercises every setting."""
    assert set(BAD_VALUES) == set(TelemetrySettings.model_fields)


def _check_names(error: ConfigError, field: str, *, shown: str) -> None:
    variable = TelemetrySettings.env_var(field)
    assert error.variable == variable
    assert str(error).startswith(f"{variable}={shown}")
    if field in ("token", "otlp_headers"):
        assert SECRET not in str(error)
        assert SECRET not in repr(error.__context__) + repr(error.__cause__)


@pytest.mark.parametrize(
    "field", [f for f, (env, _) in BAD_VALUES.items() if env is not None], ids=str
)
def test_bad_env_value_names_variable(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    """An invalid environment value raises ConfigError naming the variable and the value."""
    bad = BAD_VALUES[field][0]
    monkeypatch.setenv(TelemetrySettings.env_var(field), str(bad))
    shown = "<redacted>" if field in ("token", "otlp_headers") else repr(bad)
    _check_names(config_error(), field, shown=shown)


@pytest.mark.parametrize("field", list(BAD_VALUES), ids=str)
def test_bad_argument_names_variable(field: str) -> None:
    """An invalid argument raises ConfigError naming the variable and the value."""
    bad = BAD_VALUES[field][1]
    shown = "<redacted>" if field in ("token", "otlp_headers") else repr(bad)
    error = config_error(**{field: bad})
    _check_names(error, field, shown=shown)
    assert f"(argument {field})" in str(error)


def test_size_error_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad size reads like the contract's example, with valid forms and the way out."""
    monkeypatch.setenv("TELEMETRY_SPOOL_MAX_BYTES", "banana")
    assert str(config_error()) == (
        "TELEMETRY_SPOOL_MAX_BYTES='banana': expected a size like 1048576, 256MiB or 1.5GB"
        " (or set TELEMETRY_ENABLED=0 to disable telemetry)"
    )


def test_several_errors_are_all_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several bad variables are all listed, separated by '; '; .variable is the first."""
    monkeypatch.setenv("TELEMETRY_BATCH_MAX_EVENTS", "x")
    monkeypatch.setenv("TELEMETRY_FSYNC", "y")
    error = config_error()
    assert error.variable == "TELEMETRY_BATCH_MAX_EVENTS"
    assert "; TELEMETRY_FSYNC='y'" in str(error)


def test_cross_field_error_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """attachment_max_bytes below inline_max_bytes is an error naming both variables."""
    monkeypatch.setenv("TELEMETRY_INLINE_MAX_BYTES", "1MiB")
    error = config_error(attachment_max_bytes="512KiB")
    assert error.variable == "TELEMETRY_ATTACHMENT_MAX_BYTES"
    assert "TELEMETRY_INLINE_MAX_BYTES=1048576" in str(error)
    assert "TELEMETRY_ATTACHMENT_MAX_BYTES=524288" in str(error)


def test_unknown_argument_is_config_error() -> None:
    """A misspelt argument raises ConfigError without echoing its (maybe secret) value."""
    error = config_error(tokne=SECRET)
    assert "tokne" in str(error)
    assert SECRET not in str(error)


def test_redact_patterns_bad_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    """A regex that does not compile is named in an error about TELEMETRY_REDACT_PATTERNS."""
    monkeypatch.setenv("TELEMETRY_REDACT_PATTERNS", r'["foo\\d+", "a(b"]')
    error = config_error()
    assert error.variable == "TELEMETRY_REDACT_PATTERNS"
    assert "pattern 'a(b' does not compile" in str(error)


def test_redact_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patterns come as a JSON array; keys as a JSON array or a comma-separated list."""
    monkeypatch.setenv("TELEMETRY_REDACT_PATTERNS", r'["foo\\d+"]')
    monkeypatch.setenv("TELEMETRY_REDACT_KEYS", '["api_key", "cookie"]')
    s = TelemetrySettings()
    assert s.redact_patterns == [r"foo\d+"]
    assert s.redact_keys == ["api_key", "cookie"]
    monkeypatch.setenv("TELEMETRY_REDACT_KEYS", "api_key, cookie,")
    assert TelemetrySettings().redact_keys == ["api_key", "cookie"]


# --- configuration errors while disabled (disabled means disabled) ---------------------------

DISABLING = [
    pytest.param({"TELEMETRY_ENABLED": "0"}, id="TELEMETRY_ENABLED=0"),
    pytest.param({"TELEMETRY_ENABLED": "off"}, id="TELEMETRY_ENABLED=off"),
    pytest.param({"DO_NOT_TRACK": "1"}, id="DO_NOT_TRACK=1"),
]
SETTINGS_LOGGER = "telemetry_client"


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which "ignored settings" warnings this process already logged."""
    monkeypatch.setattr(settings_module, "_warned", set(), raising=False)


def _ignored_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == SETTINGS_LOGGER and r.levelname == "WARNING" and "ignored" in r.getMessage()
    ]


@pytest.mark.parametrize("disabling", DISABLING)
@pytest.mark.parametrize(
    "field",
    [f for f, (env, _) in BAD_VALUES.items() if env is not None and f != "enabled"],
    ids=str,
)
def test_disabled_ignores_bad_env_value(
    monkeypatch: pytest.MonkeyPatch, disabling: dict[str, str], field: str
) -> None:
    """With telemetry off, any bad TELEMETRY_* value leaves settings built, inactive, at default."""
    for name, value in disabling.items():
        monkeypatch.setenv(name, value)
    kept_field = "user_id" if field == "app" else "app"  # a valid value elsewhere is kept
    monkeypatch.setenv(TelemetrySettings.env_var(kept_field), "kept-value")
    monkeypatch.setenv(TelemetrySettings.env_var(field), str(BAD_VALUES[field][0]))
    s = TelemetrySettings()
    assert not s.active
    assert getattr(s, kept_field) == "kept-value"
    default = TelemetrySettings.model_fields[field].get_default(call_default_factory=True)
    assert getattr(s, field) == default
    assert len(s.ignored_problems) == 1
    assert s.ignored_problems[0].startswith(TelemetrySettings.env_var(field))


@pytest.mark.parametrize("field", [f for f in BAD_VALUES if f not in ("enabled", "do_not_track")])
def test_disabled_by_argument_ignores_bad_argument(field: str) -> None:
    """``TelemetrySettings(enabled=False, <bad>=...)`` does not raise either."""
    s = TelemetrySettings(enabled=False, **{field: BAD_VALUES[field][1]})
    assert not s.active
    assert [p.split("=")[0] for p in s.ignored_problems] == [TelemetrySettings.env_var(field)]


@pytest.mark.usefixtures("fresh_warnings")
def test_disabled_with_bad_values_logs_one_warning_naming_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning (also for a second construction) names every bad variable, not the token."""
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("TELEMETRY_TOKEN", f"{SECRET} with spaces")
    monkeypatch.setenv("TELEMETRY_SPOOL_MAX_BYTES", "banana")
    monkeypatch.setenv("TELEMETRY_ENDPOINT", "ftp://collector/api")
    with caplog.at_level("WARNING", logger=SETTINGS_LOGGER):
        TelemetrySettings()
        TelemetrySettings()
    (warning,) = _ignored_warnings(caplog)
    for variable in ("TELEMETRY_TOKEN", "TELEMETRY_SPOOL_MAX_BYTES", "TELEMETRY_ENDPOINT"):
        assert variable in warning
    assert "DO_NOT_TRACK" in warning
    assert "'banana'" in warning
    assert SECRET not in caplog.text


@pytest.mark.usefixtures("fresh_warnings")
def test_disabled_with_valid_values_logs_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A disabled, valid configuration is silent and has no ignored problems."""
    monkeypatch.setenv("TELEMETRY_ENABLED", "0")
    with caplog.at_level("DEBUG", logger=SETTINGS_LOGGER):
        s = TelemetrySettings()
    assert s.ignored_problems == ()
    assert caplog.records == []


def test_disabled_ignores_cross_field_problem_found_after_field_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cross-field rule (checked once single fields pass) is ignored too; both defaulted."""
    monkeypatch.setenv("TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("TELEMETRY_BATCH_MAX_EVENTS", "0")
    monkeypatch.setenv("TELEMETRY_INLINE_MAX_BYTES", "100MiB")  # above the attachment default
    s = TelemetrySettings()
    assert (s.batch_max_events, s.inline_max_bytes) == (1000, 64 * 1024)
    assert [p.split("=")[0] for p in s.ignored_problems] == [
        "TELEMETRY_BATCH_MAX_EVENTS",
        "TELEMETRY_ATTACHMENT_MAX_BYTES",
    ]


def test_disabled_ignores_unknown_argument() -> None:
    """A misspelt argument is ignored when disabled, and its value is not echoed."""
    s = TelemetrySettings(do_not_track=True, tokne=SECRET)
    assert not s.active
    assert s.ignored_problems == ("unknown setting 'tokne'",)


def test_invalid_enabled_with_do_not_track_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """TELEMETRY_ENABLED=maybe is invalid, but DO_NOT_TRACK=1 still switches telemetry off."""
    monkeypatch.setenv("TELEMETRY_ENABLED", "maybe")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    s = TelemetrySettings()
    assert not s.active
    assert s.ignored_problems[0].startswith("TELEMETRY_ENABLED='maybe'")


def test_invalid_enabled_alone_still_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreadable kill switch does not count as "off": it raises, with the way out."""
    monkeypatch.setenv("TELEMETRY_ENABLED", "maybe")
    error = config_error()
    assert error.variable == "TELEMETRY_ENABLED"
    assert str(error).endswith("(or set TELEMETRY_ENABLED=0 to disable telemetry)")


@pytest.mark.parametrize(
    "field", [f for f, (env, _) in BAD_VALUES.items() if env is not None], ids=str
)
def test_enabled_bad_env_value_says_how_to_disable(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    """Enabled with a bad value still raises; the message ends with how to switch off."""
    monkeypatch.setenv(TelemetrySettings.env_var(field), str(BAD_VALUES[field][0]))
    error = config_error()
    assert error.variable == TelemetrySettings.env_var(field)
    assert str(error).endswith(" (or set TELEMETRY_ENABLED=0 to disable telemetry)")


def test_bad_argument_with_enabled_argument_suggests_argument() -> None:
    """When the code passes ``enabled`` itself, the hint names the argument (env cannot win)."""
    error = config_error(enabled=True, batch_max_events=0)
    assert str(error).endswith(" (or pass enabled=False to disable telemetry)")


# --- the token -------------------------------------------------------------------------------


def test_token_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token is readable by code but absent from repr, str, JSON dumps and other errors."""
    monkeypatch.setenv("TELEMETRY_TOKEN", SECRET)
    s = TelemetrySettings()
    assert s.token is not None
    assert s.token.get_secret_value() == SECRET
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump())):
        assert SECRET not in text
    monkeypatch.setenv("TELEMETRY_APP", "..")
    assert SECRET not in str(config_error())


# --- derived values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "attachments"),
    [
        ("https://h/api/v1/events", "https://h/api/v1/attachments"),
        ("https://h/api/v1/events/", "https://h/api/v1/attachments"),
        ("http://h:8787/events?tenant=a", "http://h:8787/attachments?tenant=a"),
        ("https://h", "https://h/attachments"),
    ],
)
def test_attachments_endpoint_sibling(endpoint: str, attachments: str) -> None:
    """Without an attachments endpoint, the endpoint's last path segment becomes 'attachments'."""
    assert TelemetrySettings(endpoint=endpoint).resolved_attachments_endpoint == attachments


def test_attachments_endpoint_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit TELEMETRY_ATTACHMENTS_ENDPOINT is used as is."""
    monkeypatch.setenv("TELEMETRY_ENDPOINT", "https://h/api/v1/events")
    monkeypatch.setenv("TELEMETRY_ATTACHMENTS_ENDPOINT", "https://blobs/upload")
    assert TelemetrySettings().resolved_attachments_endpoint == "https://blobs/upload"


def test_spool_dir_from_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without TELEMETRY_SPOOL_DIR the spool is $XDG_CACHE_HOME/telemetry-client/<app>."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert TelemetrySettings(app="bot").resolved_spool_dir == tmp_path / "telemetry-client/bot"


@pytest.mark.parametrize("xdg", [None, "relative/cache"])
def test_spool_dir_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg: str | None
) -> None:
    """With XDG_CACHE_HOME unset or relative, the spool is ~/.cache/telemetry-client/<app>."""
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg is not None:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    expected = tmp_path / ".cache/telemetry-client/default"
    assert TelemetrySettings().resolved_spool_dir == expected


def test_spool_dir_explicit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """TELEMETRY_SPOOL_DIR wins over XDG and has '~' expanded."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "/elsewhere")
    monkeypatch.setenv("TELEMETRY_SPOOL_DIR", "~/spool")
    assert TelemetrySettings().resolved_spool_dir == tmp_path / "spool"
