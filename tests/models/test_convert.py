"""Interop: UER-py and Hugging Face BERT / GPT-2 <-> uer-ray, with numerical parity (max |diff| <= 1e-5, float32)."""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from uer_ray.models import convert as cv
from uer_ray.registry import TARGETS

TOL = 1e-5
VOCAB, HIDDEN, LAYERS, HEADS, FFN, POSITIONS = 120, 32, 2, 4, 64, 40


def report(name: str, diff: float) -> None:
    print(f"max|diff| {name}: {diff:.3e}")
    assert diff <= TOL, f"{name}: max |diff| {diff:.3e} > {TOL}"


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def perturb(model: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    """Randomize every parameter (layer-norm gains and biases too), so parity tests see all of them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


# ----------------------------------------------------------------------------------------------------------------------
# Hugging Face BERT
# ----------------------------------------------------------------------------------------------------------------------
def hf_bert(sp: bool = False):
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=FFN, max_position_embeddings=POSITIONS, type_vocab_size=2)
    model = (BertForPreTraining if sp else BertForMaskedLM)(cfg).eval()
    perturb(model, 1)
    return model


def bert_batch():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, VOCAB, (3, 12), generator=gen)
    token_type = torch.zeros_like(ids)
    token_type[:, 7:] = 1
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # padded rows
    mask[2, 5:] = 0
    seg = (token_type + 1) * mask  # uer-ray: 0 padding, 1 first, 2 second
    return ids, token_type, mask, seg


def compare_bert(hf, ours, sp: bool = False, tag: str = "") -> None:
    ids, token_type, mask, seg = bert_batch()
    valid = mask.bool()
    with torch.no_grad():
        out = hf(input_ids=ids, token_type_ids=token_type, attention_mask=mask, output_hidden_states=True)
        hidden = ours.encode(ids, seg)
        logits = ours.target_logits("mlm", hidden)
    hf_logits = out.prediction_logits if sp else out.logits
    report(f"{tag} bert hidden", maxdiff(hidden[valid], out.hidden_states[-1][valid]))
    report(f"{tag} bert mlm logits", maxdiff(logits[valid], hf_logits[valid]))
    if sp:
        report(f"{tag} bert sp logits", maxdiff(ours.target_logits("sp", hidden), out.seq_relationship_logits))


def save_hf(model, directory, safe: bool = True):
    model.save_pretrained(str(directory), safe_serialization=safe) if not safe else model.save_pretrained(str(directory))
    return directory


def test_hf_bert_to_uer_ray_parity(tmp_path):
    hf = hf_bert()
    hf.save_pretrained(str(tmp_path / "hf"))
    bundle = cv.read_hf_bert(tmp_path / "hf")
    cfg = bundle.model.config
    assert cfg.layernorm == "standard" and cfg.encoder.layernorm_positioning == "post"
    assert list(bundle.model.targets) == ["mlm"]
    assert torch.equal(bundle.model.embedding.parts["seg"].embedding.weight[0], torch.zeros(HIDDEN))
    compare_bert(hf, bundle.model, tag="hf->uer-ray")


def test_hf_bert_pretraining_with_sp_both_ways(tmp_path):
    from transformers import BertForPreTraining

    hf = hf_bert(sp=True)
    hf.save_pretrained(str(tmp_path / "hf"))
    bundle = cv.read_hf_bert(tmp_path / "hf")
    assert set(bundle.model.targets) == {"mlm", "sp"}
    compare_bert(hf, bundle.model, sp=True, tag="hf(pretraining)->uer-ray")
    cv.write_hf_bert(bundle, tmp_path / "back")
    back = BertForPreTraining.from_pretrained(str(tmp_path / "back")).eval()
    compare_bert(back, bundle.model, sp=True, tag="uer-ray->hf(pretraining)")


def test_uer_ray_bert_to_hf_loads_with_from_pretrained(tmp_path):
    from transformers import BertForMaskedLM

    from uer_ray import assemble, embedding, encoder, targets

    torch.manual_seed(5)
    ours = assemble(
        embedding("word", "pos", "seg", dropout=0.0),
        encoder("transformer", layers_num=LAYERS, heads_num=HEADS, feedforward_size=FFN, dropout=0.0),
        targets(mlm=1.0),
        vocab_size=VOCAB, hidden_size=HIDDEN, max_seq_length=POSITIONS,
    ).eval()
    with torch.no_grad():  # BERT-like scale (nn.Embedding's N(0, 1) makes logits ~1e2, where float32 rounding is ~1e-5)
        for param in ours.embedding.parameters():
            param.mul_(0.05)
    perturb(ours, 6)
    cv.write_hf_bert(cv.Bundle(ours), tmp_path / "hf")
    hf = BertForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
    compare_bert(hf, ours, tag="uer-ray->hf")


def test_hf_bert_pytorch_bin_and_bare_bert_model(tmp_path):
    from transformers import BertModel

    hf = hf_bert()
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(hf.config.to_json_string())
    bundle = cv.read_hf_bert(tmp_path)
    compare_bert(hf, bundle.model, tag="hf(.bin)->uer-ray")

    bare = BertModel(hf.config, add_pooling_layer=True).eval()
    perturb(bare, 2)
    bare.save_pretrained(str(tmp_path / "bare"))
    bundle = cv.read_hf_bert(tmp_path / "bare")
    assert bundle.notes and "freshly initialised" in bundle.notes[0]
    ids, token_type, mask, seg = bert_batch()
    with torch.no_grad():
        ref = bare(input_ids=ids, token_type_ids=token_type, attention_mask=mask).last_hidden_state
        hidden = bundle.model.encode(ids, seg)
    report("hf(BertModel)->uer-ray hidden", maxdiff(hidden[mask.bool()], ref[mask.bool()]))


# ----------------------------------------------------------------------------------------------------------------------
# Hugging Face GPT-2
# ----------------------------------------------------------------------------------------------------------------------
def hf_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=POSITIONS, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                     bos_token_id=None, eos_token_id=None)
    model = GPT2LMHeadModel(cfg).eval()
    perturb(model, 1)
    return model


def ours_lm_logits(model, hidden):
    if hasattr(model, "targets") and "lm" in model.targets:
        return model.target_logits("lm", hidden)
    # uer-ray has no lm target yet: GPT-2's head is tied to the word embedding
    return hidden @ model.embedding.word_weight.t()


def compare_gpt2(hf, ours, tag: str) -> None:
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(0, VOCAB, (2, 15), generator=gen)
    with torch.no_grad():
        out = hf(input_ids=ids, output_hidden_states=True)
        hidden = ours.encode(ids, torch.ones_like(ids))
        logits = ours_lm_logits(ours, hidden)
    report(f"{tag} gpt2 hidden", maxdiff(hidden, out.hidden_states[-1]))
    report(f"{tag} gpt2 lm logits", maxdiff(logits, out.logits))


def test_hf_gpt2_both_ways(tmp_path):
    from transformers import GPT2LMHeadModel

    hf = hf_gpt2()
    hf.save_pretrained(str(tmp_path / "hf"))
    bundle = cv.read_hf_gpt2(tmp_path / "hf")
    cfg = bundle.model.config
    assert cfg.layernorm_eps == 1e-5 and cfg.encoder.mask == "causal" and cfg.encoder.hidden_act == "gelu_fast"
    assert not cfg.embedding.layernorm and cfg.encoder.layernorm_positioning == "pre"
    if "lm" not in TARGETS:
        print("note: uer-ray has no 'lm' target; GPT-2 logits compared as hidden @ word_embedding.T")
    compare_gpt2(hf, bundle.model, "hf->uer-ray")
    cv.write_hf_gpt2(bundle, tmp_path / "back")
    back = GPT2LMHeadModel.from_pretrained(str(tmp_path / "back")).eval()
    compare_gpt2(back, bundle.model, "uer-ray->hf")
    for name, value in hf.state_dict().items():
        assert torch.equal(value, back.state_dict()[name]), name


# ----------------------------------------------------------------------------------------------------------------------
# UER-py
# ----------------------------------------------------------------------------------------------------------------------
UER_BERT_CONFIG = {
    "emb_size": HIDDEN, "feedforward_size": FFN, "hidden_size": HIDDEN, "hidden_act": "gelu", "heads_num": HEADS,
    "layers_num": LAYERS, "max_seq_length": POSITIONS, "dropout": 0.1, "data_processor": "bert",
    "embedding": ["word", "pos", "seg"], "encoder": "transformer", "mask": "fully_visible",
    "target": ["mlm", "sp"], "tie_weights": True,
}


def random_uer_bert_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random UER-py BERT state dict, named as UER-py names it (tied MLM output = word embedding)."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=gen) * scale

    def ln(prefix):
        return {f"{prefix}.gamma": 1 + r(HIDDEN), f"{prefix}.beta": r(HIDDEN)}

    s: dict[str, torch.Tensor] = {
        "embedding.word.embedding.weight": r(VOCAB, HIDDEN, scale=0.3),
        "embedding.pos.embedding.weight": r(POSITIONS, HIDDEN, scale=1.0),
        "embedding.seg.embedding.weight": r(3, HIDDEN, scale=1.0),
        **ln("embedding.layer_norm"),
    }
    for i in range(LAYERS):
        p = f"encoder.transformer.{i}."
        for j in range(3):
            s[p + f"self_attn.linear_layers.{j}.weight"] = r(HIDDEN, HIDDEN)
            s[p + f"self_attn.linear_layers.{j}.bias"] = r(HIDDEN)
        s[p + "self_attn.final_linear.weight"] = r(HIDDEN, HIDDEN)
        s[p + "self_attn.final_linear.bias"] = r(HIDDEN)
        s.update(ln(p + "layer_norm_1"))
        s[p + "feed_forward.linear_1.weight"] = r(FFN, HIDDEN)
        s[p + "feed_forward.linear_1.bias"] = r(FFN)
        s[p + "feed_forward.linear_2.weight"] = r(HIDDEN, FFN)
        s[p + "feed_forward.linear_2.bias"] = r(HIDDEN)
        s.update(ln(p + "layer_norm_2"))
    s["target.mlm.linear_1.weight"] = r(HIDDEN, HIDDEN)
    s["target.mlm.linear_1.bias"] = r(HIDDEN)
    s.update(ln("target.mlm.layer_norm"))
    s["target.mlm.linear_2.weight"] = s["embedding.word.embedding.weight"]
    s["target.mlm.linear_2.bias"] = r(VOCAB)
    s["target.sp.linear_1.weight"] = r(HIDDEN, HIDDEN)
    s["target.sp.linear_1.bias"] = r(HIDDEN)
    s["target.sp.linear_2.weight"] = r(2, HIDDEN)
    s["target.sp.linear_2.bias"] = r(2)
    return s


def uer_py_bert_reference(s: dict[str, torch.Tensor], src: torch.Tensor, seg: torch.Tensor):
    """UER-py's BERT forward, from its published formulas (eval mode: dropout off)."""

    def layer_norm(x, prefix):  # uer/layers/layer_norm.py: unbiased std, eps 1e-6 outside the sqrt
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return s[prefix + ".gamma"] * (x - mean) / (std + 1e-6) + s[prefix + ".beta"]

    def linear(x, prefix):
        return x @ s[prefix + ".weight"].t() + s[prefix + ".bias"]

    def gelu(x):  # uer/utils/act_fun.py
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))

    batch, seq = src.shape
    pos = torch.arange(seq).unsqueeze(0).expand(batch, seq)
    emb = s["embedding.word.embedding.weight"][src] + s["embedding.pos.embedding.weight"][pos] \
        + s["embedding.seg.embedding.weight"][seg]
    hidden = layer_norm(emb, "embedding.layer_norm")
    # uer/encoders/transformer_encoder.py: mask = (seg > 0) -> (1 - mask) * -10000 added to the scores
    mask = (seg > 0).unsqueeze(1).repeat(1, seq, 1).unsqueeze(1).float()
    mask = (1.0 - mask) * -10000.0
    d = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"encoder.transformer.{i}."

        def heads(x):
            return x.view(batch, seq, HEADS, d).transpose(1, 2)

        q, k, v = (heads(linear(hidden, p + f"self_attn.linear_layers.{j}")) for j in range(3))
        scores = q @ k.transpose(-2, -1) / math.sqrt(float(d)) + mask
        probs = torch.softmax(scores, dim=-1)
        context = (probs @ v).transpose(1, 2).contiguous().view(batch, seq, HIDDEN)
        attn = linear(context, p + "self_attn.final_linear")
        inter = layer_norm(attn + hidden, p + "layer_norm_1")
        ffn = linear(gelu(linear(inter, p + "feed_forward.linear_1")), p + "feed_forward.linear_2")
        hidden = layer_norm(ffn + inter, p + "layer_norm_2")
    mlm = layer_norm(gelu(linear(hidden, "target.mlm.linear_1")), "target.mlm.layer_norm")
    mlm_logits = mlm @ s["target.mlm.linear_2.weight"].t() + s["target.mlm.linear_2.bias"]
    sp_logits = linear(torch.tanh(linear(hidden[:, 0], "target.sp.linear_1")), "target.sp.linear_2")
    return hidden, mlm_logits, sp_logits


