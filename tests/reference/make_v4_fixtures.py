#!/usr/bin/env python3
"""Generate tiny random DeepSeek-V4 checkpoints + reference outputs under tests/fixtures/models/v4_<name>/.

Reference = transformers' DeepseekV4ForCausalLM (models/deepseek_v4, eager attention, eager experts) in float32,
single thread. What the model computes is written down in tests/fixtures/models/V4_NOTES.md.

Each variant directory gets
  config.json          the RELEASED form (DeepSeek-V4-Flash's config.json field names: compress_ratios with one
                       extra entry per MTP layer, num_hash_layers, qk_rope_head_dim, rope_scaling{type: yarn..});
                       `layer_types` + `compress_rates` (transformers' fields) are added only where transformers
                       cannot read the released form (an HCA ratio other than 128), see VARIANTS
  model.safetensors    F32 (tid2eid I64) under the RELEASED DeepSeek tensor names (embed.weight, head.weight,
                       hc_head_fn, layers.N.attn.wq_a.weight, layers.N.ffn.experts.E.w1.weight, mtp.0.*, ...):
                       transformers' renaming in conversion_mapping.py ("deepseek_v4") inverted, fused experts
                       split per expert. Loading the folder with from_pretrained goes through that conversion.
  reference.safetensors  see REFERENCE_DOC below (also in tests/fixtures/models/README.md)

Self-checks (asserted; one JSON line per variant is printed):
  * reload: DeepseekV4ForCausalLM.from_pretrained(dir) has the same state and bit-identical logits
  * cached greedy (transformers' DeepseekV4 cache: sliding window + compressor buffers / overlap state) picks
    the same tokens as full recomputation, across CSA/HCA block boundaries and past the window; the max logit
    difference is reported; chunked prefill (prompt in two chunks) is compared too
  * well-posed: smallest top-1/top-2 greedy margin; smallest relative gap at the top-k cut of every indexer
    selection (prompt + continuation rows that choose); smallest router score gap at the expert cut; the
    float64 model selects the same indexer sets, experts and greedy tokens, and the f32 score noise is far
    below the gaps
  * not degenerate: logits std, distinct expert / index sets, fraction of SwiGLU pre-activations beyond
    swiglu_limit (routed and shared), non-zero sinks; the indexer's choice changes the logits (vs. index_topk =
    all) and so do the compressed entries (vs. masking them all out)
  * v4_mtp: the MTP block's attention/MoE/mHC weights (mtp.0.*) reload through transformers' own conversion
    (renamed to layers.<n>.* in a model with one more layer) and reproduce the MTP logits bit for bit
  * NotesModel, an independent re-implementation written from V4_NOTES.md (f64, reading the released names and
    config fields from the folder), reproduces logits, decode_logits, selections, experts and mtp_logits, both
    over the whole sequence and one token at a time with the decode state (window ring + compressor buffers)

Usage: python tests/reference/make_v4_fixtures.py [--only NAME ...] [--out tests/fixtures/models]
Deterministic: fixed seeds, torch.set_num_threads(1).
"""
import argparse
import copy
import json
import math
import os
import re
import shutil
import tempfile

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import transformers  # noqa: E402
from transformers import AutoConfig, DeepseekV4ForCausalLM  # noqa: E402
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as mv4  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------------------------------------
# Variants. `cfg` is written to config.json in the released field names; `hf_extra` adds transformers' fields
# where the released form cannot be read by transformers 5.24 (its compress_ratios map accepts only 0/4/128).
# ----------------------------------------------------------------------------------------------------------
COMMON = dict(
    architectures=["DeepseekV4ForCausalLM"], model_type="deepseek_v4", attention_bias=False, attention_dropout=0.0,
    bos_token_id=0, eos_token_id=1, hidden_act="silu", initializer_range=0.02, norm_topk_prob=True,
    num_key_value_heads=1, rms_norm_eps=1e-6, tie_word_embeddings=False, topk_method="noaux_tc",
    torch_dtype="float32", use_cache=True, n_shared_experts=1)

VARIANTS = {
    # every layer type (sliding / CSA m=4 + indexer / HCA m'=8), hash + routed MoE, hc_mult 4, YaRN on the
    # compressed layers, sqrtsoftplus router; T = 61 (not a block multiple: the cache holds partial blocks)
    "v4_tiny": dict(
        seed=4123, T=61, n_gen=12,
        cfg=dict(COMMON, vocab_size=256, hidden_size=64, moe_intermediate_size=16, num_hidden_layers=4,
                 num_attention_heads=4, head_dim=32, qk_rope_head_dim=8, q_lora_rank=48, o_groups=2,
                 o_lora_rank=24, n_routed_experts=8, num_experts_per_tok=2, num_hash_layers=2,
                 scoring_func="sqrtsoftplus", routed_scaling_factor=1.5, swiglu_limit=2.5, sliding_window=16,
                 compress_ratios=[0, 4, 8, 4], compress_rope_theta=160000.0, rope_theta=10000.0,
                 rope_scaling=dict(type="yarn", factor=4, original_max_position_embeddings=64, beta_fast=32,
                                   beta_slow=1),
                 max_position_embeddings=256, index_n_heads=8, index_head_dim=16, index_topk=4,
                 hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6, num_nextn_predict_layers=0),
        hf_extra=dict(layer_types=["sliding_attention", "compressed_sparse_attention",
                                   "heavily_compressed_attention", "compressed_sparse_attention"],
                      compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8})),
    # pure released config form (HCA ratio 128, the released value; compress_ratios has the MTP's extra 0),
    # one MTP layer, hc_mult 2, 7 Sinkhorn iterations, sigmoid router, no rope scaling; T = 270 (> 2 HCA blocks)
    "v4_mtp": dict(
        seed=4270, T=270, n_gen=10, mtp=True, gap_min=1e-4,
        drop=("hidden_after_layer0", "hc_head_out", "attn_hc_post_layer0", "attn_hc_comb_layer0",
              "attn_hc_collapsed_layer0", "attn_out_layer0", "attn_out_layer1"),  # folder size
        cfg=dict(COMMON, vocab_size=256, hidden_size=64, moe_intermediate_size=16, num_hidden_layers=3,
                 num_attention_heads=4, head_dim=32, qk_rope_head_dim=16, q_lora_rank=32, o_groups=4,
                 o_lora_rank=16, n_routed_experts=8, num_experts_per_tok=3, num_hash_layers=1,
                 scoring_func="sigmoid", routed_scaling_factor=2.5, swiglu_limit=2.0, sliding_window=32,
                 compress_ratios=[0, 4, 128, 0], compress_rope_theta=40000.0, rope_theta=10000.0,
                 rope_scaling=None, max_position_embeddings=1024, index_n_heads=8, index_head_dim=16,
                 index_topk=8, hc_mult=2, hc_sinkhorn_iters=7, hc_eps=1e-6, num_nextn_predict_layers=1),
        hf_extra=None),
}

