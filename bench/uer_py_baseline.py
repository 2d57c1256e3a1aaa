"""UER-py's ``pretrain.py`` on the configuration, corpus slice and vocabulary of ``bench/train_throughput.py``, its
tokens/s counted the same way. UER-py is no part of this project: pass a checkout (``git clone
https://github.com/dbiir/UER-py``); ``train_throughput.py --uer-py PATH`` adds this figure to its own lines::

    .venv/bin/python bench/uer_py_baseline.py --uer-py /tmp/uer-py                 # BERT-mini, seq 128, batch 32

UER-py runs unchanged, from its checkout (it reads ``models/special_tokens_map.json`` relative to it):
``preprocess.py --data_processor bert --dynamic_masking --processes_num 1`` (masks drawn while training, as
uer-ray's; dynamic masking makes ``--dup_factor`` 1), then ``pretrain.py --data_processor bert --target mlm sp`` in
its CPU mode (``--world_size 1``, no ``--gpu_ranks``), which never saves a model here. The child process that runs
``pretrain.py`` first sets ``torch.set_num_threads(threads)``, registers a global optimizer step hook that records
when each step ends and wraps ``BertTrainer.forward_propagation`` to count each batch's non-padding tokens
(``seg > 0``): ``uer_py_tokens_per_s`` is then the figure train_throughput.py computes for its own runs.
``uer_py_log_tokens_per_s`` is UER-py's own log figure over the same windows (``--report_steps`` = ``--window``):
batch_size x seq_length per step, padding included (UER-py pads every instance to seq_length).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import sys
import time
from pathlib import Path

from train_throughput import (
    Setting,
    add_run_arguments,
    dataset_name,
    run_command,
    settings_and_checks,
    slice_corpus,
    steady,
    window_rates,
    work_dir,
)

STEPS_LINE = "UER_PY_STEPS "
LOG_LINE = re.compile(r"\|\s*(\d+)/\s*\d+ steps\|\s*([\d.]+) tokens/s\|\s*loss\s+([\d.]+)")


def uer_py_preprocess(uer_py: Path, corpus: Path, setting: Setting, args, out: Path) -> Path:
    dataset = out / f"{dataset_name(corpus, setting, args)}.pt"
    if not dataset.is_file():
        run_command([sys.executable, "preprocess.py", "--corpus_path", str(corpus), "--vocab_path", str(args.vocab),
                     "--dataset_path", str(dataset), "--seq_length", str(setting.seq), "--data_processor", "bert",
                     "--dynamic_masking", "--processes_num", "1"], "UER-py preprocess.py", cwd=uer_py)
    return dataset


def measure_uer_py(uer_py: Path, setting: Setting, corpus: Path, tmp: Path, args) -> dict:
    """tokens/s (non-padding, steady windows), UER-py's own log figure and the last window's loss."""
    uer_py = uer_py.resolve()
    if not (uer_py / "pretrain.py").is_file() or not (uer_py / "uer").is_dir():
        raise SystemExit(f"error: --uer-py {uer_py}: not a UER-py checkout (no pretrain.py and uer/)")
    out = tmp / "uer_py"
    out.mkdir(parents=True, exist_ok=True)
    dataset = uer_py_preprocess(uer_py, corpus, setting, args, out)
    pretrain_argv = [
        "pretrain.py", "--dataset_path", str(dataset), "--vocab_path", str(args.vocab),
        "--config_path", str(setting.config_path), "--output_model_path", str(out / "model.bin"),
        "--total_steps", str(args.steps), "--save_checkpoint_steps", str(args.steps + 1),
        "--report_steps", str(args.window), "--batch_size", str(setting.batch),
        "--data_processor", "bert", "--target", "mlm", "sp",
    ]
    log = run_command([sys.executable, str(Path(__file__).resolve()), "--instrumented", str(args.threads), "--",
                       *pretrain_argv], "UER-py pretrain.py", cwd=uer_py, env={"OMP_NUM_THREADS": str(args.threads)})
    steps_line = next((line for line in log.splitlines() if line.startswith(STEPS_LINE)), None)
    windows = LOG_LINE.findall(log)
    if steps_line is None or len(windows) != args.steps // args.window:
        raise SystemExit(f"UER-py pretrain.py: expected {args.steps // args.window} report lines and the step "
                         f"record, got {len(windows)} lines:\n{log[-3000:]}")
    record = json.loads(steps_line[len(STEPS_LINE):])
    rates = window_rates(record["start"], record["step_ends"], record["step_tokens"], args.window)
    return {"tokens_per_s": steady(rates, args.window, args.warmup_steps),
            "log_tokens_per_s": steady([float(w[1]) for w in windows], args.window, args.warmup_steps),
            "loss": float(windows[-1][2])}


def instrumented_pretrain(threads: int, pretrain_argv: list[str]) -> None:
    """In the child, from the checkout: UER-py's pretrain.py as ``python pretrain.py ...`` runs it, plus records."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    sys.path.insert(0, os.getcwd())
    torch.set_num_threads(threads)
    import uer.trainer

    step_ends: list[float] = []
    step_tokens: list[int] = []
    register_optimizer_step_post_hook(lambda *_: step_ends.append(time.perf_counter()))
    forward_propagation = uer.trainer.BertTrainer.forward_propagation

    def counting_forward_propagation(self, batch, model):
        step_tokens.append(int((batch[-1] > 0).sum()))  # batch = src, tgt_mlm, tgt_sp, seg
        return forward_propagation(self, batch, model)

    uer.trainer.BertTrainer.forward_propagation = counting_forward_propagation
    sys.argv = pretrain_argv
    start = time.perf_counter()
    runpy.run_path("pretrain.py", run_name="__main__")
    print(STEPS_LINE + json.dumps({"start": start, "step_ends": step_ends, "step_tokens": step_tokens}), flush=True)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--instrumented"]:  # internal: the child process of measure_uer_py
        return instrumented_pretrain(int(argv[1]), argv[3:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--uer-py", type=Path, required=True, help="a UER-py checkout")
    args = parser.parse_args(argv)
    settings = settings_and_checks(args, parser)
    tmp = work_dir(args)
    corpus = slice_corpus(args.docs, tmp)
    for setting in settings:
        result = measure_uer_py(args.uer_py, setting, corpus, tmp, args)
        print(json.dumps({"config": setting.config, "seq": setting.seq, "batch": setting.batch, "device": "cpu",
                          "threads": args.threads, "measured_steps": f"{args.warmup_steps + 1}-{args.steps}",
                          "uer_py_tokens_per_s": round(result["tokens_per_s"]),
                          "uer_py_log_tokens_per_s": round(result["log_tokens_per_s"]),
                          "uer_py_loss": round(result["loss"], 3)}), flush=True)


if __name__ == "__main__":
    main()
