"""Real sweeps through the CLI on a local Ray (2 CPUs): tiny models on a slice of the shared corpus, probed on the tiny
book_review split. One runs to the end (report, plots, one W&B run per trial read back); one is killed mid-sweep and
resumed without re-running the trials that had finished."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from wandb_offline import run_record, runs

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def sweep_spec(tmp_path: Path, data_dir: Path, **search) -> Path:
    corpus = tmp_path / "corpus.txt"
    lines = (data_dir / "corpora" / "CLUECorpusSmall_bert_sampled.txt").read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join(lines[:1500]) + "\n", encoding="utf-8")
    tiny = data_dir / "datasets" / "test_data" / "book_review"
    spec = {
        "run": {"name": "sweep", "storage_path": str(tmp_path / "runs"), "num_workers": 1, "cpus_per_worker": 0.5},
        "tokenizer": {"name": "bert", "vocab_path": str(data_dir / "models" / "google_zh_vocab.txt")},
        "data": {"corpus": [str(corpus)], "processor": {"name": "mlm", "seq_length": 32, "layout": "paragraph"}},
        "model": {"hidden_size": 32, "max_seq_length": 32, "targets": {"mlm": 1.0},
                  "encoder": {"name": "transformer", "layers_num": 1, "heads_num": 2, "feedforward_size": 64}},
        "train": {"batch_size": 8, "lr": 2e-3, "report_every": 10,
                  "probe": {"every": 20, "steps": 10, "tasks": [{
                      "seq_length": 32, "max_train_rows": 200, "max_dev_rows": 50,
                      "train_path": str(tiny / "train.tsv"), "dev_path": str(tiny / "dev.tsv")}]}},
        "finetune": {"train_path": str(tiny / "train.tsv"), "dev_path": str(tiny / "dev.tsv"),
                     "test_path": str(tiny / "test.tsv"), "seq_length": 32, "epochs": 1, "batch_size": 16},
        "tracking": {"mode": "offline"},
        "search": {
            "space": {"model.encoder": {"grid": ["transformer", {"name": "lstm", "layers_num": 1}]},
                      "model.targets": {"grid": [{"mlm": 1.0}, {"lm": 1.0}]}},
            "datasets": [{"processor": {"name": "mlm", "seq_length": 32, "layout": "paragraph"}},
                         {"processor": {"name": "lm", "seq_length": 32, "layout": "paragraph"}}],
            "searcher": "grid", "trial_budget": {"steps": 60}, **search,
        },
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def launch(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "tune", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def trial_runs(sweep: Path) -> dict[str, list[dict]]:
    """Trial id -> its offline W&B runs, once the W&B service has written them."""
    deadline = time.time() + 60
    while True:
        records = [run_record(f) for f in runs(sweep / "wandb")]
        found: dict[str, list[dict]] = {}
        for record in records:
            if record["job_type"] == "trial":
                found.setdefault(record["config"]["trial_id"], []).append(record)
        if all(r["history"] for r in records if r["job_type"]) or time.time() > deadline:
            return found
        time.sleep(1)


def test_sweep_runs_reports_and_logs_one_wandb_run_per_trial(tmp_path, data_dir):
    job = sweep_spec(tmp_path, data_dir, scheduler={"name": "asha", "grace_period": 20, "reduction_factor": 2},
                     winners={"k": 1})
    done = launch("--config", str(job))
    output, _ = done.communicate(timeout=900)
    assert done.returncode == 0, output[-3000:]
    sweep = tmp_path / "runs" / "sweep"
    assert "3 valid, 1 rejected, 0 merged" in output and "rejected x1 (transformer lm)" in output

    records = json.loads((sweep / "trials.json").read_text())
    assert sorted(r["label"] for r in records) == ["lstm lm", "lstm mlm", "transformer mlm"]
    for record in records:
        assert record["status"] in ("completed", "stopped"), record["note"]
        steps = [row["step"] for row in record["history"]]
        assert steps == list(range(20, record["steps"] + 1, 20)) and 0.0 <= record["history"][-1]["dev_metric"] <= 1
    report = (sweep / "report.md").read_text()
    assert report in output  # printed too
    for record in records:
        assert f"| {record['label']} | " in report
    assert "| transformer lm | - |" in report and "target lm needs a causal encoder" in report
    assert "## Winners, fine-tuned fully" in report and "test_acc" in report
    for name in ("metric_vs_compute.png", "best_so_far.png", "metric_by_encoder_targets.png"):
        assert (sweep / "plots" / name).read_bytes()[:4] == b"\x89PNG"

    by_trial = trial_runs(sweep)
    assert sorted(by_trial) == sorted(r["trial_id"] for r in records)  # one W&B run per trial, grouped by sweep
    for record in records:
        (run,) = by_trial[record["trial_id"]]
        assert run["group"] == "sweep"
        assert run["config"]["combination"] == record["label"] and run["config"]["model.encoder"] == record["encoder"]
        assert run["config"]["model.targets"] == "+".join(record["targets"])
        probed = [row["dev_metric"] for row in run["history"] if "dev_metric" in row]
        assert probed == [row["dev_metric"] for row in record["history"]]  # the metric history, rung by rung
    kinds = sorted(run_record(f)["job_type"] for f in runs(sweep / "wandb"))
    assert kinds == ["finetune", "sweep-report", "trial", "trial", "trial"]


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path, data_dir):
    job = sweep_spec(tmp_path, data_dir, scheduler={"name": "fifo"}, max_concurrent=1, winners={"k": 0})
    sweep = tmp_path / "runs" / "sweep"
    first = launch("--config", str(job), start_new_session=True)
    finished: dict[Path, float] = {}
    deadline = time.time() + 600
    try:
        # Wait until one trial has finished and the next one is pre-training, then kill the driver and its Ray.
        while time.time() < deadline and first.poll() is None:
            finished = {p: p.stat().st_mtime for p in sweep.glob("trials/*/pretrain/result.json")}
            started = list(sweep.glob("trials/*/ray/pretrain/checkpoint_*"))
            if finished and any(p.parts[-4] not in {f.parts[-3] for f in finished} for p in started):
                break
            time.sleep(1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert finished, "no trial finished before the deadline"
    done_ids = {p.parts[-3] for p in finished}

    resumed = launch("--config", str(job), "--resume")
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output[-3000:]
    records = {r["trial_id"]: r for r in json.loads((sweep / "trials.json").read_text())}
    assert len(records) == 3 and all(r["status"] == "completed" for r in records.values())
    assert done_ids <= set(records)
    for path, mtime in finished.items():
        assert path.stat().st_mtime == mtime  # the finished trial was not trained again
    for trial_id in done_ids:
        assert [row["step"] for row in records[trial_id]["history"]] == [20, 40, 60]  # its results were kept
        (run,) = trial_runs(sweep)[trial_id]  # and its W&B run was not started again
        assert [row["step"] for row in run["history"]] == [20, 40, 60]
