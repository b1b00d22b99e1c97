#!/usr/bin/env python3
"""Generate tiny random DeepSeek-V3.2 (DSA) checkpoints + reference outputs under tests/fixtures/models/<variant>/.

Same layout and helpers as make_model_fixtures.py (released per-expert names, f32 reference math on the stored
values), with the V3.2 lightning indexer (`self_attn.indexer.{wq_b,wk,k_norm,weights_proj}`; transformers'
module names equal the released checkpoint names, so no renaming is needed).

  v32_dsa_topk_small   index_topk 5 < T: the selection changes the logits (checked here: the same weights with
                       index_topk >= T give logits that differ by > 1e-2)
  v32_dsa_topk_large   index_topk 64 >= every context: equal to dense MLA (checked here against
                       DeepseekV3ForCausalLM on the same weights minus the indexer)

reference.safetensors: input_ids, logits [T, V], greedy_ids [16], and per layer `index_topk_layerN`
I64 [T, index_topk]: the effective selection of each prompt row (transformers' top-k indices that are <= the
row's position, sorted ascending, padded with -1).

Usage: python tests/reference/make_dsa_fixtures.py [--only NAME ...] [--out tests/fixtures/models]
"""
import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_fixtures as mmf  # noqa: E402  (sets 1 thread, deterministic algorithms)

import transformers  # noqa: E402
from transformers import AutoConfig, DeepseekV3Config, DeepseekV3ForCausalLM, DeepseekV32ForCausalLM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
            routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
            q_lora_rank=48, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
            index_n_heads=4, index_head_dim=16)

VARIANTS = {
    # released-style config, YaRN, bf16 weights (fp32 indexer k_norm / weights_proj as in V3.2 files)
    "v32_dsa_topk_small": dict(
        store="bf16", seed=717, T=20,
        cfg=dict(BASE, index_topk=5, max_position_embeddings=256, rope_theta=10000.0,
                 rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=32,
                                   beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
                 topk_method="noaux_tc", scoring_func="sigmoid")),
    # index_topk larger than any context of the test (T + 16 greedy tokens): DSA == dense MLA
    "v32_dsa_topk_large": dict(
        store="f32", seed=822, T=18,
        cfg=dict(BASE, index_topk=64, max_position_embeddings=256, rope_theta=10000.0,
                 topk_method="noaux_tc", scoring_func="sigmoid")),
}

# V3.2 files keep norms and weights_proj in f32 (spec §1.3 / §7.1).
F32_IN_V32 = ("norm", "indexer.weights_proj", "e_score_correction_bias")


def released_config(cfg, store):
    out = dict(architectures=["DeepseekV32ForCausalLM"], model_type="deepseek_v32",
               attention_bias=False, attention_dropout=0.0, bos_token_id=0, eos_token_id=1, ep_size=1,
               hidden_act="silu", initializer_range=0.02, moe_layer_freq=1, num_nextn_predict_layers=0,
               rms_norm_eps=1e-6, tie_word_embeddings=False, use_cache=True,
               torch_dtype="float32" if store == "f32" else "bfloat16")
    out.update(cfg)
    return dict(sorted(out.items()))


def randomize(model, seed):
    mmf.randomize(model, seed, None)
    g = torch.Generator().manual_seed(seed + 7)
    sd = model.state_dict()
    for name in sd:
        if name.endswith("indexer.k_norm.bias"):
            sd[name] = 0.1 * torch.randn(sd[name].shape, generator=g)
        elif name.endswith("indexer.weights_proj.weight"):
            sd[name] = torch.randn(sd[name].shape, generator=g) * (2.0 / sd[name].shape[1] ** 0.5)
    model.load_state_dict(sd, strict=True)


def make_stored(rel, store):
    stored = {}
    for name, t in rel.items():
        if store == "f32" or any(s in name for s in F32_IN_V32):
            stored[name] = t.to(torch.float32).contiguous()
        else:
            stored[name] = t.to(torch.bfloat16).contiguous()
    return stored


