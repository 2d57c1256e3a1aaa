"""The search spec: wrong specs fail before Ray starts with one line naming the key; combinations are filtered by the
config itself (rejections counted with their reasons, options that do not apply merged); the plan feeds Tune."""
from __future__ import annotations

import copy
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from uer_ray.config import ConfigError, build_config, expand_env
from uer_ray.tune.search import plan_sweep
from uer_ray.tune.trial import flat_config, trial_job

ROOT = Path(__file__).resolve().parents[2]
READY = ROOT / "jobs" / "tune_encoders_targets.yaml"


@pytest.fixture
def spec(tmp_path, data_dir, monkeypatch) -> dict:
    """The ready sweep's job on the reference data (UER_DATA), stored under tmp_path."""
    monkeypatch.setenv("UER_DATA", str(data_dir))
    data = expand_env(yaml.safe_load(READY.read_text()))
    data["run"]["storage_path"] = str(tmp_path / "runs")
    return data


def plan_of(data: dict):
    return plan_sweep(build_config(data))


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        plan_of(data)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_ready_sweep_filters_18_combinations_to_11_trials(spec):
    plan = plan_of(spec)
    assert (len(plan.combinations), len(plan.rejected), len(plan.merged)) == (11, 1, 6)
    (values, reason), = plan.rejected
    assert values["model.encoder"] == "transformer" and values["model.targets"] == {"lm": 1.0}
    assert "target lm needs a causal encoder" in reason
    assert all("model.targets.sp.weight does not apply" in why for _, why, _ in plan.merged)
    labels = [c.label for c in plan.combinations]
    assert "lstm mlm+sp sp.weight=0.25" in labels and "gatedcnn lm" in labels and len(set(labels)) == 11
    # one dataset per processor, shared by every combination that needs it
    processors = {c.raw["data"]["processor"]["name"]: c.dataset for c in plan.combinations}
    assert sorted(processors) == ["bert", "lm", "mlm"] and len(plan.datasets) == 3
    by_targets = {tuple(c.raw["model"]["targets"]): c.raw["data"]["processor"]["name"] for c in plan.combinations}
    assert by_targets == {("mlm",): "mlm", ("mlm", "sp"): "bert", ("lm",): "lm"}
    weighted = plan.combination("transformer mlm+sp sp.weight=0.25").raw["model"]["targets"]
    assert weighted["sp"]["weight"] == 0.25 and weighted["mlm"]["weight"] == 1.0
    summary = "\n".join(plan.summary())
    assert "11 valid, 1 rejected, 6 merged" in summary and "rejected x1 (transformer lm" in summary


def test_trial_job_applies_the_combination_budget_and_tracking(spec):
    plan = plan_of(spec)
    job = trial_job(plan, {"combination": "gatedcnn mlm+sp sp.weight=0.25"}, "abc_00003")
    assert job.model.encoder.name == "gatedcnn" and job.model.encoder.layers_num == 3
    assert {t: c.weight for t, c in job.model.targets.items()} == {"mlm": 1.0, "sp": 0.25}
    assert job.data.processor.name == "bert" and job.data.output_dir.startswith(plan.location("datasets", "bert-"))
    assert (job.train.total_steps, job.train.checkpoint_every) == (600, 100)
    assert job.run.name == "abc_00003" and job.run.storage_path == plan.location("trials")
    assert job.tracking.mode == "disabled"  # the trial's W&B run is logged on the driver (TrialRuns)
    flat = flat_config(plan, {"combination": "gatedcnn mlm+sp sp.weight=0.25"}, "abc_00003")
    assert flat["trial_id"] == "abc_00003" and flat["sweep"] == "tune-encoders-targets"
    assert flat["model.encoder"] == "gatedcnn" and flat["model.targets"] == "mlm+sp:0.25"
    assert flat["model.targets.sp.weight"] == 0.25 and flat["model.encoder.kernel_size"] == 3
    assert all(not isinstance(v, (dict, list)) for v in flat.values())  # flat W&B config keys


