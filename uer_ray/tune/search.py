"""Sweep planning: a job's ``search:`` section -> validated dimensions -> every categorical combination checked by the
config itself -> a ``SweepPlan`` (valid combinations, rejections with reasons, merged duplicates, datasets to prepare).

No Ray import here: a spec with an unknown path, a bad distribution or no valid combination fails in about a second,
before Ray starts. The YAML shape::

    search:
      space:                                  # config path -> one distribution
        model.encoder: {choice: [transformer, lstm, gatedcnn]}
        model.targets: {grid: [{mlm: 1.0}, {mlm: 1.0, sp: 1.0}, {lm: 1.0}]}
        model.targets.sp.weight: {choice: [1.0, 0.5]}    # applies only to combinations with target sp
        train.lr: {loguniform: [5.0e-4, 3.0e-3]}
      datasets:                               # a combination pre-trains on the first whose processor feeds its targets
        - {processor: {name: mlm, seq_length: 64}}
        - {processor: {name: lm, seq_length: 64}}
      searcher: random | grid | optuna
      scheduler: {name: asha | hyperband | pbt | fifo, grace_period: 100, reduction_factor: 3}
      metric: dev_metric                      # the downstream probe's mean dev metric (train.probe)
      mode: max
      max_concurrent: 2
      trial_budget: {steps: 400}              # or {tokens: N}
      budget: {trials: 12, time_s: 1500, tokens: 5.0e7}
      winners: {k: 2}

``choice`` and ``grid`` make the categorical dimensions whose product is enumerated and filtered; ``uniform``,
``loguniform`` and ``randint`` (both bounds inclusive) are sampled per trial and checked at their bounds. An option that
does not apply to a combination (a target's weight without the target, ``heads_num`` with an LSTM) is dropped from it,
and combinations that become identical are merged.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from uer_ray import storage
from uer_ray.config import _COMPONENT_FIELDS, ConfigError, JobConfig, ModelConfig, _allowed_keys, build_config
from uer_ray.registry import PROCESSORS
from uer_ray.tune.spec import Dimension, SearchSpec, TrialBudget, is_number, parse_dimensions, parse_spec, spec_error


@dataclass
class Combination:
    label: str
    values: dict[str, Any]  # categorical path -> value, only those that apply
    numeric: list[str]  # numeric paths that apply
    dataset: str  # key of the dataset it pre-trains on
    raw: dict  # the validated job as plain data, before numeric values and per-trial settings
    steps: int  # pre-training budget in steps


@dataclass
class SweepPlan:
    name: str
    sweep_dir: str  # a local path or a URI (run.storage_path / search.name)
    spec: SearchSpec
    dimensions: list[Dimension]
    combinations: list[Combination]
    rejected: list[tuple[dict, str]] = field(default_factory=list)  # (values that apply, reason)
    merged: list[tuple[dict, str, str]] = field(default_factory=list)  # (values, why, label of the same trial)
    datasets: dict[str, dict] = field(default_factory=dict)  # key -> a raw job that prepares it
    probe_every: int | None = None

    def combination(self, label: str) -> Combination:
        return next(c for c in self.combinations if c.label == label)

    def location(self, *parts: str) -> str:
        return storage.join(self.sweep_dir, *parts)

    def dataset_dir(self, key: str) -> str:
        return self.location("datasets", key)

    @property
    def time_attr(self) -> str:
        return "tokens" if self.spec.trial_budget.tokens else "step"

    @property
    def max_t(self) -> int:
        return self.spec.trial_budget.tokens or self.spec.trial_budget.steps

    @property
    def categorical_paths(self) -> list[str]:
        return [d.path for d in self.dimensions if d.categorical]

    def summary(self) -> list[str]:
        total = len(self.combinations) + len(self.rejected) + len(self.merged)
        lines = [f"search: {total} combination(s) of {', '.join(self.categorical_paths) or 'no categorical option'}: "
                 f"{len(self.combinations)} valid, {len(self.rejected)} rejected, {len(self.merged)} merged"]
        for reason, count in _count(r for _, r in self.rejected):
            which = [label_of(values) for values, r in self.rejected if r == reason]
            more = f", +{len(which) - 3} more" if len(which) > 3 else ""
            lines.append(f"  rejected x{count} ({'; '.join(which[:3])}{more}): {reason}")
        for reason, count in _count(r for _, r, _ in self.merged):
            lines.append(f"  merged x{count}: {reason}")
        return lines



def _count(reasons) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return sorted(counts.items(), key=lambda item: -item[1])




# -- applying values to a raw job ---------------------------------------------------------------------------------
def set_path(raw: dict, path: str, value: Any) -> None:
    """Set ``value`` at ``path``; a component given by name (``encoder: lstm``) or a target given by weight
    (``sp: 0.5``) becomes a mapping when one of its options is set."""
    parts = path.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str):
            child = {"name": child}
        elif is_number(child) and parts[depth - 1 : depth] == ["targets"]:
            child = {"weight": child}
        elif not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def applies(raw: dict, path: str) -> bool:
    """Whether ``path`` is an option of ``raw`` as it stands (the chosen component has it; the target is in the set)."""
    parts = path.split(".")
    if parts[:2] == ["model", "targets"] and len(parts) > 2:
        if parts[2] not in (raw.get("model", {}).get("targets") or {}):
            return False
    if len(parts) < 2:
        return True
    try:
        allowed = _allowed_keys(parts[:-1], raw)
    except ValueError:  # a component name the config will reject with its own message
        return True
    return not allowed or parts[-1] in allowed


def targets_label(targets: dict) -> str:
    """``{mlm: 1.0, sp: 0.5}`` -> ``mlm+sp:0.5`` (weights other than 1 shown)."""
    return "+".join(name if _weight(spec) == 1 else f"{name}:{_weight(spec):g}" for name, spec in targets.items())


def _label_part(path: str, value: Any) -> str:
    last = path.split(".")[-1]
    if last == "targets" and isinstance(value, dict):
        return targets_label(value)
    if last in _COMPONENT_FIELDS and isinstance(value, (str, dict)):
        return value if isinstance(value, str) else str(value.get("name", json.dumps(value, separators=(",", ":"))))
    leaf = ".".join(path.split(".")[-2:])
    return f"{leaf}={value:g}" if is_number(value) else f"{leaf}={value}"


def _weight(spec: Any) -> float:
    return spec.get("weight", 1.0) if isinstance(spec, dict) else spec


def label_of(values: dict[str, Any]) -> str:
    return " ".join(_label_part(path, value) for path, value in values.items()) or "base"


def _dataset_key(job: JobConfig) -> str:
    identity = {"tokenizer": job.tokenizer.model_dump(mode="json") if job.tokenizer else None,
                "data": job.data.model_dump(mode="json", exclude={"output_dir"})}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{job.data.processor.name}-{digest}"


def _pick_dataset(raw: dict, datasets: list[dict]) -> tuple[dict | None, str | None]:
    """The first ``search.datasets`` entry whose processor feeds every target of ``raw`` -> (entry, None), else
    (None, reason). Without entries the job's own data section is used."""
    if not datasets:
        return {}, None
    targets = list((raw.get("model") or {}).get("targets") or ModelConfig().targets)
    fed = []
    for entry in datasets:
        processor = entry.get("processor", (raw.get("data") or {}).get("processor", "bert"))
        name = processor.get("name") if isinstance(processor, dict) else processor
        feeds = getattr(PROCESSORS.get(name), "feeds", ())
        if all(t in feeds for t in targets):
            return entry, None
        fed.append(f"{name} feeds {', '.join(feeds)}")
    return None, f"no entry of search.datasets feeds target(s) {'+'.join(targets)} ({'; '.join(fed)})"


