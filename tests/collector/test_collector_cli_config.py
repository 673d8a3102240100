"""``telemetry-collector`` configuration of 0.2: token files with roles, database flags.

Error messages name the flag, variable or file line and the bad value, and never show a
token or a database password (the CLI runs as a real subprocess where output matters).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from telemetry_client.collector import CollectorConfig, _serve
from telemetry_client.collector._auth import Principal, TokenAuth, TokenSpec, parse_token_file

SECRET = "SECRETPW"  # noqa: S105 - a fake password that must never be printed
HANG_BOUND_S = 120  # a hang bound only


def _env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_COLLECTOR_")}
    env.update(variables)
    return env


def _config(argv: list[str], **environ: str) -> Any:
    args = _serve._parser().parse_args(["--data-dir", "/tmp/unused", *argv])
    return _serve.config_from_args(args, environ)


def _cli(*argv: str, **environ: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telemetry_client.collector", *argv],
        capture_output=True,
        text=True,
        env=_env(**environ),
        timeout=HANG_BOUND_S,
        check=False,
    )


# -- token files -------------------------------------------------------------------------


def test_token_file_lines_give_names_roles_and_teams(tmp_path: Path) -> None:
    """Bare lines are token-N (ingest+read, no team) after the --token ones; named lines
    carry their roles and team; comments and blank lines are skipped."""
    path = tmp_path / "tokens"
    path.write_text(
        "# ops tokens\n"
        "bare-one\n"
        "\n"
        "  tok-red-in  name=red-ci   roles=ingest   team=red \n"
        "tok-red-read name=red-dash roles=read,ingest team=red\n"
        "tok-admin name=root roles=admin\n"
        "bare-two\n"
    )
    config = _config(["--token", "flag-tok", "--token-file", str(path)])
    assert config.tokens == ("flag-tok", "bare-one", "bare-two")
    auth = TokenAuth([*config.tokens, *config.principals])
    assert list(auth.principals) == [
        Principal("token-1", frozenset({"ingest", "read"})),
        Principal("token-2", frozenset({"ingest", "read"})),
        Principal("token-3", frozenset({"ingest", "read"})),
        Principal("red-ci", frozenset({"ingest"}), "red"),
        Principal("red-dash", frozenset({"read", "ingest"}), "red"),
        Principal("root", frozenset({"admin"})),
    ]
    assert auth.principal("Bearer tok-red-in") == Principal("red-ci", frozenset({"ingest"}), "red")
    assert auth.principal("Bearer bare-two") == Principal("token-3", frozenset({"ingest", "read"}))
    assert auth.principal("Bearer tok-red-i") is None


BAD_LINES = [
    ("tok-a name=x", "line 2: missing roles="),
    ("tok-a roles=read", "line 2: missing name="),
    ("tok-a name=x roles=write", "line 2: roles='write': expected one or more of"),
    ("tok-a name=x roles=", "line 2: roles='': expected one or more of"),
    ("tok-a name=x roles=read colour=red", "line 2: 'colour=red' is not name=NAME"),
    ("tok-a name=x roles=read extra", "line 2: expected TOKEN or TOKEN name=NAME"),
    ("tok-a name=x name=y roles=read", "line 2: name= given twice"),
    ("tok-a name=../x roles=read", "line 2: name='../x': expected 1-64 of"),
    ("tok-a name=x roles=read team=", "line 2: team='': expected 1-64 of"),
    ("tok\x7fa name=x roles=read", "line 2: tokens: every token must be non-empty visible ASCII"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES, ids=[m for _, m in BAD_LINES])
def test_a_malformed_token_file_line_names_the_file_and_line_never_the_token(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "tokens"
    path.write_text("# first line is a comment\n" + line + "\n")
    with pytest.raises(ValueError) as caught:
        _config(["--token-file", str(path)])
    text = str(caught.value)
    assert text.startswith(f"--token-file {path} {message}"), text
    assert "tok-a" not in text
    assert "tok\x7fa" not in text


def test_duplicate_names_or_tokens_are_refused_without_showing_the_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("tok-1 name=ci roles=ingest\ntok-2 name=ci roles=read\n")
    with pytest.raises(ValueError, match="two tokens are named 'ci'"):
        _config(["--token-file", str(path)])
    path.write_text("tok-1 name=ci roles=ingest\n")
    with pytest.raises(ValueError, match="the token of 'ci' is configured twice") as caught:
        _config(["--token", "tok-1", "--token-file", str(path)])
    assert "tok-1" not in str(caught.value)
    assert "tok-1" not in repr(parse_token_file("tok-1 name=ci roles=read\n", "f"))


def test_a_bad_token_file_exits_2_naming_the_line(tmp_path: Path) -> None:
    """The CLI prints one line naming the file and line number, and not the token."""
    path = tmp_path / "tokens"
    path.write_text(f"{SECRET}-token name=ci roles=everything\n")
    done = _cli("--port", "0", "--data-dir", str(tmp_path / "d"), "--token-file", str(path))
    assert done.returncode == 2
    assert done.stderr == (
        f"telemetry-collector: --token-file {path} line 1: roles='everything': expected one"
        " or more of ingest, read, admin (comma-separated)\n"
    )
    assert SECRET not in done.stdout + done.stderr


def test_config_takes_principals_and_refuses_other_items(tmp_path: Path) -> None:
    spec = TokenSpec("tok-9", "nine", frozenset({"read"}))
    assert CollectorConfig(data_dir=tmp_path, principals=[spec]).tokens == ()
    with pytest.raises(TypeError, match="principals: expected TokenSpec items"):
        CollectorConfig(data_dir=tmp_path, principals=["tok-9"])  # type: ignore[list-item]
    assert "tok-9" not in repr(CollectorConfig(data_dir=tmp_path, principals=[spec]))


# -- database, retention ---------------------------------------------------------------


def test_database_and_retention_settings_from_flags_and_environment() -> None:
    assert _config(["--token", "t"]).database_url is None
    assert _config(["--token", "t"]).retention_days == 30
    url = "postgresql://u:pw@db.example:5432/telemetry"
    assert _config(["--token", "t", "--database-url", url]).database_url == url
    env = {"TELEMETRY_COLLECTOR_DATABASE_URL": "sqlite:///var/lib/c.db"}
    assert _config(["--token", "t"], **env).database_url == "sqlite:///var/lib/c.db"
    assert _config(["--token", "t", "--database-url", url], **env).database_url == url
    assert _config(["--token", "t", "--retention-days", "0"]).retention_days == 0
    env = {"TELEMETRY_COLLECTOR_RETENTION_DAYS": "7"}
    assert _config(["--token", "t"], **env).retention_days == 7
    config = _config(["--token", "t", "--db-pool-size", "9", "--db-statement-timeout", "2.5"])
    assert (config.db_pool_size, config.db_statement_timeout_s) == (9, 2.5)


BAD_SETTINGS = [
    (["--retention-days", "-1"], {}, "--retention-days='-1': expected a whole number >= 0"),
    (["--retention-days", "week"], {}, "--retention-days='week': expected a whole number"),
    (
        [],
        {"TELEMETRY_COLLECTOR_RETENTION_DAYS": "1.5"},
        "TELEMETRY_COLLECTOR_RETENTION_DAYS='1.5': expected a whole number >= 0",
    ),
    (["--db-pool-size", "0"], {}, "--db-pool-size='0': expected a whole number >= 1"),
    (["--db-statement-timeout", "0"], {}, "--db-statement-timeout='0': expected > 0"),
    (["--db-statement-timeout", "nan"], {}, "--db-statement-timeout='nan': expected a number"),
    (
        ["--database-url", f"mysql://root:{SECRET}@h/x"],
        {},
        "--database-url: 'mysql://root:***@h/x' is not sqlite:///ABSOLUTE/PATH.db",
    ),
    (
        [],
        {"TELEMETRY_COLLECTOR_DATABASE_URL": f"sqlite://rel/{SECRET}.db"},
        "TELEMETRY_COLLECTOR_DATABASE_URL: 'sqlite://rel/",
    ),
]


@pytest.mark.parametrize(("argv", "environ", "message"), BAD_SETTINGS)
def test_bad_database_settings_name_the_flag_or_variable(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        _config(["--token", "t", *argv], **environ)
    assert str(caught.value).startswith(message), str(caught.value)
    if "://" in message and "root" in message:
        assert SECRET not in str(caught.value)


def test_config_validation_names_the_field_and_hides_the_password(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"retention_days: .* got -3"):
        CollectorConfig(data_dir=tmp_path, tokens=["t"], retention_days=-3)
    with pytest.raises(ValueError, match=r"db_pool_size: .* got 0"):
        CollectorConfig(data_dir=tmp_path, tokens=["t"], db_pool_size=0)
    with pytest.raises(ValueError, match=r"db_statement_timeout_s: .* got inf"):
        CollectorConfig(data_dir=tmp_path, tokens=["t"], db_statement_timeout_s=float("inf"))
    with pytest.raises(ValueError, match=r"database_url: 'redis://u:\*\*\*@h/0'") as caught:
        CollectorConfig(data_dir=tmp_path, tokens=["t"], database_url=f"redis://u:{SECRET}@h/0")
    assert SECRET not in str(caught.value)
    config = CollectorConfig(
        data_dir=tmp_path, tokens=["t"], database_url=f"postgresql://u:{SECRET}@h/db"
    )
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    "how",
    ["flag", "variable", "bad-scheme", "argparse-error"],
)
def test_the_cli_never_prints_a_database_password(tmp_path: Path, how: str) -> None:
    """An unreachable PostgreSQL (port 1), a bad scheme or an argparse error quoting the
    URL: exit 1 or 2 with a message, and the password is nowhere in the output."""
    url = f"postgresql://u:{SECRET}@127.0.0.1:1/x"
    base = ["--port", "0", "--data-dir", str(tmp_path / "d"), "--token", "t"]
    environ: dict[str, str] = {}
    expected = 1
    if how == "flag":
        argv = [*base, "--database-url", url]
    elif how == "variable":
        argv, environ = base, {"TELEMETRY_COLLECTOR_DATABASE_URL": url}
    elif how == "bad-scheme":
        argv, expected = [*base, "--database-url", f"mysql://u:{SECRET}@h/x"], 2
    else:
        argv, expected = [*base, "--database-url", url, url], 2  # one URL too many
    done = _cli(*argv, **environ)
    assert done.returncode == expected, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip(), "no message"
    assert SECRET not in done.stderr
    assert "***" in done.stderr
    assert "Traceback" not in done.stderr