def uer_batch():
    gen = torch.Generator().manual_seed(9)
    src = torch.randint(1, VOCAB, (3, 10), generator=gen)
    seg = torch.ones_like(src)
    seg[:, 6:] = 2
    seg[1, 8:] = 0
    seg[2, 4:] = 0
    src[seg == 0] = 0
    return src, seg


def test_uer_py_checkpoint_matches_uer_py_reference(tmp_path):
    state = random_uer_bert_state()
    torch.save(state, tmp_path / "model.bin")
    (tmp_path / "bert_config.json").write_text(json.dumps(UER_BERT_CONFIG))
    bundle = cv.read_uer_py(tmp_path / "model.bin", config=tmp_path / "bert_config.json")
    model = bundle.model
    assert model.config.layernorm == "uer" and set(model.targets) == {"mlm", "sp"}
    src, seg = uer_batch()
    valid = seg > 0
    with torch.no_grad():
        ref_hidden, ref_mlm, ref_sp = uer_py_bert_reference(state, src, seg)
        hidden = model.encode(src, seg)
        mlm, sp = model.target_logits("mlm", hidden), model.target_logits("sp", hidden)
    report("uer-py ref vs uer-ray hidden", maxdiff(hidden[valid], ref_hidden[valid]))
    report("uer-py ref vs uer-ray mlm logits", maxdiff(mlm[valid], ref_mlm[valid]))
    report("uer-py ref vs uer-ray sp logits", maxdiff(sp, ref_sp))


