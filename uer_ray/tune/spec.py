"""The ``search:`` section of a job spec, validated: its settings (searcher, scheduler, budgets, winners) and its
space, one ``Dimension`` per config path. A path must name an option of the config tree (any registered component's
option counts: whether it applies is decided per combination by ``search.py``); a distribution must be one of
``choice``, ``grid`` (categorical: enumerated and filtered) or ``uniform``, ``loguniform``, ``randint`` (numeric, both
bounds inclusive: sampled per trial). Every error is one line naming the key. No Ray import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from uer_ray.config import (
    _COMPONENT_FIELDS, ComponentConfig, ConfigError, JobConfig, ModelConfig, StrictModel, TargetConfig,
)
from uer_ray.registry import TARGETS

CATEGORICAL = ("choice", "grid")
NUMERIC = ("uniform", "loguniform", "randint")


class SchedulerSpec(StrictModel):
    name: Literal["asha", "hyperband", "pbt", "fifo"] = "asha"
    grace_period: int | None = Field(None, gt=0)  # first rung, in the trial budget's unit; default: a quarter of it
    reduction_factor: float = Field(3.0, gt=1)
    perturbation_interval: int | None = Field(None, gt=0)  # pbt, in the budget's unit; default: the first rung


class TrialBudget(StrictModel):
    steps: int | None = Field(None, gt=0)
    tokens: int | None = Field(None, gt=0)  # instance slots (batch x seq_length x workers), rounded up to probe steps

    @model_validator(mode="after")
    def _one_unit(self):
        if (self.steps is None) == (self.tokens is None):
            raise ValueError("give exactly one of steps or tokens")
        return self


class SweepBudget(StrictModel):
    trials: int | None = Field(None, gt=0)  # random/optuna: trials drawn (default 10); with grid points: per point
    time_s: float | None = Field(None, gt=0)  # wall clock of the whole sweep
    tokens: float | None = Field(None, gt=0)  # pre-training tokens over all trials


class WinnersSpec(StrictModel):
    k: int = Field(1, ge=0)  # best trials fine-tuned fully (finetune section) and tested


class SearchSpec(StrictModel):
    name: str | None = None  # the sweep's folder and W&B group; default: run.name
    space: dict[str, Any]
    datasets: list[dict[str, Any]] = []
    searcher: Literal["random", "grid", "optuna"] = "random"
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    metric: str = "dev_metric"
    mode: Literal["max", "min"] = "max"
    max_concurrent: int = Field(2, gt=0)
    trial_budget: TrialBudget
    budget: SweepBudget = Field(default_factory=SweepBudget)
    winners: WinnersSpec = Field(default_factory=WinnersSpec)
    seed: int = 7


@dataclass(frozen=True)
class Dimension:
    path: str
    kind: str  # a key of CATEGORICAL or NUMERIC
    values: tuple  # categorical: the values; numeric: (low, high)

    @property
    def categorical(self) -> bool:
        return self.kind in CATEGORICAL



def spec_error(where: str, message: str) -> ConfigError:
    return ConfigError(f"invalid config: search.{where}: {message}")



# -- the spec -----------------------------------------------------------------------------------------------------
def _spec_allowed(loc: list[str]) -> list[str]:
    cls: Any = SearchSpec
    for part in loc:
        annotation = cls.model_fields[part].annotation if part in getattr(cls, "model_fields", {}) else None
        cls = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if cls is None:
            return []
    return sorted(cls.model_fields)


def parse_spec(raw: Any) -> SearchSpec:
    if not isinstance(raw, dict):
        raise ConfigError("invalid config: search: expected a mapping with at least space and trial_budget")
    try:
        return SearchSpec.model_validate(raw)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            loc = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
            where = ".".join(["search", *loc])
            if error["type"] == "extra_forbidden":
                allowed = _spec_allowed(loc[:-1])
                messages.append(f"{where}: unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
            else:
                messages.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid config: " + "; ".join(messages)) from None


def check_path(path: str) -> None:
    """``path`` must name an option of the config tree: component options are those of any registered component of
    the family (whether one applies is decided per combination); ``model.targets.<t>`` needs a registered target."""
    parts = path.split(".")
    models: list[type[BaseModel]] = [JobConfig]
    i = 0
    while i < len(parts):
        part, here = parts[i], ".".join(parts[:i]) or "the job"
        if not models:
            raise spec_error(f"space.{path}", f"unknown path: {here} takes a value, not sub-keys")
        fields = sorted({name for model in models for name in model.model_fields} - {"search"})
        if part not in fields:
            raise spec_error(f"space.{path}",
                             f"unknown path: {here} has no key '{part}' (allowed: {', '.join(fields)})")
        owner = next(model for model in models if part in model.model_fields)
        if part in _COMPONENT_FIELDS:
            registry = _COMPONENT_FIELDS[part]
            models = [getattr(registry.get(name), "Config", ComponentConfig) for name in registry.names()]
        elif part == "targets" and owner is ModelConfig:
            models = []
            if i + 1 < len(parts):
                i += 1
                if parts[i] not in TARGETS:
                    raise spec_error(f"space.{path}",
                                     f"unknown target '{parts[i]}'; known: {', '.join(TARGETS.names())}")
                models = [getattr(TARGETS.get(parts[i]), "Config", TargetConfig)]
        else:
            sub = _submodel(owner.model_fields[part].annotation)
            models = [sub] if sub else []
        i += 1


def _submodel(annotation) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def parse_dimension(path: str, spec: Any) -> Dimension:
    kinds = ", ".join(CATEGORICAL + NUMERIC)
    if not isinstance(spec, dict) or len(spec) != 1:
        raise spec_error(f"space.{path}", f"expected one distribution ({kinds}), e.g. {{choice: [a, b]}}; got {spec!r}")
    (kind, values), = spec.items()
    where = f"space.{path}.{kind}"
    if kind not in CATEGORICAL + NUMERIC:
        raise spec_error(f"space.{path}", f"unknown distribution '{kind}' (use one of {kinds})")
    if kind in CATEGORICAL:
        if not isinstance(values, list) or not values:
            raise spec_error(where, "expected a non-empty list of values")
        return Dimension(path, kind, tuple(values))
    if not (isinstance(values, list) and len(values) == 2 and all(is_number(v) for v in values)):
        raise spec_error(where, f"expected [low, high]; got {values!r}")
    low, high = values
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise spec_error(where, f"randint bounds must be integers; got {values!r}")
    if not (low < high if kind != "randint" else low <= high):
        raise spec_error(where, f"low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise spec_error(where, f"loguniform needs low > 0; got {low}")
    return Dimension(path, kind, (low, high))


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flatten_space(space: dict, prefix: str = ""):
    """(path, distribution) pairs: dotted keys (``train.lr: {...}``) or nested ones (``train: {lr: {...}}``, what
    ``--set search.space.train.lr=...`` makes)."""
    for key, value in space.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        nested = isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values())
        if nested and not set(value) & set(CATEGORICAL + NUMERIC):
            yield from flatten_space(value, path)
        else:
            yield path, value


def parse_dimensions(spec: SearchSpec) -> list[Dimension]:
    if not spec.space:
        raise spec_error("space", "empty: name at least one config path to search")
    dimensions = []
    for path, dist in flatten_space(spec.space):
        check_path(path)
        dimension = parse_dimension(path, dist)
        if path.startswith("data.") and not dimension.categorical:
            raise spec_error(f"space.{path}", "data options must be choice or grid: each value is a dataset prepared "
                                               "before the sweep")
        if dimension.kind == "grid" and spec.searcher == "optuna":
            raise spec_error(f"space.{path}", "grid needs searcher random or grid (optuna samples every dimension)")
        dimensions.append(dimension)
    if spec.scheduler.name == "pbt" and not any(not d.categorical for d in dimensions):
        raise spec_error("scheduler.name",
                         "pbt perturbs numeric options: add a uniform, loguniform or randint dimension")
    return dimensions
