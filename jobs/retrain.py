"""Entrypoint for ``ray job submit``: the retraining loop (``ray-app retrain``) on the cluster.

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env-json '{"env_vars": {"RAY_APP_HOME": "/mnt/shared/ray-app"}}' \\
        -- python jobs/retrain.py --config configs/retrain.yaml --serve-url http://HEAD:8000 --every 3h

The admin token (``RAY_APP_ADMIN_TOKEN``) and the registry key come from the nodes'
environment or the ``runtime_env``; without ``--every`` the job runs one cycle and fails
unless it skipped or promoted. ``--debug`` shows the traceback of a failure.
"""

from __future__ import annotations

import sys

from ray_app.cli import app
from ray_app.runtime import job_argv

if __name__ == "__main__":
    sys.exit(app(job_argv("retrain", sys.argv[1:])))
