"""``flops_per_token`` against the FLOPs PyTorch counts in a real forward + backward pass, and the H100 figure."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from uer_ray.config import ModelConfig
from uer_ray.models.model import build_model
from uer_ray.train.flops import GPU_PEAKS, flops_per_token, peak_flops

BATCH, SEQ, MASKED = 4, 32, 5  # MASKED predicted positions per row


def counted_flops(cfg: ModelConfig) -> float:
    torch.manual_seed(0)
    model = build_model(cfg)
    src = torch.randint(5, cfg.vocab_size, (BATCH, SEQ))
    seg = torch.ones(BATCH, SEQ, dtype=torch.long)  # no padding: every position is a token
    tgt_mlm = torch.full((BATCH, SEQ), -100)
    tgt_mlm[:, 1 : 1 + MASKED] = src[:, 1 : 1 + MASKED]
    batch = {"src": src, "seg": seg, "tgt_mlm": tgt_mlm, "tgt_sp": torch.randint(0, 2, (BATCH,))}
    # The math kernel is made of matmuls the counter sees; the fused CPU attention kernel has no FLOP formula.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(batch)["loss"].backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("overrides", [
    {},  # BERT: dense feed-forward, tied MLM output
    {"encoder": {"name": "transformer", "layers_num": 3, "heads_num": 4, "attention_head_size": 8,
                 "feedforward_size": 96, "feed_forward": "gated"}},
    {"emb_size": 16, "tie_weights": False},  # factorised embedding (ALBERT)
])
def test_flops_per_token_matches_counted_flops(overrides):
    fields = {"vocab_size": 300, "hidden_size": 48, "max_seq_length": SEQ,
              "encoder": {"name": "transformer", "layers_num": 2, "heads_num": 4, "feedforward_size": 128},
              "targets": {"mlm": 1.0, "sp": 1.0}, **overrides}
    cfg = ModelConfig.model_validate(fields)
    expected = flops_per_token(cfg, SEQ, mask_prob=MASKED / SEQ) * BATCH * SEQ
    assert counted_flops(cfg) == pytest.approx(expected, rel=1e-9)


def test_bert_base_flops_and_h100_peak(data_dir):
    cfg = ModelConfig.model_validate({"uer_config": str(data_dir / "models" / "bert" / "base_config.json"),
                                      "vocab_size": 21128})
    # By hand: 12 layers x (6 x (4 x 768^2 + 2 x 768 x 3072) + 12 x 128 x 768) + MLM head on 15% of the tokens
    # 6 x 0.15 x (768^2 + 768 x 21128) + sp head 6 x (768^2 + 2 x 768) / 128.
    by_hand = 12 * (6 * (4 * 768**2 + 2 * 768 * 3072) + 12 * 128 * 768) + 6 * 0.15 * (768**2 + 768 * 21128) \
        + 6 * (768**2 + 2 * 768) / 128
    assert flops_per_token(cfg, 128) == pytest.approx(by_hand)
    assert dict(GPU_PEAKS)["H100"]["bf16"] == 989.4e12
    assert peak_flops("cpu") is None


def test_uncountable_parts_are_named():
    cfg = ModelConfig.model_validate({"vocab_size": 300, "encoder": {"name": "lstm"}, "targets": {"mlm": 1.0}})
    with pytest.raises(ValueError, match="transformer encoder, not 'lstm'"):
        flops_per_token(cfg, 32)
    adaptive = ModelConfig.model_validate({"vocab_size": 300, "encoder": {"name": "transformer", "mask": "causal"},
                                           "targets": {"lm": {"adaptive_cutoffs": [100]}}})
    with pytest.raises(ValueError, match=r"adaptive softmax's FLOPs \(lm\) depend on the data"):
        flops_per_token(adaptive, 32)
