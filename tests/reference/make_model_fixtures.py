#!/usr/bin/env python3
"""Generate tiny random DeepSeek V2/V3 checkpoints + reference outputs under tests/fixtures/models/<variant>/.

Each variant directory gets:
  config.json                       released-style (rope_scaling/topk_method/scoring_func...) or
                                    transformers-5 style (rope_parameters), see VARIANTS
  model.safetensors                 (or model-0000x-of-0000y.safetensors + model.safetensors.index.json)
                                    in the RELEASED per-expert naming of the HF DeepSeek checkpoints
  reference.safetensors             input_ids, logits, greedy_ids, hidden_after_layer0, final_hidden,
                                    topk_idx_layerN / topk_weight_layerN for each MoE layer

Reference = transformers (eager attention, eager experts) in float32 math on the STORED weight values
(bf16 weights upcast; FP8 weights block-dequantized, spec §7.3).  Every checkpoint is verified by
reloading it with `from_pretrained(dir)` and checking bit-equal logits.

Usage: python tests/reference/make_model_fixtures.py [--only NAME ...] [--out tests/fixtures/models]
Deterministic: fixed seeds, single thread.
"""
import argparse
import copy
import json
import math
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file, load_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    DeepseekV2Config,
    DeepseekV2ForCausalLM,
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
)

