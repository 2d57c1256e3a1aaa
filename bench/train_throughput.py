"""Pre-training throughput: tokens/s of (a) a plain PyTorch loop in one process and (b) uer-ray's ``pretrain(job)``
(Ray Train's TorchTrainer, 1 worker reserving ``--threads`` CPUs), side by side; with ``--uer-py PATH`` also (c)
UER-py's ``pretrain.py`` (``bench/uer_py_baseline.py``). One JSON line per configuration::

    .venv/bin/python bench/train_throughput.py                                   # BERT-mini, seq 128, batch 32, CPU
    .venv/bin/python bench/train_throughput.py --uer-py /tmp/uer-py               # ... and UER-py, same sitting
    .venv/bin/python bench/train_throughput.py --configs bert/tiny_config.json:128:64 bert/mini_config.json
    .venv/bin/python bench/train_throughput.py --uer-config bert/base_config.json --device cuda --precision bf16 \
        --steps 300 --warmup-steps 100 --window 50                               # GPU steps are short: more of them

Same work in each: the model that ``build_model`` makes from the UER-py JSON config (targets mlm + sp, weights 1, as
UER-py's BERT trainer), the same Parquet instances (the first ``--docs`` documents of CLUECorpusSmall_bert_sampled.txt
preprocessed once by ``launch.py preprocess``), the same collation with dynamic masking, the project's AdamW,
gradient clipping. Each run is a child process of this one. The plain loop reads the Parquet files itself and
collates in the loop, with OMP_NUM_THREADS and ``torch.set_num_threads`` at ``--threads``. The TorchTrainer's process
starts a local Ray with ``--threads`` logical CPUs, all reserved by the worker (it reads its shards itself, in its
seeded order, with collation and masking in a prefetch thread: no Ray Data task needs a CPU); Ray sets the worker's
OMP_NUM_THREADS, hence torch's threads, to floor(its CPU reservation).

Tokens are non-padding tokens (``seg > 0``: segment ids are 0 exactly at padding, whatever the PAD id). Steady state:
the steps are cut into windows of ``--window`` steps, as the trainer's reports are (``train.report_every``); the
windows within the first ``--warmup-steps`` (start-up, first allocations, the first reads) are dropped and the
figure is the mean of the other windows' tokens/s: for (b) the ``tokens_per_s`` its reports print, for (a) and (c)
computed the same way from each step's end time and tokens. ``*_loss`` is the last window's mean loss, a check that
each run trained; the two need not agree (same shapes and arithmetic a step, but the plain loop reads the rows in file
order at a constant learning rate, the trainer in its seeded shuffled order under the job's warm-up and decay). With
CUDA (or ``--peak-tflops``) each line also has the MFU: tokens/s x ``uer_ray.train.flops.flops_per_token`` / peak.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's uer_ray, whatever is installed
DATA = ROOT.parent / "shared" / "data" / "uer"
CORPUS = DATA / "corpora" / "CLUECorpusSmall_bert_sampled.txt"
VOCAB_FILE = DATA / "models" / "google_zh_vocab.txt"
TARGETS = {"mlm": 1.0, "sp": 1.0}  # UER-py's BertTrainer: loss = mlm + sp
RESULT = "PLAIN_LOOP_RESULT "
# The progress line of rank 0: ``[pretrain] step 20/100 (20%) loss 10.1 ... tokens_per_s 6472 ... | 0m04s elapsed, ...``
REPORT_LINE = re.compile(r"\[pretrain\] step (\d+)/\d+ \(\d+%\) (.*?) \|")


@dataclass(frozen=True)
class Setting:
    config: str  # as given: a path, or one relative to the shared models folder (bert/mini_config.json)
    seq: int
    batch: int

    @property
    def config_path(self) -> Path:
        given = Path(self.config)
        return (given if given.is_file() else DATA / "models" / self.config).resolve()


def parse_setting(text: str, seq: int, batch: int) -> Setting:
    """``CONFIG[:SEQ[:BATCH]]``, the missing parts from --seq-length / --batch-size."""
    config, *rest = text.split(":")
    if len(rest) > 2 or not all(part.isdigit() for part in rest):
        raise SystemExit(f"error: --configs {text!r}: expected CONFIG[:SEQ[:BATCH]], e.g. bert/mini_config.json:128:32")
    return Setting(config, *(int(part) for part in rest), *(seq, batch)[len(rest):])


def slice_corpus(docs: int | None, directory: Path) -> Path:
    """The first ``docs`` documents (blank-line separated) of the corpus; None: the whole file."""
    if docs is None:
        return CORPUS
    path = directory / f"corpus_{docs}docs.txt"
    if not path.exists():
        kept, count = [], 0
        with open(CORPUS, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    count += 1
                    if count == docs:
                        break
                kept.append(line)
        path.write_text("".join(kept), encoding="utf-8")
    return path


def window_rates(start: float, step_ends: list[float], step_tokens: list[int], window: int) -> list[float]:
    """tokens/s of consecutive windows of ``window`` steps; ``step_ends[i]``: when step i + 1 ended."""
    rates = []
    for end in range(window, len(step_ends) + 1, window):
        began = step_ends[end - window - 1] if end > window else start
        rates.append(sum(step_tokens[end - window : end]) / (step_ends[end - 1] - began))
    return rates


def steady(rates: list[float], window: int, warmup: int) -> float:
    """Mean of the window rates after the warm-up windows."""
    return mean(rates[warmup // window :])


def dataset_name(corpus: Path, setting: Setting, args) -> str:
    """What a preprocessed dataset depends on: kept in --tmp and reused by later runs."""
    return f"{corpus.stem}_{Path(args.vocab).stem}_seq{setting.seq}"


def job_spec(setting: Setting, corpus: Path, tmp: Path, run_name: str, args) -> dict:
    train = {"total_steps": args.steps, "batch_size": setting.batch, "report_every": args.window,
             "checkpoint_every": args.steps, "keep_checkpoints": 1}  # one checkpoint, after the last window
    if args.precision != "fp32":
        train["precision"] = args.precision
    if args.compile:
        train["compile"] = True
    if args.prefetch is not None:
        train["prefetch"] = args.prefetch
    return {
        "run": {"name": run_name, "storage_path": str(tmp / "runs"), "num_workers": 1,
                "cpus_per_worker": args.threads, "use_gpu": args.device == "cuda"},
        "tokenizer": {"name": "bert", "vocab_path": str(args.vocab)},
        "data": {"corpus": [str(corpus)], "output_dir": str(tmp / "data" / dataset_name(corpus, setting, args)),
                 "processor": {"name": "bert", "seq_length": setting.seq}},
        "model": {"uer_config": str(setting.config_path), "targets": TARGETS},
        "train": train,
        "tracking": {"mode": "disabled"},
    }


def write_spec(spec: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    return path


def run_command(command: list[str], what: str, cwd: Path = ROOT, env: dict | None = None) -> str:
    """A child process (stdout and stderr together), this checkout first on its path; exits with its log on failure."""
    # Without OMP_NUM_THREADS, Ray sets it from the worker's CPU reservation, as for a user.
    child_env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    child_env.update({"PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0", **(env or {})})
    proc = subprocess.run(command, cwd=cwd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    return proc.stdout


def preprocess(spec_path: Path, dataset_dir: Path) -> None:
    """Once per corpus slice and sequence length (kept in the temp folder between settings and runs)."""
    if not (dataset_dir / "manifest.json").is_file():
        run_command([sys.executable, str(ROOT / "launch.py"), "preprocess", "--config", str(spec_path)], "preprocess")


def autocast(device, precision: str):
    import torch

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    return torch.autocast(device.type, dtype=dtypes[precision]) if precision in dtypes else contextlib.nullcontext()


def read_instances(dataset_dir: Path, batch_size: int):
    """Every Parquet shard of a preprocessed dataset as one table, and how many whole batches it holds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables(pq.read_table(path) for path in sorted(dataset_dir.glob("*.parquet")))
    if table.num_rows < batch_size:
        raise SystemExit(f"error: {table.num_rows} instances, fewer than a batch of {batch_size}: raise --docs")
    return table, table.num_rows // batch_size


