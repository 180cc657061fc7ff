"""A/B experiment statistics and reports built from online-evaluation results."""
