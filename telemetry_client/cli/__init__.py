"""The ``telemetry-client`` command line: status, flush, tail, stats, demo and friends."""

from telemetry_client.cli.main import main

__all__ = ["main"]
