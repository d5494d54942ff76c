"""Prometheus exposition of the business aggregates: a custom collector over the in-memory snapshot.

The embedded process runs every service in one interpreter and serves one ``/metrics`` from the default
registry, so the collector is registered there exactly once (``default_collector``). When one process holds
several metrics services (tests do), it shows the aggregates of the one that started last and is still
running: a service attaches its snapshot when it starts and detaches it when it stops."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .aggregates import AUDIT_ACCURACY, BOX_IOU, KAPPA, SERIES_METRICS, SPAN_F1, Aggregates, Kind, MetricDef


class MetricsCollector(Collector):
    def __init__(self, source: Aggregates | None = None) -> None:
        self._sources: list[Aggregates] = [source] if source is not None else []

    def attach(self, source: Aggregates) -> None:
        self.detach(source)
        self._sources.append(source)

    def detach(self, source: Aggregates) -> None:
        self._sources = [s for s in self._sources if s is not source]

    def describe(self) -> Iterable[Metric]:
        # Declares the names, so that registering a clashing metric fails loudly, without reading the snapshot.
        return [
            _histogram(m) if m.kind is Kind.histogram else _scalar(m)
            for m in (*_exported(), KAPPA, AUDIT_ACCURACY, SPAN_F1, BOX_IOU)
        ]

    def collect(self) -> Iterable[Metric]:
        source = self._sources[-1] if self._sources else None
        families: list[Metric] = []
        for metric in _exported():
            if metric.kind is Kind.histogram:
                families.append(_histogram(metric, source))
            else:
                families.append(_scalar(metric, source))
        kappa, accuracy = _scalar(KAPPA), _scalar(AUDIT_ACCURACY)
        span_f1, box_iou = _scalar(SPAN_F1), _scalar(BOX_IOU)
        if source is not None:
            for project in sorted(source.projects()):
                agreement = source.agreement(project)
                if agreement.kappa is not None:
                    kappa.add_metric([project], agreement.kappa)
                if agreement.audit_accuracy is not None:
                    accuracy.add_metric([project], agreement.audit_accuracy)
                if agreement.annotations.span_f1 is not None:
                    span_f1.add_metric([project], agreement.annotations.span_f1)
                if agreement.annotations.box_mean_iou is not None:
                    box_iou.add_metric([project], agreement.annotations.box_mean_iou)
        return [*families, kappa, accuracy, span_f1, box_iou]


def _exported() -> list[MetricDef]:
    return [m for m in SERIES_METRICS if m.exported]


def _scalar(metric: MetricDef, source: Aggregates | None = None) -> CounterMetricFamily | GaugeMetricFamily:
    labels = ["project", *metric.labels]
    family: CounterMetricFamily | GaugeMetricFamily
    if metric.kind is Kind.counter:
        family = CounterMetricFamily(metric.name, metric.help, labels=labels)
    else:
        family = GaugeMetricFamily(metric.name, metric.help, labels=labels)
    for state in source.series(metric) if source is not None else ():
        family.add_metric([state.key.project, *state.key.labels], state.value)
    return family


def _histogram(metric: MetricDef, source: Aggregates | None = None) -> HistogramMetricFamily:
    family = HistogramMetricFamily(metric.name, metric.help, labels=["project", *metric.labels])
    for state in source.series(metric) if source is not None else ():
        buckets = [(str(float(bound)), count) for bound, count in state.cumulative(metric.buckets)]
        family.add_metric([state.key.project, *state.key.labels], [*buckets, ("+Inf", state.count)], state.sum)
    return family


_lock = threading.Lock()
_default: MetricsCollector | None = None


def default_collector() -> MetricsCollector:
    """The collector registered in the default registry, registering it on first use."""
    global _default
    with _lock:
        if _default is None:
            collector = MetricsCollector()
            REGISTRY.register(collector)
            _default = collector
        return _default
