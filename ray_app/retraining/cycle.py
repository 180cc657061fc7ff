"""One retraining cycle, and the schedule that repeats it.

new snapshots → train (Ray Data + a Ray task) → offline gate against the serving version →
register (signed) → canary through the A/B router at a small weight → promote or roll back on
the online metric. Every step is appended to the version's lifecycle log in the registry.

The online metric is the canary's *fallback rate* (answers its model could not give: errors,
deadline misses, users it cannot score) against the control's, over at least
``canary_min_requests`` canary answers; conversion per variant, when wanted, comes from
``ray-app online-eval`` over the same window and is reported, not gated on, because it needs
hours of traffic to separate small effects.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import Registry
from ray_app.retraining import lifecycle
from ray_app.retraining.control import ServiceControl, SwitchRefused
from ray_app.snapshots.protocol import committed_batches
from ray_app.snapshots.read import snapshot_files
from ray_app.training.interactions import FeedbackConfig, read_interactions
from ray_app.training.job import ModelSpec, _fit_and_evaluate

log = logging.getLogger(__name__)

Outcome = Literal["skipped", "gate_failed", "refused", "promoted", "rolled_back"]


class RetrainConfig(BaseModel):
    """The retraining policy."""

    model_config = ConfigDict(extra="forbid")

    snapshot_dir: Path = Path("data/snapshots")
    registry: str = "data/registry"
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="itemknn"))
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    k: int = Field(default=10, ge=1)
    seed: int = 42
    gate_metric: str = "ndcg@10"
    """Offline metric the candidate must not lose on."""
    gate_tolerance: float = Field(default=0.01, ge=0)
    """Absolute slack: pass if candidate ≥ serving − tolerance."""
    require_new_data: bool = True
    """Skip the cycle when the serving version already saw every committed batch."""
    control_variant: str = "A"
    canary_variant: str = "canary"
    canary_weight: float = Field(default=0.1, gt=0, lt=1)
    """Traffic share of the canary slot while it is judged."""
    canary_min_requests: int = Field(default=100, ge=1)
    canary_max_wait_s: float = Field(default=900.0, gt=0)
    canary_poll_s: float = Field(default=2.0, gt=0)
    max_fallback_rate_increase: float = Field(default=0.05, ge=0, le=1)
    """Roll back if the canary's fallback rate exceeds the control's by more than this."""
    signing: SigningConfig = Field(default_factory=SigningConfig)


@dataclass
class CycleResult:
    outcome: Outcome
    reason: str
    model: str
    version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)


def parse_every(text: str) -> float:
    """``90s``, ``15m``, ``3h``, ``1d`` → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m:
        raise ValueError(f"--every {text!r}: use a number with s, m, h or d, e.g. 3h")
    return float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def _counts(variants: list[dict[str, Any]], name: str) -> tuple[int, int]:
    for v in variants:
        if v["name"] == name:
            return int(v.get("requests", 0)), int(v.get("fallbacks", 0))
    raise ValueError(f"the service has no variant {name!r}; add it to serve_config.yaml variants")


def _rate(num: int, den: int) -> float:
    return num / den if den else 0.0


