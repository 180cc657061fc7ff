"""The online half of a retraining cycle: try the candidate in the canary slot at a small
weight, judge it on its fallback rate against the control's, then promote or roll back.

The fallback rate (answers the slot's model could not give: errors, deadline misses, users it
cannot score) is what is gated on, because it separates within minutes; conversion per
variant needs hours of traffic and is reported by ``ray-app online-eval`` instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ray_app.registry.store import Registry
from ray_app.retraining.config import RetrainConfig
from ray_app.retraining.control import ServiceControl, find_variant


def _counts(variants: list[dict[str, Any]], name: str, role: str) -> tuple[int, int]:
    v = find_variant(variants, name, role)
    return int(v.get("requests", 0)), int(v.get("fallbacks", 0))


def _rate(num: int, den: int) -> float:
    return num / den if den else 0.0


def restored_weights(config: RetrainConfig, variants: list[dict[str, Any]]) -> dict[str, float]:
    """The weights from before the canary, with the canary slot at 0."""
    weights = {v["name"]: float(v["weight"]) for v in variants}
    weights[config.canary_variant] = 0.0
    return weights


def start_canary(
    config: RetrainConfig, control: ServiceControl, variants: list[dict[str, Any]], version: str
) -> dict[str, float]:
    """Switch the canary slot to ``version`` and give it ``canary_weight`` of the traffic;
    returns the weights set. Raises :class:`SwitchRefused` when the service refuses it."""
    control.switch(config.canary_variant, config.model.name, version)
    weights = restored_weights(config, variants)
    others = sum(weights.values())
    weights[config.canary_variant] = others * config.canary_weight / (1 - config.canary_weight)
    control.set_weights(weights)
    return weights


@dataclass(frozen=True)
class CanaryCounts:
    """Traffic and fallbacks of the canary and control slots while the canary ran."""

    canary_requests: int
    control_requests: int
    canary_fallback_rate: float
    control_fallback_rate: float

    def as_dict(self) -> dict[str, Any]:
        """Plain fields, for the lifecycle log."""
        return asdict(self)


def watch_canary(
    config: RetrainConfig, control: ServiceControl, sleep: Callable[[float], None] = time.sleep
) -> CanaryCounts:
    """Poll the slots' counters until the canary answered ``canary_min_requests`` times or
    ``canary_max_wait_s`` passed."""
    start = control.variants()
    c0 = _counts(start, config.canary_variant, "canary")
    k0 = _counts(start, config.control_variant, "control")
    deadline = time.monotonic() + config.canary_max_wait_s
    while True:
        now = control.variants()
        c1 = _counts(now, config.canary_variant, "canary")
        k1 = _counts(now, config.control_variant, "control")
        if c1[0] - c0[0] >= config.canary_min_requests or time.monotonic() >= deadline:
            break
        sleep(config.canary_poll_s)
    n_canary, n_control = c1[0] - c0[0], k1[0] - k0[0]
    return CanaryCounts(
        canary_requests=n_canary,
        control_requests=n_control,
        canary_fallback_rate=_rate(c1[1] - c0[1], n_canary),
        control_fallback_rate=_rate(k1[1] - k0[1], n_control),
    )


def rollback_reason(config: RetrainConfig, counts: CanaryCounts) -> str | None:
    """Why the canary must be rolled back, or None when it is healthy."""
    if counts.canary_requests < config.canary_min_requests:
        return (
            f"not enough canary traffic to judge ({counts.canary_requests} of "
            f"{config.canary_min_requests} requests in {config.canary_max_wait_s:g}s)"
        )
    limit = counts.control_fallback_rate + config.max_fallback_rate_increase
    if counts.canary_fallback_rate > limit:
        return (
            f"canary fallback rate {counts.canary_fallback_rate:.3f} > control "
            f"{counts.control_fallback_rate:.3f} + {config.max_fallback_rate_increase}"
        )
    return None


def roll_back(
    config: RetrainConfig, control: ServiceControl, variants: list[dict[str, Any]]
) -> None:
    """Take the canary's traffic away; the control slot never changed."""
    control.set_weights(restored_weights(config, variants))


def promote(
    config: RetrainConfig,
    control: ServiceControl,
    registry: Registry,
    variants: list[dict[str, Any]],
    version: str,
) -> None:
    """Serve ``version`` from the control slot, end the canary and point ``production`` at it
    (slots that follow ``production`` switch to it too)."""
    control.switch(config.control_variant, config.model.name, version)
    control.set_weights(restored_weights(config, variants))
    registry.set_alias(config.model.name, "production", version)