# -- planning -----------------------------------------------------------------------------------------------------
def _resolve(base: dict, assignment: dict[str, Any], datasets: list[dict]) -> tuple[dict, dict, str | None]:
    """Apply one categorical assignment -> (raw job, the values that apply, rejection reason or None)."""
    raw = copy.deepcopy(base)
    applied: dict[str, Any] = {}
    model_paths = sorted((p for p in assignment if not p.startswith("data.")), key=lambda p: p.count("."))
    for path in model_paths:
        if applies(raw, path):
            set_path(raw, path, assignment[path])
            applied[path] = assignment[path]
    entry, reason = _pick_dataset(raw, datasets)
    if reason:
        return raw, applied, reason
    raw.setdefault("data", {}).update(copy.deepcopy(entry))  # a dataset entry replaces whole data keys
    for path in sorted((p for p in assignment if p.startswith("data.")), key=lambda p: p.count(".")):
        if applies(raw, path):
            set_path(raw, path, assignment[path])
            applied[path] = assignment[path]
    return raw, {p: applied[p] for p in assignment if p in applied}, None


def _validate(raw: dict) -> JobConfig:
    return build_config(raw)


def _reason(exc: ConfigError) -> str:
    return str(exc).removeprefix("invalid config: ")


def _numeric_rejection(raw: dict, numeric: list[Dimension]) -> str | None:
    for dimension in numeric:
        for bound in dimension.values:
            trial = copy.deepcopy(raw)
            set_path(trial, dimension.path, bound)
            try:
                _validate(trial)
            except ConfigError as exc:
                return f"search.space.{dimension.path} = {bound}: {_reason(exc)}"
    return None


