"""The httpx integration's parts: one job per module.

- ``recorder``: per transport, which requests to record, the :class:`~telemetry_client.llm.Call`
  of each, counters and rate-limited failure logging;
- ``streams``: the response body stream wrappers (sync and async; also for another
  httpx-compatible library's streams) that show each chunk to the call as the caller reads it;
- ``transports``: :class:`InstrumentedTransport` and :class:`AsyncInstrumentedTransport`.

The public names live in :mod:`telemetry_client.integrations.httpx`.
"""
