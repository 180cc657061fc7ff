"""Offline evaluation: per-user splits, vectorised full-ranking metrics, and ``evaluate``."""
