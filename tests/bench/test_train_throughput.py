"""``bench/train_throughput.py`` in its quickest mode prints one line per configuration with the plain loop's and the
TorchTrainer's figures (a check that the bench runs, not a speed assertion); its window arithmetic by hand."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from train_throughput import parse_setting, slice_corpus, steady, window_rates  # noqa: E402


def test_window_rates_and_steady_state():
    # Steps of 100, 100, 200, 200 tokens ending at 1, 2, 3, 5 s after a start at 0; windows of 2 steps.
    rates = window_rates(0.0, [1.0, 2.0, 3.0, 5.0], [100, 100, 200, 200], window=2)
    assert rates == [100.0, 400 / 3]
    assert steady(rates, window=2, warmup=2) == 400 / 3  # the warm-up window is left out
    assert steady([90.0, 100.0, 110.0], window=5, warmup=5) == 105.0


def test_settings_and_corpus_slice(tmp_path):
    assert parse_setting("bert/tiny_config.json:64:8", 128, 32) == parse_setting("bert/tiny_config.json:64", 128, 8)
    assert parse_setting("bert/mini_config.json", 128, 32).config_path.is_file()
    with pytest.raises(SystemExit, match="CONFIG\\[:SEQ\\[:BATCH\\]\\]"):
        parse_setting("bert/mini_config.json:x", 128, 32)
    text = slice_corpus(3, tmp_path).read_text(encoding="utf-8")
    documents = [d for d in text.split("\n\n") if d.strip()]
    assert len(documents) == 3


@pytest.mark.slow
def test_prints_one_line_per_configuration(tmp_path):
    configs = ["bert/tiny_config.json:32:8", "bert/tiny_config.json:32:4"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--configs", *configs, "--steps", "4",
         "--warmup-steps", "2", "--window", "2", "--docs", "60", "--threads", "1", "--tmp", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(line["config"], line["seq"], line["batch"]) for line in lines] == [
        ("bert/tiny_config.json", 32, 8), ("bert/tiny_config.json", 32, 4)]
    for line in lines:
        assert line["plain_tokens_per_s"] > 0 and line["trainer_tokens_per_s"] > 0
        assert line["trainer_vs_plain"] == pytest.approx(line["trainer_tokens_per_s"] / line["plain_tokens_per_s"],
                                                         abs=2e-3, rel=2e-3)
        assert line["measured_steps"] == "3-4" and line["threads"] == 1
        # Same model, targets and data: an untrained model's loss (mlm + sp) is about ln(21128) + ln(2) in both.
        for loss in (line["plain_loss"], line["trainer_loss"]):
            assert math.log(21128) + math.log(2) - 0.5 < loss < math.log(21128) + math.log(2) + 0.5
        assert "plain_mfu" not in line  # no peak known on a CPU
