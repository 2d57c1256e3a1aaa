"""AdamW without weight decay on biases and norms, and learning-rate schedules counted in optimizer steps.

A schedule is a pure function of the step (no state to save): a resumed run sets the same learning rate as an
uninterrupted one, and a resume that would change it (another ``total_steps``) is detected by comparing two schedules.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def make_optimizer(model: nn.Module, hp, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            # Biases and norm gains are 1-D: not decayed (BERT's recipe).
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # one fused kernel for the whole update where the device has it
        return torch.optim.AdamW(groups, lr=hp.lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=hp.lr, foreach=device.type != "cpu")


class Schedule:
    """``factor(step)`` multiplies the base learning rate at optimizer step ``step`` (0-based): linear warm-up over
    ``warmup`` x total steps, then the named decay down to ``min_lr_ratio``."""

    def __init__(self, hp, total_steps: int):
        self.name, self.total = hp.scheduler, total_steps
        self.warmup_steps = hp.warmup_steps if hp.warmup_steps is not None else int(hp.warmup * total_steps)
        self.power, self.floor = hp.power, hp.min_lr_ratio
        self.base_lr = hp.lr

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.name == "constant":
            return 1.0
        if self.name == "inverse_sqrt":
            return math.sqrt(max(1, self.warmup_steps) / (step + 1))
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total - self.warmup_steps))
        if self.name == "cosine":
            decay = 0.5 * (1 + math.cos(math.pi * progress))
        else:  # linear is polynomial with power 1
            decay = (1 - progress) ** (self.power if self.name == "polynomial" else 1.0)
        return self.floor + (1 - self.floor) * decay

    def lr(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
