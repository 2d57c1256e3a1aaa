"""One validated config tree, from a YAML job spec plus CLI overrides to every stage.

Every model forbids unknown keys; components (tokenizer, processor, encoder, targets, task) are looked up by name in
their registry and validated against the component's own ``Config``. Validation happens before Ray starts, so a typo
costs seconds, not a cluster start-up.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from uer_ray.errors import UserError
from uer_ray.registry import ENCODERS, PROCESSORS, SUBENCODERS, TARGETS, TASKS, TOKENIZERS, Registry


class ConfigError(UserError):
    """A job spec that cannot run; ``str()`` is one line naming the key and the problem."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# A config re-read where inputs were already checked (a Train worker, possibly on another node whose disk does not
# hold the driver's files): validation then touches no file.
ON_WORKER = {"on_worker": True}


def _on_worker(info: ValidationInfo | None) -> bool:
    return bool(info and info.context and info.context.get("on_worker"))


def _to_location(value: Any) -> Any:
    from uer_ray.storage import absolute

    return absolute(value) if isinstance(value, (str, os.PathLike)) else value


def _must_exist(value: str, info: ValidationInfo) -> str:
    from uer_ray.storage import exists, resolve_published

    if not _on_worker(info) and not exists(resolve_published(value)):
        raise ValueError(f"not found: {value}")
    return value


# A local path (made absolute where the user typed the command, so it means the same in every process) or a URI.
Location = Annotated[str, BeforeValidator(_to_location)]
# ... that must exist when the config is first validated.
InputLocation = Annotated[str, BeforeValidator(_to_location), AfterValidator(_must_exist)]


class ComponentConfig(StrictModel):
    """Options of one registered component; subclasses add the component's own fields."""

    name: str


class TargetConfig(ComponentConfig):
    weight: float = Field(1.0, gt=0)


def _component_validator(registry: Registry, default: str | None = None):
    """``name`` or ``{name: ..., options}`` -> the named component's ``Config``; a mapping without a name (e.g. from
    ``--set model.encoder.layers_num=4``) means the default component."""

    def pick(value: Any) -> Any:
        if isinstance(value, str):
            value = {"name": value}
        elif isinstance(value, BaseModel):
            value = value.model_dump()
        named = isinstance(value, dict) and "name" in value
        if isinstance(value, dict) and not named and default:
            value = {"name": default, **value}
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError(f"expected a {registry.kind} name or a mapping with a 'name' key")
        config = getattr(registry.get(value["name"]), "Config", ComponentConfig).model_validate(value)
        if not named:  # the default's name, not the user's: a pre-trained checkpoint's component may differ
            config.model_fields_set.discard("name")
        return config

    return BeforeValidator(pick)


def _targets_validator(value: Any) -> Any:
    """``{mlm: 1.0, sp: 0.5}`` or ``{mlm: {weight: 1.0, ...options}}`` -> target configs."""
    if not isinstance(value, dict) or not value:
        raise ValueError("targets must be a non-empty mapping of target name to weight, e.g. {mlm: 1.0, sp: 1.0}")
    targets = {}
    for name, spec in value.items():
        if isinstance(spec, BaseModel):
            spec = spec.model_dump()
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            spec = {"weight": spec}
        if not isinstance(spec, dict):
            raise ValueError(f"target '{name}': expected a weight or a mapping of options")
        cls = TARGETS.get(name)
        targets[name] = getattr(cls, "Config", TargetConfig).model_validate({**spec, "name": name})
    return targets


def _component(registry: Registry, default: str):
    return Field(
        default_factory=lambda: getattr(registry.get(default), "Config", ComponentConfig)(name=default)
    )


Tokenizer = Annotated[SerializeAsAny[ComponentConfig], _component_validator(TOKENIZERS)]
Processor = Annotated[SerializeAsAny[ComponentConfig], _component_validator(PROCESSORS, "bert")]
Encoder = Annotated[SerializeAsAny[ComponentConfig], _component_validator(ENCODERS, "transformer")]
Subencoder = Annotated[SerializeAsAny[ComponentConfig], _component_validator(SUBENCODERS)]
Task = Annotated[SerializeAsAny[ComponentConfig], _component_validator(TASKS, "classification")]
Targets = Annotated[dict[str, SerializeAsAny[TargetConfig]], BeforeValidator(_targets_validator)]


class EmbeddingConfig(StrictModel):
    parts: list[str] = ["word", "pos", "seg"]
    layernorm: bool = True  # UER-py's remove_embedding_layernorm, inverted
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _known_parts(self):
        from uer_ray.registry import EMBEDDINGS

        for part in self.parts:
            EMBEDDINGS.get(part)
        return self


