"""ray_app: a movie-recommendation loop on Ray (Kafka → Parquet → train → registry → Serve)."""

__version__ = "0.1.0"
