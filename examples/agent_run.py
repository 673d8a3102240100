"""A runnable tour of the agent-side API: a run with streamed output, a tracked file edit,
a change decision, and an LLM call counted in the cross-process usage stats.

    python examples/agent_run.py            # spool-only unless TELEMETRY_ENDPOINT is set

Then ``telemetry-client tail -n 20`` (same TELEMETRY_SPOOL_DIR) shows the events, and
``telemetry-client stats --format tmux`` the usage line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from telemetry_client import TelemetryClient, events


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="agent-run-"))
    target = workdir / "greet.py"
    target.write_text('def greet(name):\n    print("hello " + name)\n')

    with TelemetryClient() as client:
        with client.run(toolchain="claude", model="sonnet", task="add type hints") as run:
            run.prompt_sent("Add type hints to greet.py", tokens=7)
            for token in ["I'll ", "add ", "type ", "hints", "."]:
                run.response_chunk(token)  # coalesced into one response_chunk event
            call_id = run.tool_call("edit_file", args={"path": str(target)})
            op_id = client.write_file(
                target, 'def greet(name: str) -> None:\n    print("hello " + name)\n'
            )
            run.tool_result("edit_file", call_id=call_id, result={"op_id": op_id})
            run.bash_command("python -m pytest -q", cwd=str(workdir))
            run.bash_output("1 passed in 0.01s\n", exit_code=0)
            run.response_complete("Added type hints; tests pass.", tokens=9)
        client.change_decision(op_id, "accept")
        # What integrations.httpx records per LLM request; it also feeds `telemetry-client stats`.
        client.emit(
            events.LLMCall(
                provider="anthropic",
                model="claude-sonnet",
                status=200,
                latency_ms=812.0,
                request_bytes=2400,
                response_bytes=5100,
                input_tokens=612,
                output_tokens=140,
            )
        )
        result = client.flush_sync(timeout=10)
    print(f"run {run.run_id} status={run.status}; flushed ok={result.ok}")
    print(f"spool: {client.settings.resolved_spool_dir}")


if __name__ == "__main__":
    main()
