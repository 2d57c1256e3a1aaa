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
    """Sums over one report window: the stage's statistics (tensors or numbers), tokens, samples, gradient norms.
    The window's time is wall time from ``start_window`` to ``reduce`` (reports and evaluations left out)."""

    def __init__(self, device: torch.device, world_size: int, start_step: int, flops_per_token: float | None = None,
                 peak_flops: float | None = None):
        self.device, self.world_size = device, world_size
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.start_step = start_step  # the ETA counts only this attempt's steps (a resumed run starts later)
        self.started = time.perf_counter()
        self.start_window()

    def start_window(self) -> None:
        self.sums: dict = defaultdict(float)
        self.window_started = time.perf_counter()

    def count(self, tokens: int, samples: int) -> None:
        self.sums["_tokens"] += tokens
        self.sums["_samples"] += samples

    def add(self, stats: dict) -> None:
        for key, value in stats.items():
            self.sums[key] = self.sums[key] + (value.detach() if torch.is_tensor(value) else value)

    def reduce(self) -> tuple[dict[str, float], dict[str, float]]:
        """(the stage's sums over ranks, throughput metrics)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the window ends when its work on the device is done
        seconds = max(time.perf_counter() - self.window_started, 1e-9)
        sums = all_reduce_sums({k: float(v) for k, v in self.sums.items()}, self.device)
        steps = max(sums.pop("_steps") / self.world_size, 1.0)
        tokens, samples = sums.pop("_tokens"), sums.pop("_samples")
        speed = {
            "tokens_per_s": tokens / seconds,
            "samples_per_s": samples / seconds,
            "grad_norm": sums.pop("_grad_norm") / self.world_size / steps,
        }
        if self.flops_per_token and self.peak_flops:
            speed["mfu"] = speed["tokens_per_s"] * self.flops_per_token / (self.peak_flops * self.world_size)
        return sums, {**speed, "_tokens": tokens, "_samples": samples, "_seconds": seconds}

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
