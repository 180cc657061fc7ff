"""Kafka → Parquet ingestion with exactly-once file semantics."""
