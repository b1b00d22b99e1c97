#!/usr/bin/env python3
"""Generate tiny random DeepSeek-V3 checkpoints WITH an MTP module (spec §6) + reference outputs under
tests/fixtures/models/<variant>/ (variants v3_mtp and v3_mtp_shared).

The MTP module is written here in PyTorch from the V3 report and vLLM's `deepseek_mtp.py` semantics
(transformers has no MTP code and ignores those weights):

    e_i  = Embed_mtp(x_{i+1})                       model.layers.L.embed_tokens.weight (else model.embed_tokens)
    u_i  = eh_proj · [ enorm(e_i) ; hnorm(h_i) ]    embedding first, as vLLM/SGLang; h_i = main final hidden
                                                    AFTER model.norm
    z_i  = DeepseekV3DecoderLayer(layer_idx = L)(u_i) at positions i = 0.. (its own causal attention, its own
           rotary positions, no cache shared with the main model)
    logits_i = shared_head.head( shared_head.norm(z_i) )   predicts x_{i+2}
               (model.layers.L.shared_head.head.weight, else lm_head.weight)

with L = num_hidden_layers. Files use the released names model.layers.L.{enorm,hnorm,eh_proj,shared_head.norm,
shared_head.head,embed_tokens}.weight, model.layers.L.{self_attn,mlp}.*, model.layers.L.{input,post_attention}_layernorm
and per-expert tensors. `v3_mtp` stores the embedding / head copies, deliberately NOT equal to the main ones (main +
0.5·noise) so a test can tell which was used; `v3_mtp_shared` omits them (loader must fall back to the main
embedding and lm_head).

reference.safetensors:
  input_ids    I64 [T]          prompt
  logits       F32 [T, V]       main model, all rows (transformers; must equal a reload that ignores layer L)
  final_hidden F32 [T, d]       main hidden after model.norm
  mtp_hidden   F32 [T-1, d]     z_i (MTP block output, before shared_head.norm), pairs (h_i, x_{i+1}), i = 0..T-2
  mtp_logits   F32 [T-1, V]     MTP logits of those pairs
  greedy_ids   I64 [16]         main-model greedy continuation
cli_greedy.txt: the prompt (comma-separated) and greedy_ids (space-separated), for the CLI tests.

Usage: python tests/reference/make_mtp_fixtures.py [--only NAME ...] [--out tests/fixtures/models]
Deterministic: fixed seeds, single thread.
"""
import argparse
import json
import os
import shutil
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_model_fixtures as mm  # noqa: E402  (sets 1 thread + deterministic algorithms)

from transformers import DeepseekV3ForCausalLM  # noqa: E402
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (  # noqa: E402
    DeepseekV3DecoderLayer,
    DeepseekV3RMSNorm,
)

VARIANTS = {
    # q-LoRA, YaRN, bf16, MoE main layer 1 and MoE MTP layer 2, embedding/head copies stored (perturbed)
    "v3_mtp": dict(
        style="released", store="bf16", seed=611, T=12, copies=True,
        cfg=dict(vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                 routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
                 q_lora_rank=48, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                 max_position_embeddings=128, rope_theta=10000.0,
                 rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=32,
                                   beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
                 topk_method="noaux_tc", scoring_func="sigmoid")),
    # no q-LoRA, no rope scaling, f32; both main layers dense (first_k_dense_replace 2) but the MTP layer
    # (index 2) is MoE: the block's layer index decides. Copies omitted -> fallback to main embed / lm_head.
    "v3_mtp_shared": dict(
        style="released", store="f32", seed=622, T=10, copies=False,
        cfg=dict(vocab_size=192, hidden_size=48, intermediate_size=96, moe_intermediate_size=24,
                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                 n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                 routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=2,
                 q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                 max_position_embeddings=256, rope_theta=10000.0,
                 topk_method="noaux_tc", scoring_func="sigmoid")),
}


class Mtp(nn.Module):
    """One MTP module (depth 1) with its own embedding / head copies (as the released files carry them)."""

    def __init__(self, config):
        super().__init__()
        d, V = config.hidden_size, config.vocab_size
        self.embed_tokens = nn.Embedding(V, d)
        self.enorm = DeepseekV3RMSNorm(d, eps=config.rms_norm_eps)
        self.hnorm = DeepseekV3RMSNorm(d, eps=config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * d, d, bias=False)
        self.block = DeepseekV3DecoderLayer(config, layer_idx=config.num_hidden_layers)
        self.shared_head_norm = DeepseekV3RMSNorm(d, eps=config.rms_norm_eps)
        self.shared_head = nn.Linear(d, V, bias=False)

    @torch.no_grad()
    def forward(self, rotary_emb, h, next_ids):
        """h: [S, d] main final hidden at positions 0..S-1; next_ids: [S] = x_{i+1}. -> (z [S, d], logits [S, V])."""
        e = self.embed_tokens(next_ids)[None]
        u = self.eh_proj(torch.cat([self.enorm(e), self.hnorm(h[None])], dim=-1))
        S = u.shape[1]
        pos = torch.arange(S)[None]
        pe = rotary_emb(u, pos)
        mask = torch.full((S, S), float("-inf")).triu(1)[None, None]
        z = self.block(u, attention_mask=mask, position_ids=pos, position_embeddings=pe, use_cache=False)
        z = z[0] if isinstance(z, tuple) else z
        return z[0], self.shared_head(self.shared_head_norm(z))[0]


