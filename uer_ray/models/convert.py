"""Interop: UER-py checkpoints and Hugging Face BERT / GPT-2 <-> uer-ray models.

Every reader returns a :class:`Bundle` (a uer-ray model in eval mode, the tokenizer config, a vocabulary file);
every writer takes one. :func:`convert` chains a reader and a writer (``launch.py convert``). Weights are read
without executing code: ``safetensors`` or ``torch.load(..., weights_only=True)``.

Conventions mapped here:

* segments: uer-ray (as UER-py) uses seg 0 = padding, 1 = first sentence, 2 = second; Hugging Face BERT uses
  ``token_type_ids`` 0/1 plus an ``attention_mask``. HF token-type rows 0/1 become our segment rows 1/2; our row 0
  (padding, never attended to) is written as zeros on import and dropped on export.
* layer norms: a UER-py checkpoint is imported with ``layernorm: uer`` (UER-py's own formula: unbiased std,
  eps 1e-6, gamma/beta) so the outputs equal UER-py's; HF models use ``layernorm: standard`` with their epsilon
  (``layernorm_eps``: BERT 1e-12, GPT-2 1e-5).
* GPT-2's ``Conv1D`` weights are (in, out): transposed to and from ``nn.Linear``'s (out, in); ``c_attn`` is split into
  query/key/value.
"""
from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uer_ray.models.layers import default_layernorm_eps

FORMATS = ("uer-ray", "uer-py", "hf-bert", "hf-gpt2")

