"""Prometheus metrics with OpenFaaS's names, so existing dashboards work.

The hot path only bumps plain integers in a per-function record (no locks, no label
lookups); prometheus-client renders them at scrape time through a custom collector. One
registry per platform, no global state.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TypedDict

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
COLD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def export(self) -> tuple[list[tuple[str, float]], float]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return buckets, self.total


class _FunctionStats:
    __slots__ = ("codes", "cold", "cold_paths", "cold_seconds", "seconds")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.seconds = _Histogram(LATENCY_BUCKETS)
        self.cold = 0
        # Start path ("prewarmed", "created") -> cold starts that took it.
        self.cold_paths: dict[str, int] = {}
        self.cold_seconds = _Histogram(COLD_BUCKETS)


class PrewarmState(TypedDict):
    """The stem-cell pool now (``pool/prewarm.py``), for /metrics and /system/info."""

    runtime: str
    min: int
    max: int
    target: int
    ready: int
    starting: int


class Metrics(Collector):
    def __init__(
        self,
        replica_counts: Callable[[], dict[str, int]],
        prewarm: Callable[[], PrewarmState | None] = lambda: None,
    ) -> None:
        self._replica_counts = replica_counts
        self._prewarm = prewarm
        self._stats: dict[str, _FunctionStats] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def observe(
        self, function: str, code: int, seconds: float, cold_ms: float | None, path: str = ""
    ) -> None:
        st = self._stats.get(function)
        if st is None:
            st = self._stats[function] = _FunctionStats()
        codes = st.codes
        codes[code] = codes.get(code, 0) + 1
        st.seconds.observe(seconds)
        if cold_ms is not None:
            st.cold += 1
            st.cold_seconds.observe(cold_ms / 1000)
            if path:
                st.cold_paths[path] = st.cold_paths.get(path, 0) + 1

    def invocations(self, function: str) -> int:
        st = self._stats.get(function)
        return sum(st.codes.values()) if st else 0

    def forget(self, function: str) -> None:
        self._stats.pop(function, None)

    def collect(self) -> Iterator[Metric]:
        invocations = CounterMetricFamily(
            "gateway_function_invocation",
            "Invocations by function and status code",
            labels=["function_name", "code"],
        )
        seconds = HistogramMetricFamily(
            "gateway_functions_seconds",
            "Invocation duration in seconds",
            labels=["function_name"],
        )
        cold = CounterMetricFamily(
            "faasbox_cold_starts", "Invocations that started a replica", labels=["function_name"]
        )
        cold_paths = CounterMetricFamily(
            "faasbox_cold_starts_by_path",
            "Invocations that started a replica, by how its sandbox came to be "
            "(prewarmed: a stem cell; created: from scratch; forked: from the function's zygote)",
            labels=["function_name", "path"],
        )
        cold_seconds = HistogramMetricFamily(
            "faasbox_cold_start_seconds",
            "Time to start a replica (sandbox + runtime + handler import)",
            labels=["function_name"],
        )
        for name, st in sorted(self._stats.items()):
            for code, n in sorted(st.codes.items()):
                invocations.add_metric([name, str(code)], n)
            buckets, total = st.seconds.export()
            seconds.add_metric([name], buckets, total)
            cold.add_metric([name], st.cold)
            for path, n in sorted(st.cold_paths.items()):
                cold_paths.add_metric([name, path], n)
            buckets, total = st.cold_seconds.export()
            cold_seconds.add_metric([name], buckets, total)
        replicas = GaugeMetricFamily(
            "gateway_service_count", "Current replicas of a function", labels=["function_name"]
        )
        for name, n in sorted(self._replica_counts().items()):
            replicas.add_metric([name], n)
        yield from (invocations, seconds, cold, cold_paths, cold_seconds, replicas)
        state = self._prewarm()
        if state is not None:
            ready = GaugeMetricFamily(
                "faasbox_prewarm_ready", "Prewarmed sandboxes ready now", labels=["runtime"]
            )
            ready.add_metric([state["runtime"]], state["ready"])
            target = GaugeMetricFamily(
                "faasbox_prewarm_target",
                "Prewarmed sandboxes the pool aims to keep ready (from recent cold starts)",
                labels=["runtime"],
            )
            target.add_metric([state["runtime"]], state["target"])
            yield from (ready, target)
