"""Config validation: every bad job spec fails before Ray starts, with one line naming the problem."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from uer_ray.config import ConfigError, build_config, job_on_worker, load_job

ROOT = Path(__file__).resolve().parents[1]


def vocab(data_dir) -> str:
    return str(data_dir / "models" / "google_zh_vocab.txt")


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"model": {"encodr": {}}}, "model.encodr: unknown key (allowed: emb_size, embedding, encoder"),
        ({"model": {"encoder": {"name": "transfomer"}}}, "unknown encoder 'transfomer'; known encoders: "),
        ({"model": {"encoder": {"name": "transformer", "layers": 3}}}, "model.encoder.layers: unknown key (allowed:"),
        ({"model": {"targets": {"mlmm": 1.0}}}, "unknown target 'mlmm'; known targets:"),
        ({"train": {"lr": "fast"}}, "train.lr: Input should be a valid number"),
        ({"data": {"processor": {"name": "bert", "seq_len": 64}}}, "data.processor.seq_len: unknown key"),
        ({"tokenizer": {"name": "bert", "vocab_path": "/no/such/vocab.txt"}}, "tokenizer.vocab_path: not found: /no/such/vocab.txt"),
        ({"model": {"targets": {"mlm": 1.0, "sp": 1.0}}, "data": {"processor": "mlm"}}, "data processor 'mlm' cannot feed target(s) sp"),
        ({"model": {"hidden_size": 100, "encoder": {"name": "transformer", "heads_num": 3}}}, "hidden_size 100 is not divisible by encoder.heads_num 3"),
        ({"model": {"targets": {"mlm": -1.0}}}, "weight: Input should be greater than 0"),
    ],
)
def test_bad_spec_names_the_problem(spec, message):
    with pytest.raises(ConfigError) as error:
        build_config(spec)
    text = str(error.value)
    assert message in text
    assert "\n" not in text


def test_overrides_and_weights(data_dir):
    job = build_config(
        {"tokenizer": {"name": "bert", "vocab_path": vocab(data_dir)}},
        ["train.lr=3e-4", "model.targets={mlm: 1.0, sp: 0.5}", "model.encoder.layers_num=4"],
    )
    assert job.train.lr == 3e-4
    assert {k: t.weight for k, t in job.model.targets.items()} == {"mlm": 1.0, "sp": 0.5}
    assert job.model.encoder.layers_num == 4


def test_override_reaches_into_a_target_given_as_a_weight():
    raw = {"model": {"encoder": "lstm", "targets": {"lm": 0.5}}, "data": {"processor": "lm"}}
    job = build_config(raw, ["model.targets.lm.adaptive_cutoffs=[8, 16]"])
    assert job.model.targets["lm"].weight == 0.5 and job.model.targets["lm"].adaptive_cutoffs == [8, 16]
    with pytest.raises(ConfigError, match=r"--set 'train.lr.x=1': train.lr is 0.001, not a section"):
        build_config({"train": {"lr": 1e-3}}, ["train.lr.x=1"])


def test_a_worker_reads_the_job_the_driver_validated():
    # No corpus and no processor: the model's lm target needs no data here (a fine-tuning job), on the driver and on
    # a worker, whose copy of the job has every field (the default bert processor included) set.
    job = build_config({"model": {"encoder": "lstm", "targets": {"lm": 1.0}}})
    assert job_on_worker(job.model_dump_json()) == job
    with pytest.raises(ConfigError, match=r"invalid config on a worker: train.lr: Input should be a valid number"):
        job_on_worker(job.model_dump_json().replace('"lr":0.0001', '"lr":"fast"'))


def test_uer_json_config_loads_unchanged(data_dir):
    job = build_config({"model": {"uer_config": str(data_dir / "models/bert/base_config.json"), "targets": {"mlm": 1}}})
    model = job.model
    assert (model.hidden_size, model.encoder.layers_num, model.encoder.heads_num) == (768, 12, 12)
    assert model.encoder.feedforward_size == 3072 and model.tie_weights
    assert list(model.targets) == ["mlm"]  # explicit keys override the imported ones


def test_job_spec_round_trips_through_json(data_dir):
    job = build_config({"tokenizer": {"name": "bert", "vocab_path": vocab(data_dir)}, "model": {"targets": {"mlm": 2.0}}})
    again = type(job).model_validate_json(job.model_dump_json())
    assert again == job


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"model": {"encoder": {"name": "no_such_encoder"}}}, "unknown encoder 'no_such_encoder'"),
        ({"trian": {"lr": 1.0}}, "trian: unknown key"),
        ({"tokenizer": {"name": "bert", "vocab_path": "missing_vocab.txt"}}, "tokenizer.vocab_path"),
    ],
)
def test_cli_fails_fast_before_ray(tmp_path, spec, message):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    started = time.time()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "pretrain", "--config", str(job)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    elapsed = time.time() - started
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    assert elapsed < 5, f"took {elapsed:.1f}s"


def test_missing_job_file():
    with pytest.raises(ConfigError, match="job spec not found"):
        load_job("no/such/job.yaml")
