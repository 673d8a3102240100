"""The README keeps its promises, checked the way a newcomer would meet them.

- Every fenced ``python`` block runs as written in a fresh interpreter (a temporary spool,
  ``TELEMETRY_ENDPOINT`` at a real collector on 127.0.0.1, ``OPENAI_BASE_URL`` at a local
  fake LLM) and what it emits reaches the collector. A block that defines a FastAPI ``app``
  is imported and each of its operations called through ``TestClient``.
- A block that cannot run standalone is preceded by ``<!-- readme-test: example PATH -->``
  and ``PATH`` (an example under ``examples/``) is run by ``tests/test_examples.py``. Keep
  such exceptions rare.
- The quickstart runs end to end: the collector started by its shell block, its program,
  its client shell block.
- Every ``telemetry-client``/``telemetry-collector`` command and flag the README mentions
  exists (``--help`` exits 0 and lists the flag); the configuration table matches
  :class:`TelemetrySettings` field for field, default for default; extras and relative
  links resolve.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CollectorHandle, child_env, wait_until

from telemetry_client import TelemetrySettings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the virtualenv's scripts, as after `. .venv/bin/activate`
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
SESSION = "readme-session"
RUN_TIMEOUT = 120  # a hang bound only


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    marker: str | None  # the ``readme-test`` comment just above the fence, if any


def _blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.search(above)
        blocks.append(
            Block(
                lang=fence.group(1),
                code="\n".join(lines[i + 1 : end]) + "\n",
                line=i + 1,
                marker=marker.group(1) if marker else None,
            )
        )
        i = end + 1
    return blocks


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole heading line) up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    following = re.search(rf"^{level} ", rest, re.M)
    return rest[: following.start()] if following else rest


def _table_rows(section: str) -> list[list[str]]:
    """Body rows of the first Markdown table in ``section`` (cells stripped; ``\\|`` kept)."""
    rows = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]
    return [row for row in cells[2:] if row]


TEXT = README.read_text(encoding="utf-8")
BLOCKS = _blocks(TEXT)
PYTHON_BLOCKS = [b for b in BLOCKS if b.lang == "python"]
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in {"bash", "sh", "shell", "console"}]


def _block_with(blocks: list[Block], needle: str) -> Block:
    found = [b for b in blocks if needle in b.code]
    assert len(found) == 1, f"expected one README block containing {needle!r}, got {len(found)}"
    return found[0]


# -- running Python blocks ------------------------------------------------------------------

_APP_DRIVER = """\
import importlib.util, json, re, sys
from fastapi.testclient import TestClient

