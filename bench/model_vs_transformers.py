#!/usr/bin/env python3
"""Side by side: deepseek.hpp vs HF transformers on the same checkpoint, thread count and prompt.

Uses the synthetic DeepSeek-V2-Lite-shaped checkpoints that bench_model writes (run it first,
or pass --make to have this script call it). Our numbers come from `deepseek-cli generate
--stats` (bf16 and FP8 checkpoints; the bf16 one twice: with exact f32 activations and with
--activations bf16, which rounds the input of each linear layer to bf16 as transformers in bf16
does); transformers runs DeepseekV2ForCausalLM on the bf16 checkpoint in bfloat16 (it cannot run
the FP8 files on a CPU), sdpa attention (its default; faster here than eager: 105 vs 98 tok/s
prefill), with torch.set_num_threads(threads), and its prefill computes the logits of the last
position only (logits_to_keep=1, as generate() does; all 128 rows cost it 10%). Each checkpoint
file is read once before our run so that both sides start from memory, not disk. Both sides are
given their best of --repeats prefills (ours: of as many CLI runs); decode is --new tokens after
it. Prints tokens/s, the ratios and whether the greedy tokens agree.

  python3 bench/model_vs_transformers.py --build build --dir /tmp/deepseek-bench --threads 2
"""
import argparse, json, os, subprocess, sys, time


def warm(path):
    with open(os.path.join(path, "model.safetensors"), "rb") as f:
        while f.read(1 << 26):
            pass


def ours(cli, model, ids, new, threads, activations, repeats):
    warm(model)
    best = None
    for _ in range(repeats):  # the best prefill and the best decode of `repeats` runs
        out = subprocess.run([cli, "generate", "--model", model, "--ids", ",".join(map(str, ids)), "--max-new", str(new),
                              "--greedy", "--print-ids", "--stats", "--threads", str(threads), "--activations", activations],
                             check=True, capture_output=True, text=True)
        stats = json.loads(out.stderr.strip().splitlines()[-1])
        if best is None:
            best = stats
        for k in ("prefill_tokens_per_s", "decode_tokens_per_s"):
            best[k] = max(best[k], stats[k])
    return best, [int(x) for x in out.stdout.split()]


def theirs(model, ids, new, threads, repeats, attn):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    t0 = time.time()
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16, attn_implementation=attn)
    m.eval()
    load = time.time() - t0
    x = torch.tensor([ids])
    with torch.no_grad():
        prefill = float("inf")
        for _ in range(repeats):  # the best of `repeats` prefills, each from an empty cache
            t0 = time.time()
            out = m(x, use_cache=True, logits_to_keep=1)
            prefill = min(prefill, time.time() - t0)
        past = out.past_key_values
        last = out.logits[0, -1].float().numpy()
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        gen = [int(nxt)]
        t0 = time.time()
        for _ in range(new - 1):
            out = m(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            gen.append(int(nxt))
        decode = time.time() - t0
    return {"load_s": load, "prefill_tokens_per_s": len(ids) / prefill, "decode_tokens_per_s": (new - 1) / decode}, gen, last


def our_last_logits(cli, model, ids, threads, activations):
    """Our logits of the prompt's last position (deepseek-cli logits), as float32."""
    import numpy as np, tempfile
    with tempfile.TemporaryDirectory() as td:
        out = os.path.join(td, "l.npy")
        subprocess.run([cli, "logits", "--model", model, "--ids", ",".join(map(str, ids)), "--out", out,
                        "--threads", str(threads), "--activations", activations], check=True, capture_output=True)
        return np.load(out)[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--dir", default=os.environ.get("DEEPSEEK_BENCH_DIR", "/tmp/deepseek-bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many prefills (and runs of ours)")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--attn", default="sdpa", help="transformers' attn_implementation (sdpa or eager)")
    a = ap.parse_args()
    cli = os.path.join(a.build, "examples/cli/deepseek-cli")
    ids = [1000 + 37 * i for i in range(a.prompt_tokens)]
    rows, tokens = {}, {}
    for name, act in (("v2-lite-bf16", "f32"), ("v2-lite-bf16", "bf16"), ("v2-lite-fp8", "f32")):
        path = os.path.join(a.dir, name)
        if not os.path.exists(os.path.join(path, "model.safetensors")):
            print(f"missing {path}: run {a.build}/bench/bench_model first", file=sys.stderr)
            continue
        key = f"deepseek.hpp {name} {act} activations"
        stats, tokens[key] = ours(cli, path, ids, a.new, a.threads, act, a.repeats)
        rows[key] = stats
        print(f"{key}: prefill {stats['prefill_tokens_per_s']:.2f} tok/s, decode {stats['decode_tokens_per_s']:.2f} tok/s", flush=True)
    if not a.skip_transformers:
        path = os.path.join(a.dir, "v2-lite-bf16")
        warm(path)
        t, gen, last = theirs(path, ids, a.new, a.threads, a.repeats, a.attn)
        rows["transformers bf16"] = t
        print(f"transformers v2-lite-bf16: prefill {t['prefill_tokens_per_s']:.2f} tok/s, decode {t['decode_tokens_per_s']:.2f} tok/s (load {t['load_s']:.0f} s)")
        # Greedy agreement on random weights is fragile in bf16: transformers' own eager and sdpa
        # attention agree on 4 of 16 tokens here (near-ties: top-2 logits 0.2% apart). The
        # prefill's last logits are the steadier comparison.
        for act in ("f32", "bf16"):
            import numpy as np
            ours_last = our_last_logits(cli, path, ids, a.threads, act)
            rel = float(np.abs(ours_last - last).max() / np.abs(last).max())
            print(f"last-position logits, deepseek.hpp {act} activations vs transformers bf16: max |diff| / max |logit| = {rel:.2e}, "
                  f"argmax {'equal' if int(ours_last.argmax()) == int(last.argmax()) else 'different'}")
        for k in rows:
            if k.startswith("deepseek.hpp"):
                same = sum(int(x == y) for x, y in zip(tokens[k], gen))
                print(f"ratio {k} vs transformers bf16: prefill {rows[k]['prefill_tokens_per_s'] / t['prefill_tokens_per_s']:.2f}x, "
                      f"decode {rows[k]['decode_tokens_per_s'] / t['decode_tokens_per_s']:.2f}x; greedy tokens equal to transformers': "
                      f"{same}/{len(gen)}" + ("" if "bf16" in k else " (different weights)" if "fp8" in k else ""))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
