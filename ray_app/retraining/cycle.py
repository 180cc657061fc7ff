"""One retraining cycle, and the schedule that repeats it.

Steps, each a function of its own: read what serves → check for new snapshot batches → train
(the train job's step, on Ray: shilling screen, fit, evaluate, fairness block) → offline gate
against the serving version (the gate metric, and its parity gap across user groups) →
register (signed) → canary through the A/B router (:mod:`ray_app.retraining.canary`) →
promote or roll back.
Every step is appended to the version's lifecycle log in the registry, with the time it
happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ray_app.config import ConfigError
from ray_app.errors import UserError
from ray_app.evaluation.fairness import gap_lower_bound, largest_gap
from ray_app.registry.lifecycle import append_events, lifecycle_event
from ray_app.registry.store import Registry
from ray_app.retraining.canary import (
    promote,
    roll_back,
    rollback_reason,
    start_canary,
    watch_canary,
)
from ray_app.retraining.config import RetrainConfig
from ray_app.retraining.control import ServiceControl, SwitchRefused, find_variant
from ray_app.snapshots.read import unseen_batches
from ray_app.snapshots.store import committed_batches
from ray_app.training.data import load_training_data
from ray_app.training.job import TrainedModel, screen_training_data, train_models

log = logging.getLogger(__name__)

Outcome = Literal["skipped", "gate_failed", "refused", "promoted", "rolled_back"]


class ModelMismatch(ConfigError):
    """The retrain config names another model than the control slot serves."""


@dataclass
class CycleResult:
    """How a cycle ended, and every step it took."""

    outcome: Outcome
    reason: str
    model: str
    version: str | None = None
    """The candidate's registry version (None when the cycle ended before registering)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The candidate's offline metrics."""
    steps: list[dict[str, Any]] = field(default_factory=list)
    """Lifecycle events: ``ts``, ``step`` and the step's details."""


@dataclass(frozen=True)
class Serving:
    """What serves when the cycle starts."""

    variants: list[dict[str, Any]]
    """Every slot, as the service reported it."""
    control: dict[str, Any]
    """The control slot."""
    manifest: dict[str, Any]
    """The registry manifest of the control slot's version."""


@dataclass(frozen=True)
class Candidate:
    """A freshly trained model and the data it was trained on."""

    trained: TrainedModel
    provenance: dict[str, Any]
    """The manifest's ``snapshot`` entry."""
    shilling: dict[str, Any] | None = None
    """The shilling screen's manifest entry (None when the screen is off)."""


@dataclass(frozen=True)
class Gate:
    """The offline gate's verdict."""

    passed: bool
    details: dict[str, Any]
    reason: str = ""


class StepLog:
    """The cycle's steps, kept in memory and, once a version exists, in its lifecycle log."""

    def __init__(self, registry: Registry, name: str) -> None:
        self.registry = registry
        self.name = name
        self.steps: list[dict[str, Any]] = []
        self.version: str | None = None

    def record(self, step: str, **details: Any) -> None:
        """Record a step now (and append it to the version's log once attached)."""
        event = lifecycle_event(step, **details)
        self.steps.append(event)
        log.info("retrain %s: %s %s", self.name, step, details)
        if self.version is not None:
            append_events(self.registry, self.name, self.version, [event])

    def attach(self, version: str) -> None:
        """Log to ``version`` from now on, starting with the steps that led to it (they keep
        the times they happened at)."""
        self.version = version
        append_events(self.registry, self.name, version, self.steps)


def read_serving(config: RetrainConfig, control: ServiceControl, registry: Registry) -> Serving:
    """The service's slots and the control slot's manifest; raises
    :class:`~ray_app.retraining.control.MissingSlot` when the control or canary slot is
    missing."""
    variants = control.variants()
    slot = find_variant(variants, config.control_variant, "control")
    find_variant(variants, config.canary_variant, "canary")
    return Serving(variants, slot, registry.read_manifest(slot["model"], slot["version"]))