UER_PY_WEIGHTS = "pytorch_model.bin"  # UER-py's default name (``--output_model_path``); any *.bin is read
UER_PY_CONFIG = "config.json"
VOCAB = "vocab.txt"


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the reason."""


@dataclass
class Bundle:
    """A model in uer-ray form plus what a checkpoint carries besides weights."""

    model: nn.Module  # UERModel (a Backbone only when a needed target is not available)
    tokenizer: dict | None = None  # a uer-ray tokenizer config (``vocab_path`` resolved to ``vocab``)
    vocab: Path | None = None  # vocabulary file, copied along where the format has one
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from ``*.safetensors`` or a ``torch.save``-d state dict (``weights_only=True``), on the CPU."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: not a state dict")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def build_uer_ray(model_fields: dict) -> nn.Module:
    """A fresh uer-ray model (eval mode) from ``ModelConfig`` fields."""
    from uer_ray.config import ModelConfig
    from uer_ray.models.model import UERModel

    return UERModel(ModelConfig.model_validate(model_fields)).eval()


def _word_key(model: nn.Module) -> str:
    return "embedding.parts.word.embedding.weight"


def _tied_keys(model: nn.Module) -> set[str]:
    """Keys of ``model.state_dict()`` that share storage with the word embedding (tied output layers)."""
    own = model.state_dict()
    word = own.get(_word_key(model))
    if word is None:
        return set()
    return {k for k, v in own.items() if k != _word_key(model) and v.data_ptr() == word.data_ptr()}


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Strict load of already-renamed weights; tied output layers may be absent (they follow the word embedding)."""
    own = model.state_dict()
    tied = _tied_keys(model)
    missing = [k for k in own if k not in state and k not in tied]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ConversionError(
            f"{source}: weights do not fit the model; missing: {missing[:8]}{'...' if len(missing) > 8 else ''}; "
            f"unexpected: {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ConversionError(f"{source}: {key} has shape {tuple(value.shape)}, the model wants {tuple(own[key].shape)}")
    for key in tied & set(state):
        if not torch.equal(state[key], state.get(_word_key(model), state[key])):
            raise ConversionError(f"{source}: {key} differs from the word embedding, but the model ties them")
    # Tied keys last is harmless (equal values); load word embedding last so it wins either way.
    ordered = {k: v for k, v in state.items() if k not in tied}
    with torch.no_grad():
        for key, value in ordered.items():
            own[key].copy_(value)
    return model


def _layernorm_modules(model: nn.Module) -> set[str]:
    from uer_ray.models.layers import UerLayerNorm

    return {name for name, m in model.named_modules() if isinstance(m, (nn.LayerNorm, UerLayerNorm))}


def _targets_in(model: nn.Module) -> list[str]:
    return list(getattr(model, "targets", {}) or {})


def _check_plain_outputs(model: nn.Module, fmt: str) -> None:
    adaptive = [name for name, t in model.config.targets.items() if getattr(t, "adaptive_cutoffs", None)]
    if adaptive:
        raise ConversionError(
            f"cannot write {fmt}: target(s) {', '.join(adaptive)} use an adaptive softmax, which {fmt} has no layer "
            f"for; fine-tune from the uer-ray checkpoint, or pre-train without adaptive_cutoffs"
        )


def _model_fields(model: nn.Module) -> dict:
    return model.config.model_dump(mode="json", exclude={"uer_config"})


def _enc(model: nn.Module):
    return model.config.encoder


def _check_transformer(model: nn.Module, fmt: str, positioning: str, mask: str, parts: list[str]) -> None:
    cfg = model.config
    enc = cfg.encoder
    problems = []
    if enc.name != "transformer":
        problems.append(f"encoder {enc.name!r} (needs transformer)")
    else:
        if enc.layernorm_positioning != positioning:
            problems.append(f"layernorm_positioning {enc.layernorm_positioning!r} (needs {positioning!r})")
        if enc.mask != mask:
            problems.append(f"mask {enc.mask!r} (needs {mask!r})")
        plain = {"attention_head_size": None, "feed_forward": "dense", "parameter_sharing": False,
                 "remove_transformer_bias": False, "remove_attention_scale": False, "relative_position_embedding": False}
        for option, default in plain.items():
            if getattr(enc, option, default) != default:
                problems.append(f"encoder.{option} {getattr(enc, option)!r} (needs {default!r})")
    if list(cfg.embedding.parts) != parts:
        problems.append(f"embedding parts {cfg.embedding.parts} (needs {parts})")
    if cfg.emb_size not in (None, cfg.hidden_size):
        problems.append("a factorized embedding (emb_size != hidden_size)")
    if cfg.layernorm == "t5":
        problems.append("t5 (RMS) layer norms")
    if getattr(cfg, "subencoder", None) is not None:
        problems.append("a subencoder")
    if problems:
        raise ConversionError(f"cannot write {fmt}: the model has " + "; ".join(problems))
    if cfg.layernorm == "uer":
        warnings.warn(
            f"{fmt}: the model uses UER-py's layer norm (unbiased std, eps outside the sqrt); the {fmt} model uses "
            "torch's. Weights convert exactly; outputs differ slightly.",
            stacklevel=3,
        )


# ----------------------------------------------------------------------------------------------------------------------
# UER-py
# ----------------------------------------------------------------------------------------------------------------------
_RAY_TO_UER = [
    (r"^embedding\.parts\.(\w+)\.", r"embedding.\1."),
    (r"^embedding\.projection\.", "encoder.linear."),  # ALBERT's factorized embedding projection
    (r"^encoder\.layers\.(\d+)\.self_attn\.query\.", r"encoder.transformer.\1.self_attn.linear_layers.0."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.key\.", r"encoder.transformer.\1.self_attn.linear_layers.1."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.value\.", r"encoder.transformer.\1.self_attn.linear_layers.2."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.output\.", r"encoder.transformer.\1.self_attn.final_linear."),
    (r"^encoder\.layers\.(\d+)\.", r"encoder.transformer.\1."),
    (r"^encoder\.final_layer_norm\.", "encoder.layer_norm."),
    (r"^targets\.", "target."),
]

# Older UER-py names (before the embedding/target refactoring) -> current ones.
_LEGACY_UER = [
    (r"^embedding\.word_embedding\.", "embedding.word.embedding."),
    (r"^embedding\.position_embedding\.", "embedding.pos.embedding."),
    (r"^embedding\.segment_embedding\.", "embedding.seg.embedding."),
    (r"^encoder\.block\.(\d+)\.", r"encoder.transformer.\1."),
    (r"^target\.mlm_linear_1\.", "target.mlm.linear_1."),
    (r"^target\.mlm_linear_2\.", "target.mlm.linear_2."),
    (r"^target\.layer_norm\.", "target.mlm.layer_norm."),
    (r"^target\.nsp_linear_1\.", "target.sp.linear_1."),
    (r"^target\.nsp_linear_2\.", "target.sp.linear_2."),
    (r"^target\.output_layer\.", "target.lm.output_layer."),
]

_LN_TO_UER = {"weight": "gamma", "bias": "beta"}
_LN_FROM_UER = {"gamma": "weight", "beta": "bias"}


def uer_py_key(ray_key: str, shared: bool = False) -> str:
    """A uer-ray parameter name -> UER-py's (before layer-norm parameter renaming).

    ``shared``: ALBERT's parameter sharing, where UER-py holds one unindexed ``encoder.transformer``.
    """
    for pattern, repl in _RAY_TO_UER:
        ray_key = re.sub(pattern, repl, ray_key)
    if shared:
        ray_key = re.sub(r"^encoder\.transformer\.0\.", "encoder.transformer.", ray_key)
    return ray_key


def _shared(model: nn.Module) -> bool:
    return bool(getattr(model.config.encoder, "parameter_sharing", False))


def _modernize_uer_key(key: str) -> str:
    for pattern, repl in _LEGACY_UER:
        key = re.sub(pattern, repl, key)
    return key


def to_uer_py_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """uer-ray weights under UER-py's names; layer norms as gamma/beta (t5 RMS norms keep ``weight``)."""
    _check_plain_outputs(model, "uer-py")
    norms = _layernorm_modules(model)
    out = {}
    for key, value in model.state_dict().items():
        module, _, param = key.rpartition(".")
        new = uer_py_key(key, _shared(model))
        if module in norms and param in _LN_TO_UER:
            new = new[: -len(param)] + _LN_TO_UER[param]
        out[new] = value.detach().clone()
    return out


def from_uer_py_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "UER-py checkpoint") -> nn.Module:
    """Load a UER-py state dict into a uer-ray model built for it."""
    own = model.state_dict()
    table = {uer_py_key(k, _shared(model)): k for k in own}
    renamed = {}
    for key, value in state.items():
        key = _modernize_uer_key(key)
        ray_key = table.get(key)
        if ray_key is None:  # layer norm parameters: gamma/beta <-> weight/bias as the model's norm names them
            stem, _, param = key.rpartition(".")
            for alias in (_LN_FROM_UER.get(param), _LN_TO_UER.get(param)):
                if alias and f"{stem}.{alias}" in table:
                    ray_key = table[f"{stem}.{alias}"]
        if ray_key is None:
            raise ConversionError(f"{source}: no uer-ray parameter for {key!r}")
        renamed[ray_key] = value
    seg_key = "embedding.parts.seg.embedding.weight"
    if seg_key in renamed and seg_key in own and renamed[seg_key].shape[0] < own[seg_key].shape[0]:
        raise ConversionError(f"{source}: segment embedding has {renamed[seg_key].shape[0]} rows, uer-ray needs 3")
    return load_into(model, renamed, source)


def uer_py_model_fields(uer_config: dict, state: dict[str, torch.Tensor], source: str = "UER-py config") -> dict:
    """``ModelConfig`` fields for a UER-py JSON config plus its weights (vocab size, positions and targets)."""
    from uer_ray.models.uer_config import model_fields_from_uer_json
    from uer_ray.registry import TARGETS

    uer = dict(uer_config)
    norm = uer.pop("layernorm", "normal")
    for key in ("layernorm_eps", "has_lmtarget_bias"):
        uer.pop(key, None)
    fields = model_fields_from_uer_json(uer, source=source)
    fields["layernorm"] = "t5" if norm == "t5" else "uer"
    if uer_config.get("layernorm_eps"):
        fields["layernorm_eps"] = uer_config["layernorm_eps"]
    keys = {_modernize_uer_key(k): v for k, v in state.items()}
    word = keys.get("embedding.word.embedding.weight")
    if word is None:
        raise ConversionError(f"{source}: no word embedding (embedding.word.embedding.weight) in the weights")
    fields["vocab_size"] = word.shape[0]
    pos = keys.get("embedding.pos.embedding.weight")
    if pos is not None:
        fields["max_seq_length"] = pos.shape[0]
    present = []
    for key in keys:
        match = re.match(r"^target\.(\w+)\.", key)
        if match and match.group(1) not in present:
            present.append(match.group(1))
    if present:
        unknown = [t for t in present if t not in TARGETS]
        if unknown:
            raise ConversionError(f"{source}: target(s) {unknown} are not available in uer-ray")
        old = fields.get("targets", {})
        fields["targets"] = {t: old.get(t, 1.0) for t in present}
        if "lm" in present and "target.lm.output_layer.bias" in keys:  # UER-py's has_lmtarget_bias
            fields["targets"]["lm"] = {"weight": fields["targets"]["lm"], "bias": True}
    return fields


def uer_py_config(model: nn.Module) -> dict:
    """A UER-py JSON model config describing ``model``."""
    cfg = model.config
    enc = cfg.encoder
    out: dict[str, Any] = {
        "emb_size": cfg.emb_size or cfg.hidden_size,
        "hidden_size": cfg.hidden_size,
        "max_seq_length": cfg.max_seq_length,
        "dropout": getattr(enc, "dropout", cfg.embedding.dropout),
        "embedding": list(cfg.embedding.parts),
        "encoder": enc.name,
        "target": _targets_in(model),
        "tie_weights": cfg.tie_weights,
        "layernorm": "t5" if cfg.layernorm == "t5" else "normal",
    }
    for key in ("feedforward_size", "hidden_act", "heads_num", "layers_num", "mask", "layernorm_positioning"):
        if hasattr(enc, key):
            out[key] = getattr(enc, key)
    if not cfg.embedding.layernorm:
        out["remove_embedding_layernorm"] = True
    if cfg.emb_size not in (None, cfg.hidden_size):
        out["factorized_embedding_parameterization"] = True
    targets = set(out["target"])
    out["data_processor"] = "bert" if {"mlm", "sp"} <= targets else "mlm" if "mlm" in targets else "lm" if "lm" in targets else None
    if out["data_processor"] is None:
        del out["data_processor"]
    return out


def read_uer_py(path: str | Path, config: str | Path | None = None, vocab: str | Path | None = None,
                tokenizer: dict | None = None) -> Bundle:
    """A UER-py checkpoint: a ``*.bin`` file (``config``: its JSON model config) or a directory holding one
    ``*.bin``, ``config.json`` and optionally ``vocab.txt``."""
    path = Path(path)
    if path.is_dir():
        bins = sorted(path.glob("*.bin"))
        if len(bins) != 1:
            raise ConversionError(f"{path}: expected one *.bin weights file, found {len(bins)}")
        weights, config = bins[0], config or path / UER_PY_CONFIG
        vocab = vocab or (path / VOCAB if (path / VOCAB).is_file() else None)
    else:
        weights = path
    if config is None or not Path(config).is_file():
        raise ConversionError(f"{path}: a UER-py checkpoint needs its JSON model config (e.g. models/bert/base_config.json)")
    state = read_state_dict(weights)
    fields = uer_py_model_fields(json.loads(Path(config).read_text()), state, source=str(config))
    model = from_uer_py_state(build_uer_ray(fields), state, source=str(weights))
    if tokenizer is None and vocab is not None:
        tokenizer = {"name": "bert", "vocab_path": VOCAB}  # UER-py's default tokenizer
    return Bundle(model.eval(), tokenizer, Path(vocab) if vocab else None)


def write_uer_py(bundle: Bundle, dst: str | Path) -> Path:
    """``dst/pytorch_model.bin`` (a UER-py state dict) + ``dst/config.json`` (UER-py model config) [+ vocab.txt]."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    if bundle.model.config.layernorm == "standard":
        warnings.warn(
            "uer-py: the model uses torch's layer norm; UER-py's normalises by the unbiased std + eps 1e-6. Weights "
            "convert exactly; outputs differ slightly.",
            stacklevel=2,
        )
    torch.save(to_uer_py_state(bundle.model), dst / UER_PY_WEIGHTS)
    (dst / UER_PY_CONFIG).write_text(json.dumps(uer_py_config(bundle.model), indent=2))
    _copy_vocab(bundle, dst)
    return dst


# ----------------------------------------------------------------------------------------------------------------------
# Hugging Face
# ----------------------------------------------------------------------------------------------------------------------
_HF_ACT = {"gelu": "gelu", "gelu_new": "gelu_fast", "gelu_fast": "gelu_fast", "gelu_pytorch_tanh": "gelu_fast",
           "relu": "relu", "silu": "silu", "swish": "silu"}
_ACT_TO_HF = {"gelu": "gelu", "gelu_fast": "gelu_new", "relu": "relu", "silu": "silu"}


def _hf_act(name: str, source: str) -> str:
    if name not in _HF_ACT:
        raise ConversionError(f"{source}: activation {name!r} has no uer-ray equivalent ({', '.join(_HF_ACT)})")
    return _HF_ACT[name]


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    directory = Path(directory)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return read_state_dict(directory / name)
    raise ConversionError(f"{directory}: no model.safetensors or pytorch_model.bin (sharded checkpoints are not read)")


def _hf_ln(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old TF-converted checkpoints name layer norms gamma/beta."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        out[key] = value
    return out


def _lm_weight_keys(model: nn.Module) -> tuple[str | None, list[str]]:
    """The ``lm`` target's (vocab, hidden) output matrix key and its other parameter keys (biases)."""
    keys = [k for k in model.state_dict() if k.startswith("targets.lm.")]
    vocab = model.config.vocab_size
    matrix = [k for k in keys if model.state_dict()[k].dim() == 2 and model.state_dict()[k].shape[0] == vocab]
    if len(matrix) != 1:
        return None, keys
    return matrix[0], [k for k in keys if k != matrix[0]]


# -- BERT ---------------------------------------------------------------------------------------------------------------
def hf_bert_model_fields(hf: dict, state: dict[str, torch.Tensor], source: str = "HF BERT") -> dict:
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"{source}: position_embedding_type {hf['position_embedding_type']!r} is not supported")
    if hf.get("type_vocab_size", 2) > 2:
        raise ConversionError(f"{source}: type_vocab_size {hf['type_vocab_size']} > 2 (uer-ray has 2 segments)")
    targets = {}
    if any(k.startswith("cls.predictions.") for k in state):
        targets["mlm"] = 1.0
    if any(k.startswith("cls.seq_relationship.") for k in state) and any("pooler.dense" in k for k in state):
        targets["sp"] = 1.0
    fields = {
        "vocab_size": hf["vocab_size"],
        "hidden_size": hf["hidden_size"],
        "max_seq_length": hf.get("max_position_embeddings", 512),
        "layernorm": "standard",
        "embedding": {"parts": ["word", "pos", "seg"], "layernorm": True, "dropout": hf.get("hidden_dropout_prob", 0.1)},
        "encoder": {
            "name": "transformer",
            "layers_num": hf["num_hidden_layers"],
            "heads_num": hf["num_attention_heads"],
            "feedforward_size": hf["intermediate_size"],
            "hidden_act": _hf_act(hf.get("hidden_act", "gelu"), source),
            "layernorm_positioning": "post",
            "mask": "fully_visible",
            "dropout": hf.get("hidden_dropout_prob", 0.1),
        },
        "targets": targets or {"mlm": 1.0},
        "tie_weights": hf.get("tie_word_embeddings", True),
    }
    eps = hf.get("layer_norm_eps", 1e-12)
    if eps != 1e-12:
        fields["layernorm_eps"] = eps
    return fields


