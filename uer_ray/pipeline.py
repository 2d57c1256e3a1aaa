"""UER's three stages in one run: general pre-training, further pre-training on task text, fine-tuning."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from uer_ray.runtime import init_ray


@dataclass
class StageSummary:
    stage: str
    seconds: float
    metrics: dict = field(default_factory=dict)
    output: str = ""


def run_pipeline(job, further_corpus: list[str] = (), further_steps: int = 0, progress=print) -> list[StageSummary]:
    from uer_ray.data.preprocess import preprocess
    from uer_ray.finetune.finetune import finetune, prepare
    from uer_ray.train.pretrain import latest_checkpoint, pretrain

    prepare(job.model_copy(deep=True))  # downstream files are checked before any cluster work
    init_ray(job.run)
    summaries: list[StageSummary] = []

    def timed(stage: str, func):
        started = time.time()
        value = func()
        summaries.append(StageSummary(stage, time.time() - started))
        return value

    manifest = timed("preprocess", lambda: preprocess(job, progress=progress))
    summaries[-1].metrics = {"instances": manifest["instances"], "MB/s": manifest["mb_per_s"]}
    summaries[-1].output = str(job.dataset_dir)
    result = timed("pretrain", lambda: pretrain(job, progress=progress))
    checkpoint = latest_checkpoint(result)
    summaries[-1].metrics = _losses(result.metrics)
    summaries[-1].output = str(checkpoint)

    if further_corpus:
        further = job.model_copy(deep=True)
        further.data.corpus = list(further_corpus)
        further.data.output_dir = job.run_dir / "dataset-further"
        further.train.init_from = checkpoint
        further.train.total_steps = further_steps or job.train.total_steps
        timed("preprocess (task text)", lambda: preprocess(further, progress=progress))
        summaries[-1].output = str(further.dataset_dir)
        result = timed("further pretrain", lambda: pretrain(further, name="further-pretrain", progress=progress))
        checkpoint = latest_checkpoint(result)
        summaries[-1].metrics = _losses(result.metrics)
        summaries[-1].output = str(checkpoint)

    job.finetune.pretrained = Path(checkpoint)
    metrics = timed("finetune", lambda: finetune(job, progress=progress))
    summaries[-1].metrics = {k: v for k, v in metrics.items() if k.startswith("test_")}
    summaries[-1].output = metrics["best_dir"]
    return summaries


def _losses(metrics: dict) -> dict:
    return {k: round(v, 4) for k, v in metrics.items() if k.endswith("_loss") or k.endswith("_acc")}
