"""Entrypoint for ``ray job submit -- python jobs/train.py --config configs/train.yaml``.

Thin on purpose: the job is :func:`ray_app.training.job.run_training`; this file only parses
the config and connects to the cluster the job was submitted to.
"""

from __future__ import annotations

import sys

from ray_app.cli import app

if __name__ == "__main__":
    sys.exit(app(["train", *sys.argv[1:]]))