REFERENCE_DOC = """\
reference.safetensors (T prompt rows, G greedy steps, hc = hc_mult, d = hidden_size):
  input_ids               I64 [T]           prompt, positions 0..T-1
  logits                  F32 [T, V]        full forward, every row
  greedy_ids              I64 [G]           greedy continuation (cached decode == full recompute, checked)
  decode_logits           F32 [G, V]        full forward over input_ids + greedy_ids, rows T..T+G-1 (what a cached
                                            decode that is fed greedy_ids one at a time must give)
  hidden_after_layer0     F32 [T, hc, d]    mHC streams after decoder layer 0
  streams_last            F32 [T, hc, d]    mHC streams after the last decoder layer (input of hc_head)
  hc_head_out             F32 [T, d]        after the hyper head, before model norm
  final_hidden            F32 [T, d]        after the final norm (input of head)
  attn_out_layerN         F32 [T, d]        output of layer N's attention (after wo_b, before the mHC post mix)
  attn_hc_post_layer0     F32 [T, hc]       layer 0 attention mHC: post weights (2*sigmoid)
  attn_hc_comb_layer0     F32 [T, hc, hc]   layer 0 attention mHC: Sinkhorn comb matrix (comb[j, k]: stream j -> k)
  attn_hc_collapsed_layer0 F32 [T, d]       layer 0 attention mHC: collapsed input (before attn_norm)
  compressed_kv_layerN    F32 [T//m, D]     CSA/HCA layer N: compressed KV entries of the prompt (after norm + RoPE)
  index_kv_layerN         F32 [T//4, c]     CSA layer N: the indexer's compressed keys of the prompt
  index_topk_layerN       I64 [T, k]        CSA layer N: indexer selection per prompt row, ascending, -1 padded
                                            (entries w < (t+1)//4 only; all of them when there are <= k)
  decode_index_topk_layerN I64 [G, k]       the same for rows T..T+G-1 of input_ids + greedy_ids
  topk_idx_layerN         I64 [T, top_k]    MoE layer N: chosen experts per row, ascending (hash layers: tid2eid row)
  topk_weight_layerN      F32 [T, top_k]    their gate weights (renormalised, x routed_scaling_factor), same order
  (v4_mtp only)
  mtp_input_ids           I64 [T-1]         input_ids[1:], the tokens the MTP embeds (pair i: streams_last[i], x_{i+1})
  mtp_hidden              F32 [T-1, d]      after the MTP's hc_head and mtp.0.norm
  mtp_logits              F32 [T-1, V]      head(mtp_hidden): the MTP's prediction of x_{i+2} at row i
"""


def released_config(spec):
    out = {k: v for k, v in spec["cfg"].items() if v is not None}
    if spec.get("hf_extra"):
        out.update(spec["hf_extra"])
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------------------------------------
# transformers name <-> released DeepSeek name (inverse of conversion_mapping.py "deepseek_v4")
# ----------------------------------------------------------------------------------------------------------
TOP_RULES = [
    (r"^model\.embed_tokens\.weight$", "embed.weight"),
    (r"^lm_head\.weight$", "head.weight"),
    (r"^model\.norm\.weight$", "norm.weight"),
    (r"^model\.hc_head\.hc_(fn|base|scale)$", r"hc_head_\1"),
]
LAYER_RULES = [  # on the part after "model.layers.N."
    (r"^self_attn\.sinks$", "attn.attn_sink"),
    (r"^self_attn\.q_a_proj\.", "attn.wq_a."),
    (r"^self_attn\.q_a_norm\.", "attn.q_norm."),
    (r"^self_attn\.q_b_proj\.", "attn.wq_b."),
    (r"^self_attn\.kv_proj\.", "attn.wkv."),
    (r"^self_attn\.kv_norm\.", "attn.kv_norm."),
    (r"^self_attn\.o_a_proj\.", "attn.wo_a."),
    (r"^self_attn\.o_b_proj\.", "attn.wo_b."),
    (r"^self_attn\.compressor\.indexer\.position_bias$", "attn.indexer.compressor.ape"),
    (r"^self_attn\.compressor\.indexer\.kv_proj\.", "attn.indexer.compressor.wkv."),
    (r"^self_attn\.compressor\.indexer\.gate_proj\.", "attn.indexer.compressor.wgate."),
    (r"^self_attn\.compressor\.indexer\.kv_norm\.", "attn.indexer.compressor.norm."),
    (r"^self_attn\.compressor\.indexer\.q_b_proj\.", "attn.indexer.wq_b."),
    (r"^self_attn\.compressor\.indexer\.scorer\.weights_proj\.", "attn.indexer.weights_proj."),
    (r"^self_attn\.compressor\.position_bias$", "attn.compressor.ape"),
    (r"^self_attn\.compressor\.kv_proj\.", "attn.compressor.wkv."),
    (r"^self_attn\.compressor\.gate_proj\.", "attn.compressor.wgate."),
    (r"^self_attn\.compressor\.kv_norm\.", "attn.compressor.norm."),
    (r"^mlp\.gate\.e_score_correction_bias$", "ffn.gate.bias"),
    (r"^mlp\.gate\.weight$", "ffn.gate.weight"),
    (r"^mlp\.gate\.tid2eid$", "ffn.gate.tid2eid"),
    (r"^mlp\.shared_experts\.gate_proj\.", "ffn.shared_experts.w1."),
    (r"^mlp\.shared_experts\.down_proj\.", "ffn.shared_experts.w2."),
    (r"^mlp\.shared_experts\.up_proj\.", "ffn.shared_experts.w3."),
    (r"^input_layernorm\.", "attn_norm."),
    (r"^post_attention_layernorm\.", "ffn_norm."),
    (r"^attn_hc\.(fn|base|scale)$", r"hc_attn_\1"),
    (r"^ffn_hc\.(fn|base|scale)$", r"hc_ffn_\1"),
]


def layer_to_released(rest, t, prefix):
    """One decoder-layer tensor (name after 'model.layers.N.') -> {released name: tensor}."""
    if rest == "mlp.experts.gate_up_proj":  # [E, 2I, H]: gate (w1) rows first, then up (w3)
        inter = t.shape[1] // 2
        out = {}
        for e in range(t.shape[0]):
            out[f"{prefix}ffn.experts.{e}.w1.weight"] = t[e, :inter].clone()
            out[f"{prefix}ffn.experts.{e}.w3.weight"] = t[e, inter:].clone()
        return out
    if rest == "mlp.experts.down_proj":  # [E, H, I]
        return {f"{prefix}ffn.experts.{e}.w2.weight": t[e].clone() for e in range(t.shape[0])}
    for a, b in LAYER_RULES:
        if re.match(a, rest):
            return {prefix + re.sub(a, b, rest, count=1): t.clone()}
    raise KeyError(rest)


def to_released(sd):
    out = {}
    for name, t in sd.items():
        m = re.match(r"^model\.layers\.(\d+)\.(.*)$", name)
        if m:
            out.update(layer_to_released(m.group(2), t, f"layers.{m.group(1)}."))
            continue
        for a, b in TOP_RULES:
            if re.match(a, name):
                out[re.sub(a, b, name)] = t.clone()
                break
        else:
            raise KeyError(name)
    return out


def order_key(name):
    m = re.match(r"^(layers|mtp)\.(\d+)\.", name)
    if m:
        return (1 if m.group(1) == "layers" else 2, int(m.group(2)), name)
    return (0 if name.startswith("embed") else 3, 0, name)


# ----------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------
GAINS = [  # (substring of the transformers name, gain g: weight ~ N(0, (g / sqrt(fan_in))^2))
    ("lm_head", 3.0), ("mlp.gate.weight", 1.5), ("q_b_proj", 1.6), ("q_a_proj", 1.6), ("kv_proj", 1.3),
    ("scorer.weights_proj", 2.0), ("gate_proj", 1.3), ("up_proj", 1.3),
]


