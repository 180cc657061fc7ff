"""Kafka connection settings and the embedded Tansu broker used when none is configured."""
