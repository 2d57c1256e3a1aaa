"""The README's own example runs as written from the project root: `jobs/bert_tiny_zh.yaml`'s relative paths mean
what they mean there, in every process that reads them (preprocess -> pretrain -> finetune -> infer), scaled down
only in steps and data size."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def launch(*args, storage: Path) -> subprocess.CompletedProcess:
    scale = ["--set", f"run.storage_path={storage}", "--set", "train.total_steps=20", "--set", "train.report_every=10",
             "--set", "train.checkpoint_every=20", "--set", "finetune.epochs=1", "--set", "tracking.mode=disabled"]
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    return subprocess.run([sys.executable, "launch.py", *args, *scale], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def test_readme_commands_run_from_the_project_root(tmp_path):
    job = ["--config", "jobs/bert_tiny_zh.yaml"]
    tiny_task = [f"--set=finetune.{split}_path=../shared/data/uer/datasets/test_data/book_review/{split}.tsv"
                 for split in ("train", "dev", "test")]
    for stage in (["preprocess", *job], ["pretrain", *job],
                  ["finetune", *job, *tiny_task, "--set", f"finetune.pretrained={tmp_path}/bert-tiny-zh/pretrain/final"]):
        done = launch(*stage, storage=tmp_path)
        assert done.returncode == 0, f"{stage[0]}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    predictions = tmp_path / "predictions.tsv"
    done = launch("infer", *job, "--checkpoint", f"{tmp_path}/bert-tiny-zh/finetune/best",
                  "--input", "../shared/data/uer/datasets/test_data/book_review/test_nolabel.tsv",
                  "--output", str(predictions), storage=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert predictions.read_text().splitlines()[0] == "label\tprob"
