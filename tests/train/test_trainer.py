"""What the driver settles before workers start, and errors that are the user's: a layout the local Ray cannot place
is refused with the arithmetic; a finished run says so; more steps continue a finished run when the schedule allows it
exactly, and anything else that would change the run is refused in one line; a missing shard is not retried; a warm
start from another model's checkpoint, or one of another vocabulary, is refused before any worker starts."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from uer_ray import storage
from uer_ray.config import RunConfig, build_config
from uer_ray.data.preprocess import preprocess
from uer_ray.errors import RunFinished, UserError
from uer_ray.tokenizers import Vocab
from uer_ray.train.pretrain import pretrain
from uer_ray.train.trainer import check_resources

pytestmark = pytest.mark.slow
VOCAB = str(Path(__file__).resolve().parents[3] / "shared" / "data" / "uer" / "models" / "google_zh_vocab.txt")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, data_dir, ray_session):
    root = tmp_path_factory.mktemp("trainer")
    corpus = root / "corpus.txt"
    lines = (data_dir / "corpora" / "CLUECorpusSmall_sampled.txt").read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join(lines[:300]) + "\n", encoding="utf-8")
    job = make_job(root, "data", corpus=[str(corpus)])
    preprocess(job, progress=lambda line: None)
    return root, job.dataset_dir


def make_job(root, name, **data):
    return build_config({
        "run": {"name": name, "storage_path": str(root), "num_workers": 2},
        "tokenizer": {"name": "bert", "vocab_path": VOCAB},
        "data": {"processor": {"name": "mlm", "seq_length": 32}, "row_group_rows": 64, **data},
        "model": {"hidden_size": 32, "max_seq_length": 32, "targets": {"mlm": 1.0},
                  "encoder": {"name": "transformer", "layers_num": 1, "heads_num": 2, "feedforward_size": 64}},
        "train": {"total_steps": 10, "batch_size": 8, "report_every": 5, "checkpoint_every": 5,
                  "scheduler": "constant", "warmup_steps": 2},
        "tracking": {"mode": "disabled"},
    })


def run_job(dataset, name, **train):
    root, dataset_dir = dataset
    job = make_job(root, name, output_dir=dataset_dir)
    for key, value in train.items():
        setattr(job.train, key, value)
    return job


def test_a_layout_this_machine_cannot_place_is_refused(ray_session):
    with pytest.raises(UserError, match=r"run.num_workers x run.cpus_per_worker = 3 x 1.0 = 3 CPUs, but this machine's Ray has 2"):
        check_resources(RunConfig(num_workers=3, cpus_per_worker=1.0))
    check_resources(RunConfig(num_workers=1, cpus_per_worker=1.5))  # fits: training reads no Ray Data task


def test_finished_run_continues_for_more_steps_or_refuses_in_one_line(dataset):
    job = run_job(dataset, "extend")
    assert pretrain(job).metrics["step"] == 10
    with pytest.raises(RunFinished, match="already finished at step 10"):
        pretrain(job)
    started = time.time()
    job.run.num_workers = 1
    job.train.total_steps = 15
    with pytest.raises(UserError, match="run.num_workers is 1 but the checkpoint at step 10 was made with 2"):
        pretrain(job)
    assert time.time() - started < 5  # refused on the driver, no worker started
    job.run.num_workers = 2
    job.train.scheduler = "linear"
    with pytest.raises(UserError, match="its learning rate would jump"):
        pretrain(job)
    job.train.scheduler = "constant"  # a schedule that does not depend on total_steps: the run goes on
    assert pretrain(job).metrics["step"] == 15


def test_a_missing_shard_stops_the_run_at_once(dataset, tmp_path):
    root, dataset_dir = dataset
    copy = str(tmp_path / "dataset")
    storage.copy_dir(dataset_dir, copy)
    manifest = storage.read_json(storage.join(copy, "manifest.json"))
    storage.delete(storage.join(copy, manifest["shards"][0]))
    job = make_job(root, "missing-shard", output_dir=copy)
    started = time.time()
    with pytest.raises(UserError, match="training data not found: .*part-00000.parquet"):
        pretrain(job)
    assert time.time() - started < 60  # no restarts of the worker group (max_failures is 2)


def warm_start_source(job, directory, vocab=None, **model):
    """A checkpoint of the job's model with ``model``'s options changed, built in-process."""
    from uer_ray.config import ModelConfig
    from uer_ray.models.model import build_model
    from uer_ray.train.checkpoint import save_checkpoint

    cfg = ModelConfig.model_validate({**job.model.model_dump(mode="json"), **model})
    torch.manual_seed(1)
    source = build_model(cfg)
    save_checkpoint(directory, source, {"model": cfg.model_dump(mode="json")}, vocab)
    return source


def test_a_warm_start_takes_the_encoder_and_refuses_another_model_before_any_worker_starts(dataset, tmp_path):
    from uer_ray.train.pretrain import check_inputs, final_model

    job = run_job(dataset, "warm", lr=1e-9, total_steps=5)  # learning nothing: the final weights are the start's
    check_inputs(job)  # the vocabulary size from the dataset, for the sources below
    wider = dict(hidden_size=64, encoder={**job.model.encoder.model_dump(mode="json"), "feedforward_size": 128})
    warm_start_source(job, tmp_path / "wider", **wider)
    warm_start_source(job, tmp_path / "lstm", encoder={"name": "lstm", "layers_num": 1})
    started = time.time()
    job.train.init_from = str(tmp_path / "wider")
    with pytest.raises(UserError, match=r"^train.init_from: .*wider holds \d+ encoder weight\(s\) in another shape "
                                        r"\(e.g. embedding.parts.word.embedding.weight: \[21128, 64\], the model's \[21128, 32\]\)"):
        pretrain(job)
    job.train.init_from = str(tmp_path / "lstm")
    with pytest.raises(UserError, match=r"^train.init_from: .*lstm lacks \d+ of the model's \d+ encoder weights"):
        pretrain(job)
    vocab = Vocab.load(storage.local_path(storage.join(job.dataset_dir, "vocab.txt")))
    swapped = vocab.tokens
    swapped[100], swapped[101] = swapped[101], swapped[100]
    warm_start_source(job, tmp_path / "swapped", Vocab(swapped))  # every shape fits, two ids mean other tokens
    job.train.init_from = str(tmp_path / "swapped")
    with pytest.raises(UserError, match=r"^train.init_from: .*swapped was trained on another vocabulary than the "
                                        r"dataset .* first differ at id 100\)"):
        pretrain(job)
    assert time.time() - started < 10  # refused on the driver

    # A BERT-style source with a next-sentence head the job does not train: its encoder is taken, the head ignored.
    source = warm_start_source(job, tmp_path / "bert", vocab, targets={"mlm": 1.0, "sp": 0.5}).state_dict()
    job.train.init_from = str(tmp_path / "bert")
    assert pretrain(job).metrics["step"] == 5
    final = load_file(str(Path(storage.local_path(final_model(job))) / "model.safetensors"))
    encoder = [k for k in final if k.startswith(("embedding.", "encoder."))]
    assert encoder and all(torch.allclose(final[k], source[k], atol=1e-6) for k in encoder)