def backward_and_step(loss, model, optimizer, scaler, grad_clip: float) -> None:
    import torch

    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def plain_loop(spec_path: Path, args) -> dict:
    """(a): collate, forward, backward, clip, AdamW step; tokens/s, the last window's loss, FLOPs per token."""
    import numpy as np
    import torch

    from uer_ray.config import load_job
    from uer_ray.data.collate import collate_instances
    from uer_ray.data.preprocess import read_manifest
    from uer_ray.models.model import build_model
    from uer_ray.tokenizers import Vocab
    from uer_ray.train.checkpoint import VOCAB
    from uer_ray.train.optim import make_optimizer
    from uer_ray.train.pretrain import check_inputs

    job = load_job(spec_path)
    check_inputs(job)  # fills model.vocab_size
    torch.set_num_threads(args.threads)
    torch.manual_seed(job.train.seed)
    device, dataset_dir, batch_size = torch.device(args.device), Path(job.dataset_dir), job.train.batch_size
    vocab, options = Vocab.load(dataset_dir / VOCAB), read_manifest(dataset_dir)["processor"]
    table, per_epoch = read_instances(dataset_dir, batch_size)
    model = build_model(job.model, vocab).to(device).train()
    optimizer = make_optimizer(model, job.train, device)
    if args.compile:
        model = torch.compile(model)
    scaler = torch.amp.GradScaler(device.type) if args.precision == "fp16" else None
    step_ends, step_tokens, window_loss = [], [], torch.zeros((), device=device)
    start = time.perf_counter()
    for step in range(args.steps):
        epoch, index = divmod(step, per_epoch)
        rng = np.random.default_rng([job.train.seed, 0, epoch, index])  # as PretrainStage: (seed, rank, epoch, batch)
        batch = collate_instances(table.slice(index * batch_size, batch_size), job.model.targets, vocab, rng, options)
        step_tokens.append(int((batch["seg"] > 0).sum()))
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        with autocast(device, args.precision):
            loss = model(batch)["loss"]
        backward_and_step(loss, model, optimizer, scaler, job.train.grad_clip)
        if step % args.window == 0:
            window_loss.zero_()  # a new window
        window_loss += loss.detach()
        if (step + 1) % args.window == 0 and device.type == "cuda":
            torch.cuda.synchronize()  # the window ends when its GPU work is done
        step_ends.append(time.perf_counter())
    rates = window_rates(start, step_ends, step_tokens, args.window)
    return {"tokens_per_s": steady(rates, args.window, args.warmup_steps), "loss": float(window_loss) / args.window,
            "flops_per_token": countable_flops(job.model, job.data.processor)}


