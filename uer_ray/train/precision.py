"""Mixed precision and gradient accumulation: autocast for the forward pass, a gradient scaler for fp16, gradients
summed over ``grad_accum_steps`` micro-batches (synchronised across workers only on the last one), clipping, step."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    def __init__(self, precision: str, device: torch.device, accum_steps: int, grad_clip: float):
        self.dtype = DTYPES.get(precision)
        self.device_type = device.type
        self.accum_steps = accum_steps
        self.grad_clip = grad_clip
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none.
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, model: nn.Module, loss: torch.Tensor, last_micro_batch: bool) -> None:
        """Accumulate this micro-batch's share of the gradient; DDP all-reduces only on the last micro-batch."""
        loss = loss / self.accum_steps
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        no_sync = getattr(model, "no_sync", None)
        with (contextlib.nullcontext() if last_micro_batch or no_sync is None else no_sync()):
            loss.backward()

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Clip, step, zero the gradients; returns the gradient norm before clipping (a tensor: no device sync)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skips the step when the gradients overflowed
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm.detach()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
