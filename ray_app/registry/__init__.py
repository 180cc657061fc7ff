"""Signed, versioned model registry: one directory per version with a JSON manifest."""