def countable_flops(model_cfg, processor) -> float | None:
    from uer_ray.train.flops import flops_per_token

    try:
        return flops_per_token(model_cfg, processor.seq_length, processor.mask_prob)
    except ValueError:  # a part it cannot count: no MFU
        return None


def plain_run(spec_path: Path, args) -> dict:
    """(a) in a child process whose OMP_NUM_THREADS is --threads, as Ray gives the trainer's worker."""
    out = run_command([sys.executable, str(Path(__file__).resolve()), "--plain-job", str(spec_path),
                       *child_arguments(args)], "plain loop", env={"OMP_NUM_THREADS": str(args.threads)})
    return json.loads(next(line for line in out.splitlines() if line.startswith(RESULT))[len(RESULT):])


def child_arguments(args) -> list[str]:
    return ["--threads", str(args.threads), "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
            "--window", str(args.window), "--device", args.device, "--precision", args.precision,
            *(["--compile"] if args.compile else [])]


def trainer_run(spec_path: Path, args) -> dict:
    """(b): ``pretrain(job)`` in a child process; its rank-0 report lines give each window's tokens/s."""
    out = run_command([sys.executable, str(Path(__file__).resolve()), "--trainer-job", str(spec_path),
                       "--threads", str(args.threads)], "pretrain")
    reports = []
    for line in out.splitlines():
        found = REPORT_LINE.search(line)
        if found:
            words = found.group(2).split()
            reports.append({"step": found.group(1), **dict(zip(words[::2], words[1::2]))})
    windows = [r for r in reports if "tokens_per_s" in r]
    if len(windows) != args.steps // args.window:
        raise SystemExit(f"pretrain printed {len(windows)} report(s) with tokens_per_s, expected "
                         f"{args.steps // args.window} (one every {args.window} steps):\n{out[-3000:]}")
    rates = [float(r["tokens_per_s"]) for r in windows]
    return {"tokens_per_s": steady(rates, args.window, args.warmup_steps), "loss": float(windows[-1]["loss"])}


