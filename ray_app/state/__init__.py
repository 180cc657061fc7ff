"""Streaming user state: each user's recent history and item-side trending counts, kept fresh
from the activity topics so that serving scores with events seconds old (see
:mod:`ray_app.state.store` for the interface, :mod:`ray_app.state.consumer` for the writer)."""
