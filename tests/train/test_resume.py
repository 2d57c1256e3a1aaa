"""Reliability of `launch.py pretrain` as users run it: a run killed hard and started again continues exactly (per-step
losses identical to an uninterrupted run, one W&B run); a lost worker is replaced and the run finishes by itself,
redoing at most the steps since its last checkpoint; Ctrl-C says how to resume."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from wandb_offline import history, run_id, runs

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
STEPS = 30


def launch(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kwargs)


@pytest.fixture(scope="module")
def job(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("resume")
    lines = (data_dir / "corpora" / "CLUECorpusSmall_bert_sampled.txt").read_text(encoding="utf-8").splitlines()
    (root / "corpus.txt").write_text("\n".join(lines[:1500]) + "\n", encoding="utf-8")
    spec = root / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "run": {"name": "reference", "storage_path": "runs", "num_workers": 2},
        "tokenizer": {"name": "bert", "vocab_path": str(data_dir / "models" / "google_zh_vocab.txt")},
        "data": {"corpus": ["corpus.txt"], "processor": {"name": "bert", "seq_length": 32},
                 "output_dir": "runs/dataset", "row_group_rows": 64},
        "model": {"hidden_size": 32, "max_seq_length": 32,
                  "encoder": {"name": "transformer", "layers_num": 1, "heads_num": 2, "feedforward_size": 64}},
        "train": {"total_steps": STEPS, "batch_size": 8, "report_every": 1, "checkpoint_every": 5},
        "tracking": {"mode": "offline"},
    }))
    assert launch("preprocess", "--config", str(spec), cwd=root).wait(timeout=300) == 0
    return spec


def losses(run_dir: Path) -> tuple[dict[int, float], set[str]]:
    """step -> loss over every W&B file of the run (a resumed run re-logs the steps it redid), and the run ids."""
    by_step: dict[int, float] = {}
    files = runs(run_dir / "wandb")
    for file in files:
        for row in history(file):
            if "loss" in row:
                assert by_step.setdefault(row["step"], row["loss"]) == row["loss"], f"step {row['step']} differs"
    return by_step, {run_id(f) for f in files}


def wait_for(process: subprocess.Popen, pattern: str, timeout: float = 300) -> str:
    """Read the process's output until a line matches; returns the output so far."""
    seen, deadline = [], time.time() + timeout
    for line in process.stdout:
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
        assert time.time() < deadline, "".join(seen[-30:])
    raise AssertionError("the run ended before: " + "".join(seen[-30:]))


@pytest.fixture(scope="module")
def expected(job) -> dict[int, float]:
    """Per-step losses of an uninterrupted run."""
    root = job.parent
    reference = launch("pretrain", "--config", str(job), cwd=root)
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-3000:]
    by_step, ids = losses(root / "runs" / "reference")
    assert sorted(by_step) == list(range(1, STEPS + 1)) and len(ids) == 1
    return by_step


def wait_for_checkpoint(run_dir: Path, step: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until a checkpoint of ``step`` is on disk (faster than the forwarded log lines)."""
    def reached(path: Path) -> bool:
        try:
            return json.loads(path.read_text())["step"] >= step
        except ValueError:  # being copied into place right now
            return False

    deadline = time.time() + timeout
    while not any(reached(p) for p in run_dir.glob("ray/pretrain/checkpoint_*/trainer_state.json")):
        assert process.poll() is None and time.time() < deadline, "no checkpoint"
        time.sleep(0.05)


def test_killed_run_resumes_exactly(job, expected):
    root = job.parent
    first = launch("pretrain", "--config", str(job), "--set", "run.name=killed", cwd=root, start_new_session=True)
    wait_for_checkpoint(root / "runs" / "killed", 5, first)
    time.sleep(1.0)  # a few steps past the checkpoint: they are lost with the kill
    os.killpg(first.pid, signal.SIGKILL)  # the driver, its local Ray and the workers, at once
    first.wait(timeout=60)
    again = launch("pretrain", "--config", str(job), "--set", "run.name=killed", cwd=root)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    resumed = int(re.search(r"resumed at step (\d+)", out).group(1))
    assert resumed >= 5 and resumed % 5 == 0 and resumed < STEPS  # the latest registered checkpoint

    got, ids = losses(root / "runs" / "killed")
    assert len(ids) == 1, ids  # one W&B run, continued under the same id
    # A hard kill loses what W&B had not yet flushed of the first attempt; the resumed attempt logs every step
    # from the checkpoint on, and each equals the uninterrupted run's.
    assert set(range(resumed + 1, STEPS + 1)) <= set(got)
    assert {step: loss for step, loss in got.items()} == {step: expected[step] for step in got}


def test_lost_worker_is_replaced_and_the_run_finishes(job, expected):
    root = job.parent
    run = launch("pretrain", "--config", str(job), "--set", "run.name=lost-worker", cwd=root)
    wait_for(run, r"step 12/")
    driver = psutil.Process(run.pid)
    workers = [p for p in driver.children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in driver.children(recursive=True)]
    workers[1].kill()
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-3000:]
    resumed = int(re.search(r"resumed at step (\d+)", out).group(1))
    assert resumed >= 10 and resumed % 5 == 0  # from the latest checkpoint: redid only the steps made since
    got, _ = losses(root / "runs" / "lost-worker")
    assert set(range(resumed + 1, STEPS + 1)) <= set(got)
    assert got == {step: expected[step] for step in got}  # and still exactly the uninterrupted run


def test_ctrl_c_says_how_to_resume(job):
    root = job.parent
    run = launch("pretrain", "--config", str(job), "--set", "run.name=ctrl-c", cwd=root, start_new_session=True)
    wait_for(run, r"step 3/")
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 130, out[-3000:]
    assert "run the same command again to resume" in out