def run_cycle(
    config: RetrainConfig,
    control: ServiceControl,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> CycleResult:
    """Run one cycle; never raises for an expected outcome (skip, gate, refusal, rollback)."""
    reg = Registry(config.registry, config.signing)
    name = config.model.name
    steps: list[dict[str, Any]] = []

    def step(what: str, version: str | None = None, **details: Any) -> None:
        ev = {"ts": dt.datetime.now(dt.UTC).isoformat(), "step": what, **details}
        steps.append(ev)
        log.info("retrain %s: %s %s", name, what, details)
        if version:
            lifecycle.log_event(reg, name, version, what, **details)

    variants = control.variants()
    serving = next((v for v in variants if v["name"] == config.control_variant), None)
    if serving is None:
        raise ValueError(f"the service has no control variant {config.control_variant!r}")
    _counts(variants, config.canary_variant)  # fail early if the canary slot is missing
    serving_manifest = reg.read_manifest(serving["model"], serving["version"])
    batches = committed_batches(config.snapshot_dir)
    seen = {
        (r["topic"], r["partition"], r["first"], r["last"])
        for r in serving_manifest.get("snapshot", {}).get("offset_ranges", [])
    }
    new = [b for b in batches if (b.topic, b.partition, b.first, b.last) not in seen]
    step("checked_data", batches=len(batches), new_batches=len(new))
    if config.require_new_data and not new:
        return CycleResult(
            "skipped", "no new snapshot batches since the serving version", name, steps=steps
        )

    # ---- train and evaluate (Ray Data read, fit as a Ray task) ---------------------------
    import ray

    from ray_app.evaluation.split import per_user_holdout

    files = snapshot_files(config.snapshot_dir)
    frame = read_interactions(files, config.feedback)
    catalog = sorted(frame["item_id"].unique().tolist())
    train, test = per_user_holdout(frame, test_fraction=config.test_fraction, seed=config.seed)
    fit = ray.remote(_fit_and_evaluate)
    model, metrics, _ = ray.get(fit.remote(config.model, train, test, frame, config.k, catalog))
    step("trained", interactions=len(frame), metrics=metrics)

    # ---- offline gate ----------------------------------------------------------------------
    baseline = serving_manifest.get("metrics", {}).get(config.gate_metric)
    cand = metrics.get(config.gate_metric)
    if cand is None:
        raise ValueError(f"gate_metric {config.gate_metric!r} is not among {sorted(metrics)}")
    gate = {
        "metric": config.gate_metric,
        "candidate": cand,
        "serving": baseline,
        "serving_version": serving["version"],
        "tolerance": config.gate_tolerance,
    }
    if baseline is not None and cand < baseline - config.gate_tolerance:
        step("gate_failed", **gate)
        return CycleResult(
            "gate_failed",
            f"{config.gate_metric} {cand:.4f} < serving {baseline:.4f} - tolerance",
            name,
            metrics=metrics,
            steps=steps,
        )
    snapshot = {
        "dir": str(Path(config.snapshot_dir).resolve()),
        "files": [str(p.relative_to(config.snapshot_dir)) for p in files],
        "offset_ranges": [
            {"topic": b.topic, "partition": b.partition, "first": b.first, "last": b.last}
            for b in batches
        ],
        "interactions": len(frame),
        "feedback": config.feedback.model_dump(mode="json"),
    }
    mv = reg.register(
        model,
        metrics=metrics,
        snapshot=snapshot,
        name=name,
        extra={"retrain": {"gate": gate, "parent_version": serving["version"]}},
    )
    version = mv.version
    for ev in steps:  # the earlier steps belong to this version's story too
        lifecycle.log_event(
            reg,
            name,
            version,
            ev["step"],
            **{k: v for k, v in ev.items() if k not in ("ts", "step")},
        )
    step("gate_passed", version, **gate)
    step("registered", version, registry=config.registry)

    # ---- canary ----------------------------------------------------------------------------
    weights = {v["name"]: float(v["weight"]) for v in variants}
    others = sum(w for n, w in weights.items() if n != config.canary_variant)
    try:
        control.switch(config.canary_variant, name, version)
    except SwitchRefused as exc:
        step("refused", version, reason=str(exc))
        return CycleResult("refused", str(exc), name, version, metrics, steps)
    canary_weights = dict(weights)
    canary_weights[config.canary_variant] = (
        others * config.canary_weight / (1 - config.canary_weight)
    )
    control.set_weights(canary_weights)
    step("canary_started", version, weights=canary_weights)
    c0 = _counts(control.variants(), config.canary_variant)
    k0 = _counts(control.variants(), config.control_variant)
    deadline = time.monotonic() + config.canary_max_wait_s
    while True:
        vs = control.variants()
        c1, k1 = _counts(vs, config.canary_variant), _counts(vs, config.control_variant)
        n_canary = c1[0] - c0[0]
        if n_canary >= config.canary_min_requests or time.monotonic() >= deadline:
            break
        sleep(config.canary_poll_s)
    n_control = k1[0] - k0[0]
    canary_fb = _rate(c1[1] - c0[1], n_canary)
    control_fb = _rate(k1[1] - k0[1], n_control)
    judged = {
        "canary_requests": n_canary,
        "control_requests": n_control,
        "canary_fallback_rate": canary_fb,
        "control_fallback_rate": control_fb,
    }
    restore = dict(weights)
    restore[config.canary_variant] = 0.0
    if n_canary < config.canary_min_requests:
        control.set_weights(restore)
        step("rolled_back", version, reason="not enough canary traffic", **judged)
        return CycleResult(
            "rolled_back", "not enough canary traffic to judge", name, version, metrics, steps
        )
    if canary_fb > control_fb + config.max_fallback_rate_increase:
        control.set_weights(restore)
        reason = f"canary fallback rate {canary_fb:.3f} > control {control_fb:.3f} + {config.max_fallback_rate_increase}"
        step("rolled_back", version, reason=reason, **judged)
        return CycleResult("rolled_back", reason, name, version, metrics, steps)

    # ---- promote ---------------------------------------------------------------------------
    control.switch(config.control_variant, name, version)
    control.set_weights(restore)
    reg.set_alias(name, "production", version)
    step("promoted", version, **judged)
    return CycleResult("promoted", "canary healthy", name, version, metrics, steps)


def run_schedule(
    config: RetrainConfig,
    control: ServiceControl,
    every_s: float,
    stop: Callable[[], bool],
    on_result: Callable[[CycleResult], None] | None = None,
) -> None:
    """Repeat :func:`run_cycle` every ``every_s`` seconds until ``stop()``; a failed cycle is
    logged and the schedule goes on."""
    while not stop():
        started = time.monotonic()
        try:
            result = run_cycle(config, control)
            if on_result:
                on_result(result)
        except Exception:
            log.exception("retrain cycle failed; next attempt in %.0fs", every_s)
        while not stop() and time.monotonic() - started < every_s:
            time.sleep(min(5.0, every_s))
