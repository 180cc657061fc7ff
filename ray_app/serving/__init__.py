"""The Ray Serve application: FastAPI ingress → A/B router → recommenders, with a fallback
model (``ServeArgs.fallback_model``) for whatever a variant cannot answer."""
