"""Entrypoint for ``ray job submit``: the ingest job (``ray-app ingest``) on the cluster.

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env-json \\
        '{"env_vars": {"RAY_APP_HOME": "/mnt/shared/ray-app",
                       "RAY_APP_KAFKA_BOOTSTRAP_SERVERS": "broker1:9092"}}' \\
        -- python jobs/ingest.py --consumers 2 --config configs/ingest.yaml

Kafka settings come from ``RAY_APP_KAFKA_*`` in the job's ``runtime_env`` (the client's
environment does not reach the job). ``--consumers N`` runs N consumer actors on the cluster;
without ``--until-idle`` the job runs until it is stopped (``ray job stop``), then flushes
and commits. ``--debug`` shows the traceback of a failure.
"""

from __future__ import annotations

import sys

from ray_app.cli import app
from ray_app.runtime import job_argv

if __name__ == "__main__":
    sys.exit(app(job_argv("ingest", sys.argv[1:])))
