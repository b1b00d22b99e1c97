#!/usr/bin/env python3
"""Reference outputs of the shipped demo model (examples/models/deepseek-v3-demo) -> tests/fixtures/demo/.

The exported checkpoint is read back from disk (FP8 weights block-dequantized with weight_scale_inv, bf16 upcast,
spec §7.3) into transformers' DeepseekV3ForCausalLM (eager attention, eager experts, float32 math, one thread),
and the MTP module (model.layers.<num_hidden_layers>.*) into train_demo.MTP.

Writes tests/fixtures/demo/:
  heldout.txt               a slice of the held-out corpus text (whole lines, >= 512 tokens)
  reference.safetensors
    prompt{k}_ids           I64 [T_k]      [BOS] + HF-tokenizers ids of PROMPTS[k] (add_bos_token true)
    prompt{k}_logits        F32 [T_k, V]   main-model logits of every row (full causal forward)
    prompt{k}_greedy        I64 [16]       16 greedy tokens after the prompt (cached == recomputed)
    prompt{k}_mtp_logits    F32 [T_k-1, V] MTP logits: row i reads (h_i after model.norm, token i+1) and predicts
                                           token i+2; MTP positions 0..T_k-2, causal over its own rows
    heldout_ids             I64 [512]      HF-tokenizers ids of heldout.txt (no BOS), first 512
    heldout_nll             F64 [1]        mean NLL (nats/token) under PERPLEXITY DEFINITION below
    heldout_perplexity      F64 [1]        exp(heldout_nll)
    heldout_tokens          I64 [1]        number of predicted tokens (512)
  summary.json              the numbers above + held-out-set-wide perplexity, MTP top-1, greedy texts

PERPLEXITY DEFINITION (shared with `deepseek-cli perplexity`): ids = encode(text) without BOS, truncated to the
first max_tokens (512 here); split into consecutive non-overlapping windows of `window` (128) ids, the last one
possibly shorter; each window is evaluated from an empty cache as [BOS] + window, and every window id is
predicted (the first from BOS alone). nll = mean over all predicted ids of -log softmax(logits)[id]
(natural log); perplexity = exp(nll). Without a BOS token a window is evaluated as is and its first id is not
predicted.

Usage: python tests/reference/make_demo_fixtures.py [--model DIR] [--out DIR] [--work /work/scratch-demo]
"""
import argparse
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from make_model_fixtures import dequant_fp8_block, from_released  # noqa: E402
import train_demo  # noqa: E402

PROMPTS = [
    "Python is an easy to learn, powerful programming language. It has",
    "The :mod:`os` module provides a portable way of",
    "A fortune cookie says: You will",
]
N_GEN = 16
WINDOW = 128
MAX_TOKENS = 512


def load_demo(model_dir):
    from transformers import AutoConfig, DeepseekV3ForCausalLM
    cj = json.load(open(os.path.join(model_dir, "config.json")))
    cj.pop("quantization_config", None)
    with tempfile.TemporaryDirectory() as td:
        json.dump(cj, open(os.path.join(td, "config.json"), "w"))
        config = AutoConfig.from_pretrained(td)
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    stored = load_file(os.path.join(model_dir, "model.safetensors"))
    eff = {}
    for k, t in stored.items():
        if k.endswith("_scale_inv"):
            continue
        eff[k] = dequant_fp8_block(t, stored[k + "_scale_inv"]) if t.dtype == torch.float8_e4m3fn else t.float()
    L = config.num_hidden_layers
    pre = f"model.layers.{L}."
    main = {k: v for k, v in eff.items() if not k.startswith(pre)}
    mtpw = {k[len(pre):]: v for k, v in eff.items() if k.startswith(pre)}
    model = DeepseekV3ForCausalLM(config).float().eval()
    model.load_state_dict(from_released(main, config.n_routed_experts), strict=True)
    mtp = train_demo.MTP(config).float().eval()
    layer = {"layer." + k: v for k, v in mtpw.items()
             if k.startswith(("self_attn.", "mlp.", "input_layernorm.", "post_attention_layernorm."))}
    sd = from_released(layer, config.n_routed_experts)
    sd.update({"enorm.weight": mtpw["enorm.weight"], "hnorm.weight": mtpw["hnorm.weight"],
               "eh_proj.weight": mtpw["eh_proj.weight"], "shared_head_norm.weight": mtpw["shared_head.norm.weight"]})
    mtp.load_state_dict(sd, strict=True)
    # the stored MTP embedding / head are copies of the main ones (MTP class uses the main ones)
    assert torch.equal(mtpw["embed_tokens.weight"], main["model.embed_tokens.weight"])
    assert torch.equal(mtpw["shared_head.head.weight"], main["lm_head.weight"])
    return model, mtp, config


@torch.no_grad()
def full_forward(model, mtp, ids):
    h = model.model(input_ids=ids[None]).last_hidden_state
    logits = model.lm_head(h)[0]
    ml = mtp(model, h[:, :-1], ids[None, 1:])[0] if len(ids) > 1 else None
    return logits, ml