def test_uer_py_state_round_trip(tmp_path):
    state = random_uer_bert_state(seed=1)
    fields = cv.uer_py_model_fields(UER_BERT_CONFIG, state)
    model = cv.from_uer_py_state(cv.build_uer_ray(fields), state)
    back = cv.to_uer_py_state(model)
    assert set(back) == set(state)
    for key in state:
        assert torch.equal(back[key], state[key]), key
    again = cv.from_uer_py_state(cv.build_uer_ray(fields), back)
    src, seg = uer_batch()
    with torch.no_grad():
        a, b = model.encode(src, seg), again.encode(src, seg)
        report("uer-py round trip hidden", maxdiff(a, b))
        report("uer-py round trip mlm logits", maxdiff(model.target_logits("mlm", a), again.target_logits("mlm", b)))


def test_legacy_uer_py_names_are_read():
    state = random_uer_bert_state(seed=2)
    legacy = {}
    renames = {"embedding.word.embedding.": "embedding.word_embedding.", "embedding.pos.embedding.":
               "embedding.position_embedding.", "embedding.seg.embedding.": "embedding.segment_embedding.",
               "target.mlm.linear_1.": "target.mlm_linear_1.", "target.mlm.linear_2.": "target.mlm_linear_2.",
               "target.mlm.layer_norm.": "target.layer_norm.", "target.sp.linear_1.": "target.nsp_linear_1.",
               "target.sp.linear_2.": "target.nsp_linear_2."}
    for key, value in state.items():
        for new, old in renames.items():
            key = key.replace(new, old)
        legacy[key] = value
    fields = cv.uer_py_model_fields(UER_BERT_CONFIG, legacy)
    model = cv.from_uer_py_state(cv.build_uer_ray(fields), legacy)
    for key, value in cv.to_uer_py_state(model).items():
        assert torch.equal(value, state[key]), key