def _steps(job: JobConfig, budget: TrialBudget, every: int) -> int:
    """Pre-training steps of one trial: a token budget counts instance slots, rounded up to whole probe intervals."""
    if budget.steps:
        return budget.steps
    slots = job.train.batch_size * job.run.num_workers * job.data.processor.seq_length
    return math.ceil(budget.tokens / slots / every) * every


def probe_every(job: JobConfig, spec: SearchSpec) -> int | None:
    """Steps between downstream probes (``train.probe.every``): the scheduler's rungs; required for dev_metric."""
    probe = getattr(job.train, "probe", None)
    if probe is None:
        if spec.metric == "dev_metric":
            raise ConfigError("invalid config: search.metric: dev_metric comes from the downstream probe: set "
                              "train.probe (every, steps, tasks) or choose a pre-training metric such as loss")
        return None
    return probe.every


def _plain(job: JobConfig) -> dict:
    """The validated job as plain data (every local path already absolute: trials run in other folders)."""
    return job.model_dump(mode="json", exclude={"search"})


def plan_sweep(job: JobConfig, raw_search: dict | None = None) -> SweepPlan:
    """Validate ``job.search`` and enumerate its combinations; raises ConfigError naming the key when the spec is
    wrong or no combination survives."""
    raw_search = raw_search if raw_search is not None else getattr(job, "search", None)
    if not raw_search:
        raise ConfigError("invalid config: search: missing; `tune` needs a search section (space, trial_budget)")
    spec = parse_spec(raw_search)
    dimensions = parse_dimensions(spec)
    if spec.winners.k and not job.finetune.train_path:
        raise spec_error("winners.k", "fine-tuning the winners needs finetune.train_path (and test_path for a test "
                                       "score); or set winners.k: 0")
    every = probe_every(job, spec) or 1
    if spec.trial_budget.steps and spec.trial_budget.steps % every:
        raise spec_error("trial_budget.steps", f"{spec.trial_budget.steps} is not a multiple of train.probe.every "
                                                f"({every}): the last step must be scored")
    base = _plain(job)
    categorical = [d for d in dimensions if d.categorical]
    numeric = [d for d in dimensions if not d.categorical]
    name = spec.name or job.run.name
    plan = SweepPlan(name, storage.join(job.run.storage_path, name), spec, dimensions, [], probe_every=every)
    seen: dict[str, str] = {}  # applied values -> label of the combination kept (or rejected) for them
    for values in itertools.product(*(d.values for d in categorical)):
        assignment = dict(zip((d.path for d in categorical), values))
        raw, applied, reason = _resolve(base, assignment, spec.datasets)
        key = json.dumps(applied, sort_keys=True, default=str)
        if key in seen:
            dropped = ", ".join(p for p in assignment if p not in applied)
            plan.merged.append((assignment, f"{dropped} does not apply (same as another combination)", seen[key]))
            continue
        seen[key] = label_of(applied)
        applying = [d for d in numeric if applies(raw, d.path)]
        if reason is None:
            try:
                trial_job = _validate(raw)
                reason = _numeric_rejection(raw, applying)
            except ConfigError as exc:
                reason = _reason(exc)
        if reason:
            plan.rejected.append((applied, reason))
            continue
        dataset = _dataset_key(trial_job)
        plain = _plain(trial_job)
        plan.datasets.setdefault(dataset, plain)
        plan.combinations.append(Combination(
            label_of(applied), applied, [d.path for d in applying], dataset, plain,
            _steps(trial_job, spec.trial_budget, every),
        ))
    _unique_labels(plan.combinations)
    if not plan.combinations:
        reasons = "; ".join(f"{reason} (x{count})" for reason, count in _count(r for _, r in plan.rejected))
        raise ConfigError(f"invalid config: search.space: no valid combination among {len(plan.rejected)}: {reasons}")
    return plan


def _unique_labels(combinations: list[Combination]) -> None:
    counts: dict[str, int] = {}
    for combination in combinations:
        counts[combination.label] = counts.get(combination.label, 0) + 1
    for index, combination in enumerate(combinations):
        if counts[combination.label] > 1:
            combination.label = f"{combination.label} #{index}"
