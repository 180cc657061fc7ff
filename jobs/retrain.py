"""Entrypoint for ``ray job submit -- python jobs/retrain.py --config configs/retrain.yaml --every 3h``."""

from __future__ import annotations

import sys

from ray_app.cli import app

if __name__ == "__main__":
    sys.exit(app(["retrain", *sys.argv[1:]]))
