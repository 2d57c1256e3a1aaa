"""Training FLOPs per token and the accelerator's peak, for model FLOPs utilisation (MFU):

    mfu = tokens_per_s * flops_per_token(model_cfg, seq_length) / peak_flops(device, precision)

FLOPs are counted as in PaLM's appendix B (and nanoGPT's ``estimate_mfu``): a multiply-add is 2 FLOPs and training
costs 3 forward passes (the backward pass computes gradients for the inputs and for the weights), so each weight of a
matrix multiply costs 6 FLOPs per token it is applied to, and self-attention's two matmuls (QK^T, then the weights
times V) 12 x seq_length x inner FLOPs per token and layer. Unlike ``6 x parameters``, only the matmuls a token really
goes through count: embedding lookups are free, the MLM head runs only on the masked positions and a sentence-level
head once per sequence. Element-wise work (norms, activations, softmax, dropout) is left out, as everywhere.
"""
from __future__ import annotations

import torch

# Dense (no sparsity) peaks in FLOP/s from NVIDIA's data sheets: name fragment -> {precision: peak}. fp32 is the
# plain FP32 rate: PyTorch uses no TF32 for fp32 matmuls unless asked to. The first fragment found in
# torch.cuda.get_device_name() wins, so variants (NVL, PCIe) come before their family.
GPU_PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200 NVL", {"bf16": 835e12, "fp16": 835e12, "fp32": 60e12}),
    ("H200", {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 66.9e12}),
    ("H100 NVL", {"bf16": 835e12, "fp16": 835e12, "fp32": 60e12}),
    ("H100 PCIe", {"bf16": 756.5e12, "fp16": 756.5e12, "fp32": 51.2e12}),
    ("H100", {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 66.9e12}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}),
    ("L40S", {"bf16": 362.1e12, "fp16": 362.1e12, "fp32": 91.6e12}),
    ("V100", {"fp16": 125e12, "fp32": 15.7e12}),
    ("T4", {"fp16": 65e12, "fp32": 8.1e12}),
)


def _encoder_flops(model_cfg, seq_length: int) -> float:
    enc = model_cfg.encoder
    if enc.name != "transformer":
        raise ValueError(f"flops_per_token: FLOPs are counted for the transformer encoder, not '{enc.name}'")
    hidden = model_cfg.hidden_size
    inner = enc.heads_num * (enc.attention_head_size or hidden // enc.heads_num)
    feed_forward = (3 if enc.feed_forward == "gated" else 2) * hidden * enc.feedforward_size
    per_layer = 6 * (4 * hidden * inner + feed_forward) + 12 * seq_length * inner
    emb_size = model_cfg.emb_size or hidden
    projection = 6 * emb_size * hidden if emb_size != hidden else 0  # factorised embedding (ALBERT)
    return enc.layers_num * per_layer + projection  # shared parameters (ALBERT) still run every layer


def _target_flops(name: str, model_cfg, seq_length: int, mask_prob: float) -> float:
    hidden, vocab = model_cfg.hidden_size, model_cfg.vocab_size
    emb_size = model_cfg.emb_size or hidden
    if name == "mlm":  # linear_1 + tied output, on the masked positions only
        return 6 * mask_prob * (hidden * emb_size + emb_size * vocab)
    if name in ("lm", "ae", "bilm"):  # an output layer on every position (bilm: two halves of the states)
        if model_cfg.targets[name].adaptive_cutoffs:
            raise ValueError(f"flops_per_token: an adaptive softmax's FLOPs ({name}) depend on the data's token mix")
        return 6 * hidden * vocab
    if name in ("sp", "sop", "cls"):  # a two-layer head on one pooled vector per sequence
        return 6 * (hidden * hidden + hidden * 2) / seq_length
    raise ValueError(f"flops_per_token: no FLOP count for target '{name}'")


def flops_per_token(model_cfg, seq_length: int, mask_prob: float = 0.15) -> float:
    """Training FLOPs (forward + backward) per token of a ``ModelConfig`` (``vocab_size`` set) on sequences of
    ``seq_length`` (the attention span, i.e. the padded length). ``mask_prob``: the share of tokens the MLM target
    predicts. Raises ``ValueError`` for a part it cannot count (non-transformer encoders, the seq2seq target)."""
    if model_cfg.vocab_size is None:
        raise ValueError("flops_per_token: model.vocab_size is not set")
    total = _encoder_flops(model_cfg, seq_length)
    for name in model_cfg.targets:
        total += _target_flops(name, model_cfg, seq_length, mask_prob)
    return float(total)


def peak_flops(device: torch.device | str, precision: str = "bf16") -> float | None:
    """Dense peak FLOP/s of a CUDA device at ``precision`` (fp32 | bf16 | fp16); None when unknown (CPUs, GPUs not in
    ``GPU_PEAKS``, bf16 on GPUs without it)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in GPU_PEAKS:
        if fragment in name:
            return peaks.get(precision)
    return None
