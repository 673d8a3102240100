"""``telemetry-collector`` / ``python -m telemetry_client.collector``: startup, config, shutdown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import collector_event

from telemetry_client.collector import _serve, main

READY_RE = re.compile(r"telemetry-collector listening on (http://127\.0\.0\.1:(\d+))\n")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_COLLECTOR_")}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_prints_one_ready_line_serves_and_exits_cleanly_on_signal(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """With --port 0 it prints exactly the ready line, serves, and exits 0 on SIGTERM/SIGINT."""
    token = "cli-secret-" + os.urandom(6).hex()
    command = [sys.executable, "-m", "telemetry_client.collector", "--port", "0"]
    command += ["--data-dir", str(tmp_path / "data"), "--token", token]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        ready = READY_RE.fullmatch(proc.stdout.readline())
        assert ready, "no ready line"
        url = ready.group(1)
        assert httpx.get(f"{url}/api/v1/health").json() == {"status": "ok", "database": "ok"}
        response = httpx.post(
            f"{url}/api/v1/events",
            content=orjson.dumps(collector_event(1)) + b"\n",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
        )
        assert response.json() == {"accepted": 1, "duplicate": False}
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == ""  # the ready line was the only stdout line
    assert "POST /api/v1/events" in err  # the access log goes to stderr
    assert token not in err
    assert (tmp_path / "data" / "collector.db").stat().st_size > 0  # SQLite by default


def test_cli_without_any_token_exits_2_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --token, --token-file or TELEMETRY_COLLECTOR_TOKENS (and no --no-auth): exit 2."""
    monkeypatch.delenv(_serve.TOKENS_ENV, raising=False)
    assert main(["--port", "0", "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("telemetry-collector: no token configured:")
    assert "--token" in err
    assert "TELEMETRY_COLLECTOR_TOKENS" in err
    assert "--no-auth" in err
    assert not (tmp_path / "d").exists()


def test_two_collectors_may_serve_one_sqlite_data_dir(collector_factory: Any) -> None:
    """Two collectors on one data dir share its SQLite database: a batch retried against
    the other one is a duplicate, and each serves what the other stored."""
    first, second = collector_factory(), collector_factory()
    body = orjson.dumps(collector_event(1)) + b"\n"
    headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": "shared-1"}
    answers = []
    for handle in (first, second):
        with handle.client() as http:
            answers.append(http.post("/api/v1/events", content=body, headers=headers).json())
    assert answers == [{"accepted": 1, "duplicate": False}, {"accepted": 0, "duplicate": True}]
    assert first.query()["total"] == second.query()["total"] == 1


def _config(argv: list[str], **environ: str) -> Any:
    args = _serve._parser().parse_args(["--data-dir", "/tmp/unused", *argv])
    return _serve.config_from_args(args, environ)


def test_tokens_come_from_flags_the_environment_and_a_token_file(tmp_path: Path) -> None:
    """--token (repeatable), TELEMETRY_COLLECTOR_TOKENS (comma list) and --token-file combine."""
    token_file = tmp_path / "tokens"
    token_file.write_text("# one per line\nfile-a\n\n  file-b  \n")
    config = _config(
        ["--token", "flag-a", "--token", "flag-b", "--token-file", str(token_file)],
        TELEMETRY_COLLECTOR_TOKENS=" env-a , env-b,,flag-a",
    )
    assert config.tokens == ("flag-a", "flag-b", "env-a", "env-b", "file-a", "file-b")
    with pytest.raises(ValueError, match=r"--token-file .*missing"):
        _config(["--token-file", str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="visible ASCII"):
        _config(["--token", "has space"])


def test_no_auth_mode_needs_no_token(collector_factory: Any) -> None:
    """--no-auth (allow_no_auth) serves requests without any Authorization header."""
    assert _config(["--no-auth"]).allow_no_auth is True
    handle = collector_factory(tokens=[], allow_no_auth=True)
    assert httpx.get(handle.events_url).json() == {"events": [], "total": 0, "next_cursor": None}


def test_kill_switch_and_limits_from_flags_and_environment() -> None:
    """--disable-clients and TELEMETRY_COLLECTOR_DISABLE_SECONDS take durations, limits units."""
    assert _config(["--token", "t"]).disable_seconds is None
    assert _config(["--token", "t", "--disable-clients", "2m"]).disable_seconds == 120
    env = {"TELEMETRY_COLLECTOR_DISABLE_SECONDS": "30"}
    assert _config(["--token", "t"], **env).disable_seconds == 30
    assert _config(["--token", "t", "--disable-clients", "1.5"], **env).disable_seconds == 2
    with pytest.raises(ValueError, match="TELEMETRY_COLLECTOR_DISABLE_SECONDS='soon'"):
        _config(["--token", "t"], TELEMETRY_COLLECTOR_DISABLE_SECONDS="soon")
    limits = ["--max-body-bytes", "1MiB", "--rate-limit-rps", "0", "--max-event-bytes", "64KiB"]
    config = _config(["--token", "t", *limits])
    assert (config.max_body_bytes, config.max_event_bytes) == (1 << 20, 64 << 10)
    assert config.rate_limit_rps == 0
    assert config.max_decompressed_bytes == 256 << 20  # untouched defaults stay