def from_hf_bert_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "HF BERT") -> nn.Module:
    state = _hf_ln(state)
    state = {(k[len("bert."):] if k.startswith("bert.") else k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    emb = {"word_embeddings": "word", "position_embeddings": "pos"}
    for hf_name, part in emb.items():
        out[f"embedding.parts.{part}.embedding.weight"] = state[f"embeddings.{hf_name}.weight"]
    token_type = state["embeddings.token_type_embeddings.weight"]
    seg = torch.zeros(3, token_type.shape[1], dtype=token_type.dtype)
    seg[1 : 1 + token_type.shape[0]] = token_type  # HF type 0 -> seg 1, type 1 -> seg 2; row 0 = padding
    out["embedding.parts.seg.embedding.weight"] = seg
    for p in ("weight", "bias"):
        out[f"embedding.layer_norm.{p}"] = state[f"embeddings.LayerNorm.{p}"]
    layers = model.config.encoder.layers_num
    sub = {
        "attention.self.query": "self_attn.query",
        "attention.self.key": "self_attn.key",
        "attention.self.value": "self_attn.value",
        "attention.output.dense": "self_attn.output",
        "attention.output.LayerNorm": "layer_norm_1",
        "intermediate.dense": "feed_forward.linear_1",
        "output.dense": "feed_forward.linear_2",
        "output.LayerNorm": "layer_norm_2",
    }
    for i in range(layers):
        for hf_name, name in sub.items():
            for p in ("weight", "bias"):
                out[f"encoder.layers.{i}.{name}.{p}"] = state[f"encoder.layer.{i}.{hf_name}.{p}"]
    targets = _targets_in(model)
    if "mlm" in targets:
        mlm = {"cls.predictions.transform.dense": "linear_1", "cls.predictions.transform.LayerNorm": "layer_norm"}
        if "cls.predictions.transform.dense.weight" in state:
            for hf_name, name in mlm.items():
                for p in ("weight", "bias"):
                    out[f"targets.mlm.{name}.{p}"] = state[f"{hf_name}.{p}"]
            decoder = state.get("cls.predictions.decoder.weight")
            if decoder is not None and not (model.config.tie_weights and torch.equal(decoder, out["embedding.parts.word.embedding.weight"])):
                out["targets.mlm.linear_2.weight"] = decoder
            bias = state.get("cls.predictions.bias", state.get("cls.predictions.decoder.bias"))
            out["targets.mlm.linear_2.bias"] = bias
        else:  # a bare BertModel: the MLM head stays freshly initialised
            own = model.state_dict()
            for key in own:
                if key.startswith("targets.mlm.") and key not in _tied_keys(model):
                    out[key] = own[key].clone()
    if "sp" in targets:
        for p in ("weight", "bias"):
            out[f"targets.sp.linear_1.{p}"] = state[f"pooler.dense.{p}"]
            out[f"targets.sp.linear_2.{p}"] = state[f"cls.seq_relationship.{p}"]
    return load_into(model, out, source)


def to_hf_bert(model: nn.Module):
    """A ``transformers`` BERT (``BertForPreTraining`` with an sp target, else ``BertForMaskedLM``) with the weights."""
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining

    _check_transformer(model, "hf-bert", "post", "fully_visible", ["word", "pos", "seg"])
    cfg, enc = model.config, model.config.encoder
    if not cfg.embedding.layernorm:
        raise ConversionError("cannot write hf-bert: the model has no embedding layer norm")
    if "mlm" not in _targets_in(model):
        raise ConversionError("cannot write hf-bert: the model has no mlm target")
    hf_cfg = BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=enc.layers_num,
        num_attention_heads=enc.heads_num,
        intermediate_size=enc.feedforward_size,
        hidden_act=_ACT_TO_HF[enc.hidden_act],
        hidden_dropout_prob=enc.dropout,
        attention_probs_dropout_prob=enc.dropout,
        max_position_embeddings=cfg.max_seq_length,
        type_vocab_size=2,
        layer_norm_eps=cfg.layernorm_eps or default_layernorm_eps(cfg.layernorm),
        tie_word_embeddings=cfg.tie_weights,
        pad_token_id=0,
    )
    with_sp = "sp" in _targets_in(model)
    hf = (BertForPreTraining if with_sp else BertForMaskedLM)(hf_cfg).eval()
    own = model.state_dict()
    ln = (lambda p: p) if cfg.layernorm != "uer" else (lambda p: _LN_TO_UER[p])
    out = {
        "bert.embeddings.word_embeddings.weight": own["embedding.parts.word.embedding.weight"],
        "bert.embeddings.position_embeddings.weight": own["embedding.parts.pos.embedding.weight"],
        "bert.embeddings.token_type_embeddings.weight": own["embedding.parts.seg.embedding.weight"][1:3],
    }
    for p in ("weight", "bias"):
        out[f"bert.embeddings.LayerNorm.{p}"] = own[f"embedding.layer_norm.{ln(p)}"]
    sub = {
        "attention.self.query": ("self_attn.query", False),
        "attention.self.key": ("self_attn.key", False),
        "attention.self.value": ("self_attn.value", False),
        "attention.output.dense": ("self_attn.output", False),
        "attention.output.LayerNorm": ("layer_norm_1", True),
        "intermediate.dense": ("feed_forward.linear_1", False),
        "output.dense": ("feed_forward.linear_2", False),
        "output.LayerNorm": ("layer_norm_2", True),
    }
    for i in range(enc.layers_num):
        for hf_name, (name, is_ln) in sub.items():
            for p in ("weight", "bias"):
                out[f"bert.encoder.layer.{i}.{hf_name}.{p}"] = own[f"encoder.layers.{i}.{name}.{ln(p) if is_ln else p}"]
    for p in ("weight", "bias"):
        out[f"cls.predictions.transform.dense.{p}"] = own[f"targets.mlm.linear_1.{p}"]
        out[f"cls.predictions.transform.LayerNorm.{p}"] = own[f"targets.mlm.layer_norm.{ln(p)}"]
    out["cls.predictions.decoder.weight"] = own["targets.mlm.linear_2.weight"]
    out["cls.predictions.bias"] = own["targets.mlm.linear_2.bias"]
    out["cls.predictions.decoder.bias"] = own["targets.mlm.linear_2.bias"]
    if with_sp:
        for p in ("weight", "bias"):
            out[f"bert.pooler.dense.{p}"] = own[f"targets.sp.linear_1.{p}"]
            out[f"cls.seq_relationship.{p}"] = own[f"targets.sp.linear_2.{p}"]
    _fill_hf(hf, out, "hf-bert")
    return hf


def _fill_hf(hf: nn.Module, values: dict[str, torch.Tensor], fmt: str) -> None:
    target = hf.state_dict()
    missing = [k for k in target if k not in values]
    unexpected = [k for k in values if k not in target]
    if missing or unexpected:
        raise ConversionError(f"{fmt}: mapping incomplete; missing {missing[:8]}, unexpected {unexpected[:8]}")
    with torch.no_grad():
        for key, value in values.items():
            target[key].copy_(value)


def read_hf_bert(directory: str | Path, tokenizer: dict | None = None) -> Bundle:
    """A Hugging Face BERT directory (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``)."""
    directory = Path(directory)
    hf = json.loads((directory / "config.json").read_text())
    state = _hf_ln(read_hf_weights(directory))
    stripped = {k.removeprefix("bert."): v for k, v in state.items()}
    fields = hf_bert_model_fields(hf, stripped, source=str(directory))
    model = from_hf_bert_state(build_uer_ray(fields), state, source=str(directory))
    notes = []
    if not any(k.startswith("cls.predictions.") for k in state):
        notes.append("no MLM head in the checkpoint (a bare BertModel): targets.mlm is freshly initialised")
    vocab = directory / VOCAB if (directory / VOCAB).is_file() else None
    if tokenizer is None and vocab is not None:
        lower = True
        tok_cfg = directory / "tokenizer_config.json"
        if tok_cfg.is_file():
            lower = bool(json.loads(tok_cfg.read_text()).get("do_lower_case", True))
        tokenizer = {"name": "bert", "vocab_path": VOCAB, "do_lower_case": lower}
    return Bundle(model, tokenizer, vocab, notes)


def write_hf_bert(bundle: Bundle, dst: str | Path) -> Path:
    dst = Path(dst)
    to_hf_bert(bundle.model).save_pretrained(str(dst))
    _copy_vocab(bundle, dst)
    if bundle.tokenizer and bundle.tokenizer.get("name") == "bert":
        (dst / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "BertTokenizer", "do_lower_case": bundle.tokenizer.get("do_lower_case", True)}, indent=2
        ))
    return dst


