"""The downstream probe of pre-training: prepared once on the driver, run by rank 0 inside the loop's no_grad
evaluation, leaves the pre-training's random stream as it was, and reports each task's metric and their mean."""
from __future__ import annotations

import torch

from uer_ray.config import build_config
from uer_ray.finetune.probe import Probe, prepare_probes
from uer_ray.models.model import build_model
from uer_ray.tokenizers import build_tokenizer


def test_probe_scores_under_no_grad_and_keeps_the_random_stream(data_dir, tmp_path):
    reviews = data_dir / "datasets" / "test_data" / "book_review"
    job = build_config({
        "run": {"name": "probe", "storage_path": str(tmp_path)},
        "tokenizer": {"name": "bert", "vocab_path": str(data_dir / "models" / "google_zh_vocab.txt")},
        "model": {"hidden_size": 32, "max_seq_length": 64, "targets": {"mlm": 1.0},
                  "encoder": {"name": "transformer", "layers_num": 1, "heads_num": 2, "feedforward_size": 64}},
        "data": {"processor": {"name": "mlm", "seq_length": 64}},
        "train": {"probe": {"every": 10, "steps": 8, "batch_size": 16, "tasks": [
            {"task": {"name": "classification", "pooling": "mean"}, "seq_length": 64, "max_train_rows": 100,
             "max_dev_rows": 50, "train_path": str(reviews / "train.tsv"), "dev_path": str(reviews / "dev.tsv")}]}},
    })
    tokenizer = build_tokenizer(job.tokenizer)
    job.model.vocab_size = tokenizer.vocab_size
    prepare_probes(job, progress=lambda line: None)
    probe = Probe(job, tokenizer.vocab, rank=0)
    model = build_model(job.model, tokenizer.vocab).eval()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with torch.no_grad():  # as the loop's evaluation runs it
        metrics = probe.run(model)
    assert torch.equal(torch.rand(3), expected)  # the probe drew from its own stream
    assert set(metrics) == {"probe_0_classification_acc", "dev_metric"}
    assert 0.0 <= metrics["dev_metric"] <= 1.0 and metrics["dev_metric"] == metrics["probe_0_classification_acc"]