def forward_capture_topk(model, ids):
    caps = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        def hook(mod, inp, out, i=i):
            caps[i] = out[0].detach().clone()
        hooks.append(layer.self_attn.indexer.register_forward_hook(hook))
    with torch.no_grad():
        logits = model(ids[None], use_cache=False).logits[0].detach().clone()
    for h in hooks:
        h.remove()
    return logits, caps


def effective_selection(idx, k):
    """Top-k rows [T, k'] -> sorted entries <= row position, padded with -1 to k."""
    T = idx.shape[0]
    out = torch.full((T, k), -1, dtype=torch.int64)
    for s in range(T):
        v = sorted(int(x) for x in idx[s].tolist() if int(x) <= s)
        out[s, : len(v)] = torch.tensor(v, dtype=torch.int64)
    return out


@torch.no_grad()
def index_gap(model, ids):
    """Smallest relative gap at the top-k cut of the indexer scores over all rows (robustness of the selection)."""
    gaps = []
    caps = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        def pre(mod, args, kwargs, i=i):
            caps[i] = (args, kwargs)
        hooks.append(layer.self_attn.indexer.register_forward_pre_hook(pre, with_kwargs=True))
    model(ids[None], use_cache=False)
    for h in hooks:
        h.remove()
    k = model.config.index_topk
    for i, layer in enumerate(model.model.layers):
        ix = layer.self_attn.indexer
        args, kwargs = caps[i]
        hs, q_resid, (cos, sin) = args[0], args[1], args[2]
        B, S, _ = hs.shape
        q = ix.wq_b(q_resid).view(B, S, ix.n_heads, ix.head_dim)
        r = ix.qk_rope_head_dim
        qr, qp = q[..., :r], q[..., r:]
        kk = ix.k_norm(ix.wk(hs)).unsqueeze(2)
        kr, kp = kk[..., :r], kk[..., r:]
        from transformers.models.deepseek_v32.modeling_deepseek_v32 import apply_rotary_pos_emb
        qr, kr = apply_rotary_pos_emb(qr, kr, cos, sin, unsqueeze_dim=2)
        q = torch.cat([qr, qp], -1)
        kk = torch.cat([kr, kp], -1).squeeze(2)
        sc = torch.relu(torch.matmul(q, kk.transpose(-1, -2).unsqueeze(1)) * ix.softmax_scale)
        w = ix.weights_proj(hs) * ix.n_heads ** -0.5
        I = torch.matmul(w.unsqueeze(-2), sc).squeeze(-2)[0]  # [S, T]
        for s in range(S):
            if s + 1 <= k:
                continue
            v = I[s, : s + 1].sort(descending=True).values
            gaps.append(float((v[k - 1] - v[k]) / v.abs().max()))
    return min(gaps) if gaps else None


@torch.no_grad()
def cached_vs_full(model, ids, n):
    """transformers' own cached greedy decode vs its full forward: max |logit diff| over the generated rows."""
    out = model(ids[None], use_cache=True)
    past = out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values
    seq = ids.clone()
    nxt = out.logits[0, -1].argmax().view(1, 1)
    worst = 0.0
    for _ in range(n - 1):
        seq = torch.cat([seq, nxt.view(1)])
        out = model(nxt, cache=past, use_cache=True)
        past = out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values
        full = model(seq[None], use_cache=False).logits[0, -1]
        worst = max(worst, float((out.logits[0, -1] - full).abs().max()))
        nxt = out.logits[0, -1].argmax().view(1, 1)
    return worst