def rand_tensor(name, shape, g, cfg):
    """One 'decisive' random tensor for transformers parameter `name` (the 0.02 init gives near-uniform routing,
    mixing and gating)."""
    if name.endswith("tid2eid"):  # distinct experts per token id
        E, K = cfg.n_routed_experts, cfg.num_experts_per_tok
        return torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(shape[0])]).to(torch.int64)
    if name.endswith("e_score_correction_bias"):
        v = (torch.rand(shape, generator=g) * 0.15 + 0.05) * torch.where(
            torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    elif name.endswith("sinks"):
        v = torch.randn(shape, generator=g) * 1.5
    elif name.endswith("position_bias"):  # ape [m, coff*D]
        v = torch.randn(shape, generator=g) * 0.7
    elif name.endswith(("attn_hc.fn", "ffn_hc.fn", "hc_head.hc_fn")):  # [mix, hc*d] on the rms-normed streams
        v = torch.randn(shape, generator=g) * (1.0 / math.sqrt(shape[1]))
    elif name.endswith(("attn_hc.base", "ffn_hc.base", "hc_head.hc_base")):
        v = torch.randn(shape, generator=g) * 0.5
    elif name.endswith(("attn_hc.scale", "ffn_hc.scale", "hc_head.hc_scale")):
        v = 0.5 + torch.rand(shape, generator=g)
    elif "norm" in name:  # RMSNorm weights
        v = 1.0 + 0.1 * torch.randn(shape, generator=g)
    elif name.endswith("embed_tokens.weight"):
        v = torch.randn(shape, generator=g)
    elif name.endswith("experts.gate_up_proj"):  # [E, 2I, H]
        v = torch.randn(shape, generator=g) * (1.3 / math.sqrt(shape[-1]))
    elif name.endswith("experts.down_proj"):  # [E, H, I]
        v = torch.randn(shape, generator=g) * (1.5 / math.sqrt(shape[-1]))
    elif len(shape) == 2:  # nn.Linear [out, in]
        gain = next((gg for key, gg in GAINS if key in name), 1.0)
        v = torch.randn(shape, generator=g) * (gain / math.sqrt(shape[1]))
    else:
        raise RuntimeError(f"unhandled parameter {name} {tuple(shape)}")
    return v.to(torch.float32)


def randomize(module, seed, cfg):
    g = torch.Generator().manual_seed(seed)
    sd = module.state_dict()
    module.load_state_dict({name: rand_tensor(name, sd[name].shape, g, cfg) for name in sorted(sd)}, strict=True)


def load_hf(d):
    return DeepseekV4ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation="eager").eval()


def build_model(config):
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    return DeepseekV4ForCausalLM(config).to(torch.float32).eval()


# ----------------------------------------------------------------------------------------------------------
# MTP (transformers has no MTP code: `mtp.*` is ignored on load). Written from DeepSeek's V4 inference
# MTPBlock: e = enorm(embed(x_{i+1})); h = hnorm(streams_i) per stream; u = e_proj(e)[:, None] + h_proj(h);
# u = Block(layer_id = n_layers)(u); logits = head(norm(hc_head_mtp(u))) with the MTP's own hc_head_* and norm.
# The block is transformers' DeepseekV4DecoderLayer at layer_idx = n_layers of a config with one more layer
# (layer type from compress_ratios[n_layers], MoE "moe" since n_layers >= num_hash_layers).
# ----------------------------------------------------------------------------------------------------------
def mtp_config(config, cfg_json):
    n = config.num_hidden_layers
    ratio = cfg_json["compress_ratios"][n]
    ltype = {0: "sliding_attention", 4: "compressed_sparse_attention"}.get(ratio, "heavily_compressed_attention")
    c = copy.deepcopy(config)
    c.num_hidden_layers = n + 1
    c.layer_types = list(config.layer_types) + [ltype]
    c.mlp_layer_types = list(config.mlp_layer_types) + (
        ["hash_moe"] if n < cfg_json.get("num_hash_layers", 0) else ["moe"])
    return c


class MTP(nn.Module):
    def __init__(self, config, cfg_json):
        super().__init__()
        n = config.num_hidden_layers
        cm = mtp_config(config, cfg_json)
        d, eps = config.hidden_size, config.rms_norm_eps
        self.block = mv4.DeepseekV4DecoderLayer(cm, n)
        self.e_proj = nn.Linear(d, d, bias=False)
        self.h_proj = nn.Linear(d, d, bias=False)
        self.enorm = mv4.DeepseekV4RMSNorm(d, eps)
        self.hnorm = mv4.DeepseekV4RMSNorm(d, eps)
        self.norm = mv4.DeepseekV4RMSNorm(d, eps)
        self.hc_head = mv4.DeepseekV4HyperHead(config)

    def forward(self, model, streams, next_ids):
        """streams [S, hc, d] (main, after the last layer), next_ids [S] (x_{i+1}) at positions 0..S-1."""
        kw = capture_layer_kwargs(model, next_ids)  # rotary tables / mask / positions for S rows
        e = self.enorm(model.model.embed_tokens(next_ids[None]))
        h = self.hnorm(streams[None])
        u = self.e_proj(e).unsqueeze(2) + self.h_proj(h)
        out = self.block(u, input_ids=next_ids[None], position_embeddings=kw["position_embeddings"],
                         position_ids=kw["position_ids"], attention_mask=kw["attention_mask"], cache=None)
        hid = self.norm(self.hc_head(out))
        return out[0], hid[0], model.lm_head(hid)[0]

    def released(self, n):
        out = {}
        for name, t in self.block.state_dict().items():
            out.update(layer_to_released(name, t, "mtp.0."))
        for k in ("e_proj", "h_proj", "enorm", "hnorm", "norm"):
            out[f"mtp.0.{k}.weight"] = getattr(self, k).weight.detach().clone()
        for k in ("fn", "base", "scale"):
            out[f"mtp.0.hc_head_{k}"] = getattr(self.hc_head, f"hc_{k}").detach().clone()
        return out


# ----------------------------------------------------------------------------------------------------------
# Captures
# ----------------------------------------------------------------------------------------------------------
def capture_layer_kwargs(model, ids):
    """The kwargs transformers hands to decoder layer 0 for a full forward over `ids` (mask, rope, positions)."""
    caps = {}

    def pre(mod, args, kwargs):
        caps.update(kwargs)
        raise _Stop()
    h = model.model.layers[0].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            model(ids[None], use_cache=False)
    except _Stop:
        pass
    finally:
        h.remove()
    return caps


class _Stop(Exception):
    pass


def layer_kinds(model):
    return [layer.self_attn.layer_type for layer in model.model.layers]


