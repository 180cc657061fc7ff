"""The Ray Serve application: FastAPI ingress → recommenders, with a popularity fallback."""
