"""Training: snapshots → interactions → fitted, evaluated, registered models."""
