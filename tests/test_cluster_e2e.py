"""uer-ray on a real 2-node Ray cluster (tests/cluster_harness.py): jobs go in through the Job Submission API only,
as on a cloud cluster. Token auth is on, S3 is a moto server on loopback."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cluster_harness import ROOT, cluster, run_job, s3  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

# bert_base_zh.yaml scaled down to this machine: UER-py's tiny BERT, 2 Train workers of half a CPU (a CPU is left
# for Ray Data's read tasks), a few steps.
TINY = ["--uer-config", "${UER_DATA}/models/bert/tiny_config.json", "--set", "run.use_gpu=false",
        "--set", "run.num_workers=2", "--set", "run.cpus_per_worker=0.5", "--set", "data.chunk_mb=1",
        "--set", "train.total_steps=20", "--set", "train.batch_size=8", "--set", "train.report_every=10",
        "--set", "train.checkpoint_every=20"]
BOOK_REVIEW = ["--set", "run.use_gpu=false", "--set", "run.num_workers=1", "--set", "run.cpus_per_worker=0.5",
               "--set", "finetune.epochs=1", "--set", "finetune.batch_size=16"] + [
    arg for split in ("train", "dev", "test")
    for arg in ("--set", f"finetune.{split}_path=${{UER_DATA}}/datasets/test_data/book_review/{split}.tsv")]


def with_data(args: list[str], data_dir) -> list[str]:
    """``--set`` values are not expanded from the environment (job specs are): put the data path in here."""
    return [a.replace("${UER_DATA}", str(data_dir)) for a in args]


def test_bad_config_fails_with_the_error_in_its_logs_and_leaves_nothing_running(cluster, data_dir):
    job = run_job(cluster, ["pretrain", "--config", "jobs/bert_base_zh.yaml", "--set", "train.lr=-1"],
                  env={"UER_DATA": str(data_dir)}, timeout_s=120)
    assert job.status == "FAILED"
    assert "invalid config: train.lr: Input should be greater than 0" in job.logs
    deadline = time.monotonic() + 30  # a finished job's supervisor actor exits on its own, within seconds
    while (alive := cluster.alive_actors()) and time.monotonic() < deadline:
        time.sleep(1)
    assert alive == []
    assert [cmd for cmd in cluster.processes().values() if "launch.py" in cmd] == []  # no driver, no Train worker


def test_nodes_give_jobs_their_secrets_and_the_dashboard_never_sees_them(cluster):
    """The harness gave the nodes AWS_SECRET_ACCESS_KEY: a job reads it from its environment, while nothing the
    dashboard shows about the job (runtime_env, metadata, entrypoint) carries it."""
    client = cluster.client()
    job_id = client.submit_job(entrypoint="python -c \"import os; print('key chars', len(os.environ['AWS_SECRET_ACCESS_KEY']))\"")
    from uer_ray.submit import wait

    assert str(wait(client, job_id, timeout_s=120)) == "SUCCEEDED"
    assert f"key chars {len(cluster.env['AWS_SECRET_ACCESS_KEY'])}" in client.get_job_logs(job_id)
    shown = client.get_job_info(job_id).model_dump_json()  # what the dashboard and `ray job list` show
    assert cluster.env["AWS_SECRET_ACCESS_KEY"] not in shown


def launch(*args: str, env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=timeout_s)


def test_launch_py_submit_follows_the_logs_and_exits_with_the_jobs_status(cluster, data_dir, tmp_path):
    env = cluster.client_env()
    env.pop("RAY_AUTH_MODE")  # submit sends the token without it; `ray job submit` would not
    corpus = data_dir / "corpora" / "chnsenticorp.txt"
    done = launch("submit", "--", "build-vocab", str(corpus), "--output", str(tmp_path / "vocab.txt"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "build-vocab: wrote" in done.stdout and "SUCCEEDED" in done.stdout  # the job's own output, then its status
    assert len((tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()) > 1000
    job_id = done.stdout.split("submitted ", 1)[1].split(":", 1)[0]

    listed = launch("submit", "--list", env=env)
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    assert "build-vocab: wrote" in launch("submit", "--logs", job_id, env=env).stdout

    failed = launch("submit", "--", "build-vocab", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "v.txt"), env=env)
    assert failed.returncode == 1 and "FAILED" in failed.stdout

    started = launch("submit", "--no-wait", "--", "build-vocab", str(corpus), "--output", str(tmp_path / "v2.txt"), env=env)
    assert started.returncode == 0, started.stderr
    second = started.stdout.split("submitted ", 1)[1].split(":", 1)[0]
    stopped = launch("submit", "--stop", second, env=env)
    assert stopped.returncode == 0 and second in stopped.stdout


def test_tiny_pipeline_with_local_storage(cluster, data_dir, tmp_path_factory):
    """preprocess then pretrain (2 Train workers) with a storage path both nodes see (they share this machine's disk)."""
    storage = tmp_path_factory.mktemp("runs")
    common = ["--config", "jobs/bert_base_zh.yaml", *with_data(TINY, data_dir), "--set", f"run.storage_path={storage}"]
    env = {"UER_DATA": str(data_dir)}
    preprocess = run_job(cluster, ["preprocess", *common], env=env, timeout_s=300)
    assert preprocess.status == "SUCCEEDED", preprocess.logs[-3000:]
    assert list((storage / "bert-base-zh" / "dataset").glob("*.parquet"))
    pretrain = run_job(cluster, ["pretrain", *common], env=env, timeout_s=400)
    assert pretrain.status == "SUCCEEDED", pretrain.logs[-3000:]
    checkpoints = list((storage / "bert-base-zh" / "ray" / "pretrain").glob("checkpoint_*/model.safetensors"))
    assert checkpoints, sorted(p.name for p in storage.rglob("*"))
    print(f"\ntiny pipeline: preprocess {preprocess.seconds:.0f}s, pretrain {pretrain.seconds:.0f}s")


def test_pipeline_with_storage_on_s3(cluster, s3, data_dir):
    """preprocess -> pretrain (2 workers, one per node) -> finetune, every output in the bucket, every worker reading
    from it (the nodes share no path with the driver's outputs)."""
    import json

    storage = f"s3://{s3.bucket}/runs"
    env = {"UER_DATA": str(data_dir)}
    common = ["--config", "jobs/bert_base_zh.yaml", *with_data(TINY, data_dir), "--set", f"run.storage_path={storage}"]
    preprocess = run_job(cluster, ["preprocess", *common], env=env, timeout_s=300)
    assert preprocess.status == "SUCCEEDED", preprocess.logs[-3000:]
    shards = [k for k in s3.keys("runs/bert-base-zh/dataset/") if k.endswith(".parquet")]
    assert shards and "runs/bert-base-zh/dataset/manifest.json" in s3.keys(), s3.keys()

    pretrain = run_job(cluster, ["pretrain", *common, "--set", "run.placement_strategy=SPREAD"], env=env, timeout_s=400)
    assert pretrain.status == "SUCCEEDED", pretrain.logs[-3000:]
    weights = [k for k in s3.keys("runs/bert-base-zh/ray/pretrain/") if k.endswith("/model.safetensors")]
    assert weights, s3.keys("runs/")
    result = json.loads(s3.client().get_object(Bucket=s3.bucket, Key="runs/bert-base-zh/pretrain/result.json")["Body"].read())
    assert len(set(result["worker_nodes"])) == 2, result  # one Train worker on each node
    assert "runs/bert-base-zh/pretrain/final.pointer.json" in s3.keys("runs/bert-base-zh/pretrain/")

    finetune = run_job(cluster, ["finetune", "--config", "jobs/finetune_book_review.yaml", *with_data(BOOK_REVIEW, data_dir),
                                 "--set", f"run.storage_path={storage}",
                                 "--set", f"finetune.pretrained={storage}/bert-base-zh/pretrain/final"],
                       env=env, timeout_s=400)
    assert finetune.status == "SUCCEEDED", finetune.logs[-3000:]
    outputs = s3.keys("runs/finetune-book-review/finetune/")
    assert any(k.startswith("runs/finetune-book-review/finetune/best@") and k.endswith("model.safetensors")
               for k in outputs), outputs
    assert {"runs/finetune-book-review/finetune/best.pointer.json", "runs/finetune-book-review/finetune/result.json",
            "runs/finetune-book-review/finetune/test_predictions.tsv"} <= set(outputs)


def test_launch_py_submit_runs_the_quickstart_to_succeeded(cluster, tmp_path):
    """The demo job, scaled down, submitted with `launch.py submit`: its logs stream back and it SUCCEEDS."""
    env = cluster.client_env()
    done = launch("submit", "--", "quickstart", "--workdir", str(tmp_path / "quickstart"),
                  "--set", "train.total_steps=20", "--set", "train.report_every=10", "--set", "train.checkpoint_every=20",
                  "--set", "finetune.epochs=1", env=env, timeout_s=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SUCCEEDED" in done.stdout and "uer-ray quickstart" in done.stdout  # the summary table, streamed
    assert "n-gram baseline" in done.stdout and "test_acc" in done.stdout
    assert (tmp_path / "quickstart" / "quickstart" / "finetune" / "result.json").is_file()