HERE = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------------------
VARIANTS = {
    # a. V3, q-LoRA, YaRN, noaux_tc sigmoid grouped routing, bf16 weights, released-style config
    "v3_yarn_qlora_bf16": dict(
        arch="v3", style="released", store="bf16", shards=1, seed=101, T=16,
        cfg=dict(vocab_size=384, hidden_size=128, intermediate_size=256, moe_intermediate_size=32,
                 num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                 n_shared_experts=1, n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
                 routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
                 q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
                 max_position_embeddings=128, rope_theta=10000.0,
                 rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=32,
                                   beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
                 topk_method="noaux_tc", scoring_func="sigmoid")),
    # b. V3 without q-LoRA (q_proj), no rope scaling, f32, norm_topk_prob false, transformers-5 style config
    "v3_noqlora_f32": dict(
        arch="v3", style="hf5", store="f32", shards=1, seed=202, T=14,
        cfg=dict(vocab_size=320, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                 num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                 n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                 routed_scaling_factor=2.5, norm_topk_prob=False, first_k_dense_replace=1,
                 q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                 max_position_embeddings=256,
                 rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
    # c. V3 FP8 e4m3 block-quantized (128x128, edge blocks everywhere), 2 shards, released-style config
    "v3_fp8": dict(
        arch="v3", style="released", store="fp8", shards=2, seed=303, T=12,
        cfg=dict(vocab_size=300, hidden_size=320, intermediate_size=200, moe_intermediate_size=96,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 n_shared_experts=2, n_routed_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2,
                 routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
                 q_lora_rank=192, kv_lora_rank=160, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
                 max_position_embeddings=256, rope_theta=10000.0,
                 rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=64,
                                   beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
                 topk_method="noaux_tc", scoring_func="sigmoid",
                 quantization_config=dict(activation_scheme="dynamic", fmt="e4m3", quant_method="fp8",
                                          weight_block_size=[128, 128]))),
    # d. V2 softmax + group_limited_greedy, no q-LoRA, released-style config, YaRN with mscale != mscale_all_dim
    "v2_softmax_group_limited": dict(
        arch="v2", style="released", store="bf16", shards=1, seed=406, T=15,
        cfg=dict(vocab_size=352, hidden_size=96, intermediate_size=192, moe_intermediate_size=48,
                 num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                 n_shared_experts=2, n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
                 routed_scaling_factor=16.0, norm_topk_prob=False, first_k_dense_replace=1,
                 q_lora_rank=None, kv_lora_rank=48, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                 max_position_embeddings=256, rope_theta=10000.0,
                 rope_scaling=dict(type="yarn", factor=8.0, original_max_position_embeddings=32,
                                   beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=0.5),
                 topk_method="group_limited_greedy", scoring_func="softmax")),
    # e. V2-Lite-like: greedy softmax, n_group 1, no q-LoRA, 2 shared experts, YaRN mscale 0.707 = mscale_all_dim,
    #    transformers-5 style config
    "v2_lite_greedy": dict(
        arch="v2", style="hf5", store="bf16", shards=1, seed=505, T=13,
        cfg=dict(vocab_size=320, hidden_size=64, intermediate_size=160, moe_intermediate_size=32,
                 num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
                 n_shared_experts=2, n_routed_experts=8, num_experts_per_tok=3, n_group=1, topk_group=1,
                 routed_scaling_factor=1.0, norm_topk_prob=False, first_k_dense_replace=1,
                 topk_method="greedy",
                 q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                 max_position_embeddings=256,
                 rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                      original_max_position_embeddings=64, beta_fast=32.0, beta_slow=1.0,
                                      mscale=0.707, mscale_all_dim=0.707))),
}

N_GEN = 16
TRY_HF_FP8 = False


# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------
def released_config(arch, cfg, store):
    """config.json as the released DeepSeek checkpoints write it (no auto_map; no MTP layer stored)."""
    c = dict(cfg)
    common = dict(
        attention_bias=False, attention_dropout=0.0, aux_loss_alpha=0.001, bos_token_id=0, eos_token_id=1,
        hidden_act="silu", initializer_range=0.02, moe_layer_freq=1, pretraining_tp=1, rms_norm_eps=1e-6,
        seq_aux=True, tie_word_embeddings=False, use_cache=True,
        torch_dtype="float32" if store == "f32" else "bfloat16",
    )
    out = dict(architectures=["DeepseekV3ForCausalLM" if arch == "v3" else "DeepseekV2ForCausalLM"],
               model_type="deepseek_v3" if arch == "v3" else "deepseek_v2")
    out.update(common)
    if arch == "v3":
        out.update(ep_size=1, num_nextn_predict_layers=0)
    else:
        out.update(ep_size=1)
    out.update(c)
    return dict(sorted(out.items()))


def build_config(arch, style, cfg, store, tmpdir):
    """Write config.json into tmpdir and return (json_dict, config loaded back by transformers)."""
    if style == "released":
        d = released_config(arch, cfg, store)
        with open(os.path.join(tmpdir, "config.json"), "w") as f:
            json.dump(d, f, indent=2)
            f.write("\n")
    else:
        Cls = DeepseekV3Config if arch == "v3" else DeepseekV2Config
        kw = dict(cfg)
        kw.update(bos_token_id=0, eos_token_id=1, rms_norm_eps=1e-6, tie_word_embeddings=False)
        if arch == "v3":
            kw.update(num_nextn_predict_layers=0)
        config = Cls(**kw)
        config.architectures = ["DeepseekV3ForCausalLM" if arch == "v3" else "DeepseekV2ForCausalLM"]
        config.dtype = torch.float32 if store == "f32" else torch.bfloat16
        config.save_pretrained(tmpdir)
        with open(os.path.join(tmpdir, "config.json")) as f:
            d = json.load(f)
    config = AutoConfig.from_pretrained(tmpdir)
    return d, config


# ----------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------
def randomize(model, seed, cfg):
    """Deterministic 'decisive' random weights (not the 0.02 init)."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    new = {}
    for name in sorted(sd.keys()):
        t = sd[name]
        shape = t.shape
        if name.endswith("e_score_correction_bias"):
            mag = torch.rand(shape, generator=g) * 0.15 + 0.05
            sgn = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
            v = mag * sgn
        elif "norm" in name:  # RMSNorm weights (input/post_attention/q_a/kv_a/model.norm)
            v = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("embed_tokens.weight"):
            v = torch.randn(shape, generator=g)
        elif name.endswith("experts.gate_up_proj"):  # [E, 2I, H]
            v = torch.randn(shape, generator=g) / math.sqrt(shape[-1])
        elif name.endswith("experts.down_proj"):  # [E, H, I]
            v = torch.randn(shape, generator=g) * (1.5 / math.sqrt(shape[-1]))
        elif len(shape) == 2:  # nn.Linear [out, in]
            gain = 1.0
            if "lm_head" in name:
                gain = 3.0
            elif "mlp.gate.weight" in name:
                gain = 1.5
            elif any(k in name for k in ("q_proj", "q_b_proj", "kv_b_proj", "q_a_proj", "kv_a_proj")):
                gain = 1.6
            v = torch.randn(shape, generator=g) * (gain / math.sqrt(shape[1]))
        else:
            raise RuntimeError(f"unhandled parameter {name} {tuple(shape)}")
        new[name] = v.to(torch.float32)
    model.load_state_dict(new, strict=True)


def to_released(sd):
    """transformers-5 in-memory state dict -> released per-expert names (f32 tensors)."""
    out = {}
    for name, t in sd.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            pre = name[: -len("gate_up_proj")]
            E, two_i, _ = t.shape
            inter = two_i // 2
            for e in range(E):
                out[f"{pre}{e}.gate_proj.weight"] = t[e, :inter, :].clone()  # chunk(2): gate first, then up
                out[f"{pre}{e}.up_proj.weight"] = t[e, inter:, :].clone()
        elif name.endswith("mlp.experts.down_proj"):
            pre = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{pre}{e}.down_proj.weight"] = t[e].clone()
        else:
            out[name] = t.clone()
    return out


def from_released(rel, n_experts):
    """Exact inverse of to_released (f32 tensors)."""
    out = {}
    groups = {}
    for name, t in rel.items():
        if ".mlp.experts." in name:
            pre, rest = name.split(".mlp.experts.")
            e, proj, _ = rest.split(".")
            groups.setdefault(pre, {})[(int(e), proj)] = t
        else:
            out[name] = t
    for pre, d in groups.items():
        gu = torch.stack([torch.cat([d[(e, "gate_proj")], d[(e, "up_proj")]], 0) for e in range(n_experts)], 0)
        dn = torch.stack([d[(e, "down_proj")] for e in range(n_experts)], 0)
        out[f"{pre}.mlp.experts.gate_up_proj"] = gu
        out[f"{pre}.mlp.experts.down_proj"] = dn
    return out


FP8_SKIP = ("embed_tokens", "lm_head", "mlp.gate.weight", "norm")


def is_fp8_linear(name, t):
    return name.endswith(".weight") and t.dim() == 2 and not any(s in name for s in FP8_SKIP)


def quant_fp8_block(w, block=128):
    """DeepSeek-style: per 128x128 block, scale = amax/448, q = e4m3(w/scale). Edge blocks zero-padded."""
    out_f, in_f = w.shape
    nb_o, nb_i = -(-out_f // block), -(-in_f // block)
    pad = torch.zeros(nb_o * block, nb_i * block, dtype=torch.float32)
    pad[:out_f, :in_f] = w
    blk = pad.view(nb_o, block, nb_i, block)
    amax = blk.abs().amax(dim=(1, 3)).clamp(min=1e-12)
    scale = (amax / 448.0).to(torch.float32)  # weight_scale_inv (dequant multiplier)
    q = (blk / scale[:, None, :, None]).to(torch.float8_e4m3fn).view(nb_o * block, nb_i * block)[:out_f, :in_f]
    return q.contiguous(), scale.contiguous()


def dequant_fp8_block(q, s, block=128):
    out_f, in_f = q.shape
    sf = s.repeat_interleave(block, 0).repeat_interleave(block, 1)[:out_f, :in_f]
    return q.to(torch.float32) * sf


def make_stored(rel, store):
    """released f32 tensors -> tensors as stored in the file."""
    stored = {}
    for name, t in rel.items():
        if name.endswith("e_score_correction_bias"):
            stored[name] = t.to(torch.float32)
        elif store == "f32":
            stored[name] = t.to(torch.float32)
        elif store == "bf16":
            stored[name] = t.to(torch.bfloat16)
        elif store == "fp8":
            if is_fp8_linear(name, t):
                q, s = quant_fp8_block(t)
                stored[name] = q
                stored[name + "_scale_inv"] = s
            else:
                stored[name] = t.to(torch.bfloat16)
        else:
            raise ValueError(store)
    return {k: v.contiguous() for k, v in stored.items()}


def effective_f32(stored):
    """Stored tensors -> f32 values the reference uses (bf16 upcast, FP8 block dequant)."""
    eff = {}
    for name, t in stored.items():
        if name.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            eff[name] = dequant_fp8_block(t, stored[name + "_scale_inv"])
        else:
            eff[name] = t.to(torch.float32)
    return eff


def layer_key(name):
    # order tensors like released files: by layer, then name
    parts = name.split(".")
    if len(parts) > 2 and parts[1] == "layers":
        return (1, int(parts[2]), name)
    return (0 if "embed" in name else 2, 0, name)


def save_checkpoint(stored, d, shards):
    names = sorted(stored.keys(), key=layer_key)
    if shards == 1:
        save_file({k: stored[k] for k in names}, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        return
    total = sum(stored[k].numel() * stored[k].element_size() for k in names)
    per = total / shards
    files, cur, acc = [], [], 0
    for k in names:
        if k.endswith("_scale_inv"):
            continue  # placed right after its weight (same shard), as in the released files
        group = [k] + ([k + "_scale_inv"] if k + "_scale_inv" in stored else [])
        if acc >= per * (len(files) + 1) and len(files) < shards - 1:
            files.append(cur)
            cur = []
        cur.extend(group)
        acc += sum(stored[x].numel() * stored[x].element_size() for x in group)
    files.append(cur)
    assert sorted(sum(files, [])) == sorted(names)
    assert len(files) == shards
    weight_map = {}
    for i, ks in enumerate(files):
        fn = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: stored[k] for k in ks}, os.path.join(d, fn), metadata={"format": "pt"})
        for k in ks:
            weight_map[k] = fn
    idx = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(idx, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------------------------------------
# Reference computation
# ----------------------------------------------------------------------------------------------------------
def moe_layers(model):
    return [i for i, l in enumerate(model.model.layers) if hasattr(l.mlp, "gate")]



def reference_outputs(model, seed, vocab_size, T):
    """T random ids from `seed`; the model's logits, captures, greedy continuation (recomputed and cached
    agree) and the reference tensors the C++ tests read: ids, logits, greedy ids, hidden states and each
    MoE layer's top-k (sorted by expert id) with its weights."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab_size, (T,), generator=g, dtype=torch.int64)
    logits, caps = forward_with_capture(model, ids)
    gen, margin = greedy_recompute(model, ids, N_GEN)
    gen_c = greedy_cached(model, ids, N_GEN)
    assert torch.equal(gen, gen_c), (gen, gen_c)
    ref = {"input_ids": ids, "logits": logits.float(), "greedy_ids": gen,
           "hidden_after_layer0": caps["layer0"][0].float(), "final_hidden": caps["final"][0].float()}
    for i in moe_layers(model):
        sidx, order = caps[f"topk_i_{i}"].sort(-1)
        ref[f"topk_idx_layer{i}"] = sidx.to(torch.int64)
        ref[f"topk_weight_layer{i}"] = caps[f"topk_w_{i}"].gather(-1, order).float()
    return ids, logits, caps, margin, ref

