"""Prometheus metrics computed from the store when scraped (a custom collector).

Nothing is counted in this process's memory: every value is read from the store at scrape time,
so any process serving /metrics over the same store (the daemon, `framewatch serve`, another box)
reports the same numbers, and a restart resets nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

GIB = 2**30


class StoreCollector(Collector):
    """framewatch_* metrics from `store.stats()`."""

    def __init__(self, store: Any):
        self.store = store

    def describe(self) -> list[Metric]:
        # Registering must not query the store (the registry would call collect() otherwise).
        return []

    def collect(self) -> Iterator[Metric]:
        s = self.store.stats()
        recordings = GaugeMetricFamily(
            "framewatch_recordings", "Recordings by state.", labels=["state"]
        )
        for state, n in s["recordings"].items():
            recordings.add_metric([state], n)
        yield recordings
        chunks = GaugeMetricFamily("framewatch_chunks", "Chunks by state.", labels=["state"])
        for state, n in s["chunks"].items():
            chunks.add_metric([state], n)
        yield chunks
        yield GaugeMetricFamily(
            "framewatch_queue_depth",
            "Recordings waiting for or in analysis (queued or analyzing).",
            value=s["recordings"].get("queued", 0) + s["recordings"].get("analyzing", 0),
        )
        yield CounterMetricFamily(
            "framewatch_chunks_analysed",
            "Chunks analysed (done).",
            value=s["chunks"].get("done", 0),
        )
        yield CounterMetricFamily(
            "framewatch_video_analysed_seconds",
            "Seconds of video in analysed chunks (an overlap counts in both chunks that saw it).",
            value=s["video_s"],
        )
        yield CounterMetricFamily(
            "framewatch_analysis_busy_seconds",
            "Wall-clock seconds analysed chunks took, from claim to commit.",
            value=s["busy_s"],
        )
        if s["timed_video_s"] > 0:
            yield GaugeMetricFamily(
                "framewatch_realtime_factor",
                "Seconds of analysis per second of video over all analysed chunks (below 1: "
                "faster than real time).",
                value=s["busy_s"] / s["timed_video_s"],
            )
        if s["gpu_peak_gib"] is not None:
            yield GaugeMetricFamily(
                "framewatch_gpu_memory_peak_bytes",
                "Highest GPU memory peak measured in any chunk (provenance analyzer.peak_gib).",
                value=s["gpu_peak_gib"] * GIB,
            )
        if s["gpu_budget_gib"] is not None:
            yield GaugeMetricFamily(
                "framewatch_gpu_memory_budget_bytes",
                "GPU memory budget of the most recently analysed chunk.",
                value=s["gpu_budget_gib"] * GIB,
            )
        if s["gpu_peak_ratio"] is not None:
            yield GaugeMetricFamily(
                "framewatch_gpu_memory_peak_ratio",
                "Highest measured peak over the budget the chunk ran under (above 1: over budget).",
                value=s["gpu_peak_ratio"],
            )
        deliveries = GaugeMetricFamily(
            "framewatch_deliveries",
            "Plugin notifications in the outbox: pending (untried), failed (retrying), dead, "
            "delivered.",
            labels=["plugin", "state"],
        )
        for plugin, counts in sorted(s["deliveries"]["plugins"].items()):
            for state in ("pending", "failed", "dead", "delivered"):
                deliveries.add_metric([plugin, state], counts.get(state, 0))
        yield deliveries
        alerts = CounterMetricFamily(
            "framewatch_alerts",
            "Alerts of [[alerts]] rules by rule and outcome: candidate (waiting for its second "
            "look), confirmed, rejected, unverified, suppressed (cooldown).",
            labels=["rule", "outcome"],
        )
        for rule, outcome, n in s.get("alerts", ()):
            alerts.add_metric([rule, outcome], n)
        yield alerts


def metrics_registry(store: Any) -> CollectorRegistry:
    """A registry of our own (not the process-wide default) holding only the store collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
