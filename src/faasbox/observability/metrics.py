"""Prometheus metrics with OpenFaaS's names, so existing dashboards work. One registry per
platform (no global state); label children are cached so the hot path does one dict
lookup per call."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
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


class _Replicas(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "gateway_service_count", "Current replicas of a function", labels=["function_name"]
        )
        for name, n in sorted(self._counts().items()):
            g.add_metric([name], n)
        yield g


class Metrics:
    def __init__(self, replica_counts: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self._invocations = Counter(
            "gateway_function_invocation",
            "Invocations by function and status code",
            ["function_name", "code"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "gateway_functions_seconds",
            "Invocation duration in seconds",
            ["function_name"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._cold = Counter(
            "faasbox_cold_starts",
            "Invocations that started a replica",
            ["function_name"],
            registry=self.registry,
        )
        self._cold_seconds = Histogram(
            "faasbox_cold_start_seconds",
            "Time to start a replica (sandbox + runtime + import)",
            ["function_name"],
            buckets=COLD_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Replicas(replica_counts))
        self._children: dict[tuple[str, int], tuple[object, object]] = {}

    def observe(self, function: str, code: int, seconds: float, cold_ms: float | None) -> None:
        key = (function, code)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (
                self._invocations.labels(function, str(code)),
                self._seconds.labels(function),
            )
        pair[0].inc()  # type: ignore[attr-defined]
        pair[1].observe(seconds)  # type: ignore[attr-defined]
        if cold_ms is not None:
            self._cold.labels(function).inc()
            self._cold_seconds.labels(function).observe(cold_ms / 1000)

    def forget(self, function: str) -> None:
        for key in [k for k in self._children if k[0] == function]:
            del self._children[key]
            with contextlib.suppress(KeyError):
                self._invocations.remove(function, str(key[1]))
        for family in (self._seconds, self._cold, self._cold_seconds):
            with contextlib.suppress(KeyError):
                family.remove(function)
