"""UER's three stages as one command: general pre-training -> further pre-training on the task's own text ->
fine-tuning and test, each stage's model feeding the next, one W&B group; re-running skips the finished stages."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wandb_offline import run_record, runs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def pipeline(spec: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), "pipeline", "--config", str(spec), *overrides],
                          cwd=spec.parent, env=env, capture_output=True, text=True, timeout=1200)


def test_three_stages_then_a_rerun_skips_them(tmp_path, data_dir):
    lines = (data_dir / "corpora" / "CLUECorpusSmall_bert_sampled.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "corpus.txt").write_text("\n".join(lines[:1500]) + "\n", encoding="utf-8")
    reviews = data_dir / "datasets" / "test_data" / "book_review"
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "run": {"name": "three", "storage_path": "runs", "num_workers": 1, "cpus_per_worker": 1},
        "tokenizer": {"name": "bert", "vocab_path": str(data_dir / "models" / "google_zh_vocab.txt")},
        "data": {"corpus": ["corpus.txt"], "processor": {"name": "bert", "seq_length": 64}},
        "model": {"hidden_size": 32, "max_seq_length": 64, "targets": {"mlm": 1.0, "sp": 0.5},
                  "encoder": {"name": "transformer", "layers_num": 1, "heads_num": 2, "feedforward_size": 64}},
        "train": {"total_steps": 20, "batch_size": 16, "report_every": 10, "checkpoint_every": 10},
        "finetune": {"train_path": str(reviews / "train.tsv"), "dev_path": str(reviews / "dev.tsv"),
                     "test_path": str(reviews / "test.tsv"), "epochs": 1, "seq_length": 64},
        "pipeline": {"further": {"steps": 10, "processor": {"name": "mlm", "seq_length": 64}}},
        "tracking": {"mode": "offline"},
    }))
    first = pipeline(spec)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    for stage in ("preprocess", "pretrain", "preprocess (task text)", "further pretrain", "finetune"):
        assert stage in out, out[-3000:]
    run_dir = tmp_path / "runs" / "three"
    # the task's text became the further pre-training corpus, and each stage fed the next
    assert (run_dir / "further-corpus.txt").read_text(encoding="utf-8").count("\n") == 200
    assert str(run_dir / "pretrain" / "final") in first.stdout + first.stderr  # the warm start of stage 2
    assert (run_dir / "finetune" / "result.json").is_file() and "test_acc" in out
    groups = {run_record(f)["group"] for f in runs(run_dir / "wandb")}
    assert groups == {"three"} and len(runs(run_dir / "wandb")) == 3  # pretrain, further-pretrain, finetune

    again = pipeline(spec)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already done, skipped") == 3 and "reused=True" in again.stdout