def trainer_driver(spec_path: str, threads: int) -> None:
    """The child of :func:`trainer_run`: a local Ray with the worker's CPUs, then ``pretrain(job)``."""
    from uer_ray.config import load_job
    from uer_ray.runtime import init_ray, stop_local_ray
    from uer_ray.train.pretrain import pretrain

    job = load_job(spec_path)
    init_ray(job.run, num_cpus=threads)  # training reads its shards itself: no Ray Data task needs a CPU
    try:
        pretrain(job)
    finally:
        stop_local_ray()


def mfu_fields(per_token: float | None, rates: dict[str, float], args) -> dict:
    """``<run>_mfu`` for each figure when the device's peak is known (CUDA, or --peak-tflops)."""
    from uer_ray.train.flops import peak_flops

    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(args.device, args.precision)
    if not peak or not per_token:
        return {}
    return {"flops_per_token": round(per_token), "peak_tflops": peak / 1e12,
            **{f"{name}_mfu": round(rate * per_token / peak, 4) for name, rate in rates.items()}}


def progress(setting: Setting, stage: str) -> None:
    """On stderr, so that stdout holds only the result lines."""
    print(f"{time.strftime('%X')} {setting.config}:{setting.seq}:{setting.batch}: {stage}", file=sys.stderr, flush=True)