class ModelConfig(StrictModel):
    uer_config: InputLocation | None = None  # a UER-py JSON model config; explicit keys here override it
    vocab_size: int | None = Field(None, gt=0)  # filled from the tokenizer when left out
    hidden_size: int = Field(128, gt=0)
    emb_size: int | None = Field(None, gt=0)  # None: hidden_size; smaller: factorized (ALBERT)
    max_seq_length: int = Field(512, gt=0)
    layernorm: Literal["standard", "uer", "t5"] = "standard"
    layernorm_eps: float | None = Field(None, gt=0)  # None: the kind's default (standard 1e-12, uer/t5 1e-6); GPT-2 1e-5
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    encoder: Encoder = _component(ENCODERS, "transformer")
    subencoder: Subencoder | None = None  # word vectors also learned from their characters (UER-py subencoders)
    targets: Targets = Field(default_factory=lambda: _targets_validator({"mlm": 1.0, "sp": 1.0}))
    tie_weights: bool = True

    @model_validator(mode="before")
    @classmethod
    def _import_uer_config(cls, data: Any, info: ValidationInfo) -> Any:
        # On a worker the imported values are already explicit keys of the config it was sent.
        if isinstance(data, dict) and data.get("uer_config") and not _on_worker(info):
            from uer_ray import storage
            from uer_ray.models.uer_config import model_fields_from_uer_json

            path = storage.absolute(data["uer_config"])
            if not storage.exists(path):
                raise ValueError(f"uer_config file not found: {data['uer_config']}")
            imported = model_fields_from_uer_json(json.loads(storage.read_text(path)), source=str(path))
            explicit_targets = data.get("targets")
            data = deep_merge(imported, data)
            if explicit_targets is not None:  # a target set is replaced, not merged
                data["targets"] = explicit_targets
        return data

    @model_validator(mode="after")
    def _check_combination(self):
        for name, target in self.targets.items():
            check = getattr(TARGETS.get(name), "check_model", None)
            if check:
                check(self, target)
        check = getattr(ENCODERS.get(self.encoder.name), "check_model", None)
        if check:
            check(self)
        return self


class DataConfig(StrictModel):
    corpus: list[Location] = []  # files, directories or globs, local or URIs
    output_dir: Location | None = None  # default: <storage>/<run name>/dataset
    processor: Processor = _component(PROCESSORS, "bert")
    seed: int = 7
    chunk_mb: float = Field(4.0, gt=0)  # unit of work read by one task; bounds memory per task
    max_line_chars: int = Field(100_000, gt=0)  # longer lines are cut into pieces of this size, counted
    row_group_rows: int = Field(1024, gt=0)  # rows per Parquet row group: the unit training reads and shuffles
    tokenize_actors: int | None = Field(None, ge=1)  # most tokenizing actors; None: one per CPU of the cluster
    tokenize_cpus: float = Field(0.5, gt=0)  # per tokenizing actor; below 1 so Ray Data's other tasks still run
    check_shape: bool = True  # refuse a corpus whose shape cannot feed the processor (e.g. bert on one document a line)


