"""Every preset in jobs/presets is a valid job-spec fragment whose processor feeds its targets; the model builds."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from uer_ray.config import build_config
from uer_ray.models.model import build_model

PRESETS = sorted((Path(__file__).resolve().parents[2] / "jobs" / "presets").glob("*.yaml"))
EXPECTED = {"bert", "roberta", "albert", "gpt2", "elmo", "lstm_lm", "gatedcnn_lm", "transformer_nmt", "lstm_mlm",
            "gatedcnn_mlm_sp"}


def test_presets_present():
    assert {p.stem for p in PRESETS} == EXPECTED


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_and_builds(path):
    spec = yaml.safe_load(path.read_text())
    assert set(spec) <= {"model", "data"}
    job = build_config(spec, ["model.vocab_size=1000"])
    with torch.device("meta"):
        model = build_model(job.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    # Presets combine with the rest of a job spec and with overrides, e.g. a smaller model for a quick run.
    small = build_config(spec, ["model.vocab_size=1000", "model.encoder.layers_num=1", "run.name=x"])
    assert small.model.encoder.layers_num == 1