def measure(setting: Setting, index: int, corpus: Path, tmp: Path, args) -> dict:
    run_name = f"bench{index}_seq{setting.seq}_b{setting.batch}_{args.precision}"
    shutil.rmtree(tmp / "runs" / run_name, ignore_errors=True)  # a fresh run, never a resume
    spec = job_spec(setting, corpus, tmp, run_name, args)
    spec_path = write_spec(spec, tmp / "specs" / f"{run_name}.yaml")
    progress(setting, "preprocess (unless done)")
    preprocess(spec_path, Path(spec["data"]["output_dir"]))
    progress(setting, "plain loop")
    plain = plain_run(spec_path, args)
    progress(setting, "TorchTrainer")
    trainer = trainer_run(spec_path, args)
    line = {"config": setting.config, "seq": setting.seq, "batch": setting.batch, "device": args.device,
            "precision": args.precision, "compile": args.compile, "threads": args.threads,
            "measured_steps": f"{args.warmup_steps + 1}-{args.steps}",
            "plain_tokens_per_s": round(plain["tokens_per_s"]), "trainer_tokens_per_s": round(trainer["tokens_per_s"]),
            "trainer_vs_plain": round(trainer["tokens_per_s"] / plain["tokens_per_s"], 3),
            "plain_loss": round(plain["loss"], 3), "trainer_loss": round(trainer["loss"], 3)}
    rates = {"plain": plain["tokens_per_s"], "trainer": trainer["tokens_per_s"]}
    if args.uer_py:
        from uer_py_baseline import measure_uer_py  # bench/ is on sys.path when this file runs as a script

        progress(setting, "UER-py")
        uer_py = measure_uer_py(Path(args.uer_py), setting, corpus, tmp, args)
        rates["uer_py"] = uer_py["tokens_per_s"]
        line.update({"uer_py_tokens_per_s": round(uer_py["tokens_per_s"]),
                     "trainer_vs_uer_py": round(trainer["tokens_per_s"] / uer_py["tokens_per_s"], 3),
                     "uer_py_log_tokens_per_s": round(uer_py["log_tokens_per_s"]), "uer_py_loss": round(uer_py["loss"], 3)})
    line.update(mfu_fields(plain["flops_per_token"], rates, args))
    return line


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options both benches share (``bench/uer_py_baseline.py`` takes them too)."""
    parser.add_argument("--uer-config", default="bert/mini_config.json",
                        help="UER-py JSON model config: a path or one under ../shared/data/uer/models/")
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--configs", nargs="+", metavar="CONFIG[:SEQ[:BATCH]]",
                        help="several configurations in one go (instead of --uer-config/--seq-length/--batch-size)")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run")
    parser.add_argument("--warmup-steps", type=int, default=20, help="steps left out of the figure (start-up)")
    parser.add_argument("--window", type=int, default=20, help="steps per measured window (= train.report_every)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="default: all cores")
    parser.add_argument("--docs", type=int, default=None, help="first N documents of the corpus (default: all)")
    parser.add_argument("--vocab", type=Path, default=VOCAB_FILE)
    parser.add_argument("--tmp", type=Path, default=None, help="folder for corpus slices, datasets and runs")


def work_dir(args) -> Path:
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="uer_train_bench_")).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def settings_and_checks(args, parser: argparse.ArgumentParser) -> list[Setting]:
    if args.steps <= args.warmup_steps:
        parser.error(f"--steps ({args.steps}) must exceed --warmup-steps ({args.warmup_steps})")
    if args.warmup_steps % args.window or (args.steps - args.warmup_steps) % args.window:
        parser.error(f"--warmup-steps ({args.warmup_steps}) and --steps minus it ({args.steps - args.warmup_steps}) "
                     f"must be multiples of --window ({args.window})")
    settings = [parse_setting(text, args.seq_length, args.batch_size) for text in args.configs or [args.uer_config]]
    missing = [s.config for s in settings if not s.config_path.is_file()]
    if missing:
        parser.error(f"UER-py config(s) not found (as paths, nor under {DATA / 'models'}): {', '.join(missing)}")
    return settings


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile in the trainer)")
    parser.add_argument("--prefetch", type=int, help="the trainer's train.prefetch (0: collation in the step's thread)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU where unknown")
    parser.add_argument("--uer-py", default=None, help="a UER-py checkout: also measure its pretrain.py")
    parser.add_argument("--plain-job", help=argparse.SUPPRESS)  # internal: the child process of plain_run
    parser.add_argument("--trainer-job", help=argparse.SUPPRESS)  # internal: the child process of trainer_run
    args = parser.parse_args(argv)
    if args.plain_job:
        return print(RESULT + json.dumps(plain_loop(Path(args.plain_job), args)), flush=True)
    if args.trainer_job:
        return trainer_driver(args.trainer_job, args.threads)
    settings = settings_and_checks(args, parser)
    if args.precision == "fp16" and args.device != "cuda":
        parser.error("--precision fp16 needs --device cuda (use bf16 on CPU)")
    if args.uer_py and (args.device, args.precision) != ("cpu", "fp32"):
        parser.error("--uer-py: UER-py is measured on the CPU in fp32 only (its CPU mode)")
    tmp = work_dir(args)
    corpus = slice_corpus(args.docs, tmp)
    from uer_ray.config import ConfigError

    try:
        for index, setting in enumerate(settings):
            print(json.dumps(measure(setting, index, corpus, tmp, args)), flush=True)
    except ConfigError as exc:  # e.g. train.precision before the loop has it
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
