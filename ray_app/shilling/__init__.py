"""Shilling (profile-injection) attacks: standard attack profiles for offline measurement, an
unsupervised detector, and the screen that keeps flagged users out of training."""