# -- GPT-2 --------------------------------------------------------------------------------------------------------------
def _lm_available() -> bool:
    from uer_ray.registry import TARGETS

    return "lm" in TARGETS


def hf_gpt2_model_fields(hf: dict, source: str = "HF GPT-2") -> dict:
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise ConversionError(f"{source}: {flag} is not supported")
    if hf.get("scale_attn_weights", True) is False:
        raise ConversionError(f"{source}: scale_attn_weights=False is not supported")
    hidden = hf.get("n_embd", 768)
    dropout = hf.get("resid_pdrop", 0.1)
    return {
        "vocab_size": hf["vocab_size"],
        "hidden_size": hidden,
        "max_seq_length": hf.get("n_positions", 1024),
        "layernorm": "standard",
        "layernorm_eps": hf.get("layer_norm_epsilon", 1e-5),
        "embedding": {"parts": ["word", "pos"], "layernorm": False, "dropout": hf.get("embd_pdrop", dropout)},
        "encoder": {
            "name": "transformer",
            "layers_num": hf.get("n_layer", 12),
            "heads_num": hf.get("n_head", 12),
            "feedforward_size": hf.get("n_inner") or 4 * hidden,
            "hidden_act": _hf_act(hf.get("activation_function", "gelu_new"), source),
            "layernorm_positioning": "pre",
            "mask": "causal",
            "dropout": dropout,
        },
        "targets": {"lm": 1.0} if _lm_available() else {"mlm": 1.0},
        "tie_weights": hf.get("tie_word_embeddings", True),
    }


