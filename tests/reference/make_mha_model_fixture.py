#!/usr/bin/env python3
"""A whole text model with plain multi-head attention (use_mla: false): the DeepSeek-OCR decoder's shape.

DeepSeek-OCR's language model is DeepseekV2 with use_mla false: Llama-style q/k/v/o attention with
rotate-half RoPE over the full head_dim, a dense first layer, then DeepSeekMoE layers with softmax
greedy routing, unnormalised top-k weights and fused shared experts (spec deepseek-ocr.md §7).
transformers' DeepseekV2 is MLA-only and cannot load it; transformers' DeepseekOcr2TextModel
(models/deepseek_ocr2) is exactly this decoder, so it is the reference: its final hidden states
through an lm_head Linear give the logits.

Writes tests/fixtures/models/v2_mha_ocr_decoder/ in the same layout as make_model_fixtures.py:
  config.json             released style, as DeepSeek-OCR's language_config (use_mla false,
                          kv_lora_rank / q_lora_rank null, qk_*_head_dim 0, rope_scaling null)
  model.safetensors       bf16, released per-expert names (model.layers.N.mlp.experts.E.gate_proj.weight ...)
  reference.safetensors   input_ids, logits, greedy_ids, hidden_after_layer0, final_hidden,
                          topk_idx_layerN / topk_weight_layerN for each MoE layer
  cli_greedy.txt          the prompt (comma-separated) and greedy_ids (space-separated)

The reference runs float32 math on the stored (bf16) values. There is no released loader to reload
the files with, so the script checks its own round trip: the stored tensors, read back from disk and
re-fused, reproduce the reference logits bit for bit. Deterministic (fixed seed, one thread).

Usage: python tests/reference/make_mha_model_fixture.py [--out tests/fixtures/models]
"""
import argparse
import json
import os
import shutil
import sys
from types import SimpleNamespace

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import (  # noqa: E402  (sets one thread and deterministic algorithms)
    HERE, effective_f32, forward_with_capture, from_released, load_all, make_stored, moe_layers, randomize,
    reference_outputs, router_gaps, save_checkpoint, to_released)
from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import DeepseekOcr2TextConfig  # noqa: E402
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2TextModel  # noqa: E402

NAME = "v2_mha_ocr_decoder"
SEED = 612
T = 14
# GQA (4 heads over 2 KV heads) although the released decoder is 10/10: the fixture covers both.
CFG = dict(vocab_size=320, hidden_size=128, intermediate_size=192, moe_intermediate_size=48,
           num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
           n_routed_experts=16, n_shared_experts=2, num_experts_per_tok=4, n_group=1, topk_group=1,
           routed_scaling_factor=1.0, topk_method="greedy", first_k_dense_replace=1,
           max_position_embeddings=256, rope_theta=10000.0)


class CausalLM(nn.Module):
    """DeepseekOcr2TextModel + lm_head, named as the released checkpoints (model.*, lm_head.weight);
    called like a transformers causal LM, so make_model_fixtures' capture and greedy helpers run it."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = DeepseekOcr2TextModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, ids, cache=None, use_cache=False):
        out = self.model(input_ids=ids, cache=cache, use_cache=use_cache)
        return SimpleNamespace(logits=self.lm_head(out.last_hidden_state), past_key_values=out.past_key_values)


def text_config():
    c = CFG
    config = DeepseekOcr2TextConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
        moe_intermediate_size=c["moe_intermediate_size"], num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"], num_key_value_heads=c["num_key_value_heads"],
        n_routed_experts=c["n_routed_experts"], n_shared_experts=c["n_shared_experts"],
        num_experts_per_tok=c["num_experts_per_tok"], n_group=c["n_group"], topk_group=c["topk_group"],
        routed_scaling_factor=c["routed_scaling_factor"], topk_method=c["topk_method"],
        mlp_layer_types=["dense"] * c["first_k_dense_replace"] +
                        ["sparse"] * (c["num_hidden_layers"] - c["first_k_dense_replace"]),
        max_position_embeddings=c["max_position_embeddings"],
        rope_parameters=dict(rope_type="default", rope_theta=c["rope_theta"]),
        rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    return config


def released_config():
    """DeepSeek-OCR's language_config fields (spec §7.1) with this fixture's sizes."""
    c = dict(CFG)
    out = dict(architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2", use_mla=False,
               kv_lora_rank=None, q_lora_rank=None, qk_nope_head_dim=0, qk_rope_head_dim=0, v_head_dim=0,
               rope_scaling=None, scoring_func="softmax", norm_topk_prob=False, moe_layer_freq=1,
               attention_bias=False, hidden_act="silu", rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=1,
               tie_word_embeddings=False, torch_dtype="bfloat16", use_cache=True)
    out.update(c)
    return dict(sorted(out.items()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "fixtures", "models"))
    args = ap.parse_args()
    vdir = os.path.join(args.out, NAME)
    if os.path.isdir(vdir):
        shutil.rmtree(vdir)
    os.makedirs(vdir)
    torch.manual_seed(SEED)

    config = text_config()
    model = CausalLM(config).to(torch.float32).eval()
    assert model.model.config._attn_implementation == "eager"
    assert model.model.layers[0].self_attn.head_dim == CFG["hidden_size"] // CFG["num_attention_heads"]
    randomize(model, SEED, CFG)

    rel = to_released({k: v.detach().clone() for k, v in model.state_dict().items()})
    stored = make_stored(rel, "bf16")
    eff = effective_f32(stored)
    model.load_state_dict(from_released(eff, CFG["n_routed_experts"]), strict=True)
    save_checkpoint(stored, vdir, 1)
    with open(os.path.join(vdir, "config.json"), "w") as f:
        json.dump(released_config(), f, indent=2)
        f.write("\n")

    ids, logits, caps, margin, ref = reference_outputs(model, SEED + 1, CFG["vocab_size"], T)
    ml = moe_layers(model)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(vdir, "reference.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(vdir, "cli_greedy.txt"), "w") as f:  # for the `deepseek-cli generate` test
        f.write(",".join(str(int(i)) for i in ids) + "\n" + " ".join(str(int(i)) for i in ref["greedy_ids"]) + "\n")

    # Round trip: the files as written, re-fused, reproduce the reference bit for bit.
    m2 = CausalLM(config).to(torch.float32).eval()
    on_disk = effective_f32(load_all(vdir))
    assert not any("gate_up_proj" in n or n.endswith("experts.down_proj") for n in on_disk)
    m2.load_state_dict(from_released(on_disk, CFG["n_routed_experts"]), strict=True)
    l2, _ = forward_with_capture(m2, ids)
    assert torch.equal(l2, logits)

    report = {"name": NAME, "moe_layers": ml, "greedy_min_margin": round(margin, 4),
              "router_min_gap_expert": float(f"{router_gaps(model, caps)[1]:.3g}"),
              "distinct_expert_sets": {i: len({tuple(r.tolist()) for r in ref[f"topk_idx_layer{i}"]}) for i in ml},
              "logits_std": round(float(logits.std()), 3), "round_trip_equal": True,
              "bytes": sum(os.path.getsize(os.path.join(vdir, f)) for f in os.listdir(vdir))}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
