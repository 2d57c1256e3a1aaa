"""One trial: apply a combination to the job, pre-train it on Ray Train for the trial budget with the downstream
probe, and pass the probe reports (dev metric + pre-training losses at each rung) to Ray Tune.

The Train controller hands each report to a small queue (``ForwardReports``, a Train ``UserCallback``); the trial
function drains it and calls ``tune.report``, attaching the Train checkpoint when the scheduler needs one (PBT). Only
reports that carry the sweep's metric reach Tune, so every scheduler sees the same rungs (``train.probe.every``).
A trial's Train run lives in ``<sweep>/trials/<trial id>`` with a checkpoint at every rung: a trial restarted by Tune
(resumed sweep, HyperBand's pause) resumes from its own latest one. The trial keeps its rung reports there too
(``rungs.jsonl``): the history of the report, and what it reports again when its pre-training had already finished.
Its W&B run is logged on the driver (``TrialRuns``), which outlives the trials that Tune stops.
"""
from __future__ import annotations

import copy
import json
import threading
from typing import Any

from ray.train import UserCallback
from ray.tune import Callback

from uer_ray import storage
from uer_ray.config import JobConfig, build_config
from uer_ray.errors import RunFinished
from uer_ray.tracking import Tracker
from uer_ray.tune.search import SweepPlan, set_path, targets_label

CHECKPOINT_PATH = "checkpoint_path"
RUNGS = "rungs.jsonl"


class Rungs:
    """A trial's rung reports, kept in its run folder: the history the report reads, and what a trial whose
    pre-training had finished when the driver died (before Tune heard of it) reports again instead of training."""

    def __init__(self, location: str):
        self.location = location
        text = storage.read_text(location) if storage.exists(location) else ""
        self.rows = [json.loads(line) for line in text.splitlines() if line]

    def add(self, row: dict) -> None:
        # a resumed run repeats the steps after its last checkpoint: the new report replaces the old one
        self._write([r for r in self.rows if r["step"] < row["step"]] + [row])

    def recover(self, rows) -> None:
        """Add reports that Ray Train registered but that never reached this file (the driver died in between)."""
        known = {r["step"] for r in self.rows}
        self._write(sorted(self.rows + [r for r in rows if r["step"] not in known], key=lambda r: r["step"]))

    def _write(self, rows: list[dict]) -> None:
        self.rows = rows
        storage.write_text(self.location, "".join(json.dumps(r) + "\n" for r in rows))


def registered_rows(job: JobConfig, run: str, metric: str) -> list[dict]:
    """The reports of a Train run's kept checkpoints (its snapshot), each with the path of its checkpoint."""
    from uer_ray.train.trainer import SNAPSHOT, ray_run_location

    location = ray_run_location(job, run)
    snapshot = storage.join(location, SNAPSHOT)
    if not storage.exists(snapshot):
        return []
    return [{**r["metrics"], CHECKPOINT_PATH: storage.join(location, r["checkpoint_dir_name"])}
            for r in storage.read_json(snapshot).get("checkpoint_results", []) if metric in r["metrics"]]


def flat_config(plan: SweepPlan, config: dict, trial_id: str) -> dict[str, Any]:
    """The trial's combination as flat W&B config keys: encoder and target set by name, target weights and every
    searched option as their own keys."""
    combination = plan.combination(config["combination"])
    model = combination.raw["model"]
    flat: dict[str, Any] = {
        "sweep": plan.name, "trial_id": trial_id, "combination": combination.label,
        "model.encoder": model["encoder"]["name"], "model.targets": targets_label(model["targets"]),
        "data.processor": combination.raw["data"]["processor"]["name"],
    }
    for name, target in model["targets"].items():
        flat[f"model.targets.{name}.weight"] = target["weight"]
    for path, value in combination.values.items():
        if isinstance(value, dict) and path.endswith(("encoder", "processor")):
            flat.update({f"{path}.{key}": option for key, option in value.items() if key != "name"})
        elif not isinstance(value, dict):
            flat[path] = value
    flat.update({path: config[path] for path in combination.numeric})
    return flat


def trial_job(plan: SweepPlan, config: dict, trial_id: str) -> JobConfig:
    """The job one trial pre-trains: its combination, its sampled numeric values, the shared dataset, the budget."""
    combination = plan.combination(config["combination"])
    raw = copy.deepcopy(combination.raw)
    for path in combination.numeric:
        set_path(raw, path, config[path])
    raw["run"].update(name=trial_id, storage_path=plan.location("trials"))
    raw["data"]["output_dir"] = plan.dataset_dir(combination.dataset)
    # A checkpoint at every rung: a trial restarted (resumed sweep, HyperBand, PBT) loses at most one interval.
    raw["train"].update(total_steps=combination.steps, checkpoint_every=plan.probe_every)
    # W&B is logged by TrialRuns on the driver: a trial that Tune stops is killed, and a run inside it with it
    raw["tracking"]["mode"] = "disabled"
    return build_config(raw)


