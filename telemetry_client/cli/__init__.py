"""The ``telemetry-client`` command line: ``main`` parses and dispatches, one module per command.

``telemetry_client.cli:main`` and ``telemetry_client.cli.main:main`` are the same function.
"""

from telemetry_client.cli.main import main

__all__ = ["main"]
