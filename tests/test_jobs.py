"""The shipped job specs: each validates against the reference data (UER_DATA), the lines jobs/README.md gives for it
work as written, the pre-training specs build their preset's architecture, and runtime_env.yaml matches pyproject."""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from uer_ray.cli import _job, build_parser
from uer_ray.config import ConfigError, build_config, expand_env, load_job
from uer_ray.submit import EXCLUDED, prepare

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
SPECS = sorted(p for p in JOBS.glob("*.yaml") if p.name != "runtime_env.yaml")
# Specs the README documents line by line; quickstart.yaml is filled in by `launch.py quickstart`, bert_tiny_zh.yaml
# is the main README's example on the reference data.
DOCUMENTED = [p for p in SPECS if p.stem not in ("quickstart", "bert_tiny_zh")]
PRESET_OF = {"bert_base_zh": "bert", "roberta_wwm": "roberta", "gpt2_small": "gpt2", "elmo_bilstm": "elmo"}
# Stands for the README's $CKPT: validating a line needs an existing directory there (no model is loaded).
CHECKPOINT = str(ROOT / "jobs" / "presets")


def readme_lines() -> list[str]:
    """Every command line in jobs/README.md's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", (JOBS / "README.md").read_text(), re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def readme_variables(data_dir: Path) -> dict[str, str]:
    """The README's shell variables (``export A=x B=y``, ``CPU="..."``), UER_DATA at the reference data."""
    variables = {}
    for line in readme_lines():
        words = shlex.split(line.removeprefix("export "))
        if words and all(re.fullmatch(r"[A-Z_]+=.*", w) for w in words):
            variables.update(w.split("=", 1) for w in words)
    return {**variables, "UER_DATA": str(data_dir), "CKPT": CHECKPOINT}


def expand(line: str, variables: dict[str, str]) -> list[str]:
    """Shell word splitting after $NAME / ${NAME} expansion, the way bash reads an unquoted $CPU."""
    words = []
    for word in shlex.split(line):
        expanded = re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables[m.group(1)], word)
        words.extend(expanded.split() if word.startswith("$") else [expanded])
    return words


LOCAL_LINES = [line for line in readme_lines() if line.startswith("python launch.py ")]


def local_command(line: str, data_dir: Path) -> list[str]:
    """A README line as the argv of ``launch.py`` (what follows ``python launch.py``)."""
    return expand(line, readme_variables(data_dir))[2:]


def cluster_commands() -> list[list[str]]:
    return [shlex.split(line) for line in readme_lines() if line.startswith("ray job submit ")]


def config_of(argv: list[str]) -> str:
    return argv[argv.index("--config") + 1]


@pytest.fixture
def reference_env(monkeypatch, data_dir):
    monkeypatch.setenv("UER_DATA", str(data_dir))
    monkeypatch.delenv("UER_RUNS", raising=False)
    monkeypatch.chdir(ROOT)


def test_every_documented_spec_has_a_cluster_and_a_local_line(data_dir):
    assert {p.stem for p in DOCUMENTED} >= {"bert_base_zh", "roberta_wwm", "gpt2_small", "elmo_bilstm",
                                           "finetune_book_review", "finetune_chnsenticorp", "finetune_msra_ner",
                                           "finetune_cmrc2018", "finetune_c3"}
    local = {config_of(local_command(line, data_dir)) for line in LOCAL_LINES}
    cluster = {config_of(argv) for argv in cluster_commands()}
    for spec in DOCUMENTED:
        assert f"jobs/{spec.name}" in local, f"jobs/README.md has no local line for {spec.name}"
        assert f"jobs/{spec.name}" in cluster, f"jobs/README.md has no ray job submit line for {spec.name}"


@pytest.mark.parametrize("line", LOCAL_LINES, ids=lambda line: "-".join(shlex.split(line)[2:5:2]))
def test_readme_local_line_validates(line, data_dir, reference_env):
    # exactly what `python launch.py ...` validates before Ray starts
    _job(build_parser().parse_args(local_command(line, data_dir)))


