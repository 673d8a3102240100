"""Framework integrations; each submodule needs its extra and is imported explicitly.

- :mod:`telemetry_client.integrations.fastapi` (``pip install 'telemetry-client[fastapi]'``):
  a lifespan that starts the client and flushes it on shutdown, a ``Depends`` accessor,
  session/user ids from headers, cookies or WebSocket query parameters carried in
  ``contextvars``, and a pure-ASGI middleware recording requests, WebSocket sessions and
  unhandled errors.
- :mod:`telemetry_client.integrations.httpx` (no extra): a transport wrapper for
  ``httpx``/``httpx2`` clients (and the OpenAI/Anthropic SDK clients built on them) that
  records one ``llm_call`` event per LLM request: provider, model, bytes, latency, status,
  token usage (JSON and streamed SSE), and optionally the prompt and final answer.

This package imports nothing optional: ``import telemetry_client.integrations`` works
without any extra installed.
"""
