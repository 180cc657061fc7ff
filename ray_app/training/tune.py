"""Hyperparameter search with Ray Tune (ASHA) on a validation split, driven by YAML.

A search-space file (``configs/tune/<model>.yaml``) declares what to search::

    model: itemknn            # catalogue name (must match --model if both are given)
    metric: ndcg@10           # what to maximise on the validation split
    num_samples: 16           # trials
    fixed: {feedback: binary} # config values every trial shares
    space:                    # sampled per trial; keys are the model's config fields
      k: {type: choice, values: [50, 100, 200]}
      shrinkage: {type: uniform, low: 0.0, high: 50.0}
    scheduler: {max_t: 1, grace_period: 1, reduction_factor: 2}

Each trial fits the model on the train frame and reports full-ranking metrics on the
validation frame, through :func:`ray_app.training.fit.fit_and_evaluate` like the train job.
Models that are :class:`~ray_app.models.base.EpochTrainable` report after every epoch, so ASHA
stops poor trials early; the others report once, which makes ASHA a plain random search over
``num_samples`` trials.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ray_app.config import ConfigError, load_config
from ray_app.models.base import EpochTrainable
from ray_app.models.catalog import model_class
from ray_app.training.fit import FitInputs, fit_and_evaluate

log = logging.getLogger(__name__)


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Choice(_Param):
    """One of ``values``, uniformly."""

    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)


class Uniform(_Param):
    """A float in ``[low, high]``; ``log: true`` samples uniformly in log space."""

    type: Literal["uniform", "loguniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        return self


class RandInt(_Param):
    """An integer in ``[low, high]`` (both inclusive); ``lograndint`` samples in log space."""

    type: Literal["randint", "lograndint"]
    low: int
    high: int

    @model_validator(mode="after")
    def _order(self) -> RandInt:
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.type == "lograndint" and self.low <= 0:
            raise ValueError(f"lograndint needs low > 0, got {self.low}")
        return self


Param = Annotated[Choice | Uniform | RandInt, Field(discriminator="type")]


class AshaConfig(BaseModel):
    """ASHA settings; ``max_t`` is in reports (epochs for an epoch-trainable model, 1 for
    one-shot models)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_t: int = Field(default=1, ge=1)
    """Most reports a trial may make."""
    grace_period: int = Field(default=1, ge=1)
    """Reports every trial makes before it may be stopped."""
    reduction_factor: float = Field(default=2.0, gt=1.0)
    """Keep one trial in this many at each rung."""


