"""W&B tracking: offline without a key, and a W&B failure never stops training."""
from __future__ import annotations

import time

from uer_ray.config import TrackingConfig
from uer_ray.tracking import Tracker, resolve_mode

from wandb_offline import history, runs


def test_auto_mode_is_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("disabled") == "disabled"


def test_offline_run_records_history(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = Tracker(TrackingConfig(), "unit", "pretrain", {"lr": 1e-4}, tmp_path)
    for step in (1, 2, 3):
        tracker.log({"loss": 1.0 / step}, step=step)
    assert "offline" in tracker.location
    tracker.finish()
    deadline = time.time() + 30  # the W&B service may still be flushing the file when finish() returns
    while not (rows := history(runs(tmp_path)[-1])) and time.time() < deadline:
        time.sleep(0.2)
    assert [row["loss"] for row in rows] == [1.0, 0.5, 1.0 / 3]


def test_wandb_failure_is_not_fatal(monkeypatch, tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where W&B wants a directory")
    tracker = Tracker(TrackingConfig(mode="offline", dir=blocked), "unit", "pretrain", {}, tmp_path)
    tracker.log({"loss": 1.0}, step=1)  # no exception
    tracker.finish()
    assert tracker.location == "W&B disabled"