@torch.no_grad()
def forward_capture(model, ids):
    """Full forward (no cache) with the intermediates of REFERENCE_DOC."""
    caps = {}
    hooks = []
    layers = model.model.layers
    for i, layer in enumerate(layers):
        def attn_hook(mod, inp, out, i=i):
            caps[f"attn_out_{i}"] = out[0][0].clone()
        hooks.append(layer.self_attn.register_forward_hook(attn_hook))

        def gate_hook(mod, inp, out, i=i):
            caps[f"gate_in_{i}"] = inp[0].reshape(-1, inp[0].shape[-1]).clone()
            caps[f"topk_w_{i}"] = out[1].clone()
            caps[f"topk_i_{i}"] = out[2].clone()
        hooks.append(layer.mlp.gate.register_forward_hook(gate_hook))
        comp = layer.self_attn.compressor
        if comp is not None:
            def comp_hook(mod, inp, out, i=i):
                caps[f"ckv_{i}"] = out[0][0, 0].clone()
            hooks.append(comp.register_forward_hook(comp_hook))
            if isinstance(comp, mv4.DeepseekV4CSACompressor):
                def idx_hook(mod, inp, out, i=i):
                    caps[f"idx_{i}"] = out[0].clone()
                hooks.append(comp.indexer.register_forward_hook(idx_hook))

                def score_hook(mod, inp, out, i=i):
                    caps[f"iscore_{i}"] = out[0].clone()
                    caps[f"ikv_{i}"] = inp[1][0].clone()
                hooks.append(comp.indexer.scorer.register_forward_hook(score_hook))

    def l0_hook(mod, inp, out):
        caps["layer0"] = out[0].clone()
    hooks.append(layers[0].register_forward_hook(l0_hook))

    def hc0_hook(mod, inp, out):
        caps["hc0_post"], caps["hc0_comb"], caps["hc0_collapsed"] = (o[0].clone() for o in out)
    hooks.append(layers[0].attn_hc.register_forward_hook(hc0_hook))

    def head_hook(mod, inp, out):
        caps["streams_last"] = inp[0][0].clone()
        caps["hc_head_out"] = out[0].clone()
    hooks.append(model.model.hc_head.register_forward_hook(head_hook))

    def norm_hook(mod, inp, out):
        caps["final"] = out[0].clone()
    hooks.append(model.model.norm.register_forward_hook(norm_hook))
    try:
        logits = model(ids[None], use_cache=False).logits[0].clone()
    finally:
        for h in hooks:
            h.remove()
    return logits, caps


def effective_selection(idx, k):
    """transformers' [S, k'] top-k (with -1 for invalid picks) -> ascending valid entries, -1 padded to k."""
    out = torch.full((idx.shape[0], k), -1, dtype=torch.int64)
    for s in range(idx.shape[0]):
        v = sorted(int(x) for x in idx[s].tolist() if int(x) >= 0)
        out[s, : len(v)] = torch.tensor(v, dtype=torch.int64)
    return out


@torch.no_grad()
def greedy_recompute(model, ids, n):
    seq = ids.clone()
    margins = []
    for _ in range(n):
        lg = model(seq[None], use_cache=False).logits[0, -1]
        top2 = torch.topk(lg, 2).values
        margins.append(float(top2[0] - top2[1]))
        seq = torch.cat([seq, lg.argmax().view(1)])
    return seq[len(ids):], min(margins)


def _cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else out.past_key_values


@torch.no_grad()
def greedy_cached(model, ids, n, chunks=None):
    """transformers' own cache: prefill (in `chunks` pieces if given), then one token per step. Returns the ids
    and the logits of every step ([n, V]: step 0 = last prompt row)."""
    cache = None
    pieces = [ids] if not chunks else list(torch.split(ids, chunks))
    for p in pieces:
        out = model(p[None], cache=cache, use_cache=True)
        cache = _cache(out)
    rows = [out.logits[0, -1].clone()]
    toks = [int(rows[-1].argmax())]
    for _ in range(n - 1):
        out = model(torch.tensor([[toks[-1]]]), cache=cache, use_cache=True)
        cache = _cache(out)
        rows.append(out.logits[0, -1].clone())
        toks.append(int(rows[-1].argmax()))
    return torch.tensor(toks, dtype=torch.int64), torch.stack(rows)


# ----------------------------------------------------------------------------------------------------------
# Margins
# ----------------------------------------------------------------------------------------------------------
def index_gaps(model, caps):
    """Smallest relative gap (k-th - (k+1)-th visible score) / max |visible score| over the rows that choose
    (more than k visible entries), every CSA layer; also the number of such rows and of exact-zero scores."""
    k = model.config.index_topk
    m = model.config.compress_rates["compressed_sparse_attention"]
    gmin, rows, zeros = float("inf"), 0, 0
    for i, lt in enumerate(layer_kinds(model)):
        if lt != "compressed_sparse_attention":
            continue
        sc = caps[f"iscore_{i}"]
        for t in range(sc.shape[0]):
            nvis = (t + 1) // m
            v = sc[t, :nvis]
            zeros += int((v == 0).sum())
            if nvis > k:
                rows += 1
                s = v.sort(descending=True).values
                gmin = min(gmin, float((s[k - 1] - s[k]) / s.abs().max()))
    return gmin, rows, zeros


def router_gaps(model, caps):
    """Smallest (k-th - (k+1)-th) of score + bias over the rows of every top-k routed layer."""
    cfg = model.config
    gmin = float("inf")
    for i, layer in enumerate(model.model.layers):
        gate = layer.mlp.gate
        if not isinstance(gate, mv4.DeepseekV4TopKRouter):
            continue
        x = caps[f"gate_in_{i}"]
        s = gate.score_fn(x @ gate.weight.detach().t()) + gate.e_score_correction_bias
        ss = s.sort(-1, descending=True).values
        k = cfg.num_experts_per_tok
        gmin = min(gmin, float((ss[:, k - 1] - ss[:, k]).min()))
    return gmin


def selections(model, caps, n):
    k = model.config.index_topk
    sel = {}
    for i, lt in enumerate(layer_kinds(model)):
        if lt == "compressed_sparse_attention":
            sel[f"index_{i}"] = effective_selection(caps[f"idx_{i}"], k)
        sel[f"experts_{i}"] = caps[f"topk_i_{i}"].sort(-1).values
    return sel


@torch.no_grad()
def swiglu_stats(model, ids):
    """Fraction of gate pre-activations > limit and of |up| > limit, routed experts and shared experts."""
    lim = model.config.swiglu_limit
    st = dict(routed_gate=[0, 0], routed_up=[0, 0], shared_gate=[0, 0], shared_up=[0, 0])
    patched = []
    for layer in model.model.layers:
        ex = layer.mlp.experts
        orig = ex._apply_gate

        def wrapped(gate_up, orig=orig):
            gte, up = gate_up.chunk(2, dim=-1)
            st["routed_gate"][0] += int((gte > lim).sum())
            st["routed_gate"][1] += gte.numel()
            st["routed_up"][0] += int((up.abs() > lim).sum())
            st["routed_up"][1] += up.numel()
            return orig(gate_up)
        ex._apply_gate = wrapped
        patched.append(ex)
    hooks = []
    for layer in model.model.layers:
        sh = layer.mlp.shared_experts

        def g_hook(mod, inp, out):
            st["shared_gate"][0] += int((out > lim).sum())
            st["shared_gate"][1] += out.numel()

        def u_hook(mod, inp, out):
            st["shared_up"][0] += int((out.abs() > lim).sum())
            st["shared_up"][1] += out.numel()
        hooks += [sh.gate_proj.register_forward_hook(g_hook), sh.up_proj.register_forward_hook(u_hook)]
    try:
        model(ids[None], use_cache=False)
    finally:
        for h in hooks:
            h.remove()
        for ex in patched:
            del ex._apply_gate
    return {k: round(a / b, 4) for k, (a, b) in st.items()}


@torch.no_grad()
def logits_with(model, ids, **cfg_changes):
    """Same weights, config changed (e.g. index_topk): logits of a full forward."""
    c = copy.deepcopy(model.config)
    for k, v in cfg_changes.items():
        setattr(c, k, v)
    m2 = build_model(c)
    m2.load_state_dict(model.state_dict(), strict=True)
    return m2(ids[None], use_cache=False).logits[0]


