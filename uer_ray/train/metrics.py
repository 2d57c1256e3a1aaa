"""Training metrics over a report window, reduced over ranks: the stage's sums (losses, accuracies), throughput in
tokens and samples a second (training time only), gradient norm, learning rate, MFU where the model's FLOPs are
known; and the progress line with an ETA."""
from __future__ import annotations

import math
import time
from collections import defaultdict

import torch
import torch.distributed as dist


def all_reduce_sums(sums: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum each value over ranks (identical keys on every rank), on the device the backend needs."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return dict(sums)
    keys = sorted(sums)
    values = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(keys, values.tolist()))


class Meter:
    def __init__(self, device: torch.device, world_size: int, start_step: int, flops_per_token: float | None = None,
                 peak_flops: float | None = None):
        self.device, self.world_size = device, world_size
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.sums: dict[str, float] = defaultdict(float)
        self.start_step = start_step  # the ETA counts only this attempt's steps (a resumed run starts later)
        self.started = time.perf_counter()

    def add(self, stats: dict[str, float], tokens: int, samples: int, grad_norm: float, seconds: float) -> None:
        for key, value in stats.items():
            self.sums[key] += value
        self.sums["_tokens"] += tokens
        self.sums["_samples"] += samples
        self.sums["_grad_norm"] += grad_norm
        self.sums["_steps"] += 1
        self.sums["_seconds"] += seconds

    def reduce(self) -> tuple[dict[str, float], dict[str, float]]:
        """(the stage's sums over ranks, throughput metrics); starts a new window."""
        sums = all_reduce_sums(self.sums, self.device)
        self.sums = defaultdict(float)
        steps = max(sums.pop("_steps") / self.world_size, 1.0)
        seconds = max(sums.pop("_seconds") / self.world_size, 1e-9)  # the ranks step in lock-step
        tokens, samples = sums.pop("_tokens"), sums.pop("_samples")
        speed = {
            "tokens_per_s": tokens / seconds,
            "samples_per_s": samples / seconds,
            "grad_norm": sums.pop("_grad_norm") / self.world_size / steps,
        }
        if self.flops_per_token and self.peak_flops:
            speed["mfu"] = speed["tokens_per_s"] * self.flops_per_token / (self.peak_flops * self.world_size)
        return sums, {**speed, "_tokens": tokens, "_samples": samples}

    def progress_line(self, job_type: str, step: int, total: int, metrics: dict) -> str:
        """``[pretrain] step 200/2000 (10%) loss 5.43 ... | 12,345 tokens/s | 3m20s, ETA 30m00s``."""
        elapsed = time.perf_counter() - self.started
        done = max(step - self.start_step, 1)
        eta = elapsed / done * (total - step)
        shown = " ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if k not in ("step", "epoch", "tokens", "samples"))
        return (f"[{job_type}] step {step}/{total} ({100 * step / total:.0f}%) {shown} | "
                f"{_duration(elapsed)} elapsed, ETA {_duration(eta)}")


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}h" if hours else "") + f"{rest // 60}m{rest % 60:02d}s"