class OptimConfig(StrictModel):
    """How one stage optimises; pre-training and fine-tuning share it."""

    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)  # never on biases and norms
    scheduler: Literal["linear", "cosine", "constant", "inverse_sqrt", "polynomial"] = "linear"
    warmup: float = Field(0.1, ge=0, lt=1)  # fraction of the optimizer steps
    warmup_steps: int | None = Field(None, ge=0)  # instead of the fraction: a schedule then independent of total_steps
    power: float = Field(1.0, gt=0)  # polynomial decay's exponent
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # decaying schedules end at lr x this
    batch_size: int = Field(32, gt=0)  # per worker and micro-batch
    grad_accum_steps: int = Field(1, ge=1)  # micro-batches per optimizer step
    grad_clip: float = Field(1.0, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16: autocast (CPU and GPU); fp16: GPU, gradient scaler
    group_by_length: bool = False  # batches of similar lengths (less padding), their order still shuffled
    compile: bool = False  # torch.compile the model
    seed: int = 7


class ProbeTaskConfig(StrictModel):
    task: Task = _component(TASKS, "classification")
    train_path: InputLocation
    dev_path: InputLocation
    seq_length: int = Field(128, gt=0)
    max_train_rows: int = Field(2000, gt=0)  # the first rows of each file: a probe is a quick look, not a fine-tune
    max_dev_rows: int = Field(1000, gt=0)


class ProbeConfig(StrictModel):
    """A downstream look during pre-training: every ``every`` steps rank 0 fine-tunes a copy of the encoder for
    ``steps`` steps on each task and reports its dev metric (``dev_metric`` = their mean)."""

    every: int = Field(gt=0)
    steps: int = Field(100, gt=0)
    lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(32, gt=0)
    tasks: list[ProbeTaskConfig] = Field(min_length=1)


class TrainConfig(OptimConfig):
    total_steps: int = Field(1000, gt=0)  # optimizer steps
    report_every: int = Field(20, gt=0)
    checkpoint_every: int = Field(200, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    shuffle_window: int = Field(16, gt=0)  # row groups whose rows are shuffled together
    prefetch: int = Field(4, ge=0)  # collated batches made ahead of the step (0: made in the step's thread)
    init_from: InputLocation | None = None  # warm start (further pre-training): a checkpoint directory
    probe: ProbeConfig | None = None


class FinetuneConfig(OptimConfig):
    lr: float = Field(2e-5, gt=0)
    group_by_length: bool = True  # task texts vary in length: padding each batch to its longest row wastes most steps
    task: Task = _component(TASKS, "classification")
    train_path: InputLocation | None = None
    dev_path: InputLocation | None = None
    test_path: InputLocation | None = None
    pretrained: InputLocation | None = None  # a uer-ray checkpoint directory; None: train from scratch
    seq_length: int = Field(128, gt=0)
    epochs: int = Field(3, gt=0)
    early_stopping: int | None = Field(None, gt=0)  # stop after this many epochs without a better dev metric
    max_bad_fraction: float = Field(0.1, ge=0, le=1)  # a data file with more bad rows than this is refused
    output_dir: Location | None = None  # default: <storage>/<run name>/finetune


class FurtherConfig(StrictModel):
    """UER's second stage: further pre-training on the task's own text, warm-started from the general model."""

    steps: int = Field(500, gt=0)
    corpus: list[Location] = []  # default: the text columns of finetune.train_path
    processor: Processor | None = None  # default: data.processor (bert/albert need documents: use mlm for task text)
    lr: float | None = Field(None, gt=0)  # default: train.lr


class PipelineConfig(StrictModel):
    """``launch.py pipeline``: general pre-training -> further pre-training on task text -> fine-tuning and test."""

    stages: list[Literal["pretrain", "further", "finetune"]] = ["pretrain", "further", "finetune"]
    further: FurtherConfig = Field(default_factory=FurtherConfig)


class TrackingConfig(StrictModel):
    project: str = "uer-ray"
    group: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: online only with an API key
    dir: Location | None = None  # default: <storage>/<run name>/wandb (a node-local directory for remote storage)
    config: dict[str, Any] = {}  # extra flat keys for the W&B run config (e.g. a Tune trial's combination)


class RunConfig(StrictModel):
    name: str = Field("uer-run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    # A local path, NFS, or a URI (s3://bucket/runs, gs://...); the default is made absolute too.
    storage_path: Location = Field("runs", validate_default=True)
    ray_address: str | None = None  # None: a local Ray started in-process
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(0.5, gt=0)  # fractional on small nodes
    max_failures: int = Field(2, ge=-1)  # worker-group restarts from the latest checkpoint (-1: unlimited)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


class JobConfig(StrictModel):
    run: RunConfig = Field(default_factory=RunConfig)
    tokenizer: Tokenizer | None = None  # required by preprocess and fine-tuning from scratch
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    search: dict[str, Any] | None = None  # a Ray Tune search spec, validated by uer_ray.tune

    @model_validator(mode="after")
    def _fp16_needs_a_gpu(self):
        for section in ("train", "finetune"):
            if getattr(self, section).precision == "fp16" and not self.run.use_gpu:
                raise ValueError(f"{section}.precision fp16 needs a GPU (run.use_gpu: true); use bf16 on CPU")
        return self

    @model_validator(mode="after")
    def _data_feeds_targets(self, info: ValidationInfo):
        # A worker's copy of the job has every field set, so it cannot tell a default processor from a chosen one:
        # the driver decided.
        if _on_worker(info) or not (self.data.corpus or "processor" in self.data.model_fields_set):
            return self  # no pre-training data in this job (e.g. fine-tuning a checkpoint with its own targets)
        processor = PROCESSORS.get(self.data.processor.name)
        feeds = set(getattr(processor, "feeds", ()))
        unfed = [t for t in self.model.targets if t not in feeds]
        if unfed:
            raise ValueError(
                f"data processor '{self.data.processor.name}' cannot feed target(s) {', '.join(unfed)}; "
                f"it feeds: {', '.join(sorted(feeds))}"
            )
        seq_length = getattr(self.data.processor, "seq_length", None)
        if self.data.corpus and seq_length and seq_length > self.model.max_seq_length:
            raise ValueError(
                f"data.processor.seq_length {seq_length} exceeds model.max_seq_length {self.model.max_seq_length}"
            )
        return self

    @property
    def run_dir(self) -> str:
        from uer_ray.storage import join

        return join(self.run.storage_path, self.run.name)

    @property
    def dataset_dir(self) -> str:
        from uer_ray.storage import join

        return self.data.output_dir or join(self.run_dir, "dataset")

    @property
    def finetune_dir(self) -> str:
        from uer_ray.storage import join

        return self.finetune.output_dir or join(self.run_dir, "finetune")


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = json.loads(json.dumps(data))  # a private deep copy
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if isinstance(child, str):  # a component given by name only: `encoder: lstm`
                child = node[part] = {"name": child}
            elif isinstance(child, (int, float)) and depth and path[depth - 1] == "targets":  # `lm: 1.0`, a weight
                child = node[part] = {"weight": child}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:depth + 1])} is {child!r}, not a section")
            node = child
        node[path[-1]] = value
    return data