# ----------------------------------------------------------------------------------------------------------
def make_variant(name, spec, out_root):
    seed, T, n_gen = spec["seed"], spec["T"], spec["n_gen"]
    vdir = os.path.join(out_root, name)
    if os.path.isdir(vdir):
        shutil.rmtree(vdir)
    os.makedirs(vdir)
    torch.manual_seed(seed)
    cfg_json = released_config(spec)
    with open(os.path.join(vdir, "config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2)
        f.write("\n")
    config = AutoConfig.from_pretrained(vdir)
    model = build_model(config)
    randomize(model, seed, config)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stored = to_released(sd)
    mtp = None
    if spec.get("mtp"):
        mtp = MTP(config, cfg_json).to(torch.float32).eval()
        randomize(mtp, seed + 3, config)
        stored.update(mtp.released(config.num_hidden_layers))
    stored = {k: stored[k].contiguous() for k in sorted(stored, key=order_key)}
    save_file(stored, os.path.join(vdir, "model.safetensors"), metadata={"format": "pt"})

    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(2, config.vocab_size, (T,), generator=g, dtype=torch.int64)
    logits, caps = forward_capture(model, ids)
    gen, margin = greedy_recompute(model, ids, n_gen)
    gen_c, rows_c = greedy_cached(model, ids, n_gen)
    all_ids = torch.cat([ids, gen])
    la, caps_all = forward_capture(model, all_ids)
    full_rows = la[T - 1: T - 1 + n_gen]
    k = config.index_topk
    kinds = layer_kinds(model)

    ref = {"input_ids": ids, "logits": logits, "greedy_ids": gen, "decode_logits": la[T:].clone(),
           "hidden_after_layer0": caps["layer0"], "streams_last": caps["streams_last"],
           "hc_head_out": caps["hc_head_out"], "final_hidden": caps["final"],
           "attn_hc_post_layer0": caps["hc0_post"], "attn_hc_comb_layer0": caps["hc0_comb"],
           "attn_hc_collapsed_layer0": caps["hc0_collapsed"]}
    for i, lt in enumerate(kinds):
        ref[f"attn_out_layer{i}"] = caps[f"attn_out_{i}"]
        if lt != "sliding_attention":
            ref[f"compressed_kv_layer{i}"] = caps[f"ckv_{i}"]
        if lt == "compressed_sparse_attention":
            ref[f"index_kv_layer{i}"] = caps[f"ikv_{i}"]
            ref[f"index_topk_layer{i}"] = effective_selection(caps[f"idx_{i}"], k)
            ref[f"decode_index_topk_layer{i}"] = effective_selection(caps_all[f"idx_{i}"], k)[T:].clone()
        sidx, order = caps[f"topk_i_{i}"].sort(-1)
        ref[f"topk_idx_layer{i}"] = sidx.to(torch.int64)
        ref[f"topk_weight_layer{i}"] = caps[f"topk_w_{i}"].gather(-1, order)

    report = {"name": name, "T": T, "n_gen": n_gen, "layer_types": kinds,
              "mlp_layer_types": list(config.mlp_layer_types),
              "compress_rates": dict(config.compress_rates), "sliding_window": config.sliding_window,
              "index_topk": k, "greedy_min_margin": round(margin, 4)}
    # cached decode (transformers' cache) == full recomputation
    report["hf_cached_greedy_equals_recompute"] = bool(torch.equal(gen, gen_c))
    report["hf_cached_vs_full_max_logit_diff"] = float((rows_c - full_rows).abs().max())
    assert torch.equal(gen, gen_c), (gen, gen_c)
    assert report["hf_cached_vs_full_max_logit_diff"] < 1e-4, report
    chunk = [T // 2 + 3, T - (T // 2 + 3)]
    gen_ch, rows_ch = greedy_cached(model, ids, n_gen, chunks=chunk)
    report["hf_chunked_prefill"] = chunk
    report["hf_chunked_prefill_greedy_equal"] = bool(torch.equal(gen, gen_ch))
    report["hf_chunked_prefill_max_logit_diff"] = float((rows_ch - full_rows).abs().max())
    # the full forward of prompt + continuation reproduces the prompt rows
    report["decode_prompt_rows_max_diff"] = float((la[:T] - logits).abs().max())

    # well-posedness
    ig, irows, izeros = index_gaps(model, caps_all)
    report["index_min_rel_gap_at_cut"] = ig
    report["index_rows_that_choose"] = irows
    report["index_exact_zero_scores"] = izeros
    report["router_min_gap_at_cut"] = router_gaps(model, caps_all)
    m64 = copy.deepcopy(model).double()
    la64, caps64 = forward_capture(m64, all_ids)
    s32, s64 = selections(model, caps_all, all_ids.numel()), selections(m64, caps64, all_ids.numel())
    report["f64_same_selections"] = all(torch.equal(s32[x], s64[x]) for x in s32)
    report["f64_same_greedy"] = bool(torch.equal(la64[T - 1: T - 1 + n_gen].argmax(-1), gen))
    noise = 0.0
    for i, lt in enumerate(kinds):
        if lt == "compressed_sparse_attention":
            a, b = caps_all[f"iscore_{i}"].double(), caps64[f"iscore_{i}"]
            noise = max(noise, float((a - b).abs().max() / b.abs().max()))
    report["index_f32_score_noise"] = noise
    report["logits_f32_vs_f64_max_diff"] = float((la.double() - la64).abs().max())
    del m64
    assert report["f64_same_selections"] and report["f64_same_greedy"], report
    gap_min = spec.get("gap_min", 1e-3)
    assert margin > 0.05, report
    assert ig > max(gap_min, 100 * noise), report
    assert report["router_min_gap_at_cut"] > gap_min, report

    # not degenerate
    report["logits_std"] = round(float(logits.std()), 3)
    report["distinct_expert_sets"] = {i: len({tuple(r.tolist()) for r in ref[f"topk_idx_layer{i}"]})
                                      for i in range(len(kinds))}
    report["distinct_index_sets"] = {i: len({tuple(r.tolist()) for r in ref[f"index_topk_layer{i}"]})
                                     for i, lt in enumerate(kinds) if lt == "compressed_sparse_attention"}
    report["swiglu_beyond_limit"] = swiglu_stats(model, ids)
    assert all(v > 0 for v in report["swiglu_beyond_limit"].values()), report
    report["sinks_abs_min"] = round(min(float(layer.self_attn.sinks.detach().abs().min())
                                        for layer in model.model.layers), 4)
    # the indexer decides: choosing every visible entry instead changes the logits
    lall = logits_with(model, ids, index_topk=4096)
    report["logits_diff_vs_index_topk_all"] = float((lall - logits).abs().max())
    assert report["logits_diff_vs_index_topk_all"] > 1e-2, report
    # the compressed entries matter: zeroing the CSA/HCA compressor outputs changes the logits
    report["logits_diff_without_compressed_kv"] = float((no_compressed_logits(model, ids) - logits).abs().max())
    assert report["logits_diff_without_compressed_kv"] > 1e-2, report

    if mtp is not None:
        with torch.no_grad():
            _, mtp_hid, mtp_logits = mtp(model, caps["streams_last"][:-1], ids[1:])
        ref.update(mtp_input_ids=ids[1:].clone(), mtp_hidden=mtp_hid, mtp_logits=mtp_logits)
        report["mtp_logits_std"] = round(float(mtp_logits.std()), 3)
        report["mtp_top1_agrees_with_next_main_top1"] = int(
            (mtp_logits.argmax(-1)[:-1] == logits.argmax(-1)[1:-1]).sum())
        report["mtp_reload_equal"] = mtp_reload_check(vdir, cfg_json, config, caps["streams_last"][:-1], ids[1:],
                                                      mtp_logits)
        assert report["mtp_reload_equal"], report

    ref = {kk: (v.float() if v.is_floating_point() else v).contiguous() for kk, v in ref.items()
           if kk not in spec.get("drop", ())}
    save_file(ref, os.path.join(vdir, "reference.safetensors"), metadata={"format": "pt"})

    # reload from the written directory (released names through transformers' conversion): bit-equal
    m2 = load_hf(vdir)
    sd2 = m2.state_dict()
    report["reload_state_equal"] = set(sd2) == set(sd) and all(torch.equal(sd2[x], sd[x]) for x in sd)
    with torch.no_grad():
        l2 = m2(ids[None], use_cache=False).logits[0]
    report["reload_equal"] = bool(torch.equal(l2, logits))
    assert report["reload_equal"] and report["reload_state_equal"], report
    names = set(load_file(os.path.join(vdir, "model.safetensors")).keys())
    assert not any("gate_up_proj" in x or "model." in x for x in names)
    report["n_tensors"] = len(names)
    notes_check(vdir, load_file(os.path.join(vdir, "reference.safetensors")), report)
    report["bytes"] = sum(os.path.getsize(os.path.join(vdir, f)) for f in os.listdir(vdir))
    return report


@torch.no_grad()
def no_compressed_logits(model, ids):
    """Logits with every compressed entry masked out (CSA and HCA layers see their window only)."""
    saved = []
    for layer in model.model.layers:
        comp = layer.self_attn.compressor
        if comp is None:
            continue
        orig = comp.forward

        def fwd(*a, orig=orig, **kw):
            kv, bias = orig(*a, **kw)
            return kv[:, :, :0], (bias[..., :0] if bias is not None else None)
        comp.forward = fwd
        saved.append(comp)
    try:
        return model(ids[None], use_cache=False).logits[0]
    finally:
        for comp in saved:
            del comp.forward


@torch.no_grad()
def mtp_reload_check(vdir, cfg_json, config, streams, next_ids, mtp_logits):
    """Load mtp.0.* back: block weights via transformers' conversion (as layers.<n>.* of an (n+1)-layer model),
    the MTP's own tensors from the file; recompute the MTP logits; must be bit-identical."""
    n = config.num_hidden_layers
    raw = load_file(os.path.join(vdir, "model.safetensors"))
    with tempfile.TemporaryDirectory() as td:
        c2 = dict(cfg_json)
        cm = mtp_config(config, cfg_json)
        c2.update(num_hidden_layers=n + 1, layer_types=cm.layer_types, mlp_layer_types=cm.mlp_layer_types,
                  compress_rates=dict(config.compress_rates), num_nextn_predict_layers=0)
        c2.pop("compress_ratios", None)
        c2.pop("num_hash_layers", None)
        with open(os.path.join(td, "config.json"), "w") as f:
            json.dump(c2, f)
        own = ("e_proj.", "h_proj.", "enorm.", "hnorm.", "norm.", "hc_head_")
        moved = {}
        for k, v in raw.items():
            if k.startswith("mtp.0."):
                rest = k[len("mtp.0."):]
                if not rest.startswith(own):
                    moved[f"layers.{n}.{rest}"] = v
            else:
                moved[k] = v
        save_file(moved, os.path.join(td, "model.safetensors"), metadata={"format": "pt"})
        big = load_hf(td)
    main = load_hf(vdir)
    mtp = MTP(config, cfg_json).to(torch.float32).eval()
    mtp.block.load_state_dict(big.model.layers[n].state_dict(), strict=True)
    for k in ("e_proj", "h_proj", "enorm", "hnorm", "norm"):
        getattr(mtp, k).weight.copy_(raw[f"mtp.0.{k}.weight"])
    for k in ("fn", "base", "scale"):
        getattr(mtp.hc_head, f"hc_{k}").copy_(raw[f"mtp.0.hc_head_{k}"])
    _, _, lg = mtp(main, streams, next_ids)
    return bool(torch.equal(lg, mtp_logits))


# ----------------------------------------------------------------------------------------------------------
# Independent reference, written from tests/fixtures/models/V4_NOTES.md (not from transformers' code): reads the
# RELEASED tensor names and the RELEASED config fields straight from the folder. Two evaluation orders:
#   notes_forward(...)  whole sequence at once (the formulas of the notes)
#   notes_stream(...)   one token at a time with the official decode state (window ring of W keys, per
#                       compressor the pending tokens of the open block and, for CSA, the previous block's
#                       first halves), i.e. what a cached decoder keeps
# Both must reproduce transformers' logits / decode_logits / selections (asserted in make_variant).
# ----------------------------------------------------------------------------------------------------------
class NotesModel:
    def __init__(self, vdir):
        self.W = {k: v.double() if v.is_floating_point() else v for k, v in
                  load_file(os.path.join(vdir, "model.safetensors")).items()}
        with open(os.path.join(vdir, "config.json")) as f:
            c = json.load(f)
        self.c = c
        self.L = c["num_hidden_layers"]
        self.ratios = c["compress_ratios"]  # one per layer (+ one per MTP layer)
        self.H, self.D, self.rd = c["num_attention_heads"], c["head_dim"], c["qk_rope_head_dim"]
        self.hc, self.eps, self.hc_eps = c["hc_mult"], c["rms_norm_eps"], c["hc_eps"]
        self.win = c["sliding_window"]
        self.n_hash = c.get("num_hash_layers", 0)
        ys = c.get("rope_scaling")
        self.inv_main = self.inv_freq(c["rope_theta"], None)
        self.inv_comp = self.inv_freq(c["compress_rope_theta"], ys)

    def inv_freq(self, base, ys):
        rd = self.rd
        inv = 1.0 / (base ** (torch.arange(0, rd, 2, dtype=torch.float64) / rd))
        if ys and ys.get("type", ys.get("rope_type")) == "yarn":
            f, orig = ys["factor"], ys["original_max_position_embeddings"]
            bf, bs = ys.get("beta_fast", 32), ys.get("beta_slow", 1)

            def corr(rot):
                return rd * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))
            lo, hi = max(math.floor(corr(bf)), 0), min(math.ceil(corr(bs)), rd - 1)
            if lo == hi:
                hi += 0.001
            ramp = ((torch.arange(rd // 2, dtype=torch.float64) - lo) / (hi - lo)).clamp(0, 1)
            inv = inv / f * ramp + inv * (1 - ramp)
        return inv

    def rope(self, x, pos, inv, sign=1.0):
        """Interleaved pairs (2i, 2i+1) of the trailing rd channels; pos [T] (x [..., T, ?, D] or [T, D])."""
        x = x.clone()
        ang = pos.double()[:, None] * inv[None, :] * sign  # [T, rd/2]
        while ang.dim() < x.dim():
            ang = ang.unsqueeze(-2)
        r = x[..., -self.rd:]
        e, o = r[..., 0::2], r[..., 1::2]
        cs, sn = ang.cos(), ang.sin()
        out = torch.stack([e * cs - o * sn, o * cs + e * sn], -1).flatten(-2)
        x[..., -self.rd:] = out
        return x

    def rms(self, x, w=None):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y * w if w is not None else y

    def lin(self, x, name):
        return x @ self.W[name].t()

    # --- mHC ---
    def hc_weights(self, X, p):
        hc = self.hc
        flat = X.reshape(*X.shape[:-2], hc * X.shape[-1])
        mix = self.rms(flat) @ self.W[p + "_fn"].t()
        sc, b = self.W[p + "_scale"], self.W[p + "_base"]
        pre = torch.sigmoid(mix[..., :hc] * sc[0] + b[:hc]) + self.hc_eps
        post = 2 * torch.sigmoid(mix[..., hc:2 * hc] * sc[1] + b[hc:2 * hc])
        comb = torch.softmax((mix[..., 2 * hc:] * sc[2] + b[2 * hc:]).reshape(*mix.shape[:-1], hc, hc), -1)
        comb = comb + self.hc_eps
        comb = comb / (comb.sum(-2, keepdim=True) + self.hc_eps)
        for _ in range(self.c["hc_sinkhorn_iters"] - 1):
            comb = comb / (comb.sum(-1, keepdim=True) + self.hc_eps)
            comb = comb / (comb.sum(-2, keepdim=True) + self.hc_eps)
        return pre, post, comb

    def hc_block(self, X, p, f):
        pre, post, comb = self.hc_weights(X, p)
        collapsed = (pre.unsqueeze(-1) * X).sum(-2)
        y = f(collapsed)
        return post.unsqueeze(-1) * y.unsqueeze(-2) + torch.einsum("...jk,...jd->...kd", comb, X)

    def hc_head(self, X, p):
        flat = X.reshape(*X.shape[:-2], -1)
        mix = self.rms(flat) @ self.W[p + "hc_head_fn"].t()
        pre = torch.sigmoid(mix * self.W[p + "hc_head_scale"] + self.W[p + "hc_head_base"]) + self.hc_eps
        return (pre.unsqueeze(-1) * X).sum(-2)

    # --- MoE ---
    def moe(self, x, ids, p, layer):
        c = self.c
        s = x @ self.W[p + "gate.weight"].t()
        s = torch.sigmoid(s) if c["scoring_func"] == "sigmoid" else F_softplus(s).sqrt()
        if layer < self.n_hash:
            idx = self.W[p + "gate.tid2eid"][ids]
        else:
            idx = (s + self.W[p + "gate.bias"]).topk(c["num_experts_per_tok"], -1).indices
        w = s.gather(-1, idx)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * c["routed_scaling_factor"]
        lim = c["swiglu_limit"]

        def expert(xx, q):
            g = (xx @ self.W[q + "w1.weight"].t()).clamp(max=lim)
            u = (xx @ self.W[q + "w3.weight"].t()).clamp(-lim, lim)
            return (g * torch.sigmoid(g) * u) @ self.W[q + "w2.weight"].t()
        y = expert(x, p + "shared_experts.")
        for t in range(x.shape[0]):
            for j in range(idx.shape[1]):
                y[t] = y[t] + w[t, j] * expert(x[t:t + 1], f"{p}experts.{int(idx[t, j])}.")[0]
        return y, idx

    # --- compressor (block w -> one entry) ---
    def compress(self, a, z, w, m, p, head_dim):
        """a, z: [m or 2m rows, coff*Dc] of block w (z with ape already added); CSA gets rows of blocks w-1, w."""
        Dc = head_dim
        if m == 4:  # overlapping: first halves of block w-1, second halves of block w
            ka, za = a[-m:, Dc:], z[-m:, Dc:]
            if a.shape[0] == 2 * m:
                ka = torch.cat([a[:m, :Dc], ka])
                za = torch.cat([z[:m, :Dc], za])
        else:
            ka, za = a, z
        e = (torch.softmax(za, 0) * ka).sum(0)
        e = self.rms(e, self.W[p + "norm.weight"])
        return self.rope(e[None], torch.tensor([w * m]), self.inv_comp)[0]

    def entries(self, x, m, p, head_dim):
        a = self.lin(x, p + "wkv.weight")
        T = x.shape[0]
        z = self.lin(x, p + "wgate.weight") + self.W[p + "ape"][torch.arange(T) % m]
        out = []
        for w in range(T // m):
            lo = max(0, (w - 1) * m) if m == 4 else w * m
            out.append(self.compress(a[lo:(w + 1) * m], z[lo:(w + 1) * m], w, m, p, head_dim))
        return torch.stack(out) if out else x.new_zeros(0, head_dim)

    def index_select(self, qr_t, x_t, t, K, p, k):
        """Indexer choice for query row t over compressed keys K [n, c] (only w < (t+1)//4 visible)."""
        nI, cI = self.c["index_n_heads"], self.c["index_head_dim"]
        nvis = (t + 1) // 4
        if nvis == 0:
            return [], None
        q = (qr_t @ self.W[p + "wq_b.weight"].t()).view(nI, cI)
        q = self.rope(q[None], torch.tensor([t]), self.inv_comp)[0]
        wt = (x_t @ self.W[p + "weights_proj.weight"].t()) * nI ** -0.5
        sc = (torch.relu(q @ K[:nvis].t()) * cI ** -0.5 * wt[:, None]).sum(0)
        if nvis <= k:
            return list(range(nvis)), sc
        return sorted(sc.topk(k).indices.tolist()), sc

    def attend(self, q, keys, sink):
        """q [H, D], keys [n, D] (K = V) -> [H, D] with the per-head sink in the softmax denominator."""
        s = q @ keys.t() * self.D ** -0.5  # [H, n]
        M = torch.maximum(s.max(-1).values, sink)
        e = (s - M[:, None]).exp()
        return (e @ keys) / (e.sum(-1) + (sink - M).exp())[:, None]

    def attn_rows(self, x, pos, p, ratio, window_keys, comp_keys, index_keys=None):
        """Attention of rows x [S, d] at positions pos; window_keys(t) -> [n, D], comp_keys / index_keys: all
        entries so far. Returns out [S, d] and the indexer selections."""
        H, D = self.H, self.D
        inv = self.inv_main if ratio == 0 else self.inv_comp
        qr = self.rms(self.lin(x, p + "wq_a.weight"), self.W[p + "q_norm.weight"])
        q = self.lin(qr, p + "wq_b.weight").view(-1, H, D)
        q = self.rms(q)
        q = self.rope(q, pos, inv)
        outs, sels = [], []
        for s in range(x.shape[0]):
            t = int(pos[s])
            keys = window_keys(t)
            if ratio:
                nvis = (t + 1) // ratio
                if ratio == 4:
                    sel, _ = self.index_select(qr[s], x[s], t, index_keys, p + "indexer.", self.c["index_topk"])
                    sels.append(sel)
                else:
                    sel = list(range(nvis))
                if sel:
                    keys = torch.cat([keys, comp_keys[sel]])
            o = self.attend(q[s], keys, self.W[p + "attn_sink"])
            outs.append(o)
        o = torch.stack(outs)
        o = self.rope(o, pos, inv, sign=-1.0)
        g, r = self.c["o_groups"], self.c["o_lora_rank"]
        og = o.reshape(-1, g, H * D // g)
        wa = self.W[p + "wo_a.weight"].view(g, r, H * D // g)
        y = torch.einsum("sgi,gri->sgr", og, wa).reshape(-1, g * r)
        return self.lin(y, p + "wo_b.weight"), sels

    def kv_rows(self, x, pos, p, ratio):
        inv = self.inv_main if ratio == 0 else self.inv_comp
        kv = self.rms(self.lin(x, p + "wkv.weight"), self.W[p + "kv_norm.weight"])
        return self.rope(kv, pos, inv)

    def block(self, X, ids, pos, layer, p, ratio):
        """Whole-sequence decoder block (also the MTP block) over rows at positions pos."""
        info = {}

        def attn(c):
            x = self.rms(c, self.W[p + "attn_norm.weight"])
            kv = self.kv_rows(x, pos, p + "attn.", ratio)
            ck = ik = None
            if ratio:
                ck = self.entries(x, ratio, p + "attn.compressor.", self.D)
                if ratio == 4:
                    ik = self.entries(x, 4, p + "attn.indexer.compressor.", self.c["index_head_dim"])
            out, sels = self.attn_rows(x, pos, p + "attn.", ratio,
                                       lambda t: kv[max(0, t - self.win + 1): t + 1], ck, ik)
            info["sel"], info["attn"] = sels, out
            return out

        def ffn(c):
            y, idx = self.moe(self.rms(c, self.W[p + "ffn_norm.weight"]), ids, p + "ffn.", layer)
            info["experts"] = idx
            return y
        X = self.hc_block(X, p + "hc_attn", attn)
        X = self.hc_block(X, p + "hc_ffn", ffn)
        return X, info

    def forward(self, ids):
        pos = torch.arange(ids.shape[0])
        X = self.W["embed.weight"][ids][:, None, :].expand(-1, self.hc, -1)
        infos = []
        for i in range(self.L):
            X, info = self.block(X, ids, pos, i, f"layers.{i}.", self.ratios[i])
            infos.append(info)
        h = self.rms(self.hc_head(X, ""), self.W["norm.weight"])
        return h @ self.W["head.weight"].t(), X, infos

    def mtp(self, streams, next_ids):
        """MTP 0 over pairs (streams_i, x_{i+1}) at positions i."""
        p = "mtp.0."
        pos = torch.arange(next_ids.shape[0])
        e = self.rms(self.W["embed.weight"][next_ids], self.W[p + "enorm.weight"])
        h = self.rms(streams.double(), self.W[p + "hnorm.weight"])
        X = self.lin(e, p + "e_proj.weight")[:, None, :] + self.lin(h, p + "h_proj.weight")
        X, _ = self.block(X, next_ids, pos, self.L, p, self.ratios[self.L])
        hid = self.rms(self.hc_head(X, p), self.W[p + "norm.weight"])
        return hid @ self.W["head.weight"].t()

    def stream(self, ids):
        """Token by token with decode state; returns the logits of every row [T, V]."""
        st = [dict(win=[], comp=[], idx=[], pend={}, prev={}) for _ in range(self.L)]
        rows = []
        for t in range(ids.shape[0]):
            pos = torch.tensor([t])
            X = self.W["embed.weight"][ids[t:t + 1]][:, None, :].expand(-1, self.hc, -1)
            for i in range(self.L):
                p, ratio, S = f"layers.{i}.", self.ratios[i], st[i]

                def attn(c, p=p, ratio=ratio, S=S):
                    x = self.rms(c, self.W[p + "attn_norm.weight"])
                    S["win"] = (S["win"] + [self.kv_rows(x, pos, p + "attn.", ratio)[0]])[-self.win:]
                    if ratio:
                        self.stream_compress(S, x[0], t, ratio, p + "attn.compressor.", "comp", self.D)
                        if ratio == 4:
                            self.stream_compress(S, x[0], t, 4, p + "attn.indexer.compressor.", "idx",
                                                 self.c["index_head_dim"])
                    ck = torch.stack(S["comp"]) if S["comp"] else None
                    ik = torch.stack(S["idx"]) if S["idx"] else None
                    out, _ = self.attn_rows(x, pos, p + "attn.", ratio, lambda tt: torch.stack(S["win"]), ck, ik)
                    return out

                def ffn(c, p=p, i=i):
                    return self.moe(self.rms(c, self.W[p + "ffn_norm.weight"]), ids[t:t + 1], p + "ffn.", i)[0]
                X = self.hc_block(X, p + "hc_attn", attn)
                X = self.hc_block(X, p + "hc_ffn", ffn)
            h = self.rms(self.hc_head(X, ""), self.W["norm.weight"])
            rows.append((h @ self.W["head.weight"].t())[0])
        return torch.stack(rows)

    def stream_compress(self, S, x, t, m, p, key, head_dim):
        """Append token t's (kv, gate + ape[t % m]) to the open block; emit an entry when t closes a block.
        CSA (m = 4) keeps the previous closed block's rows for the first halves of the next entry."""
        a = x @ self.W[p + "wkv.weight"].t()
        z = x @ self.W[p + "wgate.weight"].t() + self.W[p + "ape"][t % m]
        S["pend"].setdefault(key, []).append((a, z))
        if (t + 1) % m == 0:
            rows = S["prev"].get(key, []) + S["pend"][key]
            A = torch.stack([r[0] for r in rows])
            Z = torch.stack([r[1] for r in rows])
            S[key].append(self.compress(A, Z, t // m, m, p, head_dim))
            S["prev"][key] = S["pend"][key] if m == 4 else []
            S["pend"][key] = []


def F_softplus(x):
    return torch.nn.functional.softplus(x)


@torch.no_grad()
def notes_check(vdir, ref, report):
    """The independent reference against the fixture's reference tensors."""
    nm = NotesModel(vdir)
    ids, gen = ref["input_ids"], ref["greedy_ids"]
    T = ids.numel()
    all_ids = torch.cat([ids, gen])
    lg, X, infos = nm.forward(all_ids)
    report["notes_forward_max_logit_diff"] = float((lg[:T] - ref["logits"].double()).abs().max())
    report["notes_forward_decode_rows_max_diff"] = float((lg[T:] - ref["decode_logits"].double()).abs().max())
    same_sel, same_exp = True, True
    for i, info in enumerate(infos):
        if f"index_topk_layer{i}" in ref:
            k = ref[f"index_topk_layer{i}"].shape[1]
            mine = torch.full((all_ids.numel(), k), -1, dtype=torch.int64)
            for s, sel in enumerate(info["sel"]):
                mine[s, : len(sel)] = torch.tensor(sel, dtype=torch.int64)
            same_sel &= torch.equal(mine[:T], ref[f"index_topk_layer{i}"])
            same_sel &= torch.equal(mine[T:], ref[f"decode_index_topk_layer{i}"])
        same_exp &= torch.equal(info["experts"][:T].sort(-1).values, ref[f"topk_idx_layer{i}"])
    report["notes_forward_same_index_selections"] = bool(same_sel)
    report["notes_forward_same_experts"] = bool(same_exp)
    sl = nm.stream(all_ids)
    report["notes_stream_max_logit_diff"] = float(
        (sl - torch.cat([ref["logits"], ref["decode_logits"]]).double()).abs().max())
    if "mtp_logits" in ref:
        ml = nm.mtp(ref["streams_last"][:-1], ref["mtp_input_ids"])
        report["notes_mtp_max_logit_diff"] = float((ml - ref["mtp_logits"].double()).abs().max())
    ok = [v < 1e-3 for kk, v in report.items() if kk.startswith("notes_") and "diff" in kk]
    assert all(ok) and same_sel and same_exp, report


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