spec = importlib.util.spec_from_file_location("readme_snippet", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
calls = []
with TestClient(module.app) as http:  # runs the app's lifespan: telemetry starts and stops
    schema = http.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            params = {
                p["name"]: "hello"
                for p in operation.get("parameters", [])
                if p["in"] == "query" and p.get("required")
            }
            url = re.sub(r"\\{[^}]+\\}", "hello", path)
            response = http.request(
                method.upper(), url, params=params, headers={"X-Session-ID": sys.argv[2]}
            )
            calls.append([method.upper(), path, response.status_code])
print(json.dumps(calls))
"""


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[Any]:
    """An OpenAI-compatible fake LLM on 127.0.0.1 for blocks that call a model."""
    from _fake_llm import serve_fake_llm

    with serve_fake_llm() as fake:
        yield fake


def _snippet_env(tmp_path: Path, collector: CollectorHandle, llm_url: str) -> dict[str, str]:
    env = child_env(
        tmp_path / "spool",
        TELEMETRY_ENDPOINT=collector.events_url,
        TELEMETRY_TOKEN=collector.token,
        OPENAI_API_KEY="sk-readme-test",
        OPENAI_BASE_URL=llm_url,
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    if not llm_url:
        del env["OPENAI_BASE_URL"]
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run_python(script: Path, *args: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"line{b.line}" for b in PYTHON_BLOCKS])
def test_python_block_runs_as_written_and_its_events_reach_the_collector(
    block: Block, tmp_path: Path, collector: CollectorHandle, request: pytest.FixtureRequest
) -> None:
    """The block exits 0 in a fresh interpreter and the collector stored events from it; a
    FastAPI app answers 2xx on every operation and its requests are recorded in the
    session sent as X-Session-ID; a marked block names an example that a test runs."""
    if block.marker is not None:
        kind, _, target = block.marker.partition(" ")
        assert kind == "example", f"unknown readme-test marker {block.marker!r}"
        assert (ROOT / target).is_file(), f"{target} does not exist"
        assert Path(target).name in (ROOT / "tests" / "test_examples.py").read_text()
        return
    llm_url = request.getfixturevalue("fake_llm").base_url if "openai" in block.code else ""
    env = _snippet_env(tmp_path, collector, llm_url)
    snippet = tmp_path / "snippet.py"
    snippet.write_text(block.code)
    if re.search(r"^app = FastAPI\(", block.code, re.M):
        driver = tmp_path / "drive_app.py"
        driver.write_text(_APP_DRIVER)
        calls = json.loads(_run_python(driver, str(snippet), SESSION, env=env, cwd=tmp_path))
        operations = [c for c in calls if c[1] != "/openapi.json"]
        assert operations, "the app defines no operation"
        assert all(200 <= status < 300 for _, _, status in operations), calls
        assert collector.query()["total"] > 0
        if "TelemetryMiddleware" in block.code:
            types = {e["type"] for e in collector.query(session_id=SESSION)["events"]}
            assert "http_request" in types
            assert types - {"http_request", "session_start"}, "the endpoint emitted nothing"
    else:
        _run_python(snippet, env=env, cwd=tmp_path)
        assert collector.query()["total"] > 0


# -- the quickstart, end to end ---------------------------------------------------------------


class _Lines:
    """Lines of a child's output, read on a thread so waiting on them has a deadline; the
    thread ends (and closes the pipe) when the child's side closes."""

    def __init__(self, stream: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        with stream:
            for line in stream:
                self._queue.put(line)

    def join(self) -> None:
        self._thread.join(RUN_TIMEOUT)

    def match(self, pattern: str) -> re.Match[str] | None:
        while not self._queue.empty():
            self.seen.append(self._queue.get_nowait())
        return next((m for line in self.seen if (m := re.search(pattern, line))), None)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """Stop the shell we started and the collector it runs (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_quickstart_delivers_its_events_to_the_collector_it_starts(tmp_path: Path) -> None:
    """The quickstart as written: the first shell block starts the collector (its port
    swapped for a free one), quickstart.py is saved from the README, the second shell block
    runs it (ok=True, nothing pending) and queries the collector, which holds the three
    events of session quickstart-1, also on disk under ./collected as the README says."""
    server = _block_with(SHELL_BLOCKS, "telemetry-collector --port 8787")
    client = _block_with(SHELL_BLOCKS, "python quickstart.py")
    program = _block_with(PYTHON_BLOCKS, "# quickstart.py")
    (tmp_path / "quickstart.py").write_text(program.code)
    env = child_env(tmp_path / "spool", XDG_CACHE_HOME=str(tmp_path / "cache"))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"

    proc = subprocess.Popen(
        ["bash", "-ec", server.code.replace("--port 8787", "--port 0")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = _Lines(proc.stdout)
    try:
        listening = wait_until(
            lambda: (
                lines.match(r"listening on http://127\.0\.0\.1:(\d+)") or proc.poll() is not None
            ),
            timeout=RUN_TIMEOUT,
            what="the collector to listen",
        )
        assert isinstance(listening, re.Match), f"collector exited: {''.join(lines.seen)}"
        port = listening.group(1)

        script = client.code.replace("8787", port)
        if shutil.which("curl") is None:  # the query is checked below over httpx anyway
            script = "\n".join(x for x in script.splitlines() if not x.startswith("curl "))
        done = subprocess.run(
            ["bash", "-ec", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "flushed: ok=True, pending=0" in done.stdout
        if "{" in done.stdout:  # the curl query's answer, pretty-printed
            answer, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{") :])
            assert answer["total"] == 3

        response = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/events",
            params={"session_id": "quickstart-1"},
            headers={"Authorization": "Bearer dev-token"},
            timeout=30,
        )
        stored = response.json()
        assert stored["total"] == 3
        assert [e["type"] for e in stored["events"]] == ["chat_turn", "tool_call", "custom_type"]
        assert {e["user_id"] for e in stored["events"]} == {"alice"}
        assert (tmp_path / "collected" / "collector.db").is_file()  # the default SQLite store
    finally:
        _stop_group(proc)
        lines.join()


# -- commands, flags, extras, settings, links -------------------------------------------------


@cache
def _help(program: str, command: str | None) -> str:
    """``program [command] --help`` output; fails the test unless it exits 0."""
    exe = BIN / program
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", _MODULES[program]]
    done = subprocess.run(
        [*argv, *([command] if command else []), "--help"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{program} {command or ''} --help: {done.stderr}"
    return done.stdout


_MODULES = {
    "telemetry-client": "telemetry_client",
    "telemetry-collector": "telemetry_client.collector",
}
_PROGRAM = re.compile(
    r"(?:^|[\s/])(telemetry-client|telemetry-collector)(?![\w-])"
    r"|python3? -m (telemetry_client(?:\.collector)?)(?![\w.])"
)
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _invocations(text: str) -> Iterator[tuple[str, str | None, list[str]]]:
    """``(program, subcommand, flags)`` for each command line in ``text``."""
    for segment in re.split(r"&&|;|\|\||(?<!\\)\|(?!\w)|\n", text):
        found = _PROGRAM.search(segment)
        if not found:
            continue
        module = found.group(2)
        program = found.group(1) or (
            "telemetry-collector" if module and module.endswith("collector") else "telemetry-client"
        )
        rest = segment[found.end() :]
        words = rest.split()
        command = None
        if program == "telemetry-client" and words and re.fullmatch(r"[a-z]+", words[0]):
            command = words[0]
        yield program, command, _FLAG.findall(rest)


def _mentioned_commands() -> list[tuple[str, str | None, list[str]]]:
    sources = [b.code for b in SHELL_BLOCKS]
    sources += re.findall(r"`([^`\n]*telemetry[-_](?:client|collector)[^`\n]*)`", TEXT)
    cli_rows = _table_rows(_section(TEXT, "### CLI"))
    sources += [row[0].strip("`") for row in cli_rows]
    return [inv for source in sources for inv in _invocations(source)]


def test_every_command_and_flag_the_readme_mentions_exists() -> None:
    """Each telemetry-client/telemetry-collector invocation in shell blocks, inline code and
    the CLI table names a real subcommand (`<program> <command> --help` exits 0) and each of
    its flags is listed in that help; the CLI table covers every subcommand."""
    invocations = _mentioned_commands()
    assert invocations
    for program, command, flags in invocations:
        usage = _help(program, command)
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", usage), (
                f"{program} {command or ''}: {flag} is not in its --help"
            )
    documented = {c for p, c, _ in invocations if p == "telemetry-client" and c}
    listed = re.search(r"\{([a-z,]+)\}", _help("telemetry-client", None))
    assert listed is not None
    table = {row[0].strip("`").split()[1] for row in _table_rows(_section(TEXT, "### CLI"))}
    assert table == set(listed.group(1).split(","))
    assert documented <= table


def test_collector_flags_in_its_section_exist() -> None:
    """Every `--flag` named in inline code in the collector section is a flag of
    telemetry-collector (its --help lists it)."""
    section = _section(TEXT, "## The reference collector")
    flags = {m.split()[0] for m in re.findall(r"`(--[\w-]+[^`]*)`", section)}
    assert {"--token", "--token-file", "--no-auth", "--disable-clients"} <= flags
    usage = _help("telemetry-collector", None)
    missing = [f for f in sorted(flags) if not re.search(rf"{re.escape(f)}(?![\w-])", usage)]
    assert not missing


def test_newcomer_commands_are_the_documented_ones_and_ci_runs_the_same_pytest() -> None:
    """The two commands a newcomer runs are in the README exactly, and .ci/run ends with
    the same pytest command."""
    setup = "python3 -m venv .venv && .venv/bin/pip install -e '.[dev,collector]'"
    codes = [b.code.strip() for b in SHELL_BLOCKS]
    assert f"{setup} && .venv/bin/telemetry-client demo" in codes
    assert f"{setup} && .venv/bin/python -m pytest -q" in codes
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pip install --quiet -e '.[dev,collector]'" in ci
    assert re.search(r"^python -m pytest -q$", ci, re.M)


def test_install_extras_named_in_the_readme_exist() -> None:
    """Every extra the README installs or names (`.[dev,collector]`, `[fastapi]`, ...) is
    declared in pyproject.toml."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    declared = set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.M))
    # extras are lower-case names; `[REDACTED]` is not one
    named = re.findall(r"\.\[([a-z][a-z0-9,_-]*)\]", TEXT)
    named += re.findall(r"`\[([a-z][a-z0-9_-]*)\]`", TEXT)
    extras = {extra for group in named for extra in group.split(",")}
    assert {"dev", "collector", "fastapi", "peers"} <= extras
    assert extras <= declared


def _settings_rows() -> dict[str, str]:
    rows = _table_rows(_section(TEXT, "### Configuration"))
    return {row[0].strip("`"): row[1] for row in rows}


def test_configuration_table_lists_every_setting_and_no_other() -> None:
    """The README's configuration table names exactly the variables TelemetrySettings
    reads, one row each."""
    rows = _table_rows(_section(TEXT, "### Configuration"))
    variables = [row[0].strip("`") for row in rows]
    expected = {TelemetrySettings.env_var(name) for name in TelemetrySettings.model_fields}
    assert len(variables) == len(set(variables))
    assert set(variables) == expected


@pytest.mark.usefixtures("clean_env")
def test_configuration_table_defaults_match_the_settings() -> None:
    """A default written as one literal parses to the field's default; "unset" is a None or
    false default; a described default (OS user name, git SHA, ...) is computed at run
    time, so the field's static default is None or a factory."""
    env_to_field = {TelemetrySettings.env_var(f): f for f in TelemetrySettings.model_fields}
    for variable, cell in _settings_rows().items():
        field = env_to_field[variable]
        info = TelemetrySettings.model_fields[field]
        default = info.get_default(call_default_factory=True)
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if literal:
            parsed = getattr(TelemetrySettings(**{field: literal.group(1)}), field)
            assert parsed == default, f"{variable}: README {cell}, settings {default!r}"
        elif cell == "unset":
            assert default in (None, False), f"{variable}: README unset, settings {default!r}"
        else:
            assert info.default is None or info.default_factory is not None, variable


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_in_the_readme_and_docs_resolve() -> None:
    """Relative links and images in README.md and docs/performance.md point to files that
    exist, and their #anchors to headings of the target Markdown file."""
    for page in (README, ROOT / "docs" / "performance.md"):
        text = page.read_text(encoding="utf-8")
        links = re.findall(r"\]\(([^)\s]*)\)", text)
        assert links
        for link in links:
            if re.match(r"[a-z]+://", link):
                continue
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            assert path.exists(), f"{page.name}: {link} -> {path} does not exist"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{page.name}: {link}"
