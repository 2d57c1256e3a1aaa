"""UER's three stages as one run: general pre-training -> further pre-training on the task's own text -> fine-tuning
and test. Each stage's model feeds the next; a stage can be left out (``pipeline.stages``); re-running the pipeline
resumes the unfinished stage and skips the finished ones; every stage logs to the run's W&B group."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from uer_ray import storage
from uer_ray.errors import RunFinished, UserError
from uer_ray.runtime import init_ray

FURTHER = "further-pretrain"


@dataclass
class StageSummary:
    stage: str
    seconds: float
    metrics: dict = field(default_factory=dict)
    output: str = ""


def further_job(job, general_model: str | None):
    """The job of the further pre-training stage: the task's text as corpus, its own dataset, warm-started."""
    from uer_ray.config import JobConfig

    spec = job.pipeline.further
    data = job.data.model_dump(mode="json")
    if spec.processor is not None:
        data["processor"] = spec.processor.model_dump(mode="json")
    data.update(corpus=spec.corpus or [storage.join(job.run_dir, "further-corpus.txt")],
                output_dir=storage.join(job.run_dir, "dataset-further"))
    train = job.train.model_dump(mode="json")
    train.update(total_steps=spec.steps, init_from=general_model, probe=None, lr=spec.lr or job.train.lr)
    raw = {**job.model_dump(mode="json"), "data": data, "train": train}
    raw["model"]["uer_config"] = None
    from uer_ray.registry import PROCESSORS

    feeds = set(PROCESSORS.get(data["processor"]["name"]).feeds)
    raw["model"]["targets"] = {k: v for k, v in raw["model"]["targets"].items() if k in feeds}
    if not raw["model"]["targets"]:
        raise UserError(f"pipeline.further.processor '{data['processor']['name']}' feeds none of the model's targets")
    return JobConfig.model_validate(raw)


def write_task_corpus(job, prepared) -> str:
    """The fine-tuning task's training text, one example a line, as the further pre-training corpus."""
    location = storage.join(job.run_dir, "further-corpus.txt")
    lines = [line for line in prepared.task.corpus_lines(storage.local_path(job.finetune.train_path)) if line.strip()]
    storage.write_text(location, "\n".join(lines) + "\n")
    return location


def run_pipeline(job, fresh: bool = False, progress=print) -> list[StageSummary]:
    from uer_ray.data.preprocess import preprocess
    from uer_ray.finetune.finetune import finetune, prepare
    from uer_ray.train.pretrain import final_model, pretrain

    stages = job.pipeline.stages
    prepared = prepare(job.model_copy(deep=True), progress) if "finetune" in stages or "further" in stages else None
    init_ray(job.run)
    summaries: list[StageSummary] = []
    model = job.finetune.pretrained

    def run(stage: str, func) -> None:
        started = time.time()
        try:
            metrics = func() or {}
        except RunFinished as done:  # resumable: a finished stage keeps its results
            progress(f"pipeline: {stage} already done, skipped ({done})")
            metrics = {}
        summaries.append(StageSummary(stage, time.time() - started, metrics))

    if "pretrain" in stages:
        run("preprocess", lambda: _preprocess(job, preprocess, progress))
        run("pretrain", lambda: _losses(pretrain(job, fresh=fresh, progress=progress)))
        model = summaries[-1].output = final_model(job)
    if "further" in stages:
        further = further_job(job, model)
        if not job.pipeline.further.corpus:
            write_task_corpus(job, prepared)
        run("preprocess (task text)", lambda: _preprocess(further, preprocess, progress))
        run("further pretrain", lambda: _losses(pretrain(further, name=FURTHER, fresh=fresh, progress=progress)))
        model = summaries[-1].output = final_model(further, FURTHER)
    if "finetune" in stages:
        job.finetune.pretrained = model
        run("finetune", lambda: {k: v for k, v in finetune(job, fresh=fresh, progress=progress).items()
                                 if k.startswith("test_") or k == "best_dev_metric"})
        summaries[-1].output = storage.join(job.finetune_dir, "best")
    return summaries


def summary_table(summaries: list[StageSummary], title: str, extra_rows: list[tuple] = ()) -> None:
    """The stages as a table: wall time, result, output location."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("stage", "wall time", "result", "output"):
        table.add_column(column, overflow="fold")
    for summary in summaries:
        result = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.metrics.items())
        table.add_row(summary.stage, f"{summary.seconds:.0f}s", result, summary.output)
    for row in extra_rows:
        table.add_row(*row)
    Console(width=160).print(table)


def _preprocess(job, preprocess, progress) -> dict:
    from uer_ray.data.preprocess import dataset_is_current, read_manifest

    if dataset_is_current(job):
        return {"instances": read_manifest(job.dataset_dir)["instances"], "reused": True}
    manifest = preprocess(job, progress=progress)
    return {"instances": manifest["instances"], "MB/s": manifest["mb_per_s"]}


def _losses(result) -> dict:
    return {k: round(v, 4) for k, v in (result.metrics or {}).items()
            if isinstance(v, float) and (k.endswith("_loss") or k.endswith("_acc") or k == "dev_metric")}
