"""Weights & Biases logging that never stops training: offline without a key, disabled after any W&B error.

A run resumed from a checkpoint continues the same W&B run (the id is kept in the checkpoint). Runs are written to a
local directory: ``tracking.dir``, else ``<storage>/<run>/wandb`` for local storage, else a node-local directory whose
offline runs are copied to ``<storage>/<run>/wandb`` when the run finishes.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from uer_ray import storage

log = logging.getLogger(__name__)


def resolve_mode(mode: str) -> str:
    """``auto``: online only when an API key is configured; otherwise offline (no network needed)."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "online"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (
        netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    )
    return "online" if has_key else "offline"


def wandb_location(tracking, run_dir: str) -> str:
    return tracking.dir or storage.join(run_dir, "wandb")


def _local_dir(location: str) -> tuple[Path, str | None]:
    """(where W&B writes on this node, where its files are copied afterwards or None)."""
    if not storage.is_uri(location):
        return Path(location), None
    return storage.cache_dir() / "wandb" / storage.name(storage.parent(location)), location


def _own_wandb_service() -> None:
    """Forget a W&B service inherited from another process (through Ray, the driver's): runs would be written by
    that process's service, where a killed attempt's stream of the same run id is still open and swallows the
    resumed attempt's records. The token names the process that started the service."""
    token = os.environ.get("WANDB_SERVICE", "")
    if token and token.split("-")[1:2] != [str(os.getpid())]:
        del os.environ["WANDB_SERVICE"]


class Tracker:
    """One W&B run; every call is a no-op once W&B has failed or when tracking is disabled."""

    def __init__(self, tracking, run_name: str, job_type: str, config: dict, location: str, run_id: str | None = None,
                 name: str | None = None):
        self.run = None
        self.mode = resolve_mode(tracking.mode)
        if self.mode == "disabled":
            return
        self.directory, self.copy_to = _local_dir(location)
        try:
            import wandb

            _own_wandb_service()
            self.directory.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=tracking.project,
                group=tracking.group or run_name,
                name=f"{run_name}-{name or job_type}",
                job_type=job_type,
                id=run_id,
                resume="allow" if run_id else None,
                config={**config, **tracking.config},
                dir=str(self.directory),
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
            if self.copy_to:  # offline runs of a remote-storage job join the run's files in storage
                storage.upload_dir(self.directory, self.copy_to)
        except Exception as exc:
            log.warning("W&B finish failed: %s", exc)
        self.run = None