@torch.no_grad()
def greedy(model, ids, n):
    seq = ids.clone()
    margins = []
    for _ in range(n):
        lg = model(seq[None], use_cache=False).logits[0, -1]
        t2 = torch.topk(lg, 2).values
        margins.append(float(t2[0] - t2[1]))
        seq = torch.cat([seq, lg.argmax().view(1)])
    out = model.generate(ids[None], max_new_tokens=n, do_sample=False, min_new_tokens=n)[0, len(ids):]
    assert torch.equal(out, seq[len(ids):]), (out, seq[len(ids):])
    return seq[len(ids):], min(margins)


@torch.no_grad()
def perplexity(model, mtp, ids, bos, window):
    """PERPLEXITY DEFINITION (module docstring). Also MTP top-1 over the same windows (row i of window
    [BOS]+w predicts token i+2 of that sequence)."""
    nll, n, hit, nm = 0.0, 0, 0, 0
    for s in range(0, len(ids), window):
        w = ids[s:s + window]
        seq = torch.cat([torch.tensor([bos]), w]) if bos is not None else w
        logits, ml = full_forward(model, mtp, seq)
        lp = torch.log_softmax(logits.double(), -1)
        tgt = seq[1:]
        nll -= float(lp[torch.arange(len(tgt)), tgt].sum())
        n += len(tgt)
        if ml is not None and len(seq) > 2:
            hit += int((ml[:-1].argmax(-1) == seq[2:]).sum())
            nm += len(seq) - 2
    return nll / n, n, (hit / nm if nm else float("nan"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "examples", "models", "deepseek-v3-demo"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "demo"))
    ap.add_argument("--work", default="/work/scratch-demo", help="holds corpus.json from train_demo.py")
    ap.add_argument("--skip-full-heldout", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    bos = tok.token_to_id(train_demo.BOS)
    model, mtp, config = load_demo(args.model)

    # held-out slice: whole lines of the held-out documents until >= MAX_TOKENS + 64 tokens
    held = json.load(open(os.path.join(args.work, "corpus.json")))["heldout"]
    full_text = "\n".join(held)
    lines, text = full_text.split("\n"), ""
    for ln in lines:
        text += ln + "\n"
        if len(text) > 1000 and len(tok.encode(text, add_special_tokens=False).ids) >= MAX_TOKENS + 64:
            break
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write(text)

    ref, summary = {}, {"prompts": [], "window": WINDOW, "max_tokens": MAX_TOKENS}
    for k, p in enumerate(PROMPTS):
        ids = torch.tensor([bos] + tok.encode(p, add_special_tokens=False).ids, dtype=torch.int64)
        logits, ml = full_forward(model, mtp, ids)
        hf_logits = model(ids[None]).logits[0]
        assert torch.allclose(hf_logits, logits, atol=1e-5)
        g, margin = greedy(model, ids, N_GEN)
        ref[f"prompt{k}_ids"] = ids
        ref[f"prompt{k}_logits"] = logits.float().contiguous()
        ref[f"prompt{k}_greedy"] = g
        ref[f"prompt{k}_mtp_logits"] = ml.float().contiguous()
        summary["prompts"].append({"prompt": p, "ids": ids.tolist(), "greedy": g.tolist(),
                                   "greedy_text": tok.decode(g.tolist(), skip_special_tokens=False),
                                   "greedy_min_top2_margin": round(margin, 4)})
    hid = torch.tensor(tok.encode(text, add_special_tokens=False).ids[:MAX_TOKENS], dtype=torch.int64)
    nll, n, acc = perplexity(model, mtp, hid, bos, WINDOW)
    ref["heldout_ids"] = hid
    ref["heldout_nll"] = torch.tensor([nll], dtype=torch.float64)
    ref["heldout_perplexity"] = torch.tensor([math.exp(nll)], dtype=torch.float64)
    ref["heldout_tokens"] = torch.tensor([n], dtype=torch.int64)
    summary["heldout_slice"] = {"tokens": n, "nll": nll, "perplexity": math.exp(nll), "mtp_top1": acc}
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(args.out, "reference.safetensors"),
              metadata={"format": "pt"})
    os.chmod(os.path.join(args.out, "reference.safetensors"), 0o644)
    if not args.skip_full_heldout:
        with open(os.path.join(args.work, "heldout_full.txt"), "w", encoding="utf-8") as f:
            f.write(full_text)
        all_ids = torch.tensor(tok.encode(full_text, add_special_tokens=False).ids, dtype=torch.int64)
        counts, hooks = {}, []
        for name, g in train_demo.gates(model, mtp):  # expert load of the final model on held-out text
            counts[name] = torch.zeros(config.n_routed_experts)

            def hook(mod, inp, out, name=name):
                counts[name] += torch.bincount(out[2].reshape(-1), minlength=config.n_routed_experts).float()
            hooks.append(g.register_forward_hook(hook))
        nll, n, acc = perplexity(model, mtp, all_ids, bos, WINDOW)
        for h in hooks:
            h.remove()
        load = {k: {"max_over_mean": round(float(c.max() / c.mean()), 3), "min_over_mean": round(float(c.min() / c.mean()), 3),
                    "load_fraction": [round(float(x), 4) for x in c / c.sum()]} for k, c in counts.items()}
        summary["heldout_full"] = {"file": "heldout_full.txt (all held-out documents joined by '\\n')",
                                   "tokens": n, "nll": nll, "perplexity": math.exp(nll), "mtp_top1": acc,
                                   "expert_load": load}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(summary, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
