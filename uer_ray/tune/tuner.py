"""The sweep: datasets prepared once per processor config, a Ray Tune ``Tuner`` over the valid combinations (searcher,
scheduler, budgets), resume with ``Tuner.restore``, the best trials fine-tuned fully, every trial collected for the
report.

Folder of a sweep (``<run.storage_path>/<search.name>``): ``datasets/<processor>-<hash>/`` (shared by the trials),
``tune/`` (Tune's experiment state, what ``--resume`` restores), ``trials/<trial id>/`` (each trial's Train run),
``winners/``, ``wandb/``, ``report.md``, ``trials.json`` and ``plots/``.
"""
from __future__ import annotations

import copy
import json
import math
import random

from uer_ray import storage
from uer_ray.config import ConfigError, JobConfig, build_config
from uer_ray.tune.search import SweepPlan, label_of, set_path
from uer_ray.tune.trial import CHECKPOINT_PATH, RUNGS, Rungs, TrialRuns, flat_config, run_trial

TUNE_DRIVER = "tune_driver"  # custom resource of the trial actors: they hold no CPU, their Train workers do
TUNE_DIR = "tune"


# -- search space, searcher, scheduler ----------------------------------------------------------------------------
class _PickCompletion:
    """``sample_from``: a combination drawn among those that complete the trial's grid point."""

    def __init__(self, groups: dict[str, list[str]], seed: int):
        self.groups, self.rng = groups, random.Random(seed)

    def __call__(self, spec) -> str:
        return self.rng.choice(self.groups[spec.config["grid_point"]])


def param_space(plan: SweepPlan) -> dict:
    """One categorical key (``combination``: a label per valid combination, so only valid ones are drawn) plus one key
    per numeric path. Grid dimensions (or searcher grid) are enumerated; choice dimensions are drawn."""
    from ray import tune

    space = {}
    for d in plan.dimensions:
        if d.kind == "uniform":
            space[d.path] = tune.uniform(*d.values)
        elif d.kind == "loguniform":
            space[d.path] = tune.loguniform(*d.values)
        elif d.kind == "randint":
            space[d.path] = tune.randint(d.values[0], d.values[1] + 1)  # Tune's upper bound is exclusive
    labels = [c.label for c in plan.combinations]
    categorical = [d for d in plan.dimensions if d.categorical]
    grid = [d.path for d in categorical if d.kind == "grid" or plan.spec.searcher == "grid"]
    if len(grid) == len(categorical) and grid:
        space["combination"] = tune.grid_search(labels)
    elif not grid:
        space["combination"] = tune.choice(labels)
    else:
        groups: dict[str, list[str]] = {}
        for c in plan.combinations:
            groups.setdefault(label_of({p: v for p, v in c.values.items() if p in grid}), []).append(c.label)
        space["grid_point"] = tune.grid_search(sorted(groups))
        space["combination"] = tune.sample_from(_PickCompletion(groups, plan.spec.seed))
    return space


def _first_rung(plan: SweepPlan) -> int:
    """Default grace period: a quarter of the trial budget, in whole probe intervals when counted in steps."""
    spec = plan.spec.scheduler
    if spec.grace_period:
        return spec.grace_period
    if plan.time_attr == "step":
        return max(plan.probe_every, plan.max_t // 4 // plan.probe_every * plan.probe_every)
    return max(1, plan.max_t // 4)


def make_scheduler(plan: SweepPlan):
    from ray import tune
    from ray.tune import schedulers

    spec = plan.spec.scheduler
    if spec.name == "asha":
        return schedulers.ASHAScheduler(time_attr=plan.time_attr, max_t=plan.max_t, grace_period=_first_rung(plan),
                                        reduction_factor=spec.reduction_factor)
    if spec.name == "hyperband":
        return schedulers.HyperBandScheduler(time_attr=plan.time_attr, max_t=plan.max_t,
                                             reduction_factor=spec.reduction_factor)
    if spec.name == "pbt":
        mutations = {k: v for k, v in param_space(plan).items() if k not in ("combination", "grid_point")}
        return schedulers.PopulationBasedTraining(
            time_attr=plan.time_attr, perturbation_interval=spec.perturbation_interval or _first_rung(plan),
            hyperparam_mutations=mutations,
        )
    return tune.schedulers.FIFOScheduler()


def make_searcher(plan: SweepPlan):
    from ray.tune.search import BasicVariantGenerator

    if plan.spec.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=plan.spec.seed))
    return BasicVariantGenerator(max_concurrent=plan.spec.max_concurrent, random_state=plan.spec.seed)