def mtp_released(mtp, L):
    """Mtp state dict -> released names under model.layers.L."""
    out = {}
    for name, t in mm.to_released({k: v.detach().clone() for k, v in mtp.state_dict().items()}).items():
        if name.startswith("block."):
            out[f"model.layers.{L}.{name[len('block.'):]}"] = t
        elif name == "shared_head_norm.weight":
            out[f"model.layers.{L}.shared_head.norm.weight"] = t
        elif name == "shared_head.weight":
            out[f"model.layers.{L}.shared_head.head.weight"] = t
        else:
            out[f"model.layers.{L}.{name}"] = t
    return out


def mtp_from_released(eff, L, n_experts):
    pre = f"model.layers.{L}."
    inv = {}
    for name, t in eff.items():
        if not name.startswith(pre):
            continue
        rest = name[len(pre):]
        if rest == "shared_head.norm.weight":
            inv["shared_head_norm.weight"] = t
        elif rest == "shared_head.head.weight":
            inv["shared_head.weight"] = t
        elif rest.split(".")[0] in ("embed_tokens", "enorm", "hnorm", "eh_proj"):
            inv[rest] = t
        else:
            inv["block." + rest] = t
    return mm.from_released(inv, n_experts)


def make_variant(name, spec, out_root):
    store, seed, T = spec["store"], spec["seed"], spec["T"]
    vdir = os.path.join(out_root, name)
    if os.path.isdir(vdir):
        shutil.rmtree(vdir)
    os.makedirs(vdir)
    torch.manual_seed(seed)
    cfg = dict(spec["cfg"])
    cfg_json, config = mm.build_config("v3", spec["style"], cfg, store, vdir)
    cfg_json["num_nextn_predict_layers"] = 1
    with open(os.path.join(vdir, "config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2)
        f.write("\n")
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    L = config.num_hidden_layers

    model = DeepseekV3ForCausalLM(config).to(torch.float32).eval()
    mm.randomize(model, seed, cfg)
    mtp = Mtp(config).to(torch.float32).eval()
    mm.randomize(mtp, seed + 7, cfg)
    with torch.no_grad():  # copies = main weights + 0.5 noise (stored) or the main weights themselves (omitted)
        g = torch.Generator().manual_seed(seed + 9)
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        if spec["copies"]:
            mtp.embed_tokens.weight.copy_(emb + 0.5 * torch.randn(emb.shape, generator=g))
            mtp.shared_head.weight.copy_(head + 0.5 * torch.randn(head.shape, generator=g) * head.std())
        else:
            mtp.embed_tokens.weight.copy_(emb)
            mtp.shared_head.weight.copy_(head)

    rel = mm.to_released({k: v.detach().clone() for k, v in model.state_dict().items()})
    rel_mtp = mtp_released(mtp, L)
    if not spec["copies"]:
        del rel_mtp[f"model.layers.{L}.embed_tokens.weight"], rel_mtp[f"model.layers.{L}.shared_head.head.weight"]
    rel.update(rel_mtp)
    stored = mm.make_stored(rel, store)
    eff = mm.effective_f32(stored)
    main_eff = {k: v for k, v in eff.items() if not k.startswith(f"model.layers.{L}.")}
    model.load_state_dict(mm.from_released(main_eff, config.n_routed_experts), strict=True)
    mtp_sd = mtp_from_released(eff, L, config.n_routed_experts)
    if not spec["copies"]:
        mtp_sd["embed_tokens.weight"] = eff["model.embed_tokens.weight"]
        mtp_sd["shared_head.weight"] = eff["lm_head.weight"]
    mtp.load_state_dict(mtp_sd, strict=True)
    mm.save_checkpoint(stored, vdir, 1)

    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(2, config.vocab_size, (T,), generator=g, dtype=torch.int64)
    logits, caps = mm.forward_with_capture(model, ids)
    h = caps["final"][0]
    z, mtp_logits = mtp(model.model.rotary_emb, h[:-1], ids[1:])
    gen, margin = mm.greedy_recompute(model, ids, mm.N_GEN)
    assert torch.equal(gen, mm.greedy_cached(model, ids, mm.N_GEN))

    # the MTP block really uses its own positions 0..S-1: a prefix run gives the same rows (causal), and
    # shifting its positions changes them
    z3, _ = mtp(model.model.rotary_emb, h[:3], ids[1:4])
    assert torch.allclose(z3, z[:3], atol=1e-5)

    ref = {"input_ids": ids, "logits": logits.float(), "final_hidden": h.float(), "mtp_hidden": z.float(),
           "mtp_logits": mtp_logits.float(), "greedy_ids": gen}
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(vdir, "reference.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(vdir, "cli_greedy.txt"), "w") as f:  # for `deepseek-cli generate [--mtp]` tests
        f.write(",".join(str(int(i)) for i in ids) + "\n" + " ".join(str(int(i)) for i in gen) + "\n")

    # transformers ignores layer L: reloading the directory reproduces the main logits bit-exactly
    m2 = mm.load_hf(vdir)
    l2, _ = mm.forward_with_capture(m2, ids)
    assert torch.equal(l2, logits), float((l2 - logits).abs().max())
    # the copies matter (v3_mtp): with the main embedding/head the MTP logits change
    rep = {"name": name, "reload_equal": True, "greedy_min_margin": round(margin, 4),
           "mtp_logits_std": round(float(mtp_logits.std()), 3),
           "mtp_top1_vs_actual": int((mtp_logits[:-1].argmax(-1) == ids[2:]).sum()),
           "bytes": sum(os.path.getsize(os.path.join(vdir, f)) for f in os.listdir(vdir)),
           "n_tensors": len(stored)}
    top2 = mtp_logits.topk(2, -1).values
    rep["mtp_min_top1_margin"] = round(float((top2[:, 0] - top2[:, 1]).min()), 4)
    return rep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "fixtures", "models"))
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    for name, spec in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        print(json.dumps(make_variant(name, spec, os.path.abspath(args.out))))


if __name__ == "__main__":
    main()
