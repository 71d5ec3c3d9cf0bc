"""Prometheus metrics of the service, in a registry of their own so that several apps can share a process."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["ServiceMetrics"]

# Seconds. A bind is one store transaction with an fsync. The buckets are an estimate, not measured:
# most decisions between 1 and 50 ms, and up to 10 s for a store that stays busy.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    """Counters and histograms of decisions and HTTP requests. Labels never hold ids, keys or paths with ids."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.bindings = Counter("etlb_bindings", "Irreversible actions bound to a bearer.", registry=self.registry)
        self.passes = Counter("etlb_passes", "Reversible actions passed without a binding.", registry=self.registry)
        self.refusals = Counter("etlb_refusals", "Refused actions, by reason code.", ["reason"], registry=self.registry)
        self.decision_seconds = Histogram(
            "etlb_decision_duration_seconds",
            "Time from a bind request's arrival to its decision, by decision (bind, pass, refuse).",
            ["decision"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "etlb_group_commit_batch_size",
            "Bind requests decided in one store transaction.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "etlb_http_requests",
            "HTTP requests, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "etlb_http_request_duration_seconds",
            "Time to respond to an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """Return the Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