def test_numeric_dimensions_and_token_budget(spec):
    spec["search"]["space"]["train.lr"] = {"loguniform": [5.0e-4, 3.0e-3]}
    spec["search"]["space"]["model.encoder.heads_num"] = {"choice": [2, 4]}
    spec["search"]["trial_budget"] = {"tokens": 1_000_000}
    plan = plan_of(spec)
    # heads_num applies to the transformer only: the recurrent and convolutional combinations are merged
    assert len(plan.combinations) == 3 * 2 + 8
    lstm = plan.combination("lstm lm")
    assert lstm.numeric == ["train.lr"] and "model.encoder.heads_num" not in lstm.values
    # 1e6 tokens / (32 rows x 64 tokens x 1 worker) = 489 steps, rounded up to whole probe intervals
    assert lstm.steps == 500
    job = trial_job(plan, {"combination": "lstm lm", "train.lr": 1.5e-3}, "t_00000")
    assert job.train.lr == 1.5e-3 and job.train.total_steps == 500
    assert flat_config(plan, {"combination": "lstm lm", "train.lr": 1.5e-3}, "t")["train.lr"] == 1.5e-3


def test_nested_space_keys_equal_dotted_ones(spec):
    spec["search"]["space"]["train"] = {"lr": {"uniform": [1.0e-4, 1.0e-3]}}
    assert [d.path for d in plan_of(spec).dimensions][-1] == "train.lr"


@pytest.mark.parametrize("path, dist, expected", [
    ("train.lrr", {"uniform": [1, 2]}, "search.space.train.lrr: unknown path: train has no key 'lrr' (allowed: "),
    ("model.encoder.heads", {"choice": [2]}, "search.space.model.encoder.heads: unknown path: model.encoder has no"),
    ("model.targets.nsp.weight", {"choice": [1.0]}, "search.space.model.targets.nsp.weight: unknown target 'nsp'"),
    ("train.lr.value", {"choice": [1]}, "search.space.train.lr.value: unknown path: train.lr takes a value"),
    ("train.lr", {"logunifrom": [1e-4, 1e-3]}, "search.space.train.lr: unknown distribution 'logunifrom'"),
    ("train.lr", {"loguniform": [0, 1e-3]}, "search.space.train.lr.loguniform: loguniform needs low > 0"),
    ("train.lr", {"uniform": [2e-3, 1e-3]}, "search.space.train.lr.uniform: low 0.002 must be below high 0.001"),
    ("train.batch_size", {"randint": [8, 16.5]}, "search.space.train.batch_size.randint: randint bounds must be"),
    ("model.hidden_size", {"choice": []}, "search.space.model.hidden_size.choice: expected a non-empty list"),
    ("train.lr", [1e-4, 1e-3], "search.space.train.lr: expected one distribution"),
    ("data.processor.mask_prob", {"uniform": [0.1, 0.2]}, "search.space.data.processor.mask_prob: data options"),
])
def test_bad_space_entry_names_the_key(spec, path, dist, expected):
    spec["search"]["space"][path] = dist
    assert expected in error_of(spec)


def test_nothing_survives_is_an_error_with_the_reasons(spec):
    spec["search"]["space"] = {"model.encoder": {"choice": ["transformer"]}, "model.targets": {"choice": [{"lm": 1.0}]}}
    message = error_of(spec)
    assert message.startswith("invalid config: search.space: no valid combination among 1: ")
    assert "target lm needs a causal encoder" in message


def test_a_numeric_bound_the_config_rejects_rejects_the_combinations(spec):
    spec["search"]["space"]["train.warmup"] = {"uniform": [0.5, 1.5]}
    assert "search.space.train.warmup = 1.5: train.warmup: Input should be less than 1" in error_of(spec)


def test_a_target_set_no_dataset_feeds_is_rejected(spec):
    spec["search"]["space"]["model.targets"] = {"grid": [{"mlm": 1.0}, {"bilm": 1.0}]}
    spec["search"]["space"].pop("model.targets.sp.weight")
    plan = plan_of(spec)
    assert len(plan.combinations) == 3
    reasons = {r for _, r in plan.rejected}
    assert reasons == {"no entry of search.datasets feeds target(s) bilm (mlm feeds mlm; bert feeds mlm, sp; "
                       "lm feeds lm)"}


@pytest.mark.parametrize("change, expected", [
    ({"schedulr": "asha"}, "search.schedulr: unknown key (allowed: budget, datasets, "),
    ({"scheduler": {"name": "median"}}, "search.scheduler.name: Input should be 'asha', 'hyperband', 'pbt' or 'fifo'"),
    ({"trial_budget": {"steps": 600, "tokens": 10}}, "search.trial_budget: give exactly one of steps or tokens"),
    ({"trial_budget": {"steps": 650}}, "search.trial_budget.steps: 650 is not a multiple of train.probe.every (100)"),
    ({"searcher": "optuna"}, "search.space.model.encoder: grid needs searcher random or grid"),
    ({"scheduler": {"name": "pbt"}}, "search.scheduler.name: pbt perturbs numeric options"),
])
def test_bad_search_settings_name_the_key(spec, change, expected):
    spec["search"].update(change)
    assert expected in error_of(spec)


