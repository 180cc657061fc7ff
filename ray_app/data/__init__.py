"""Datasets: MovieLens fetch/load and the synthetic generator."""