def forward_with_capture(model, ids):
    caps = {}
    hooks = []
    for i in moe_layers(model):
        def gate_hook(mod, inp, out, i=i):
            caps[f"gate_in_{i}"] = inp[0].detach().clone()
            caps[f"topk_w_{i}"] = out[1].detach().clone()
            caps[f"topk_i_{i}"] = out[2].detach().clone()
        hooks.append(model.model.layers[i].mlp.gate.register_forward_hook(gate_hook))

    def l0_hook(mod, inp, out):
        o = out[0] if isinstance(out, tuple) else out
        caps["layer0"] = o.detach().clone()
    hooks.append(model.model.layers[0].register_forward_hook(l0_hook))

    def norm_hook(mod, inp, out):
        caps["final"] = out.detach().clone()
    hooks.append(model.model.norm.register_forward_hook(norm_hook))
    with torch.no_grad():
        out = model(ids[None], use_cache=False)
    for h in hooks:
        h.remove()
    return out.logits[0].detach().clone(), caps


def greedy_recompute(model, ids, n):
    seq = ids.clone()
    margins = []
    with torch.no_grad():
        for _ in range(n):
            lg = model(seq[None], use_cache=False).logits[0, -1]
            top2 = torch.topk(lg, 2).values
            margins.append(float(top2[0] - top2[1]))
            seq = torch.cat([seq, lg.argmax().view(1)])
    return seq[len(ids):], min(margins)


