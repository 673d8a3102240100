"""The CLI's entry points and its layout: ``cli.main`` parses and dispatches, one module per
command, and the import paths the console script and the tests use keep working."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path

import pytest

import telemetry_client.cli
from telemetry_client.cli import main as package_main

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _commands(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The commands ``telemetry-client --help`` lists."""
    with pytest.raises(SystemExit):
        package_main(["--help"])
    listed = re.search(r"\{([a-z,]+)\}", capsys.readouterr().out)
    assert listed is not None
    return listed.group(1).split(",")


def test_every_command_has_its_own_module_with_a_command_function(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each command in ``--help`` is ``telemetry_client.cli.<name>.command``: a new command
    gets its own module instead of growing ``cli.main``."""
    commands = _commands(capsys)
    assert {"status", "flush", "tail", "purge", "stats", "demo"} <= set(commands)
    for name in commands:
        module = importlib.import_module(f"telemetry_client.cli.{name}")
        assert callable(getattr(module, "command", None)), name


def test_the_console_script_points_at_cli_main_main_and_the_old_path_still_works() -> None:
    """pyproject's ``telemetry-client`` script loads the ``main`` defined in
    ``telemetry_client.cli.main``; ``telemetry_client.cli:main`` (the path of existing
    installs) is the same function."""
    text = PYPROJECT.read_text()
    script = re.search(r'^telemetry-client = "([^"]+)"$', text, re.MULTILINE)
    assert script is not None
    loaded = importlib.metadata.EntryPoint(
        name="telemetry-client", value=script.group(1), group="console_scripts"
    ).load()
    old = importlib.metadata.EntryPoint(
        name="telemetry-client", value="telemetry_client.cli:main", group="console_scripts"
    ).load()
    assert script.group(1) == "telemetry_client.cli.main:main"
    assert loaded is old is package_main is telemetry_client.cli.main
    assert loaded.__module__ == "telemetry_client.cli.main"


def test_status_dict_is_importable_from_cli_main_and_status() -> None:
    """``status_dict`` keeps its old import path (``telemetry_client.cli.main``) beside its
    home, ``telemetry_client.cli.status``."""
    from telemetry_client.cli.main import status_dict as from_main
    from telemetry_client.cli.status import status_dict

    assert from_main is status_dict