def test_dev_metric_needs_the_probe_and_winners_need_finetune_data(spec):
    no_probe = copy.deepcopy(spec)
    del no_probe["train"]["probe"]
    assert "search.metric: dev_metric comes from the downstream probe: set train.probe" in error_of(no_probe)
    spec["finetune"].pop("train_path")
    assert "search.winners.k: fine-tuning the winners needs finetune.train_path" in error_of(spec)


def test_cli_refuses_a_bad_spec_quickly_without_starting_ray(spec, tmp_path):
    spec["search"]["space"]["train.lrr"] = {"uniform": [1, 2]}
    job = tmp_path / "sweep.yaml"
    job.write_text(yaml.safe_dump(spec))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "tune", "--config", str(job)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: invalid config: search.space.train.lrr: unknown path: train has no key 'lrr' (allowed: batch_size, "
        "checkpoint_every, compile, grad_accum_steps, grad_clip, group_by_length, init_from, keep_checkpoints, lr, "
        "min_lr_ratio, power, precision, prefetch, probe, report_every, scheduler, seed, shuffle_window, total_steps, "
        "warmup, warmup_steps, weight_decay)"
    ]
    assert "Ray" not in done.stdout + done.stderr  # failed before Ray started
    # CPU time, not wall time: the machine is shared; alone, the command takes about 2 s
    assert cpu < 5.0, f"the refusal took {cpu:.1f} s of CPU"


def test_param_space_draws_only_valid_combinations(spec):
    from ray import tune

    from uer_ray.tune.tuner import make_scheduler, num_samples, param_space

    plan = plan_of(spec)
    space = param_space(plan)
    assert space == {"combination": tune.grid_search([c.label for c in plan.combinations])}
    assert num_samples(plan) == 1
    scheduler = make_scheduler(plan)
    assert (scheduler._time_attr, scheduler._max_t, scheduler._reduction_factor) == ("step", 600, 3)
    assert [rung for rung, _ in scheduler._brackets[0]._rungs] == [300, 100]  # rungs on probe steps

    spec["search"]["searcher"] = "random"
    spec["search"]["space"]["model.encoder"] = {"choice": spec["search"]["space"]["model.encoder"]["grid"]}
    spec["search"]["space"]["train.lr"] = {"loguniform": [1e-4, 1e-3]}
    spec["search"]["budget"]["trials"] = 5
    plan = plan_of(spec)
    space = param_space(plan)
    # encoder drawn per grid point (targets x sp weight) among the combinations valid with it
    assert space["grid_point"] == tune.grid_search(sorted({"lm", "mlm", "mlm+sp sp.weight=0.25", "mlm+sp sp.weight=1"}))
    completions = space["combination"].func.groups
    assert completions["lm"] == ["lstm lm", "gatedcnn lm"]  # transformer lm is rejected, never drawn
    assert isinstance(space["train.lr"], tune.search.sample.Float) and num_samples(plan) == 5


def test_optuna_draws_valid_combinations_and_schedulers_build(spec):
    from ray.tune import schedulers

    from uer_ray.tune.tuner import make_scheduler, make_searcher, param_space

    spec["search"].update(searcher="optuna", budget={"trials": 4})
    for dimension in ("model.encoder", "model.targets", "model.targets.sp.weight"):
        spec["search"]["space"][dimension] = {"choice": spec["search"]["space"][dimension]["grid"]}
    spec["search"]["space"]["train.lr"] = {"loguniform": [1e-4, 1e-3]}
    plan = plan_of(spec)
    searcher = make_searcher(plan)
    assert searcher.set_search_properties("dev_metric", "max", param_space(plan))
    labels = {c.label for c in plan.combinations}
    for index in range(4):
        config = searcher.suggest(f"trial_{index}")
        assert config["combination"] in labels and 1e-4 <= config["train.lr"] <= 1e-3

    spec["search"]["scheduler"] = {"name": "pbt"}
    pbt = make_scheduler(plan_of(spec))
    assert isinstance(pbt, schedulers.PopulationBasedTraining) and pbt._perturbation_interval == 100
    assert list(pbt._hyperparam_mutations) == ["train.lr"]  # only numeric options mutate: weights match the combination
    spec["search"]["scheduler"] = {"name": "hyperband", "reduction_factor": 2}
    hyperband = make_scheduler(plan_of(spec))
    assert isinstance(hyperband, schedulers.HyperBandScheduler) and hyperband._time_attr == "step"
