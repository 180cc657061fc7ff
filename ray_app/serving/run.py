"""Starting the Serve app on a running Ray: what ``ray-app serve`` and the demo do."""

from __future__ import annotations

from ray import serve

from ray_app.serving.app import build_app
from ray_app.serving.config import PROXY_HTTP_OPTIONS, ServeArgs


def start_serving(args: ServeArgs, host: str, port: int) -> None:
    """Start Serve's HTTP proxy on ``host:port`` and deploy the app; returns once deployed.

    Ray must already be initialised (:func:`ray_app.runtime.init_ray`); ``serve.shutdown()``
    stops the app.
    """
    serve.start(http_options={"host": host, "port": port, **PROXY_HTTP_OPTIONS})
    serve.run(build_app(args), name="recommender", route_prefix="/", blocking=False)
