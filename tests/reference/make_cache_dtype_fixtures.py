"""A V3 fixture whose kv_lora_rank (128) admits FlashMLA's FP8 cache layout, with transformers'
logits for each cache dtype: tests/fixtures/models/v3_lora128/ (checked by
tests/models/test_long_context.cpp).

The model and reference.safetensors come from make_model_fixtures.make_variant (transformers'
DeepseekV3ForCausalLM, random weights, released tensor names). cache_dtypes.safetensors adds the
prompt logits of the same transformers model with its cached latent rounded as each cache dtype
stores it. transformers 5 caches exactly the pair it hands to DeepseekV3Attention.expand_kv:
kv_nope = kv_a_layernorm(c) [kv_lora] and k_rot = RoPE(k_pe) [rope]; wrapping expand_kv rounds them:
  logits_bf16_cache   both rounded to bf16 (round to nearest even)
  logits_fp8_cache    kv_nope per block of 128: s = 2^ceil(log2(max(amax / 448, 1e-4))) (FlashMLA's
                      tests/quant.py rule), x / s to float8_e4m3fn and back times s; k_rot to bf16
Margins are printed: each greedy step's top-2 gap in the f32 model, so a test knows which ids the
rounding cannot flip.
"""
import os
import sys

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_model_fixtures as mm  # noqa: E402

SPEC = dict(
    arch="v3", style="released", store="bf16", shards=1, seed=909, T=24,
    cfg=dict(vocab_size=256, hidden_size=128, intermediate_size=256, moe_intermediate_size=32,
             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
             n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
             routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
             q_lora_rank=96, kv_lora_rank=128, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
             max_position_embeddings=256, rope_theta=10000.0,
             topk_method="noaux_tc", scoring_func="sigmoid"))


def bf16(x):
    return x.to(torch.bfloat16).to(x.dtype)


def fp8_blocks(x):
    shape = x.shape
    b = x.reshape(*shape[:-1], shape[-1] // 128, 128)
    amax = b.abs().amax(-1, keepdim=True).float()
    s = torch.pow(2, torch.ceil(torch.log2(torch.clamp_min(amax / 448.0, 1e-4))))
    q = (b.float() / s).to(torch.float8_e4m3fn).float() * s
    return q.reshape(shape).to(x.dtype)


def logits_with(model, ids, round_nope, round_rot):
    saved = []
    for layer in model.model.layers:
        att = layer.self_attn
        orig = att.expand_kv
        saved.append((att, orig))
        att.expand_kv = (lambda kv_nope, k_rot, orig=orig: orig(round_nope(kv_nope), round_rot(k_rot)))
    try:
        with torch.no_grad():
            return model(ids[None], use_cache=False).logits[0].float()
    finally:
        for att, orig in saved:
            att.expand_kv = orig


def main():
    out_root = os.path.abspath(os.path.join(HERE, "..", "fixtures", "models"))
    rep = mm.make_variant("v3_lora128", SPEC, out_root)
    print(rep)
    vdir = os.path.join(out_root, "v3_lora128")
    model = mm.load_hf(vdir)
    assert hasattr(model.model.layers[0].self_attn, "expand_kv"), "transformers without expand_kv"
    ref = load_file(os.path.join(vdir, "reference.safetensors"))
    ids = ref["input_ids"]
    plain = logits_with(model, ids, lambda x: x, lambda x: x)
    assert torch.equal(plain, ref["logits"]), "the unrounded hook changes the logits"
    l16 = logits_with(model, ids, bf16, bf16)
    l8 = logits_with(model, ids, fp8_blocks, bf16)
    mb = plain.abs().amax(-1).clamp_min(1)
    print("bf16 cache moves logits by", float(((l16 - plain).abs().amax(-1) / mb).max()))
    print("fp8 cache moves logits by", float(((l8 - plain).abs().amax(-1) / mb).max()))
    save_file({"logits_bf16_cache": l16.contiguous(), "logits_fp8_cache": l8.contiguous()},
              os.path.join(vdir, "cache_dtypes.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    main()
