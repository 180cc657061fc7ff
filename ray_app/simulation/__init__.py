"""Simulated users that close the loop: they request recommendations and react to them."""
