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
STEPS = 60  # long enough that a kill lands mid-run on a quiet machine too


class Launch:
    """``launch.py`` in a child process, its output going to a file (a pipe nobody reads would fill and stall it)."""

    def __init__(self, *args: str, cwd: Path, new_session: bool = False):
        env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "PYTHONUNBUFFERED": "1"}
        self.log = cwd / f"launch-{time.time_ns()}.log"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, stdout=out,
                                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=new_session)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        return self.process.wait(timeout=timeout), self.output()

    def wait_for(self, pattern: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while not re.search(pattern, self.output()):
            assert self.process.poll() is None, "the run ended before: " + self.output()[-3000:]
            assert time.time() < deadline, self.output()[-3000:]
            time.sleep(0.05)


@pytest.fixture(scope="module", autouse=True)
def driver_wandb_service(tmp_path_factory):
    """As in a driver that tracks with W&B itself (or a suite that did before): its W&B service token is in the
    environment every launched process and Ray worker inherits; each run must still be written by its own worker."""
    import wandb

    run = wandb.init(mode="offline", dir=str(tmp_path_factory.mktemp("driver-wandb")), project="driver")
    assert os.environ.get("WANDB_SERVICE")
    yield
    run.finish()


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
    assert Launch("preprocess", "--config", str(spec), cwd=root).finish(300)[0] == 0
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


@pytest.fixture(scope="module")
def expected(job) -> dict[int, float]:
    """Per-step losses of an uninterrupted run."""
    root = job.parent
    code, out = Launch("pretrain", "--config", str(job), cwd=root).finish()
    assert code == 0, out[-3000:]
    by_step, ids = losses(root / "runs" / "reference")
    assert sorted(by_step) == list(range(1, STEPS + 1)) and len(ids) == 1
    return by_step


def checkpointed_step(run_dir: Path, registered: bool) -> int:
    """The step of the newest checkpoint on disk, or of the newest Ray Train has registered (what a restart gets)."""
    def step_of(path: Path) -> int:
        try:
            return json.loads(path.read_text())["step"]
        except (ValueError, OSError):  # being written right now
            return 0

    ray_run = run_dir / "ray" / "pretrain"
    if not registered:
        return max((step_of(p) for p in ray_run.glob("checkpoint_*/trainer_state.json")), default=0)
    try:
        latest = json.loads((ray_run / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
    except (ValueError, OSError, KeyError):
        return 0
    return step_of(ray_run / latest["checkpoint_dir_name"] / "trainer_state.json") if latest else 0


def wait_for_checkpoint(run_dir: Path, step: int, run: Launch, registered: bool = False, timeout: float = 300) -> None:
    """Until a checkpoint of ``step`` or later is on disk (faster than the forwarded log lines), or registered."""
    deadline = time.time() + timeout
    while checkpointed_step(run_dir, registered) < step:
        assert run.process.poll() is None and time.time() < deadline, "no checkpoint: " + run.output()[-3000:]
        time.sleep(0.05)


def test_killed_run_resumes_exactly(job, expected):
    root = job.parent
    first = Launch("pretrain", "--config", str(job), "--set", "run.name=killed", cwd=root, new_session=True)
    wait_for_checkpoint(root / "runs" / "killed", 5, first)
    time.sleep(0.3)  # a step or two past the checkpoint: lost with the kill
    os.killpg(first.process.pid, signal.SIGKILL)  # the driver, its local Ray and the workers, at once
    first.finish(60)
    code, out = Launch("pretrain", "--config", str(job), "--set", "run.name=killed", cwd=root).finish()
    assert code == 0, out[-3000:]
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
    run = Launch("pretrain", "--config", str(job), "--set", "run.name=lost-worker", cwd=root)
    wait_for_checkpoint(root / "runs" / "lost-worker", 10, run, registered=True)
    driver = psutil.Process(run.process.pid)
    workers = [p for p in driver.children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in driver.children(recursive=True)]
    workers[1].kill()
    code, out = run.finish()
    assert code == 0, out[-3000:]
    resumed = int(re.search(r"resumed at step (\d+)", out).group(1))
    assert resumed >= 10 and resumed % 5 == 0 and resumed < STEPS  # from the latest checkpoint
    got, _ = losses(root / "runs" / "lost-worker")
    assert set(range(resumed + 1, STEPS + 1)) <= set(got)
    assert got == {step: expected[step] for step in got}  # and still exactly the uninterrupted run


def test_ctrl_c_says_how_to_resume(job):
    root = job.parent
    run = Launch("pretrain", "--config", str(job), "--set", "run.name=ctrl-c", cwd=root, new_session=True)
    run.wait_for(r"step 3/")
    run.process.send_signal(signal.SIGINT)
    code, out = run.finish(120)
    assert code == 130, out[-3000:]
    assert "run the same command again to resume" in out
