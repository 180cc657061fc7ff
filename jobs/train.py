"""Entrypoint for ``ray job submit``: the train job (``ray-app train``) on the cluster.

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env-json '{"env_vars": {"RAY_APP_HOME": "/mnt/shared/ray-app"}}' \\
        -- python jobs/train.py --config configs/train.yaml

Thin on purpose: the job is :func:`ray_app.training.job.run_training`. The driver joins the
cluster it was submitted to (``RAY_ADDRESS``, set by Ray); relative locations in the config
resolve against ``RAY_APP_HOME`` on the driver's node, not inside the job's copy of
``--working-dir``. ``--debug`` shows the traceback of a failure.
"""

from __future__ import annotations

import sys

from ray_app.cli import app
from ray_app.runtime import job_argv

if __name__ == "__main__":
    sys.exit(app(job_argv("train", sys.argv[1:])))