def build_gpt2_model(fields: dict) -> nn.Module:
    """A UERModel with the ``lm`` target; a Backbone (no target) while uer-ray lacks ``lm``."""
    if _lm_available():
        return build_uer_ray(fields)
    from uer_ray.config import ModelConfig
    from uer_ray.models.model import Backbone

    return Backbone(ModelConfig.model_validate(fields)).eval()


def from_hf_gpt2_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "HF GPT-2") -> nn.Module:
    state = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in state.items()}
    hidden = model.config.hidden_size
    out = {
        "embedding.parts.word.embedding.weight": state["wte.weight"],
        "embedding.parts.pos.embedding.weight": state["wpe.weight"],
        "encoder.final_layer_norm.weight": state["ln_f.weight"],
        "encoder.final_layer_norm.bias": state["ln_f.bias"],
    }
    for i in range(model.config.encoder.layers_num):
        h, o = f"h.{i}.", f"encoder.layers.{i}."
        w, b = state[h + "attn.c_attn.weight"].t(), state[h + "attn.c_attn.bias"]
        for j, name in enumerate(("query", "key", "value")):
            out[o + f"self_attn.{name}.weight"] = w[j * hidden : (j + 1) * hidden].contiguous()
            out[o + f"self_attn.{name}.bias"] = b[j * hidden : (j + 1) * hidden].contiguous()
        for hf_name, name in (("attn.c_proj", "self_attn.output"), ("mlp.c_fc", "feed_forward.linear_1"),
                              ("mlp.c_proj", "feed_forward.linear_2")):
            out[o + name + ".weight"] = state[h + hf_name + ".weight"].t().contiguous()
            out[o + name + ".bias"] = state[h + hf_name + ".bias"]
        for hf_name, name in (("ln_1", "layer_norm_1"), ("ln_2", "layer_norm_2")):
            for p in ("weight", "bias"):
                out[o + f"{name}.{p}"] = state[h + f"{hf_name}.{p}"]
    if hasattr(model, "targets") and "lm" in model.targets:
        matrix, others = _lm_weight_keys(model)
        if matrix is None:
            raise ConversionError("uer-ray's lm target has no (vocab, hidden) output matrix to map lm_head onto")
        head = state.get("lm_head.weight")
        if head is not None and not (model.config.tie_weights and torch.equal(head, state["wte.weight"])):
            out[matrix] = head
        own = model.state_dict()
        for key in others:  # GPT-2's head has no bias
            out[key] = torch.zeros_like(own[key])
    return load_into(model, out, source)


