"""The whole UER flow on a real local Ray (2 CPUs): preprocess (Ray Data) -> pretrain (TorchTrainer, 2 workers)
-> fine-tune -> infer, with W&B offline runs checked from their files."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from uer_ray.config import build_config
from uer_ray.data.preprocess import preprocess
from uer_ray.errors import RunFinished
from uer_ray.finetune.finetune import finetune
from uer_ray.finetune.infer import infer
from uer_ray.train.pretrain import final_model, pretrain

from wandb_offline import history, runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(tmp_path_factory, data_dir, ray_session):
    root = tmp_path_factory.mktemp("e2e")
    corpus = root / "corpus.txt"
    lines = (data_dir / "corpora" / "CLUECorpusSmall_bert_sampled.txt").read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join(lines[:4000]) + "\n", encoding="utf-8")
    sentiment = data_dir / "datasets" / "chnsenticorp"
    return build_config({
        "run": {"name": "e2e", "storage_path": str(root), "num_workers": 2},
        "tokenizer": {"name": "bert", "vocab_path": str(data_dir / "models" / "google_zh_vocab.txt")},
        "data": {"corpus": [str(corpus)], "processor": {"name": "bert", "seq_length": 64}, "chunk_mb": 0.25},
        "model": {"hidden_size": 64, "max_seq_length": 64, "targets": {"mlm": 1.0, "sp": 0.5},
                  "encoder": {"name": "transformer", "layers_num": 2, "heads_num": 2, "feedforward_size": 256}},
        "train": {"total_steps": 80, "batch_size": 16, "lr": 1e-3, "report_every": 10, "checkpoint_every": 40},
        "finetune": {"train_path": str(sentiment / "train.tsv"), "dev_path": str(sentiment / "dev.tsv"),
                     "test_path": str(sentiment / "dev.tsv"), "epochs": 1, "seq_length": 64, "lr": 5e-4,
                     "task": {"name": "classification", "pooling": "mean"}},
    })


@pytest.fixture(scope="module")
def pretrained(job):
    manifest = preprocess(job)
    result = pretrain(job)
    return manifest, result


def test_preprocess_writes_parquet_and_manifest(job, pretrained):
    manifest, _ = pretrained
    dataset = job.dataset_dir
    assert manifest["instances"] > 1000 and sum(manifest["shard_rows"]) == manifest["instances"]
    on_disk = json.loads(open(f"{dataset}/manifest.json").read())
    assert on_disk["tokenizer"]["vocab_sha256"] == manifest["tokenizer"]["vocab_sha256"]
    assert set(on_disk["targets_fed"]) == {"mlm", "sp"}


def test_pretraining_loss_falls_and_is_logged_to_wandb(job, pretrained):
    _, result = pretrained
    assert result.metrics["step"] == 80
    run_files = [r for r in runs(f"{job.run_dir}/wandb") if any("mlm_loss" in row for row in history(r))]
    assert run_files, "no offline W&B run with pre-training metrics"
    rows = [row for row in history(run_files[-1]) if "mlm_loss" in row]
    assert [row["step"] for row in rows] == list(range(10, 81, 10))
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5, [round(r["loss"], 3) for r in rows]
    assert {"mlm_acc", "sp_loss", "sp_acc", "lr", "tokens_per_s", "samples_per_s", "grad_norm"} <= set(rows[-1])
    final = final_model(job)
    assert {"model.safetensors", "config.json", "vocab.txt"} <= {p.split("/")[-1] for p in _files(final)}


def test_finished_pretraining_is_not_silently_rerun(job, pretrained):
    with pytest.raises(RunFinished, match="already finished at step 80"):
        pretrain(job)


def test_finetuned_classifier_beats_majority_and_predicts(job, pretrained, tmp_path):
    job.finetune.pretrained = final_model(job)
    metrics = finetune(job)
    labels = [line.split("\t")[0] for line in open(job.finetune.dev_path, encoding="utf-8").read().splitlines()[1:]]
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    assert metrics["test_acc"] >= majority + 0.1, (metrics, majority)

    predictions = infer(job, metrics["best_dir"], job.finetune.dev_path, str(tmp_path / "predictions.tsv"))
    rows = open(predictions, encoding="utf-8").read().splitlines()
    assert rows[0] == "label\tprob" and len(rows) == len(labels) + 1
    accuracy = sum(row.split("\t")[0] == gold for row, gold in zip(rows[1:], labels)) / len(labels)
    assert accuracy == pytest.approx(metrics["test_acc"], abs=1e-6)


def _files(location):
    import os

    return [os.path.join(location, name) for name in os.listdir(location)]
