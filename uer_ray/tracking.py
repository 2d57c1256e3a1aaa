"""Weights & Biases logging that never stops training: offline without a key, disabled after any W&B error."""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def resolve_mode(mode: str) -> str:
    """``auto``: online only when an API key is configured; otherwise offline (no network needed)."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "online"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file() and "api.wandb.ai" in (
        Path.home() / ".netrc"
    ).read_text(errors="ignore")
    return "online" if has_key else "offline"


class Tracker:
    """One W&B run; every call is a no-op once W&B has failed or when tracking is disabled."""

    def __init__(self, tracking, run_name: str, job_type: str, config: dict, default_dir: Path):
        self.run = None
        self.mode = resolve_mode(tracking.mode)
        if self.mode == "disabled":
            return
        directory = Path(tracking.dir or default_dir)
        try:
            import wandb

            directory.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=tracking.project,
                group=tracking.group or run_name,
                name=f"{run_name}-{job_type}",
                job_type=job_type,
                config=config,
                dir=str(directory),
                mode=self.mode,
                reinit="create_new",
                settings=wandb.Settings(init_timeout=60, silent=True, console="off"),
            )
        except Exception as exc:  # W&B must never stop training
            log.warning("W&B disabled: %s", exc)
            self.run = None

    @property
    def location(self) -> str:
        if self.run is None:
            return "W&B disabled"
        if self.mode == "offline":
            return f"{self.run.dir.removesuffix('/files')} (offline; upload with `wandb sync`)"
        return self.run.url or self.run.dir

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
        except Exception as exc:
            log.warning("W&B logging stopped: %s", exc)
            self.run = None

    def summary(self, metrics: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(metrics)
        except Exception as exc:
            log.warning("W&B summary failed: %s", exc)

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as exc:
            log.warning("W&B finish failed: %s", exc)
        self.run = None
