"""Recommenders sharing one contract (:class:`ray_app.models.base.Recommender`)."""
