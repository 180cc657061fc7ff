"""Entrypoint for ``ray job submit -- python jobs/ingest.py --consumers 2 --config configs/ingest.yaml``."""

from __future__ import annotations

import sys

from ray_app.cli import app

if __name__ == "__main__":
    sys.exit(app(["ingest", *sys.argv[1:]]))