def require_same_model(config: RetrainConfig, serving: Serving) -> None:
    """Refuse (:class:`ModelMismatch`) to gate a model against a different one."""
    served = str(serving.manifest.get("model_class", serving.control["model"]))
    if served != config.model.name:
        raise ModelMismatch(
            f"the retrain config's model {config.model.name!r} is not what control variant "
            f"{config.control_variant!r} serves ({served!r}), so the offline gate cannot "
            f"compare them: set model.name to {served!r} in the retrain config, or "
            "control_variant to a slot that serves the configured model"
        )


def check_data(config: RetrainConfig, serving: Serving) -> tuple[int, int]:
    """``(committed batches, batches the serving version was not trained on)``."""
    seen = serving.manifest.get("snapshot", {}).get("offset_ranges", [])
    return len(committed_batches(config.snapshot_dir)), len(
        unseen_batches(config.snapshot_dir, seen)
    )


def train_candidate(config: RetrainConfig) -> Candidate:
    """The train job's training step for the one configured model (on Ray): the shilling
    screen, then fit, evaluate and the fairness block."""
    data = load_training_data(config.snapshot_dir, config.feedback, config.catalog_dataset)
    data, screen = screen_training_data(
        data, config.shilling, Registry(config.registry, config.signing)
    )
    (trained,) = train_models(
        data,
        [config.model],
        test_fraction=config.test_fraction,
        k=config.k,
        seed=config.seed,
        fairness=config.fairness,
    )
    return Candidate(trained, data.provenance, screen)


def parity_gate(
    config: RetrainConfig, fairness: dict[str, Any], serving: Serving
) -> tuple[dict[str, Any], str]:
    """Compare the candidate's parity gap of ``gate_metric`` with the serving version's, per
    grouping in ``parity_groups``: ``(details, reason)``, ``reason`` empty when it passes.

    A grouping missing on either side is not compared (the serving version may predate the
    fairness block); the details say which were.
    """
    metric, tolerance = config.gate_metric, config.parity_gap_tolerance
    details: dict[str, Any] = {"metric": metric, "tolerance": tolerance, "groups": {}}
    if tolerance is None or not fairness:
        return {**details, "checked": False}, ""
    if metric not in fairness.get("parity_gap", {}):
        raise ConfigError(
            f"gate_metric {metric!r} has no parity gap in the fairness block (it has "
            f"{', '.join(sorted(fairness.get('parity_gap', {})))}): set gate_metric to one of "
            "them, or parity_gap_tolerance to null to skip the parity check"
        )
    served = serving.manifest.get("fairness", {}).get("parity", {})
    failures = []
    for kind in config.parity_groups:
        cand = largest_gap(fairness.get("parity", {}), metric, [kind])["gap"]
        base = largest_gap(served, metric, [kind])["gap"]
        # The two gaps come from different holdouts: only the part of the candidate's gap
        # that its own bootstrap intervals cannot explain counts as a real increase.
        sure = gap_lower_bound(fairness, metric, kind)
        details["groups"][kind] = {"candidate": cand, "candidate_lower": sure, "serving": base}
        grew = cand is not None and base is not None and cand > base + tolerance
        if grew and base is not None and (sure is None or sure > base + tolerance):
            shown = cand if sure is None else sure
            level = float(fairness.get("confidence", 0.95))
            note = "" if sure is None else f" (gap {cand:.4f}, beyond its {level:.0%} intervals)"
            failures.append(f"{kind} {shown:.4f} > serving {base:.4f} + {tolerance}{note}")
    details["checked"] = True
    reason = f"parity gap of {metric} across " + "; ".join(failures) if failures else ""
    return details, reason


