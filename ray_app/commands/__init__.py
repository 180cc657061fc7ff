"""Typer command groups that ``ray_app.cli`` registers (``register(app)`` per module)."""
