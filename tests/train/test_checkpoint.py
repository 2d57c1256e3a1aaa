"""Checkpoints: safetensors + JSON + tensors loaded with weights_only; a resume restores weights, optimizer and every
random stream exactly; no pickle executes on load."""
from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

from conftest import batch, tiny_job
from uer_ray.models.model import build_model
from uer_ray.tokenizers import Vocab
from uer_ray.train.checkpoint import check_encoder_fits, load_config, load_matching, load_weights, save_checkpoint
from uer_ray.train.checkpointer import (
    OPTIMIZER, TrainerState, restore_checkpoint, rng_file, seed_everything, write_checkpoint,
)
from uer_ray.train.optim import make_optimizer
from uer_ray.train.precision import Precision

VOCAB = Vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"t{i}" for i in range(45)])


def trained_step(model, optimizer):
    optimizer.zero_grad(set_to_none=True)
    model(batch())["loss"].backward()
    optimizer.step()


def test_model_round_trip_keeps_weights_and_ties(tmp_path):
    job = tiny_job()
    model = build_model(job.model)
    save_checkpoint(tmp_path / "ckpt", model, {"model": job.model.model_dump(mode="json")}, VOCAB)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    again = build_model(job.model)
    load_weights(tmp_path / "ckpt", again)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    # The MLM output layer stays tied to the word embedding after loading.
    assert again.targets["mlm"].linear_2.weight is again.embedding.word_weight
    assert load_config(tmp_path / "ckpt")["model"]["hidden_size"] == 32


def test_a_fine_tuned_head_carries_over_to_the_same_labels_only(tmp_path):
    from uer_ray.finetune.tasks.classification import ClassifierModel

    job = tiny_job()
    two = ClassifierModel(job.model, 2, "mean", VOCAB)
    save_checkpoint(tmp_path / "ckpt", two, {"model": job.model.model_dump(mode="json")}, VOCAB)
    same = ClassifierModel(job.model, 2, "mean", VOCAB)
    assert load_matching(tmp_path / "ckpt", same) == ([], [])
    assert torch.equal(same.output_layer_2.weight, two.output_layer_2.weight)

    three = ClassifierModel(job.model, 3, "mean", VOCAB)
    fresh_head = three.output_layer_2.weight.clone()
    fresh, reshaped = load_matching(tmp_path / "ckpt", three)  # other labels: no crash, the head starts fresh
    assert fresh == reshaped == ["output_layer_2.weight", "output_layer_2.bias"]
    assert torch.equal(three.output_layer_2.weight, fresh_head)
    assert torch.equal(three.output_layer_1.weight, two.output_layer_1.weight)
    assert torch.equal(three.embedding.word_weight, two.embedding.word_weight)


def test_an_encoder_from_another_model_is_refused_naming_the_key(tmp_path):
    from uer_ray.errors import UserError

    job = tiny_job()
    save_checkpoint(tmp_path / "ckpt", build_model(job.model), {"model": job.model.model_dump(mode="json")}, VOCAB)
    model = job.model.model_dump()
    mlm_only = tiny_job(model={**model, "targets": {"mlm": 1.0}})
    check_encoder_fits(str(tmp_path / "ckpt"), build_model(mlm_only.model), "k")  # heads may differ
    deeper = tiny_job(model={**model, "encoder": {"layers_num": 2, "heads_num": 2, "feedforward_size": 64}})
    with pytest.raises(UserError, match=r"^finetune.pretrained: .*ckpt lacks 16 of the model's \d+ encoder weights "
                                        r"\(e.g. encoder.layers.1."):
        check_encoder_fits(str(tmp_path / "ckpt"), build_model(deeper.model), "finetune.pretrained")


def test_resume_restores_optimizer_and_random_streams(tmp_path, tiny):
    job, _ = tiny  # no dropout: the two updates below compare optimizer states, not random masks
    seed_everything(3)
    model = build_model(job.model)
    optimizer = make_optimizer(model, job.train, torch.device("cpu"))
    precision = Precision("fp32", torch.device("cpu"), 1, 1.0)
    trained_step(model, optimizer)
    state = TrainerState(step=1, tokens=32, epoch=0, batch=1, layout={"workers": 2})
    write_checkpoint(tmp_path / "ckpt", 0, model, optimizer, precision, state, {"model": {}}, VOCAB)
    write_checkpoint(tmp_path / "ckpt", 1, model, optimizer, precision, state, {"model": {}}, VOCAB)
    assert {"rng_rank0.pt", "rng_rank1.pt", OPTIMIZER, "trainer_state.json"} <= {p.name for p in (tmp_path / "ckpt").iterdir()}
    expected = (random.random(), np.random.rand(), torch.rand(3))  # what the run draws next

    seed_everything(99)  # a fresh process: other weights, other streams
    other = build_model(job.model)
    other_optimizer = make_optimizer(other, job.train, torch.device("cpu"))
    restored = restore_checkpoint(tmp_path / "ckpt", 0, other, other_optimizer, precision)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(3), expected[2])
    assert restored.step == 1 and restored.position.batch == 1 and restored.run_id == state.run_id
    trained_step(model, optimizer)
    trained_step(other, other_optimizer)  # the same update from the same optimizer state
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "ckpt" / "trainer_state.json").read_text())["tokens"] == 32


def test_checkpoint_tensors_refuse_code(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    job = tiny_job()
    model = build_model(job.model)
    precision = Precision("fp32", torch.device("cpu"), 1, 1.0)
    optimizer = make_optimizer(model, job.train, torch.device("cpu"))
    write_checkpoint(tmp_path / "ckpt", 0, model, optimizer, precision, TrainerState(), {"model": {}}, VOCAB)
    with open(tmp_path / "ckpt" / rng_file(0), "wb") as f:
        pickle.dump({"x": Boom()}, f)
    with pytest.raises(pickle.UnpicklingError):
        restore_checkpoint(tmp_path / "ckpt", 0, model, optimizer, precision)
