"""Monitoring of the running loop: data drift and model staleness, as Prometheus metrics."""
