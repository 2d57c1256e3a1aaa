"""``launch.py submit`` before anything reaches a cluster: the checked entrypoint, the runtime_env it sends, the
token it finds, and secrets refused by name or by value (a job's runtime_env and metadata are public on the
dashboard). The submission itself runs against a real cluster in tests/test_cluster_e2e.py."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from cluster_harness import ROOT
from uer_ray.submit import EXCLUDED, SubmitError, auth_headers, prepare

STAGE = ["pretrain", "--config", "jobs/bert_base_zh.yaml", "--set", "train.total_steps=10"]


def test_prepare_sends_the_stage_with_the_project_as_working_dir(monkeypatch):
    monkeypatch.chdir(ROOT)
    job = prepare(["--", *STAGE], runtime_env_file="jobs/runtime_env.yaml", env={"UER_DATA": "s3://bucket/uer"})
    assert job["entrypoint"] == "python launch.py pretrain --config jobs/bert_base_zh.yaml --set train.total_steps=10"
    runtime_env = job["runtime_env"]
    assert runtime_env["working_dir"] == "."
    assert runtime_env["excludes"] == EXCLUDED  # the file's list and ours are the same
    assert runtime_env["pip"]["packages"][0].startswith("torch==")
    assert runtime_env["env_vars"] == {"UER_DATA": "s3://bucket/uer"}
    assert job["metadata"] == {"uer_ray_stage": "pretrain"}


@pytest.mark.parametrize("name", ["WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
                                  "RAY_AUTH_TOKEN", "HF_TOKEN", "DB_PASSWORD", "GOOGLE_APPLICATION_CREDENTIALS"])
def test_a_secret_by_name_is_refused(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SubmitError, match=f"env_vars {name}: looks like a secret"):
        prepare(STAGE, env={name: "x"})


def test_a_secret_under_another_name_or_in_the_entrypoint_is_refused(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123")
    with pytest.raises(SubmitError, match="contains the value of WANDB_API_KEY"):
        prepare(STAGE, env={"NOTES": "key=0123456789abcdef0123"})
    with pytest.raises(SubmitError, match="the entrypoint contains the value of WANDB_API_KEY"):
        prepare([*STAGE, "--set", "tracking.group=0123456789abcdef0123"])


def test_a_secret_in_the_runtime_env_file_is_refused(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    path = tmp_path / "runtime_env.yaml"
    path.write_text(yaml.safe_dump({"env_vars": {"AWS_SECRET_ACCESS_KEY": "abc"}}))
    with pytest.raises(SubmitError, match="AWS_SECRET_ACCESS_KEY: looks like a secret"):
        prepare(STAGE, runtime_env_file=str(path))


def test_a_config_the_cluster_would_not_get_is_refused(monkeypatch, tmp_path):
    outside = tmp_path / "job.yaml"
    outside.write_text("run: {name: x}\n")
    monkeypatch.chdir(ROOT)
    with pytest.raises(SubmitError, match="not a file inside the working dir"):
        prepare(["pretrain", "--config", str(outside)])
    with pytest.raises(SubmitError, match="not a file inside the working dir"):
        prepare(["pretrain", "--config", "jobs/no_such_job.yaml"])


def test_a_stage_typo_fails_here_with_argparses_message(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exc:
        prepare(["pretrain", "--confg", "jobs/bert_base_zh.yaml"])
    assert exc.value.code == 2 and "unrecognized arguments: --confg" in capsys.readouterr().err
    with pytest.raises(SubmitError, match="no stage given"):
        prepare(["--"])


def test_the_cli_refuses_a_secret_before_contacting_any_cluster():
    done = subprocess.run(
        [sys.executable, "launch.py", "submit", "--address", "http://127.0.0.1:9", "--env", "WANDB_API_KEY=abc", "--",
         *STAGE], cwd=ROOT, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert "WANDB_API_KEY: looks like a secret" in done.stderr


def test_the_token_comes_from_where_rays_clients_look(monkeypatch, tmp_path):
    token_file = tmp_path / "auth_token"
    token_file.write_text("a" * 32)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # sent whatever the mode says
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert auth_headers() == {"authorization": "Bearer " + "a" * 32}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "b" * 32)  # the variable wins over the file, as in Ray
    assert auth_headers() == {"authorization": "Bearer " + "b" * 32}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    token_file.write_text("")
    with pytest.raises(SubmitError, match="no token in that file"):
        auth_headers()