def test_convert_chain_across_formats(tmp_path, data_dir):
    """hf-bert -> uer-ray -> uer-py -> uer-ray -> hf-bert: weights unchanged, outputs equal."""
    from transformers import BertForMaskedLM

    from uer_ray.models.model import load_model

    hf = hf_bert()
    hf.save_pretrained(str(tmp_path / "hf"))
    vocab_lines = [t.strip() for t in (data_dir / "models" / "google_zh_vocab.txt").read_text().splitlines()[:VOCAB]]
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(vocab_lines) + "\n")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # standard -> UER-py layer-norm warning
        cv.convert(tmp_path / "hf", tmp_path / "ray1", "hf-bert", "uer-ray")
        cv.convert(tmp_path / "ray1", tmp_path / "uerpy", "uer-ray", "uer-py")
        cv.convert(tmp_path / "uerpy", tmp_path / "ray2", "uer-py", "uer-ray")
        cv.convert(tmp_path / "ray2", tmp_path / "hf2", "uer-ray", "hf-bert")

    saved = json.loads((tmp_path / "ray1" / "config.json").read_text())
    assert saved["tokenizer"]["name"] == "bert" and (tmp_path / "ray1" / "vocab.txt").is_file()
    compare_bert(hf, load_model(tmp_path / "ray1"), tag="convert() hf->uer-ray")
    uer_cfg = json.loads((tmp_path / "uerpy" / "config.json").read_text())
    assert uer_cfg["target"] == ["mlm"] and uer_cfg["layers_num"] == LAYERS
    # Via UER-py the model takes UER-py's layer norm: same weights, slightly different outputs by design.
    assert load_model(tmp_path / "ray2").config.layernorm == "uer"
    hf2 = BertForMaskedLM.from_pretrained(str(tmp_path / "hf2")).eval()
    for name, value in hf.state_dict().items():
        assert torch.equal(value, hf2.state_dict()[name]), name
    assert (tmp_path / "hf2" / "vocab.txt").read_text().splitlines() == vocab_lines