def num_samples(plan: SweepPlan) -> int:
    """Random/optuna: the trial budget (default 10). With grid points each runs ``trials`` times (default once)."""
    gridded = plan.spec.searcher == "grid" or any(d.kind == "grid" for d in plan.dimensions)
    return plan.spec.budget.trials or (1 if gridded else 10)


def _token_stopper(total: float):
    from ray import tune

    class TokenBudget(tune.Stopper):
        """Stops the sweep once its trials together have pre-trained on ``total`` tokens."""

        def __init__(self):
            self.used: dict[str, float] = {}

        def __call__(self, trial_id, result):
            self.used[trial_id] = result.get("tokens", 0)
            return False

        def stop_all(self):
            return sum(self.used.values()) >= total

    return TokenBudget()


# -- datasets, tuner ----------------------------------------------------------------------------------------------
def prepare_datasets(plan: SweepPlan, progress=print) -> None:
    """Preprocess each distinct data config once; a dataset with its manifest already written is kept (resume)."""
    from uer_ray.data.preprocess import MANIFEST, preprocess

    for key, raw in plan.datasets.items():
        out = plan.dataset_dir(key)
        if storage.exists(storage.join(out, MANIFEST)):
            progress(f"tune: dataset {key} ready ({out})")
            continue
        raw = copy.deepcopy(raw)
        raw["data"]["output_dir"] = out
        progress(f"tune: preparing dataset {key} (processor {raw['data']['processor']['name']})")
        preprocess(build_config(raw), progress=progress)


def check_sweep_dir(plan: SweepPlan, resume: bool) -> None:
    """A new sweep never overwrites an old one; ``--resume`` needs one (checked before Ray starts)."""
    where = plan.location(TUNE_DIR)
    if resume and not storage.exists(storage.join(where, "tuner.pkl")):
        raise ConfigError(f"tune --resume: no sweep to resume at {where}")
    if not resume and storage.exists(where):
        raise ConfigError(f"a sweep already exists at {where}: add --resume to continue it, or set another search.name")


