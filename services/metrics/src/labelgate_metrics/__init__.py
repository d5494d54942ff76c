"""Labelgate metrics: counts every event once into business aggregates and serves them to Prometheus."""
