"""Parquet snapshots: the exactly-once file protocol (``protocol``) and the one place they are read (``read``)."""