def to_hf_gpt2(model: nn.Module):
    from transformers import GPT2Config, GPT2LMHeadModel

    _check_transformer(model, "hf-gpt2", "pre", "causal", ["word", "pos"])
    _check_plain_outputs(model, "hf-gpt2")
    cfg, enc = model.config, model.config.encoder
    if cfg.embedding.layernorm:
        raise ConversionError("cannot write hf-gpt2: the model has an embedding layer norm (GPT-2 has none)")
    own = model.state_dict()
    matrix, others = _lm_weight_keys(model) if "lm" in _targets_in(model) else (None, [])
    tie = cfg.tie_weights or matrix is None
    for key in others:
        if own[key].abs().max() > 0:
            warnings.warn(f"hf-gpt2: {key} is not zero; GPT-2's lm_head has no bias and it is dropped", stacklevel=2)
    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.max_seq_length,
        n_embd=cfg.hidden_size,
        n_layer=enc.layers_num,
        n_head=enc.heads_num,
        n_inner=enc.feedforward_size,
        activation_function=_ACT_TO_HF[enc.hidden_act],
        resid_pdrop=enc.dropout,
        embd_pdrop=cfg.embedding.dropout,
        attn_pdrop=enc.dropout,
        layer_norm_epsilon=cfg.layernorm_eps or default_layernorm_eps(cfg.layernorm),
        tie_word_embeddings=tie,
        bos_token_id=None,
        eos_token_id=None,
    )
    hf = GPT2LMHeadModel(hf_cfg).eval()
    ln = (lambda p: p) if cfg.layernorm != "uer" else (lambda p: _LN_TO_UER[p])
    out = {
        "transformer.wte.weight": own["embedding.parts.word.embedding.weight"],
        "transformer.wpe.weight": own["embedding.parts.pos.embedding.weight"],
        "transformer.ln_f.weight": own[f"encoder.final_layer_norm.{ln('weight')}"],
        "transformer.ln_f.bias": own[f"encoder.final_layer_norm.{ln('bias')}"],
        "lm_head.weight": own[matrix] if matrix is not None else own["embedding.parts.word.embedding.weight"],
    }
    for i in range(enc.layers_num):
        h, o = f"transformer.h.{i}.", f"encoder.layers.{i}."
        out[h + "attn.c_attn.weight"] = torch.cat([own[o + f"self_attn.{n}.weight"] for n in ("query", "key", "value")]).t()
        out[h + "attn.c_attn.bias"] = torch.cat([own[o + f"self_attn.{n}.bias"] for n in ("query", "key", "value")])
        for hf_name, name in (("attn.c_proj", "self_attn.output"), ("mlp.c_fc", "feed_forward.linear_1"),
                              ("mlp.c_proj", "feed_forward.linear_2")):
            out[h + hf_name + ".weight"] = own[o + name + ".weight"].t()
            out[h + hf_name + ".bias"] = own[o + name + ".bias"]
        for hf_name, name in (("ln_1", "layer_norm_1"), ("ln_2", "layer_norm_2")):
            for p in ("weight", "bias"):
                out[h + f"{hf_name}.{p}"] = own[o + f"{name}.{ln(p)}"]
    _fill_hf(hf, out, "hf-gpt2")
    return hf