def make_variant(name, spec, out_root):
    store, seed, T = spec["store"], spec["seed"], spec["T"]
    vdir = os.path.join(out_root, name)
    if os.path.isdir(vdir):
        shutil.rmtree(vdir)
    os.makedirs(vdir)
    torch.manual_seed(seed)
    cfg_json = released_config(spec["cfg"], store)
    with open(os.path.join(vdir, "config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2)
        f.write("\n")
    config = AutoConfig.from_pretrained(vdir)
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    model = DeepseekV32ForCausalLM(config).to(torch.float32).eval()
    randomize(model, seed)
    rel = mmf.to_released({k: v.detach().clone() for k, v in model.state_dict().items()})
    stored = make_stored(rel, store)
    eff = mmf.effective_f32(stored)
    model.load_state_dict(mmf.from_released(eff, config.n_routed_experts), strict=True)
    mmf.save_checkpoint(stored, vdir, 1)

    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(2, config.vocab_size, (T,), generator=g, dtype=torch.int64)
    logits, caps = forward_capture_topk(model, ids)
    gen, margin = mmf.greedy_recompute(model, ids, mmf.N_GEN)
    gen_c = mmf.greedy_cached(model, ids, mmf.N_GEN)
    k = config.index_topk
    ref = {"input_ids": ids, "logits": logits.float(), "greedy_ids": gen}
    for i, idx in caps.items():
        ref[f"index_topk_layer{i}"] = effective_selection(idx[:, : min(k, T)], min(k, T))
    save_file({kk: v.contiguous() for kk, v in ref.items()}, os.path.join(vdir, "reference.safetensors"),
              metadata={"format": "pt"})

    report = {"name": name, "T": T, "index_topk": k, "greedy_min_margin": round(margin, 4),
              "hf_cached_greedy_equals_recompute": bool(torch.equal(gen, gen_c)),
              "hf_cached_vs_full_max_logit_diff": cached_vs_full(model, ids, mmf.N_GEN),
              "index_min_rel_gap_at_cut": index_gap(model, torch.cat([ids, gen]))}
    assert torch.equal(gen, gen_c), (gen, gen_c)
    # no (near-)ties at the top-k cut over prompt + continuation: tie order is implementation-defined
    assert report["index_min_rel_gap_at_cut"] is None or report["index_min_rel_gap_at_cut"] > 1e-4, report

    # reload from the written directory: bit-equal
    m2 = mmf.load_hf(vdir)
    l2 = m2(ids[None], use_cache=False).logits[0]
    report["reload_equal"] = bool(torch.equal(l2, logits))
    assert report["reload_equal"]

    # same weights with index_topk >= every context vs. this one
    cfg_dense = AutoConfig.from_pretrained(vdir)
    cfg_dense.index_topk = 4096
    cfg_dense._attn_implementation = "eager"
    cfg_dense._experts_implementation = "eager"
    md = DeepseekV32ForCausalLM(cfg_dense).to(torch.float32).eval()
    md.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        ld = md(ids[None], use_cache=False).logits[0]
    report["max_diff_vs_topk_ge_T"] = float((ld - logits).abs().max())
    if k < T:
        assert report["max_diff_vs_topk_ge_T"] > 1e-2, report
    else:
        assert report["max_diff_vs_topk_ge_T"] == 0.0, report
        # and dense V3 MLA on the same weights (no indexer) gives the same logits
        v3 = DeepseekV3Config(**{kk: v for kk, v in cfg_json.items()
                                 if kk not in ("architectures", "model_type", "index_topk", "index_n_heads",
                                               "index_head_dim", "torch_dtype")})
        v3._attn_implementation = "eager"
        v3._experts_implementation = "eager"
        m3 = DeepseekV3ForCausalLM(v3).to(torch.float32).eval()
        sd = {kk: v for kk, v in model.state_dict().items() if ".indexer." not in kk}
        m3.load_state_dict(sd, strict=True)
        with torch.no_grad():
            l3 = m3(ids[None], use_cache=False).logits[0]
        report["max_diff_vs_dense_v3"] = float((l3 - logits).abs().max())
        assert report["max_diff_vs_dense_v3"] < 1e-4, report
    report["selected_rows_lt_all"] = sum(int((ref[f"index_topk_layer{i}"][s] >= 0).sum()) < s + 1
                                         for i in caps for s in range(T))
    report["bytes"] = sum(os.path.getsize(os.path.join(vdir, f)) for f in os.listdir(vdir))
    report["names_indexer"] = sorted(n for n in stored if ".indexer." in n and ".layers.0." in n)
    return report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "fixtures", "models"))
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    print(f"torch {torch.__version__} transformers {transformers.__version__}")
    for name, spec in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        print(json.dumps(make_variant(name, spec, os.path.abspath(args.out))))


if __name__ == "__main__":
    main()