class TrialRuns(Callback):
    """One W&B run per trial, logged on the Tune driver from the trial's rung reports: grouped by sweep, the
    combination as flat config keys. The driver outlives every trial, so a run stopped early still closes cleanly; a
    trial resumed after the driver died continues its run (same id)."""

    def __init__(self, plan: SweepPlan, tracking):
        self.plan, self.tracking = plan, tracking.model_copy(update={"group": plan.name})
        self._runs: dict[str, Tracker] = {}

    def __getstate__(self):  # Tune saves its callbacks with the experiment; open runs stay here
        return {**self.__dict__, "_runs": {}}

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id not in self._runs:
            self._runs[trial.trial_id] = Tracker(
                self.tracking, trial.trial_id, "trial", flat_config(self.plan, trial.config, trial.trial_id),
                self.plan.location("wandb"), run_id=f"{self.plan.name}-{trial.trial_id}",
            )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run = self._runs.get(trial.trial_id)
        if run is not None:
            run.log({k: v for k, v in result.items() if _loggable(k, v)}, step=int(result.get("step", 0)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "failed")

    def _close(self, trial, status: str) -> None:
        run = self._runs.pop(trial.trial_id, None)
        if run is not None:
            run.summary({"status": status})
            run.finish()


def _loggable(key: str, value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("timestamp", "pid", "done")


class ForwardReports(UserCallback):
    """Runs in the Train controller: puts (rank 0's metrics, checkpoint path) of every report carrying ``metric``
    on a queue that the trial function drains (the budget is whole probe intervals, so the last step is one)."""

    def __init__(self, queue, metric: str):
        self.queue, self.metric = queue, metric

    def after_report(self, run_context, metrics, checkpoint):
        row = dict(metrics[0])
        if self.metric in row:
            self.queue.put((row, checkpoint.path if checkpoint else None))


class _Segment:
    """Where this trial's pre-training starts: fresh, or (PBT) from another trial's checkpoint. A warm start runs the
    rest of the budget as its own Train run and shifts the reported step and tokens by the donor's."""

    def __init__(self, job: JobConfig, trial_id: str, checkpoint) -> None:
        self.run, self.step, self.tokens = "pretrain", 0, 0
        meta = checkpoint.get_metadata() if checkpoint is not None else {}
        if not meta:
            return
        if meta["trial_id"] == trial_id:  # our own checkpoint: our Train run resumes itself
            self.run, self.step, self.tokens = meta["run"], meta["offset_step"], meta["offset_tokens"]
        else:
            self.step, self.tokens = meta["step"], meta["tokens"]
            self.run = f"pretrain-from-{meta['trial_id']}-{self.step}"
            start = storage.join(job.run_dir, self.run, "init")  # Tune may rotate the donor's copy out
            if not storage.exists(start):
                storage.copy_dir(checkpoint.path, start)
            job.train.init_from = start
        if self.step:
            job.train.total_steps = max(job.train.total_steps - self.step, 1)
            job.train.warmup = 0.0

    def shift(self, row: dict) -> dict:
        row = dict(row)
        row["step"] = row.get("step", 0) + self.step
        row["tokens"] = row.get("tokens", 0) + self.tokens
        return row

    def metadata(self, trial_id: str, row: dict) -> dict:
        return {"trial_id": trial_id, "run": self.run, "step": row["step"], "tokens": row["tokens"],
                "offset_step": self.step, "offset_tokens": self.tokens}


def run_trial(config: dict, plan: SweepPlan) -> None:
    """Ray Tune function trainable."""
    from ray import tune
    from ray.util.queue import Queue

    from uer_ray.train.pretrain import pretrain

    trial_id = tune.get_context().get_trial_id()
    job = trial_job(plan, config, trial_id)
    segment = _Segment(job, trial_id, tune.get_checkpoint())
    with_checkpoints = plan.spec.scheduler.name == "pbt"
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["result"] = pretrain(job, name=segment.run, callbacks=[ForwardReports(reports, plan.spec.metric)])
        except BaseException as exc:  # re-raised in the trial's thread
            outcome["error"] = exc
        finally:
            reports.put(None)

    rungs = Rungs(storage.join(job.run_dir, RUNGS))
    rungs.recover(segment.shift(row) for row in registered_rows(job, segment.run, plan.spec.metric))
    threading.Thread(target=train, name="uer-ray-trial", daemon=True).start()
    while (item := reports.get()) is not None:
        row, path = item
        row = segment.shift(row)
        checkpoint = None
        if path:
            row[CHECKPOINT_PATH] = path
            if with_checkpoints:
                checkpoint = tune.Checkpoint.from_directory(path)
                checkpoint.set_metadata(segment.metadata(trial_id, row))
        rungs.add(row)
        tune.report(row, checkpoint=checkpoint)
    if isinstance(outcome.get("error"), RunFinished):  # trained before the driver died: its reports, not again
        for row in rungs.rows:
            tune.report(row)
    elif "error" in outcome:
        raise outcome["error"]