def read_hf_gpt2(directory: str | Path, tokenizer: dict | None = None) -> Bundle:
    directory = Path(directory)
    hf = json.loads((directory / "config.json").read_text())
    fields = hf_gpt2_model_fields(hf, source=str(directory))
    model = from_hf_gpt2_state(build_gpt2_model(fields), read_hf_weights(directory), source=str(directory))
    notes = [] if _lm_available() else ["uer-ray has no 'lm' target yet: the GPT-2 backbone was converted; its lm_head is tied to the word embedding"]
    return Bundle(model, tokenizer, None, notes)


def write_hf_gpt2(bundle: Bundle, dst: str | Path) -> Path:
    dst = Path(dst)
    to_hf_gpt2(bundle.model).save_pretrained(str(dst))
    return dst


# ----------------------------------------------------------------------------------------------------------------------
# uer-ray checkpoints
# ----------------------------------------------------------------------------------------------------------------------
def read_uer_ray(directory: str | Path) -> Bundle:
    from uer_ray.models.model import load_model
    from uer_ray.train.checkpoint import load_config

    directory = Path(directory)
    saved = load_config(directory)
    vocab = directory / VOCAB if (directory / VOCAB).is_file() else None
    return Bundle(load_model(directory), saved.get("tokenizer"), vocab)


