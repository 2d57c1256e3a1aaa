"""Learning-rate schedules (counted in optimizer steps), weight decay groups, and the resume checks that refuse a
run that could not continue exactly."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_job
from uer_ray.errors import UserError
from uer_ray.models.model import build_model
from uer_ray.train.checkpointer import TrainerState, check_resume, layout
from uer_ray.train.optim import Schedule, make_optimizer


def schedule(name, **options):
    return Schedule(tiny_job(train={"scheduler": name, "lr": 1.0, "warmup": 0.1, **options}).train, total_steps=100)


def test_warm_up_then_each_decay():
    linear = schedule("linear")
    assert linear.lr(0) == pytest.approx(0.1) and linear.lr(9) == pytest.approx(1.0)
    assert linear.lr(55) == pytest.approx(0.5) and linear.lr(100) == 0.0
    cosine = schedule("cosine")
    assert cosine.lr(10) == pytest.approx(1.0) and cosine.lr(55) == pytest.approx(0.5) and cosine.lr(100) == pytest.approx(0)
    assert schedule("constant").lr(80) == 1.0
    assert schedule("inverse_sqrt").lr(39) == pytest.approx(math.sqrt(10 / 40))
    assert schedule("polynomial", power=2.0).lr(55) == pytest.approx(0.25)
    assert schedule("linear", min_lr_ratio=0.1).lr(100) == pytest.approx(0.1)


def test_no_weight_decay_on_biases_and_norms():
    job = tiny_job()
    model = build_model(job.model)
    decayed, plain = make_optimizer(model, job.train, torch.device("cpu")).param_groups
    assert decayed["weight_decay"] == job.train.weight_decay and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])


def saved_at(step, **train):
    hp = tiny_job(train={"scheduler": "linear", **train}).train
    was = layout(hp, 2, 100, "data-1")
    return TrainerState(step=step, layout=was), hp


@pytest.mark.parametrize("change, message", [
    ({"workers": 1}, "run.num_workers is 1 but the checkpoint at step 40 was made with 2"),
    ({"batch_size": 64}, "batch_size is 64 but the checkpoint at step 40 was made with 32"),
    ({"data": "data-2"}, "the training data is 'data-2'"),
    ({"total_steps": 200}, "its learning rate would jump from"),
])
def test_a_resume_that_cannot_be_exact_is_refused(change, message):
    saved, hp = saved_at(40)
    with pytest.raises(UserError, match=message):
        check_resume(saved, {**saved.layout, **change}, hp)


def test_more_steps_with_a_schedule_that_does_not_depend_on_them_is_fine():
    saved, hp = saved_at(40, scheduler="inverse_sqrt", warmup_steps=10)
    check_resume(saved, {**saved.layout, "total_steps": 200}, hp)
