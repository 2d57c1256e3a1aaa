"""Read UER-py's JSON model configs (``models/bert/base_config.json`` etc.) unchanged into ``ModelConfig`` fields."""
from __future__ import annotations

from typing import Any

# Keys that describe the data side or the run, not the model: accepted and left to the job spec.
NON_MODEL_KEYS = {"data_processor"}


def _encoder_fields(uer: dict[str, Any]) -> dict[str, Any]:
    encoder: dict[str, Any] = {"name": uer.get("encoder", "transformer")}
    renames = {
        "layers_num": "layers_num",
        "heads_num": "heads_num",
        "feedforward_size": "feedforward_size",
        "hidden_act": "hidden_act",
        "layernorm_positioning": "layernorm_positioning",
        "mask": "mask",
        "dropout": "dropout",
    }
    for key, field in renames.items():
        if key in uer:
            encoder[field] = uer[key]
    return encoder


def model_fields_from_uer_json(uer: dict[str, Any], source: str = "UER config") -> dict[str, Any]:
    handled = {
        "emb_size", "hidden_size", "feedforward_size", "hidden_act", "heads_num", "layers_num", "dropout",
        "embedding", "encoder", "mask", "layernorm_positioning", "target", "tie_weights", "layernorm",
        "remove_embedding_layernorm", "factorized_embedding_parameterization", "max_seq_length",
    } | NON_MODEL_KEYS
    unsupported = sorted(set(uer) - handled)
    if unsupported:
        raise ValueError(f"{source}: unsupported UER-py option(s): {', '.join(unsupported)}")
    fields: dict[str, Any] = {
        "hidden_size": uer["hidden_size"],
        "encoder": _encoder_fields(uer),
        "embedding": {"parts": list(uer.get("embedding", ["word", "pos", "seg"]))},
    }
    if uer.get("emb_size", uer["hidden_size"]) != uer["hidden_size"]:
        fields["emb_size"] = uer["emb_size"]
    if "max_seq_length" in uer:
        fields["max_seq_length"] = uer["max_seq_length"]
    if "dropout" in uer:
        fields["embedding"]["dropout"] = uer["dropout"]
    if uer.get("remove_embedding_layernorm"):
        fields["embedding"]["layernorm"] = False
    if "layernorm" in uer:
        fields["layernorm"] = uer["layernorm"]
    if "target" in uer:
        fields["targets"] = {name: 1.0 for name in uer["target"]}
    if "tie_weights" in uer:
        fields["tie_weights"] = uer["tie_weights"]
    return fields