def make_tuner(plan: SweepPlan, resume: bool, tracking):
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), {"cpu": 0, TUNE_DRIVER: 1})
    filesystem, root = storage.filesystem_and_root(plan.sweep_dir)
    if resume:
        return tune.Tuner.restore(plan.location(TUNE_DIR), trainable, resume_unfinished=True,
                                  storage_filesystem=filesystem)
    spec = plan.spec
    return tune.Tuner(
        trainable,
        param_space=param_space(plan),
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.mode, search_alg=make_searcher(plan), scheduler=make_scheduler(plan),
            num_samples=num_samples(plan),
            # a Searcher is limited by Tune; the variant generator limits itself
            max_concurrent_trials=spec.max_concurrent if spec.searcher == "optuna" else None,
            time_budget_s=spec.budget.time_s,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=root, storage_filesystem=filesystem, verbose=1,
            stop=_token_stopper(spec.budget.tokens) if spec.budget.tokens else None,
            callbacks=[TrialRuns(plan, tracking)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if spec.scheduler.name == "pbt" else None),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


# -- results ------------------------------------------------------------------------------------------------------
def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_record(plan: SweepPlan, result) -> dict:
    """One Tune result -> a plain record: combination, compute used, metric at each rung, status, and the checkpoint
    of its last rung (scored by the record's ``metric``, the last probe: what a winner is fine-tuned from)."""
    metric = plan.spec.metric
    config = {k: v for k, v in result.config.items() if k != "grid_point"}
    combination = plan.combination(config["combination"])
    trial_id = (result.metrics or {}).get("trial_id") or "_".join(storage.name(result.path).split("_")[2:4])
    rows = [r for r in Rungs(plan.location("trials", trial_id, RUNGS)).rows if _finite(r.get(metric))]
    history = [{k: row[k] for k in ("step", "tokens", "loss", metric) if _finite(row.get(k))} for row in rows]
    last = rows[-1] if rows else {}
    steps = int(last.get("step", 0))
    if result.error is not None:
        status, note = "failed", str(result.error).strip().splitlines()[-1][:200]
    elif steps >= combination.steps:
        status, note = "completed", ""
    else:
        status, note = "stopped", f"stopped early at {plan.time_attr} {last.get(plan.time_attr, 0):,.0f}"
    checkpoint = last.get(CHECKPOINT_PATH) if isinstance(last.get(CHECKPOINT_PATH), str) else None
    return {
        "trial_id": trial_id, "label": combination.label, "config": flat_config(plan, config, trial_id),
        "encoder": combination.raw["model"]["encoder"]["name"], "targets": list(combination.raw["model"]["targets"]),
        "status": status, "note": note, "steps": steps, "budget_steps": combination.steps,
        "tokens": int(last.get("tokens", 0)), "time_s": float((result.metrics or {}).get("time_total_s", 0.0)),
        "ended": (result.metrics or {}).get("timestamp"), "metric": last.get(metric), "history": history,
        "checkpoint": checkpoint if checkpoint and storage.exists(checkpoint) else None,
        "sampled": {p: config[p] for p in combination.numeric},
    }


def skipped_records(plan: SweepPlan) -> list[dict]:
    """Rejected and merged combinations, for the report's table."""
    records = [{"label": label_of(values), "status": "rejected", "note": reason} for values, reason in plan.rejected]
    records += [{"label": label_of(values), "status": "merged", "note": f"{reason.split(' (')[0]}: same as '{same}'"}
                for values, reason, same in plan.merged]
    return records


def winner_job(plan: SweepPlan, record: dict, rank: int) -> JobConfig:
    combination = plan.combination(record["label"])
    raw = copy.deepcopy(combination.raw)
    for path, value in record["sampled"].items():
        set_path(raw, path, value)
    name = f"winner{rank}-{record['trial_id']}"
    raw["run"].update(name=name, storage_path=plan.location("winners"))
    raw["finetune"]["pretrained"] = record["checkpoint"]
    raw["tracking"].update(group=plan.name, dir=plan.location("wandb"),
                           config={**record["config"], "trial_id": record["trial_id"], "winner_rank": rank})
    return build_config(raw)


def finetune_winners(plan: SweepPlan, records: list[dict], progress=print) -> list[dict]:
    """Fine-tune the best ``winners.k`` trials' checkpoints fully (the job's finetune section) and test them."""
    from uer_ray.finetune.finetune import finetune

    k = plan.spec.winners.k
    sign = 1 if plan.spec.mode == "max" else -1
    ranked = sorted((r for r in records if r.get("checkpoint") and _finite(r.get("metric"))),
                    key=lambda r: -sign * r["metric"])
    winners = []
    for rank, record in enumerate(ranked[:k], start=1):
        progress(f"tune: winner {rank}/{k}: {record['label']} ({plan.spec.metric} {record['metric']:.4f}); fine-tuning")
        metrics = finetune(winner_job(plan, record, rank), progress=progress)
        winners.append({"rank": rank, "trial_id": record["trial_id"], "label": record["label"],
                        "metric": record["metric"], **{k: v for k, v in metrics.items() if _finite(v)}})
    return winners


def run_sweep(job: JobConfig, plan: SweepPlan, resume: bool = False, progress=print) -> dict:
    """Prepare the datasets, run (or resume) the Tuner, fine-tune the winners, write the report; returns
    ``{records, winners, report}``. Starts a local Ray with the trial-actor resource unless one is running."""
    import ray

    from uer_ray.runtime import init_ray
    from uer_ray.tune.report import write_report

    check_sweep_dir(plan, resume)
    init_ray(job.run, resources={TUNE_DRIVER: 1000})
    if TUNE_DRIVER not in ray.cluster_resources():
        raise ConfigError(f"the Ray cluster has no '{TUNE_DRIVER}' resource for Tune's trial actors: start its head "
                          f"with --resources='{{\"{TUNE_DRIVER}\": 1000}}'")
    prepare_datasets(plan, progress)
    grid = make_tuner(plan, resume, job.tracking).fit()
    records = [trial_record(plan, result) for result in grid]
    storage.write_text(plan.location("trials.json"), json.dumps(records, indent=1, default=str))
    winners = finetune_winners(plan, records, progress)
    with storage.staging_dir("uer-tune-report-") as local:
        write_report(plan_header(plan), records + skipped_records(plan), winners, local, metric=plan.spec.metric,
                     mode=plan.spec.mode, tracking=job.tracking.model_copy(update={"dir": plan.location("wandb")}),
                     progress=progress)
        storage.upload_dir(local, plan.sweep_dir)
    progress(f"tune: report -> {plan.location('report.md')}, plots -> {plan.location('plots')}")
    return {"records": records, "winners": winners, "report": plan.location("report.md")}


def plan_header(plan: SweepPlan) -> dict:
    spec = plan.spec
    return {
        "sweep": plan.name, "searcher": spec.searcher, "scheduler": spec.scheduler.name, "metric": spec.metric,
        "mode": spec.mode, "time_attr": plan.time_attr, "budget": spec.trial_budget.model_dump(exclude_none=True),
        "dimensions": {d.path: {d.kind: list(d.values)} for d in plan.dimensions}, "summary": plan.summary(),
    }