def write_uer_ray(bundle: Bundle, dst: str | Path) -> Path:
    from uer_ray.train.checkpoint import save_checkpoint
    from uer_ray.tokenizers import Vocab

    tokenizer = dict(bundle.tokenizer) if bundle.tokenizer else None
    if tokenizer and "vocab_path" in tokenizer and bundle.vocab is not None:
        tokenizer["vocab_path"] = VOCAB  # resolved against the checkpoint directory when loaded
    vocab = Vocab.load(bundle.vocab) if bundle.vocab is not None else None
    config = {"model": _model_fields(bundle.model), "tokenizer": tokenizer}
    if bundle.notes:
        config["conversion_notes"] = bundle.notes
    return save_checkpoint(Path(dst), bundle.model, config, vocab=vocab)


def _copy_vocab(bundle: Bundle, dst: Path) -> None:
    if bundle.vocab is not None and Path(bundle.vocab).resolve() != (dst / VOCAB).resolve():
        shutil.copyfile(bundle.vocab, dst / VOCAB)


# ----------------------------------------------------------------------------------------------------------------------
# The CLI entry point
# ----------------------------------------------------------------------------------------------------------------------
def read(src: str | Path, fmt: str, uer_config: str | Path | None = None, vocab: str | Path | None = None,
         tokenizer: dict | None = None) -> Bundle:
    if fmt == "uer-ray":
        return read_uer_ray(src)
    if fmt == "uer-py":
        return read_uer_py(src, config=uer_config, vocab=vocab, tokenizer=tokenizer)
    if fmt == "hf-bert":
        return read_hf_bert(src, tokenizer=tokenizer)
    if fmt == "hf-gpt2":
        return read_hf_gpt2(src, tokenizer=tokenizer)
    raise ConversionError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def write(bundle: Bundle, dst: str | Path, fmt: str) -> Path:
    writers = {"uer-ray": write_uer_ray, "uer-py": write_uer_py, "hf-bert": write_hf_bert, "hf-gpt2": write_hf_gpt2}
    if fmt not in writers:
        raise ConversionError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return writers[fmt](bundle, dst)


def convert(src: str | Path, dst: str | Path, from_format: str, to_format: str, *, uer_config: str | Path | None = None,
            vocab: str | Path | None = None, tokenizer: dict | None = None) -> Path:
    """Convert a checkpoint between ``uer-ray`` | ``uer-py`` | ``hf-bert`` | ``hf-gpt2``; returns ``dst``.

    ``src``/``dst`` are directories (``uer-py`` ``src`` may be a ``*.bin`` file with ``uer_config`` its JSON config);
    ``vocab`` / ``tokenizer`` (a uer-ray tokenizer config) supply what a UER-py or HF checkpoint does not carry.
    """
    for fmt in (from_format, to_format):
        if fmt not in FORMATS:
            raise ConversionError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    bundle = read(src, from_format, uer_config=uer_config, vocab=vocab, tokenizer=tokenizer)
    if vocab is not None:
        bundle.vocab = Path(vocab)
    for note in bundle.notes:
        warnings.warn(note, stacklevel=2)
    return write(bundle, dst, to_format)
