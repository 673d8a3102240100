"""Agent features: the run recorder (``client.run()``) and file changes with diffs and
change decisions (``client.track_file()``)."""

from telemetry_client.agent.files import TrackedFile, Tracking, tracking
from telemetry_client.agent.run import RunRecorder

__all__ = ["RunRecorder", "TrackedFile", "Tracking", "tracking"]