def greedy_cached(model, ids, n):
    out_ids = []
    with torch.no_grad():
        out = model(ids[None], use_cache=True)
        past = out.past_key_values
        nxt = out.logits[0, -1].argmax().view(1, 1)
        out_ids.append(int(nxt))
        for _ in range(n - 1):
            out = model(nxt, cache=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[0, -1].argmax().view(1, 1)
            out_ids.append(int(nxt))
    return torch.tensor(out_ids, dtype=torch.int64)


def load_hf(d, **kw):
    return AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                experts_implementation="eager", **kw).eval()


def bias_changes(model, caps):
    """How many (layer, token) selections change when e_score_correction_bias is zeroed (V3 only)."""
    n = 0
    tot = 0
    for i in moe_layers(model):
        gate = model.model.layers[i].mlp.gate
        if not hasattr(gate, "e_score_correction_bias"):
            return None
        g2 = copy.deepcopy(gate)
        g2.e_score_correction_bias.zero_()
        with torch.no_grad():
            idx0 = g2(caps[f"gate_in_{i}"])[2].sort(-1).values
        idx1 = caps[f"topk_i_{i}"].sort(-1).values
        n += int((idx0 != idx1).any(-1).sum())
        tot += idx1.shape[0]
    return n, tot


@torch.no_grad()
def router_gaps(model, caps):
    """Smallest score gap at the group cut and at the expert top-k cut over all MoE rows (robustness of
    the routing decision against float rounding differences in other implementations)."""
    cfg = model.config
    gmin, emin = float("inf"), float("inf")
    for i in moe_layers(model):
        gate = model.model.layers[i].mlp.gate
        x = caps[f"gate_in_{i}"].reshape(-1, cfg.hidden_size).float()
        logits = x @ gate.weight.float().t()
        E, k = logits.shape[-1], cfg.num_experts_per_tok
        ng = cfg.n_group or 1
        tg = cfg.topk_group or ng
        if hasattr(gate, "e_score_correction_bias"):
            s = logits.sigmoid() + gate.e_score_correction_bias
            G = s.view(-1, ng, E // ng).topk(2, -1).values.sum(-1)
            fill = float("-inf")
        else:
            s = logits.softmax(-1)
            G = s.view(-1, ng, E // ng).amax(-1)
            fill = 0.0
            if getattr(cfg, "topk_method", "greedy") == "greedy":
                ng = tg = 1
                G = G.amax(-1, keepdim=True)
        if tg < ng:
            Gs = G.sort(-1, descending=True).values
            gmin = min(gmin, float((Gs[:, tg - 1] - Gs[:, tg]).min()))
            keep = torch.zeros_like(G).scatter_(1, G.topk(tg, -1).indices, 1.0).bool()
            s = s.masked_fill(~keep.repeat_interleave(E // ng, -1), fill)
        ss = s.sort(-1, descending=True).values
        emin = min(emin, float((ss[:, k - 1] - ss[:, k]).min()))
    return gmin, emin


def make_variant(name, spec, out_root):
    arch, style, store, shards, seed, T = (spec[k] for k in ("arch", "style", "store", "shards", "seed", "T"))
    vdir = os.path.join(out_root, name)
    if os.path.isdir(vdir):
        shutil.rmtree(vdir)
    os.makedirs(vdir)
    torch.manual_seed(seed)

    cfg_json, config = build_config(arch, style, spec["cfg"], store, vdir)
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    Model = DeepseekV3ForCausalLM if arch == "v3" else DeepseekV2ForCausalLM
    model = Model(config).to(torch.float32).eval()
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    randomize(model, seed, spec["cfg"])

    # stored tensors in released naming; reference model = f32 on the stored values (own exact inverse)
    rel = to_released({k: v.detach().clone() for k, v in model.state_dict().items()})
    stored = make_stored(rel, store)
    eff = effective_f32(stored)
    model.load_state_dict(from_released(eff, config.n_routed_experts), strict=True)
    save_checkpoint(stored, vdir, shards)

    ids, logits, caps, margin, ref = reference_outputs(model, seed + 1, config.vocab_size, T)
    ml = moe_layers(model)
    # distinct selections (decisiveness); bias effect (V3)
    bc = bias_changes(model, caps)
    gaps = router_gaps(model, caps)
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(vdir, "reference.safetensors"),
              metadata={"format": "pt"})

    # ---- verification: reload with transformers from the written directory, compare bit-exactly
    report = {"name": name, "moe_layers": ml, "greedy_min_margin": round(margin, 4),
              "bias_changed_rows": bc,
              "router_min_gap_group_expert": [float(f"{g:.3g}") for g in gaps]}
    if store == "fp8":
        # (1) dequantized copy in released names, config without quantization_config -> from_pretrained
        with tempfile.TemporaryDirectory() as td:
            c2 = dict(cfg_json)
            c2.pop("quantization_config", None)
            with open(os.path.join(td, "config.json"), "w") as f:
                json.dump(c2, f)
            deq = effective_f32(load_all(vdir))
            save_file(deq, os.path.join(td, "model.safetensors"), metadata={"format": "pt"})
            m2 = load_hf(td)
            l2, _ = forward_with_capture(m2, ids)
            report["reload_dequantized_equal"] = bool(torch.equal(l2, logits))
            assert report["reload_dequantized_equal"]
        # (2) transformers' own FP8 loader with dequantize=True on the real sharded files (opt-in; in 5.24 its
        #     Fp8Dequantize rejects weights whose shape is not a multiple of the 128x128 scale grid)
        if not TRY_HF_FP8:
            pass
        else:
          try:
            from transformers import FineGrainedFP8Config
            m3 = load_hf(vdir, quantization_config=FineGrainedFP8Config(dequantize=True))
            l3, _ = forward_with_capture(m3, ids)
            report["hf_fp8_dequantize_maxdiff"] = float((l3 - logits).abs().max())
            report["hf_fp8_dequantize_equal"] = bool(torch.equal(l3, logits))
          except Exception as e:  # noqa: BLE001
            report["hf_fp8_dequantize"] = f"not usable: {type(e).__name__}: {str(e)[:160]}"
    else:
        m2 = load_hf(vdir)
        l2, _ = forward_with_capture(m2, ids)
        report["reload_equal"] = bool(torch.equal(l2, logits))
        sd2 = m2.state_dict()
        report["reload_state_equal"] = all(torch.equal(sd2[k].float(), v) for k, v in model.state_dict().items())
        assert report["reload_equal"] and report["reload_state_equal"], report
    # stored file must contain exactly the released names (no fused tensors)
    names = set(load_all(vdir).keys())
    assert not any("gate_up_proj" in n or n.endswith("experts.down_proj") for n in names)
    report["n_tensors"] = len(names)
    report["bytes"] = sum(os.path.getsize(os.path.join(vdir, f)) for f in os.listdir(vdir))
    # sanity: routing/attention are "decisive" (distinct expert sets across tokens)
    report["distinct_expert_sets"] = {i: len({tuple(r.tolist()) for r in ref[f"topk_idx_layer{i}"]}) for i in ml}
    report["logits_std"] = round(float(logits.std()), 3)
    att = model.model.layers[0].self_attn
    report["hf_softmax_scale"] = att.scaling
    report["hf_rope_attention_scaling"] = float(model.model.rotary_emb.attention_scaling)
    report["rope_parameters"] = dict(model.config.rope_parameters)
    return report


def load_all(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if f.startswith("model") and f.endswith(".safetensors"):
            out.update(load_file(os.path.join(d, f)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "fixtures", "models"))
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--try-hf-fp8", action="store_true",
                    help="also try transformers' FineGrainedFP8Config(dequantize=True) loader on v3_fp8")
    args = ap.parse_args()
    global TRY_HF_FP8
    TRY_HF_FP8 = args.try_hf_fp8
    print(f"torch {torch.__version__} transformers {transformers.__version__}")
    for name, spec in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        rep = make_variant(name, spec, os.path.abspath(args.out))
        print(json.dumps(rep))


if __name__ == "__main__":
    main()
