"""Every task type end to end on a real local Ray: fine-tune through Ray Train (dev metric each epoch, best model
published), test, prediction file written, then `infer` on the test file with the published model; a finished run
re-run under the same name says so; options that contradict a pre-trained checkpoint are refused."""
from __future__ import annotations

import json
import random

import pytest

from uer_ray import storage
from uer_ray.config import build_config
from uer_ray.errors import RunFinished, UserError
from uer_ray.finetune.finetune import finetune, prepare
from uer_ray.finetune.infer import infer

from sentence_tasks import read_tsv_rows, write_tsv

pytestmark = pytest.mark.slow


def pairs_and_derived(data_dir, tmp_path):
    """Small realistic files for the pair / multi-label / regression / dbqa tasks from the test_data reviews."""
    texts = read_tsv_rows(data_dir / "datasets" / "test_data" / "book_review" / "train.tsv", "text_a")
    labels = read_tsv_rows(data_dir / "datasets" / "test_data" / "book_review" / "train.tsv", "label")
    rng = random.Random(0)
    files = {}
    for split, rows in (("train", range(0, 120)), ("dev", range(120, 160)), ("test", range(160, 200))):
        files[("pair", split)] = write_tsv(tmp_path / f"pair_{split}.tsv", ["label", "text_a", "text_b"],
                                           [[labels[i], texts[i][:20], texts[i][20:40] or "。"] for i in rows])
        files[("multi_label", split)] = write_tsv(tmp_path / f"ml_{split}.tsv", ["label", "text_a"],
                                                  [[f"{labels[i]},2" if len(texts[i]) > 40 else labels[i], texts[i]] for i in rows])
        files[("regression", split)] = write_tsv(tmp_path / f"reg_{split}.tsv", ["label", "text_a"],
                                                 [[f"{min(len(texts[i]), 100) / 100:.2f}", texts[i]] for i in rows])
        files[("dbqa", split)] = write_tsv(tmp_path / f"dbqa_{split}.tsv", ["qid", "label", "text_a", "text_b"],
                                           [[i // 4, int(i % 4 == rng.randrange(4)), texts[(i // 4) * 4][:12], texts[i][:30]]
                                            for i in rows])
    return files


def c3_files(data_dir, tmp_path):
    items = json.loads((data_dir / "datasets" / "c3" / "dev.json").read_text(encoding="utf-8"))
    paths = {}
    for split, part in (("train", items[:120]), ("dev", items[120:160]), ("test", items[160:200])):
        paths[split] = tmp_path / f"c3_{split}.json"
        paths[split].write_text(json.dumps(part, ensure_ascii=False), encoding="utf-8")
    return paths


def task_files(name, data_dir, tmp_path):
    test_data = data_dir / "datasets" / "test_data"
    if name == "classification":
        return {s: test_data / "book_review" / f"{s}.tsv" for s in ("train", "dev", "test")}, {}
    if name == "tagging":
        return ({s: test_data / "msra_ner" / f"{s}.tsv" for s in ("train", "dev", "test")},
                {"label2id_path": str(data_dir / "datasets" / "msra_ner" / "label2id.json")})
    if name == "mrc":
        return {s: test_data / "cmrc" / f"{s}.json" for s in ("train", "dev", "test")}, {"doc_stride": 48}
    if name == "choice":
        return c3_files(data_dir, tmp_path), {}
    derived = pairs_and_derived(data_dir, tmp_path)
    kind = "pair" if name == "pair" else name
    return {s: derived[(kind, s)] for s in ("train", "dev", "test")}, {}


def job_for(name, data_dir, tmp_path, **overrides):
    files, options = task_files(name, data_dir, tmp_path)
    task = {"name": "classification" if name == "pair" else name, **options}
    return build_config({
        "run": {"name": f"ft-{name}", "storage_path": str(tmp_path / "runs"), "num_workers": 1, "cpus_per_worker": 1},
        "tokenizer": {"name": "bert", "vocab_path": str(data_dir / "models" / "google_zh_vocab.txt")},
        "model": {"hidden_size": 32, "max_seq_length": 128,
                  "encoder": {"name": "transformer", "layers_num": 1, "heads_num": 2, "feedforward_size": 64}},
        "finetune": {"task": task, "seq_length": 96 if name in ("mrc", "choice") else 64, "epochs": 2,
                     "batch_size": 16, "lr": 1e-3, **{f"{s}_path": str(p) for s, p in files.items()}},
        "tracking": {"mode": "disabled"},
        **overrides,
    })


MAIN_METRIC = {"classification": "acc", "pair": "acc", "multi_label": "micro_f1", "regression": "pearson",
               "dbqa": "map", "tagging": "f1", "mrc": "f1", "choice": "acc"}


@pytest.mark.parametrize("name", list(MAIN_METRIC))
def test_task_trains_tests_and_predicts(name, data_dir, tmp_path, ray_session):
    job = job_for(name, data_dir, tmp_path)
    metrics = finetune(job, prepare(job, progress=print))
    key = MAIN_METRIC[name]
    # cmrc's test.json hides its answers (FAKE_ANSWER_1): predicted, never scored
    assert (f"test_{key}" in metrics) == (name != "mrc") and metrics["best_dev_metric"] is not None, metrics
    assert metrics["step"] > 0 and 0 <= metrics["best_dev_metric"] <= 1 or name == "regression"
    suffix = ".json" if name == "mrc" else ".tsv"
    written = storage.join(job.finetune_dir, f"test_predictions{suffix}")
    assert storage.exists(written) and storage.read_text(written).strip()

    predicted = infer(job, metrics["best_dir"], job.finetune.test_path, str(tmp_path / f"predictions{suffix}"))
    assert storage.read_text(predicted) == storage.read_text(written)  # the same model, the same predictions

    with pytest.raises(RunFinished, match="already finished"):
        finetune(job, prepare(job, progress=print))


def test_fresh_restarts_a_finished_run(data_dir, tmp_path, ray_session):
    job = job_for("classification", data_dir, tmp_path)
    first = finetune(job, prepare(job, progress=print))
    weights = storage.join(storage.resolve_published(first["best_dir"]), "model.safetensors")
    trained = storage.read_bytes(weights)
    job.finetune.lr = 2e-3
    again = finetune(job, prepare(job, progress=print), fresh=True)
    retrained = storage.read_bytes(storage.join(storage.resolve_published(again["best_dir"]), "model.safetensors"))
    assert again["step"] == first["step"] and retrained != trained  # trained again from the start, at the new lr


def test_checkpoint_contradictions_are_refused(data_dir, tmp_path, ray_session):
    source = job_for("classification", data_dir, tmp_path)
    finetune(source, prepare(source, progress=print))
    best = storage.join(source.finetune_dir, "best")
    job = job_for("classification", data_dir, tmp_path, run={"name": "from-best", "storage_path": str(tmp_path / "runs")})
    job.finetune.pretrained = best
    with pytest.raises(UserError, match=r"model.hidden_size: 64 contradicts the checkpoint's 32"):
        job.model.hidden_size = 64
        prepare(job)
