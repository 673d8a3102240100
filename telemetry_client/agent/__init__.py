"""Agent features: the run recorder (``client.run()``), file changes with diffs
(``client.track_file()``, ``write_file``, ``file_operation``) and change decisions.

Modules: ``run`` (the recorder) over ``coalesce`` (streamed chunks into few events);
``files`` (recording changes) over ``diff`` (describing them); ``decisions``; ``counters``
(what was coerced or failed, per client).
"""

from telemetry_client.agent.counters import Tracking, tracking
from telemetry_client.agent.files import TrackedFile
from telemetry_client.agent.run import RunRecorder

__all__ = ["RunRecorder", "TrackedFile", "Tracking", "tracking"]
