"""The proxy's Prometheus metrics (``GET /metrics``, text exposition format 0.0.4).

A handful of counters kept in plain dicts (one event loop: no locks), rendered on
request; no client library needed:

- ``telemetry_proxy_requests_total{status, model}``: every answered request, the proxy's
  own refusals (401/413/429) included (their model is ``""``: the body was not read);
- ``telemetry_proxy_tokens_total{model, kind}``: ``input``, ``output``, ``cached``,
  ``reasoning`` tokens from the recorded calls;
- ``telemetry_proxy_upstream_latency_seconds``: histogram of the time from sending a
  request upstream to its response head;
- ``telemetry_proxy_ttft_seconds``: histogram of streams' time to their first chunk;
- ``telemetry_proxy_in_flight``: requests being served now;
- ``telemetry_proxy_upstream_errors_total{kind}``: ``unreachable`` (502), ``timeout``
  (504), ``stream`` (the upstream failed mid-body);
- ``telemetry_proxy_usage_option_total{outcome}``: streams where usage was ``added``,
  and upstreams that ``rejected`` the option.

Model labels are bounded (:data:`MAX_MODELS`; later models count as ``other``), so a
client cannot grow the metrics without bound.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

__all__ = ["MAX_MODELS", "Histogram", "ProxyMetrics"]

MAX_MODELS = 200
_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip


class Histogram:
    """A cumulative-bucket histogram (seconds)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total:.6f}")
        lines.append(f"{name}_count {self.count}")
        return lines


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ProxyMetrics:
    """Counters of one proxy process."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[int, str], int] = defaultdict(int)
        self.tokens: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.upstream_errors: defaultdict[str, int] = defaultdict(int)
        self.usage_option: defaultdict[str, int] = defaultdict(int)
        self.upstream_latency = Histogram()
        self.ttft = Histogram()
        self.in_flight = 0
        self._models: set[str] = set()

    def model_label(self, model: str | None) -> str:
        if not model:
            return ""
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODELS:
            return "other"
        self._models.add(model)
        return model

    def request_done(self, status: int, model: str | None) -> None:
        self.requests[(status, self.model_label(model))] += 1

    def add_tokens(self, model: str | None, kind: str, n: int | None) -> None:
        if n:
            self.tokens[(self.model_label(model), kind)] += n

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        out = [
            "# HELP telemetry_proxy_requests_total Requests answered, by status and model.",
            "# TYPE telemetry_proxy_requests_total counter",
        ]
        for (status, model), n in sorted(self.requests.items()):
            out.append(
                f'telemetry_proxy_requests_total{{status="{status}",model="{_label(model)}"}} {n}'
            )
        out += [
            "# HELP telemetry_proxy_tokens_total Tokens of recorded LLM calls, by model and kind.",
            "# TYPE telemetry_proxy_tokens_total counter",
        ]
        for (model, kind), n in sorted(self.tokens.items()):
            out.append(f'telemetry_proxy_tokens_total{{model="{_label(model)}",kind="{kind}"}} {n}')
        out += self.upstream_latency.render(
            "telemetry_proxy_upstream_latency_seconds",
            "Time from sending a request upstream to its response head.",
        )
        out += self.ttft.render(
            "telemetry_proxy_ttft_seconds", "Time to the first chunk of streamed responses."
        )
        out += [
            "# HELP telemetry_proxy_in_flight Requests being served now.",
            "# TYPE telemetry_proxy_in_flight gauge",
            f"telemetry_proxy_in_flight {self.in_flight}",
            "# HELP telemetry_proxy_upstream_errors_total Upstream failures, by kind.",
            "# TYPE telemetry_proxy_upstream_errors_total counter",
        ]
        for kind, n in sorted(self.upstream_errors.items()):
            out.append(f'telemetry_proxy_upstream_errors_total{{kind="{kind}"}} {n}')
        out += [
            "# HELP telemetry_proxy_usage_option_total stream_options.include_usage the proxy"
            " added, and upstreams that rejected it.",
            "# TYPE telemetry_proxy_usage_option_total counter",
        ]
        for outcome, n in sorted(self.usage_option.items()):
            out.append(f'telemetry_proxy_usage_option_total{{outcome="{outcome}"}} {n}')
        return "\n".join(out) + "\n"
