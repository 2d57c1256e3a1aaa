"""Read UER-py's JSON model configs (``models/bert/base_config.json`` etc.) unchanged into ``ModelConfig`` fields.

Every key is either mapped or refused by name. An encoder-decoder config (``"decoder": "transformer"``, as in the
transformer / T5 / BART configs) becomes the ``seq2seq`` target: UER-py's ``lm`` target on a decoder is exactly
what ``seq2seq`` computes. UER-py's ``tie_weights`` defaults to false, and so does an imported config's.
"""
from __future__ import annotations

from typing import Any

# Keys that describe the data side or the run, not the model: accepted and left to the job spec.
NON_MODEL_KEYS = {"data_processor"}

# UER-py key -> transformer encoder field (same name in uer-ray).
TRANSFORMER_KEYS = (
    "layers_num", "heads_num", "feedforward_size", "hidden_act", "layernorm_positioning", "mask", "dropout",
    "attention_head_size", "feed_forward", "parameter_sharing", "remove_transformer_bias", "remove_attention_scale",
    "relative_position_embedding",
)
RNN_KEYS = ("layers_num", "dropout")
CNN_KEYS = ("layers_num", "kernel_size", "block_size", "dropout")
ENCODER_KEYS = {
    "transformer": TRANSFORMER_KEYS,
    **{name: RNN_KEYS for name in ("rnn", "lstm", "gru", "birnn", "bilstm", "bigru")},
    "cnn": CNN_KEYS[:2] + CNN_KEYS[3:],
    "gatedcnn": CNN_KEYS,
}
DECODER_KEYS = ("decoder", "decoder_layers_num", "tgt_embedding", "share_embedding", "has_lmtarget_bias")
HANDLED = (
    {
        "emb_size", "hidden_size", "embedding", "encoder", "target", "tie_weights", "layernorm",
        "remove_embedding_layernorm", "factorized_embedding_parameterization", "max_seq_length", "vocab_size",
    }
    | set(TRANSFORMER_KEYS) | set(CNN_KEYS) | set(DECODER_KEYS) | NON_MODEL_KEYS
)


def _encoder_fields(uer: dict[str, Any], source: str) -> dict[str, Any]:
    name = uer.get("encoder", "transformer")
    if name not in ENCODER_KEYS:
        detail = " (two-stream siamese models)" if name == "dual" else ""
        raise ValueError(f"{source}: unsupported UER-py encoder '{name}'{detail}")
    encoder: dict[str, Any] = {"name": name}
    for key in ENCODER_KEYS[name]:
        if key in uer:
            encoder[key] = uer[key]
    if name == "gatedcnn" or (name == "cnn" and "lm" in uer.get("target", [])):
        encoder.setdefault("mask", "causal")  # UER-py's CNN encoders pad on the left
    ignored = sorted(k for k in set(TRANSFORMER_KEYS) | set(CNN_KEYS) if k in uer and k not in ENCODER_KEYS[name])
    if ignored:
        raise ValueError(f"{source}: option(s) {', '.join(ignored)} do not apply to encoder '{name}'")
    return encoder


def _seq2seq_fields(uer: dict[str, Any], source: str) -> dict[str, Any]:
    if uer["decoder"] != "transformer":
        raise ValueError(f"{source}: unsupported UER-py decoder '{uer['decoder']}'")
    if uer.get("target", ["lm"]) != ["lm"]:
        raise ValueError(f"{source}: a decoder config must use target ['lm'] (read as seq2seq), not {uer['target']}")
    spec: dict[str, Any] = {
        "decoder": {"layers_num": uer.get("decoder_layers_num", uer.get("layers_num", 2))},
        "tgt_embedding": list(uer.get("tgt_embedding", uer.get("embedding", ["word", "pos"]))),
    }
    if "share_embedding" in uer:
        spec["share_embedding"] = uer["share_embedding"]
    if "has_lmtarget_bias" in uer:
        spec["output_bias"] = uer["has_lmtarget_bias"]
    return {"seq2seq": spec}


def model_fields_from_uer_json(uer: dict[str, Any], source: str = "UER config") -> dict[str, Any]:
    if uer.get("encoder") == "dual" or "dual" in uer.get("embedding", []):
        raise ValueError(f"{source}: unsupported UER-py encoder 'dual' (two-stream siamese models)")
    unsupported = sorted(set(uer) - HANDLED)
    if unsupported:
        raise ValueError(f"{source}: unsupported UER-py option(s): {', '.join(unsupported)}")
    if "hidden_size" not in uer:
        raise ValueError(f"{source}: no hidden_size")
    fields: dict[str, Any] = {
        "hidden_size": uer["hidden_size"],
        "encoder": _encoder_fields(uer, source),
        "embedding": {"parts": list(uer.get("embedding", ["word", "pos", "seg"]))},
        "tie_weights": bool(uer.get("tie_weights", False)),
    }
    if uer.get("emb_size", uer["hidden_size"]) != uer["hidden_size"]:
        fields["emb_size"] = uer["emb_size"]
    for key in ("max_seq_length", "vocab_size"):
        if key in uer:
            fields[key] = uer[key]
    if "dropout" in uer:
        fields["embedding"]["dropout"] = uer["dropout"]
    if uer.get("remove_embedding_layernorm"):
        fields["embedding"]["layernorm"] = False
    if "layernorm" in uer:
        fields["layernorm"] = {"normal": "uer"}.get(uer["layernorm"], uer["layernorm"])
    if "decoder" in uer:
        fields["targets"] = _seq2seq_fields(uer, source)
    else:
        stray = sorted(k for k in DECODER_KEYS if k in uer and k != "has_lmtarget_bias")
        if stray:
            raise ValueError(f"{source}: option(s) {', '.join(stray)} need a 'decoder'")
        if "target" in uer:
            fields["targets"] = {name: 1.0 for name in uer["target"]}
        if uer.get("has_lmtarget_bias") and "lm" in uer.get("target", []):
            fields["targets"]["lm"] = {"weight": 1.0, "bias": True}
    return fields
