"""Schemathesis against the live Serve app's own ``/openapi.json``: every operation, bounded
and seeded examples (valid and invalid inputs), anonymous and with an admin token.

Schemathesis's pytest loader (``from_fixture``) does not work under pytest 9, and the schema is
only known once the app runs, so each operation's cases come from its Hypothesis strategy
here, and every finding of a run is reported together. Each response must not be a server error, must carry a status code the operation documents,
and must match the documented schema. The app is the real one: ``start_serving`` on a local
Ray, with a real signed registry behind it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from helpers import interactions, wait_http
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from ray_app.broker.embedded import free_port
from ray_app.models.base import Interactions
from ray_app.models.itemknn import ItemKNN
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry
from ray_app.serving.config import ApiKey, ServeArgs, VariantSpec
from ray_app.serving.security import token_hash

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN_TOKEN = "fuzz-admin-secret"
READER_TOKEN = "fuzz-reader-secret"
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# Bounded and deterministic: the same cases on every run, so a failure is reproducible.
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the seed replays the same cases
    suppress_health_check=list(HealthCheck),
)


def _interactions(seed: int) -> Interactions:
    rng = np.random.default_rng(seed)
    return interactions(
        (f"u{u}", f"m{i}") for u in range(100) for i in rng.choice(60, size=10, replace=False)
    )


@pytest.fixture(scope="module")
def live_app(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app on a free loopback port; yields its base URL."""
    from ray import serve

    from ray_app.serving.run import start_serving

    root: Path = tmp_path_factory.mktemp("fuzz") / "registry"
    reg = Registry(root)
    reg.register(ItemKNN().fit(_interactions(1)))
    reg.register(Popularity().fit(_interactions(2)))
    args = ServeArgs(
        registry=str(root),
        variants=[
            VariantSpec(name="A", model="itemknn", weight=0.5),
            VariantSpec(name="B", model="popularity", weight=0.5),
        ],
        api_keys=[
            ApiKey(name="fuzz-ops", role="admin", sha256=token_hash(ADMIN_TOKEN)),
            ApiKey(name="fuzz-dash", role="reader", sha256=token_hash(READER_TOKEN)),
        ],
    )
    port = free_port()
    start_serving(args, "127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/openapi.json", timeout=120)
        yield base
    finally:
        serve.shutdown()


def _failure(exc: BaseException) -> str:
    """What failed, one line per check, and the curl command that replays it."""
    found = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
    what = "; ".join(
        f"{type(e).__name__}: "
        + " | ".join(x.strip() for x in str(e).splitlines() if x.strip())[:300]
        for e in found
    )
    curl = next((x.strip() for x in str(exc).splitlines() if x.strip().startswith("curl ")), "")
    return f"{what}; replay: {curl[:600]}" if curl else what


def fuzz(base: str, headers: dict[str, str]) -> list[str]:
    """Every operation of the live schema, valid and invalid inputs; the failures found."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=30)
    problems, operations = [], []
    for result in schema.get_all_operations():
        if isinstance(result, Ok):
            operations.append(result.ok())
        else:  # an operation the schema describes wrongly is a finding too
            problems.append(f"invalid operation in /openapi.json: {result.err()}")
    assert len(operations) >= 5, "the app publishes its operations"
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=base, headers=headers, checks=CHECKS, timeout=30)

            try:
                check()
            except Unsatisfiable as exc:
                if mode is GenerationMode.NEGATIVE:
                    continue  # no parameters and no body: there is no invalid input to send
                problems.append(f"{op.label} [{mode}]: {_failure(exc)}")
            # Schemathesis raises a FailureGroup (a BaseExceptionGroup): catch it to run every
            # operation and report all findings at once.
            except (Exception, BaseExceptionGroup) as exc:
                problems.append(f"{op.label} [{mode}]: {_failure(exc)}")
    return problems


def test_anonymous_requests_conform(live_app: str) -> None:
    problems = fuzz(live_app, {})
    assert not problems, "\n".join(problems)


def test_admin_requests_conform(live_app: str) -> None:
    problems = fuzz(live_app, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert not problems, "\n".join(problems)