@pytest.mark.parametrize("argv", cluster_commands(), ids=lambda a: f"{a[a.index('launch.py') + 1]}-{Path(config_of(a)).stem}")
def test_readme_cluster_line_submits_a_stage(argv, reference_env):
    dashdash = argv.index("--")
    options, entrypoint = argv[3:dashdash], argv[dashdash + 1:]
    assert options == ["--working-dir", ".", "--runtime-env", "jobs/runtime_env.yaml"]
    assert entrypoint[:2] == ["python", "launch.py"]
    job = prepare(entrypoint[2:], working_dir=".", runtime_env_file="jobs/runtime_env.yaml")
    assert job["entrypoint"] == shlex.join(entrypoint)


def missing_file_errors(error: str, spec: dict) -> list[tuple[str, str]]:
    """(key, path) of each 'not found' in a ConfigError; raises if anything else is wrong."""
    found = []
    for part in error.removeprefix("invalid config: ").split("; "):
        key, _, message = part.partition(": ")
        assert message.startswith("not found: "), f"{key}: {message}"
        node = spec
        for name in key.split("."):
            node = node[name]
        found.append((key, node))
    return found


@pytest.mark.parametrize("path", [p for p in SPECS if p.stem != "quickstart"], ids=lambda p: p.stem)
def test_spec_validates_but_for_files_the_reference_data_lacks(path, reference_env):
    """A spec names full datasets; the reference data has some splits only (no msra_ner train, no cmrc2018 train)."""
    try:
        load_job(path)
    except ConfigError as exc:
        expanded = expand_env(yaml.safe_load(path.read_text()))
        for key, missing in missing_file_errors(str(exc), expanded):
            assert not Path(missing).exists(), f"{key}: {missing} exists, yet the spec did not validate"


@pytest.mark.parametrize("path", DOCUMENTED, ids=lambda p: p.stem)
def test_spec_names_data_only_through_uer_data(path):
    text = path.read_text()
    assert "../shared" not in text
    strings = re.findall(r'"([^"]*)"', text)
    data = [s for s in strings if re.search(r"(corpora|datasets|models)/", s)]
    assert data and all(s.startswith("${UER_DATA}/") for s in data), data
    assert yaml.safe_load(text)["run"]["storage_path"] == "${UER_RUNS:-runs}"


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize("job_name", sorted(PRESET_OF))
def test_pretraining_spec_builds_its_presets_architecture(job_name, reference_env):
    """The spec imports UER-py's JSON config; the preset spells the architecture out: both must give one model
    (the number of position slots and the imported file's name aside)."""
    job = load_job(JOBS / f"{job_name}.yaml")
    preset = yaml.safe_load((JOBS / "presets" / f"{PRESET_OF[job_name]}.yaml").read_text())
    built = build_config({"tokenizer": job.tokenizer.model_dump(mode="json"), **preset}).model
    ours, theirs = flat(job.model.model_dump(mode="json")), flat(built.model_dump(mode="json"))
    differing = {k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)}
    assert differing <= {"uer_config", "max_seq_length"}, {k: (ours.get(k), theirs.get(k)) for k in differing}
    assert job.data.processor.name == preset["data"]["processor"]["name"]


def test_runtime_env_lists_the_package_dependencies_and_keeps_secrets_out():
    from ray.runtime_env import RuntimeEnv

    runtime_env = yaml.safe_load((JOBS / "runtime_env.yaml").read_text())
    RuntimeEnv(**runtime_env)  # Ray's own validation of the keys and their shapes
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_pin = re.search(r"^TORCH \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    wanted = [torch_pin if d.startswith("torch") else d for d in project["dependencies"] if not d.startswith("ray")]
    assert runtime_env["pip"]["packages"] == wanted
    assert runtime_env["excludes"] == EXCLUDED
    assert "env_vars" not in runtime_env