_COMPONENT_FIELDS = {
    "tokenizer": TOKENIZERS, "processor": PROCESSORS, "encoder": ENCODERS, "subencoder": SUBENCODERS, "task": TASKS,
}


def _allowed_keys(path: list[str], raw: dict) -> list[str]:
    """The keys the config node at ``path`` accepts, resolving components by their name in ``raw``."""
    cls: type[BaseModel] = JobConfig
    node: Any = raw
    parts = list(path)
    while parts:
        part = parts.pop(0)
        node = node.get(part, {}) if isinstance(node, dict) else {}
        if part in _COMPONENT_FIELDS and part in cls.model_fields:
            name = node.get("name") if isinstance(node, dict) else node
            cls = getattr(_COMPONENT_FIELDS[part].get(name), "Config", ComponentConfig)
        elif part == "targets" and cls is ModelConfig and parts:
            target = parts.pop(0)
            node = node.get(target, {}) if isinstance(node, dict) else {}
            cls = getattr(TARGETS.get(target), "Config", TargetConfig)
        else:
            field = cls.model_fields.get(part)
            sub = getattr(field, "annotation", None) if field else None
            if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
                return []
            cls = sub
    return sorted(cls.model_fields)


def _describe(error: dict, raw: dict) -> str:
    loc = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
    where = ".".join(loc) or "<root>"
    if error["type"] == "extra_forbidden":
        try:
            allowed = _allowed_keys(loc[:-1], raw)
        except ValueError:
            allowed = []
        return f"{where}: unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}"


def job_on_worker(job_json: str) -> JobConfig:
    """The driver's validated job, as a Train worker reads it back; an error here would recur on every retry, so it
    is a ``ConfigError`` (never retried)."""
    try:
        return JobConfig.model_validate_json(job_json, context=ON_WORKER)
    except ValidationError as exc:
        raise ConfigError("invalid config on a worker: " + "; ".join(_describe(e, {}) for e in exc.errors())) from None


def build_config(data: dict | None = None, overrides: list[str] = ()) -> JobConfig:
    raw = apply_overrides(data or {}, list(overrides))
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("invalid config: " + "; ".join(_describe(e, raw) for e in exc.errors())) from None


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, where: str = "") -> Any:
    """``${VAR}`` and ``${VAR:-default}`` in every string of a job spec, so that one spec names its data by storage
    URI on a cluster (``UER_DATA=s3://bucket/uer``) and by local path on a laptop."""
    if isinstance(value, dict):
        return {key: expand_env(item, f"{where}.{key}" if where else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise ConfigError(f"invalid config: {where}: environment variable {name} is not set (in {value!r})")
        return default

    return _ENV_REFERENCE.sub(substitute, value)


def read_job_spec(path: str | Path | None) -> dict:
    """A job spec's mapping with ``${VAR}`` references expanded, not yet validated (None: an empty spec)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"job spec not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a job spec must be a YAML mapping")
    return expand_env(data)


def load_job(path: str | Path | None = None, overrides: list[str] = ()) -> JobConfig:
    return build_config(read_job_spec(path), overrides)
