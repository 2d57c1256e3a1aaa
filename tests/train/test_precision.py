"""Gradient accumulation and mixed precision: accumulating micro-batches gives the gradient of the whole batch; bf16
autocast trains on the CPU; fp16 without a GPU is refused before anything runs."""
from __future__ import annotations

import pytest
import torch

from conftest import batch, tiny_job
from uer_ray.config import ConfigError
from uer_ray.models.model import build_model
from uer_ray.train.optim import make_optimizer
from uer_ray.train.precision import Precision


def gradients(model, batches, accum):
    precision = Precision("fp32", torch.device("cpu"), accum, grad_clip=1e9)
    model.zero_grad(set_to_none=True)
    for i, b in enumerate(batches):
        precision.backward(model, model(b)["loss"], last_micro_batch=i == len(batches) - 1)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_accumulated_micro_batches_equal_the_whole_batch(tiny):
    _, model = tiny
    whole = batch(size=8, seed=3)
    halves = [{k: v[:4] for k, v in whole.items()}, {k: v[4:] for k, v in whole.items()}]
    # The loss is a mean over tokens; with equal token counts per half the mean of means is the whole mean.
    one, two = gradients(model, [whole], 1), gradients(model, halves, 2)
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6), name


def test_bf16_autocast_trains_on_cpu():
    job = tiny_job(train={"precision": "bf16", "lr": 3e-3})
    torch.manual_seed(0)
    model = build_model(job.model)
    optimizer = make_optimizer(model, job.train, torch.device("cpu"))
    precision = Precision("bf16", torch.device("cpu"), 1, 1.0)
    data = batch(size=8, seed=1)
    losses = []
    for _ in range(30):
        with precision.autocast():
            loss = model(data)["loss"]
        assert loss.dtype == torch.float32  # the loss is reduced in fp32
        precision.backward(model, loss, last_micro_batch=True)
        precision.step(model, optimizer)
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 1.0, losses


def test_fp16_needs_a_gpu():
    with pytest.raises(ConfigError, match="train.precision fp16 needs a GPU"):
        tiny_job(train={"precision": "fp16"})