def test_unknown_format_and_mismatched_exports(tmp_path):
    from uer_ray import assemble, embedding, encoder, targets

    with pytest.raises(cv.ConversionError, match="unknown format"):
        cv.convert(tmp_path, tmp_path / "x", "uer-ray", "onnx")
    gpt_like = assemble(embedding("word", "pos", layernorm=False), encoder("transformer", layers_num=1, heads_num=2,
                        feedforward_size=16, layernorm_positioning="pre", mask="causal"), targets(mlm=1.0),
                        vocab_size=30, hidden_size=8)
    with pytest.raises(cv.ConversionError, match="cannot write hf-bert"):
        cv.to_hf_bert(gpt_like)
    adaptive = assemble(embedding("word", "pos", layernorm=False), encoder("transformer", layers_num=1, heads_num=2,
                        feedforward_size=16, layernorm_positioning="pre", mask="causal"),
                        targets(lm={"adaptive_cutoffs": [10]}), vocab_size=30, hidden_size=8)
    for export in (cv.to_uer_py_state, cv.to_hf_gpt2):
        with pytest.raises(cv.ConversionError, match="target\\(s\\) lm use an adaptive softmax"):
            export(adaptive)


def test_gpt2_through_uer_py_names(tmp_path, data_dir):
    """HF GPT-2 -> uer-ray -> UER-py (pre-LN: encoder.layer_norm, target.lm.output_layer) -> uer-ray: same weights."""
    hf = hf_gpt2()
    hf.save_pretrained(str(tmp_path / "hf"))
    bundle = cv.read_hf_gpt2(tmp_path / "hf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv.write_uer_py(bundle, tmp_path / "uerpy")
    state = torch.load(tmp_path / "uerpy" / cv.UER_PY_WEIGHTS, weights_only=True)
    assert "encoder.layer_norm.gamma" in state and "encoder.transformer.1.self_attn.linear_layers.2.weight" in state
    assert "embedding.seg.embedding.weight" not in state
    if "lm" in TARGETS:
        assert torch.equal(state["target.lm.output_layer.weight"], state["embedding.word.embedding.weight"])
    # UER-py's own GPT-2 config (models/gpt2/config.json) with this model's sizes
    uer_cfg = json.loads((data_dir / "models" / "gpt2" / "config.json").read_text())
    uer_cfg.update(emb_size=HIDDEN, hidden_size=HIDDEN, feedforward_size=4 * HIDDEN, heads_num=HEADS, layers_num=LAYERS)
    fields = cv.uer_py_model_fields(uer_cfg, state)
    assert fields["layernorm"] == "uer" and fields["encoder"]["layernorm_positioning"] == "pre"
    model = cv.from_uer_py_state(cv.build_uer_ray(fields), state)
    back = cv.to_uer_py_state(model)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    if "lm" in TARGETS:  # UER-py's has_lmtarget_bias
        state["target.lm.output_layer.bias"] = torch.randn(VOCAB)
        model = cv.from_uer_py_state(cv.build_uer_ray(cv.uer_py_model_fields(uer_cfg, state)), state)
        assert torch.equal(model.targets["lm"].output_layer.bias.detach(), state["target.lm.output_layer.bias"])


def test_hf_export_refuses_options_hf_lacks():
    from uer_ray import assemble, embedding, encoder, targets

    gated = assemble(embedding("word", "pos", "seg"), encoder("transformer", layers_num=1, heads_num=2,
                     feedforward_size=16, feed_forward="gated"), targets(mlm=1.0), vocab_size=30, hidden_size=8)
    with pytest.raises(cv.ConversionError, match="feed_forward"):
        cv.to_hf_bert(gated)


def test_uer_py_names_for_albert_sharing_gated_ffn_and_relative_bias():
    from uer_ray import assemble, embedding, encoder, targets

    model = assemble(embedding("word", "seg", dropout=0.0), encoder(
        "transformer", layers_num=3, heads_num=2, feedforward_size=16, parameter_sharing=True, feed_forward="gated",
        relative_position_embedding=True, dropout=0.0), targets(mlm=1.0), vocab_size=30, hidden_size=8,
        emb_size=4, tie_weights=False, layernorm="uer").eval()
    perturb(model, 3)
    state = cv.to_uer_py_state(model)
    for key in ("encoder.transformer.self_attn.linear_layers.0.weight", "encoder.transformer.feed_forward.linear_gate.weight",
                "encoder.relative_pos_emb.relative_attention_bias.weight", "encoder.linear.weight"):
        assert key in state, key
    again = cv.from_uer_py_state(cv.build_uer_ray(model.config.model_dump()), state)
    src, seg = uer_batch()
    src = src % 30
    with torch.no_grad():
        report("uer-py names (albert/gated/relative) round trip", maxdiff(model.encode(src, seg), again.encode(src, seg)))