def offline_gate(
    config: RetrainConfig,
    metrics: dict[str, float],
    serving: Serving,
    fairness: dict[str, Any] | None = None,
) -> Gate:
    """Pass when the candidate's ``gate_metric`` reaches the serving version's minus
    ``gate_tolerance`` (or the serving version has no such metric), and, with the candidate's
    ``fairness`` block, when its parity gap of that metric is not worse than the serving
    version's by more than ``parity_gap_tolerance`` (:func:`parity_gate`)."""
    require_same_model(config, serving)
    cand = metrics.get(config.gate_metric)
    if cand is None:
        raise ConfigError(
            f"gate_metric {config.gate_metric!r} is not an offline metric: use one of "
            f"{', '.join(sorted(metrics))}"
        )
    baseline = serving.manifest.get("metrics", {}).get(config.gate_metric)
    details = {
        "metric": config.gate_metric,
        "candidate": cand,
        "serving": baseline,
        "serving_version": serving.control["version"],
        "tolerance": config.gate_tolerance,
    }
    parity_details, parity_reason = parity_gate(config, fairness or {}, serving)
    details["parity"] = parity_details
    if baseline is not None and cand < baseline - config.gate_tolerance:
        reason = f"{config.gate_metric} {cand:.4f} < serving {baseline:.4f} - tolerance"
        return Gate(False, details, reason)
    if parity_reason:
        return Gate(False, details, parity_reason)
    return Gate(True, details)


def run_cycle(
    config: RetrainConfig,
    control: ServiceControl,
    *,
    sleep: Callable[[float], None] = time.sleep,
    train: Callable[[RetrainConfig], Candidate] = train_candidate,
) -> CycleResult:
    """Run one cycle; never raises for an expected outcome (skip, gate, refusal, rollback).

    ``train`` is the training step (the train job's, on Ray, by default).
    """
    reg = Registry(config.registry, config.signing)
    name = config.model.name
    steps = StepLog(reg, name)

    serving = read_serving(config, control, reg)
    require_same_model(config, serving)  # before minutes of training, not after
    batches, new = check_data(config, serving)
    steps.record("checked_data", batches=batches, new_batches=new)
    if config.require_new_data and not new:
        reason = "no new snapshot batches since the serving version"
        return CycleResult("skipped", reason, name, steps=steps.steps)

    candidate = train(config)
    metrics = candidate.trained.metrics
    flagged = None if candidate.shilling is None else candidate.shilling["flagged"]
    steps.record(
        "trained",
        interactions=candidate.provenance.get("interactions"),
        metrics=metrics,
        shilling_flagged=flagged,
    )
    gate = offline_gate(config, metrics, serving, candidate.trained.fairness)
    if not gate.passed:
        steps.record("gate_failed", reason=gate.reason, **gate.details)
        return CycleResult("gate_failed", gate.reason, name, metrics=metrics, steps=steps.steps)

    lineage = {"gate": gate.details, "parent_version": serving.control["version"]}
    screened = {"shilling": candidate.shilling} if candidate.shilling is not None else {}
    mv = reg.register(
        candidate.trained.model,
        metrics=metrics,
        snapshot=candidate.provenance,
        name=name,
        extra={**candidate.trained.manifest_extra(), **screened, "retrain": lineage},
    )
    version = mv.version
    steps.attach(version)
    steps.record("gate_passed", **gate.details)
    steps.record("registered", registry=config.registry)

    try:
        weights = start_canary(config, control, serving.variants, version)
    except SwitchRefused as exc:
        steps.record("refused", reason=str(exc))
        return CycleResult("refused", str(exc), name, version, metrics, steps.steps)
    steps.record("canary_started", weights=weights)
    counts = watch_canary(config, control, sleep)
    rollback = rollback_reason(config, counts)
    if rollback is not None:
        roll_back(config, control, serving.variants)
        steps.record("rolled_back", reason=rollback, **counts.as_dict())
        return CycleResult("rolled_back", rollback, name, version, metrics, steps.steps)

    promote(config, control, reg, serving.variants, version)
    steps.record("promoted", **counts.as_dict())
    return CycleResult("promoted", "canary healthy", name, version, metrics, steps.steps)


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
        except UserError as exc:  # e.g. the service is down for a while: one line, no trace
            log.error("retrain cycle failed: %s; next attempt in %.0fs", exc, every_s)
        except Exception:
            log.exception("retrain cycle failed; next attempt in %.0fs", every_s)
        while not stop() and time.monotonic() - started < every_s:
            time.sleep(min(5.0, every_s))