class TuneSpaceConfig(BaseModel):
    """A search-space file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    """The model this space is for (checked against the model asked for)."""
    metric: str = "ndcg@10"
    """Validation metric to maximise (a key of ``evaluate``'s result); an explicit
    ``metric`` argument or ``--metric`` overrides it."""
    num_samples: int = Field(default=8, ge=1)
    """Trials."""
    fixed: dict[str, Any] = Field(default_factory=dict)
    """Config values every trial shares."""
    space: dict[str, Param] = Field(default_factory=dict)
    """Config values sampled per trial."""
    scheduler: AshaConfig = Field(default_factory=AshaConfig)
    """ASHA early-stopping settings."""
    seed: int = 0
    """Seeds the search (which configs are sampled)."""


def load_space(path: str | Path) -> TuneSpaceConfig:
    """Validate a search-space YAML file (errors name the file and the field)."""
    return load_config(TuneSpaceConfig, Path(path))


def _check_fields(model_name: str, space: TuneSpaceConfig) -> None:
    if space.model is not None and space.model != model_name:
        raise ConfigError(
            f"the search space is for model {space.model!r} but {model_name!r} was asked for; "
            f"use configs/tune/{model_name}.yaml or fix 'model:' in the file"
        )
    fields = set(model_class(model_name).config_class.model_fields)
    for where, keys in (("space", space.space), ("fixed", space.fixed)):
        unknown = sorted(set(keys) - fields)
        if unknown:
            raise ConfigError(
                f"{where} key(s) {unknown} are not {model_name} config fields; "
                f"valid fields are: {', '.join(sorted(fields))}"
            )
    both = sorted(set(space.space) & set(space.fixed))
    if both:
        raise ConfigError(f"{both} are both fixed and searched; keep each in one of the two")


def _domain(p: Choice | Uniform | RandInt) -> Any:
    from ray import tune

    if isinstance(p, Choice):
        return tune.choice(p.values)
    if isinstance(p, Uniform):
        return (tune.loguniform if p.type == "loguniform" else tune.uniform)(p.low, p.high)
    # Ray's randint excludes the upper bound; the YAML's high is inclusive.
    return (tune.lograndint if p.type == "lograndint" else tune.randint)(p.low, p.high + 1)


def _trainable(config: dict[str, Any], *, model_name: str, inputs: FitInputs) -> None:
    """One trial: fit on the train frame and report validation metrics, after every epoch for
    an :class:`EpochTrainable` model, else once."""
    from ray import tune

    def report_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tune.report({**metrics, "epoch": epoch})

    fitted = fit_and_evaluate(model_name, config, inputs, on_epoch=report_epoch)
    if not isinstance(fitted.model, EpochTrainable):
        tune.report(fitted.metrics)


@dataclass(frozen=True)
class TuneOutcome:
    """What a search found: the best full config, its validation metrics, every trial."""

    model: str
    metric: str
    best_config: dict[str, Any]
    best_metrics: dict[str, float]
    trials: pd.DataFrame
    """One row per trial: its sampled values, last reported metric and iterations."""


def search(
    model_name: str,
    space_config: TuneSpaceConfig | Mapping[str, Any] | str | Path,
    train_frame: pd.DataFrame,
    valid_frame: pd.DataFrame,
    num_samples: int | None = None,
    metric: str | None = None,
    *,
    k: int | None = None,
    item_features: pd.DataFrame | None = None,
    user_features: pd.DataFrame | None = None,
    storage_path: str | Path | None = None,
    cpus_per_trial: float = 1.0,
) -> TuneOutcome:
    """Search ``model_name``'s config with Ray Tune + ASHA on a validation split.

    ``space_config`` is a :class:`TuneSpaceConfig`, its dict, or a YAML path;
    ``num_samples`` and ``metric`` override the file's values when given. The metric is a
    key of :func:`~ray_app.evaluation.offline.evaluate`'s result, e.g. ``ndcg@10``,
    ``recall@20`` or ``coverage``; ``k`` defaults to the metric's cut-off, else 10.
    Frames are long ``user_id, item_id`` (optional ``weight``); every item of either frame is
    in the catalogue. Trials are compared on their last report (for two_tower: the last epoch
    they reached), so the best config refits to what was measured.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if isinstance(space_config, TuneSpaceConfig):
        space = space_config
    elif isinstance(space_config, str | Path):
        space = load_space(space_config)
    else:
        space = TuneSpaceConfig.model_validate(dict(space_config))
    _check_fields(model_name, space)
    metric = metric or space.metric
    if k is None:
        k = int(metric.split("@")[1]) if "@" in metric else 10
    samples = num_samples if num_samples is not None else space.num_samples
    if samples < 1:
        raise ConfigError(f"num_samples must be a positive integer, got {samples}")
    for name, frame in (("train_frame", train_frame), ("valid_frame", valid_frame)):
        for col in ("user_id", "item_id"):
            if col not in frame.columns:
                raise ConfigError(
                    f"{name} has no column {col!r} (it has {list(frame.columns)}); rename it"
                )
    catalogue = pd.unique(
        pd.concat([train_frame["item_id"], valid_frame["item_id"]]).astype(str)
    ).tolist()
    param_space: dict[str, Any] = {**space.fixed, **{n: _domain(p) for n, p in space.space.items()}}
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable,
            model_name=model_name,
            inputs=FitInputs(
                train=train_frame,
                test=valid_frame,
                catalog=catalogue,
                k=k,
                item_features=item_features,
                user_features=user_features,
            ),
        ),
        {"cpu": cpus_per_trial},
    )
    asha = ASHAScheduler(
        max_t=space.scheduler.max_t,
        grace_period=min(space.scheduler.grace_period, space.scheduler.max_t),
        reduction_factor=space.scheduler.reduction_factor,
    )
    with tempfile.TemporaryDirectory(prefix="tune-") as tmp:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=metric,
                mode="max",
                num_samples=samples,
                scheduler=asha,
                search_alg=BasicVariantGenerator(random_state=space.seed),
            ),
            run_config=tune.RunConfig(
                name=f"tune-{model_name}",
                storage_path=str(storage_path) if storage_path is not None else tmp,
                verbose=0,
            ),
        )
        results = tuner.fit()
        trials = [results[i] for i in range(len(results))]
        errors = [r.error for r in trials if r.error is not None]
        if len(errors) == len(trials):
            raise RuntimeError(f"every {model_name} trial failed; first error: {errors[0]}")
        best = results.get_best_result(metric=metric, mode="max", scope="last")
        rows = []
        for r in trials:
            m = r.metrics or {}
            rows.append(
                {
                    **{n: (r.config or {}).get(n) for n in space.space},
                    metric: m.get(metric),
                    "iterations": m.get("training_iteration"),
                    "error": None if r.error is None else str(r.error).splitlines()[0],
                }
            )
    best_metrics = {
        key: float(v)
        for key, v in (best.metrics or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    log.info("best %s=%s with %s", metric, best_metrics.get(metric), best.config)
    return TuneOutcome(
        model_name,
        metric,
        dict(best.config or {}),
        best_metrics,
        pd.DataFrame(rows).sort_values(metric, ascending=False, na_position="last"),
    )


def run_tune(
    model_name: str,
    space_config: TuneSpaceConfig | Mapping[str, Any] | str | Path,
    train_frame: pd.DataFrame,
    valid_frame: pd.DataFrame,
    num_samples: int | None = None,
    metric: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The best config :func:`search` finds (``fixed`` values merged with the best sampled
    ones), ready for ``build_model(model_name, best)``; ``metric`` defaults to the search
    space's."""
    return search(
        model_name, space_config, train_frame, valid_frame, num_samples, metric, **kwargs
    ).best_config


__all__ = ["AshaConfig", "TuneOutcome", "TuneSpaceConfig", "load_space", "run_tune", "search"]
