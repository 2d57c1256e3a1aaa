"""`launch.py pretrain` interrupted with Ctrl-C and started again resumes from its last checkpoint."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from uer_ray.train.checkpoint import load_train_state

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def launch(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, **kwargs,
    )


def test_ctrl_c_then_rerun_resumes(tmp_path, data_dir):
    corpus = tmp_path / "corpus.txt"
    lines = (data_dir / "corpora" / "CLUECorpusSmall_bert_sampled.txt").read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join(lines[:1500]) + "\n", encoding="utf-8")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "run": {"name": "resume", "storage_path": str(tmp_path / "runs"), "num_workers": 2},
        "tokenizer": {"name": "bert", "vocab_path": str(data_dir / "models" / "google_zh_vocab.txt")},
        "data": {"corpus": [str(corpus)], "processor": {"name": "bert", "seq_length": 32}},
        "model": {"hidden_size": 32, "max_seq_length": 32,
                  "encoder": {"name": "transformer", "layers_num": 1, "heads_num": 2, "feedforward_size": 64}},
        "train": {"total_steps": 100_000, "batch_size": 8, "report_every": 10, "checkpoint_every": 20},
        "tracking": {"mode": "disabled"},
    }))
    assert launch("preprocess", "--config", str(job), cwd=tmp_path).wait(timeout=300) == 0

    first = launch("pretrain", "--config", str(job), cwd=tmp_path, start_new_session=True)
    checkpoints = tmp_path / "runs" / "resume" / "ray" / "pretrain"
    deadline = time.time() + 300
    while len(list(checkpoints.glob("checkpoint_*"))) < 2:
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out_first, _ = first.communicate(timeout=120)
    assert first.returncode == 130, out_first
    assert "run the same command again to resume" in out_first
    steps_before = [int(s) for s in re.findall(r"\[pretrain\] step=(\d+)", out_first)]
    assert steps_before and max(steps_before) < 100_000
    # A checkpoint being copied when Ctrl-C came may be partial on disk; Ray resumes from its registered ones.
    states = [load_train_state(c) for c in checkpoints.glob("checkpoint_*")]
    saved = max(state["position"]["step"] for state in states if state)
    total = saved + 40  # finish shortly after the last checkpoint

    second = launch("pretrain", "--config", str(job), "--set", f"train.total_steps={total}", cwd=tmp_path)
    out_second, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out_second
    resumed = int(re.search(r"resumed at step (\d+)", out_second).group(1))
    # The latest *registered* checkpoint: one written just before Ctrl-C may not be registered yet.
    assert resumed >= 20 and resumed % 20 == 0
    steps_after = [int(s) for s in re.findall(r"\[pretrain\] step=(\d+)", out_second)]
    assert min(steps_after) == resumed + 10 and max(steps_after) == total
