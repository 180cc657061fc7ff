"""The ``ray-app`` command groups, one module each; :mod:`ray_app.cli` registers them with each
module's ``register(app)``. :mod:`.common` holds what they share."""
