#!/usr/bin/env python3
"""Side by side: deepseek.hpp vs HF transformers on the same checkpoint, thread count and prompt.

Uses the synthetic DeepSeek-V2-Lite-shaped checkpoints that bench_model writes (run it first,
or pass --make to have this script call it). Our numbers come from `deepseek-cli generate
--stats` (bf16 and FP8 checkpoints); transformers runs DeepseekV2ForCausalLM on the bf16
checkpoint in bfloat16 (it cannot run the FP8 files on a CPU), eager attention, with
torch.set_num_threads(threads). Prints tokens/s and the ratios.

  python3 bench/model_vs_transformers.py --build build --dir /tmp/deepseek-bench --threads 2
"""
import argparse, json, os, subprocess, sys, time


def ours(cli, model, ids, new, threads):
    out = subprocess.run([cli, "generate", "--model", model, "--ids", ",".join(map(str, ids)), "--max-new", str(new),
                          "--greedy", "--print-ids", "--stats", "--threads", str(threads)],
                         check=True, capture_output=True, text=True)
    stats = json.loads(out.stderr.strip().splitlines()[-1])
    return stats, [int(x) for x in out.stdout.split()]


def theirs(model, ids, new, threads):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    t0 = time.time()
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16, attn_implementation="eager")
    m.eval()
    load = time.time() - t0
    x = torch.tensor([ids])
    with torch.no_grad():
        t0 = time.time()
        out = m(x, use_cache=True)
        prefill = time.time() - t0
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        gen = [int(nxt)]
        t0 = time.time()
        for _ in range(new - 1):
            out = m(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            gen.append(int(nxt))
        decode = time.time() - t0
    return {"load_s": load, "prefill_tokens_per_s": len(ids) / prefill, "decode_tokens_per_s": (new - 1) / decode}, gen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--dir", default=os.environ.get("DEEPSEEK_BENCH_DIR", "/tmp/deepseek-bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--skip-transformers", action="store_true")
    a = ap.parse_args()
    cli = os.path.join(a.build, "examples/cli/deepseek-cli")
    ids = [1000 + 37 * i for i in range(a.prompt_tokens)]
    rows = {}
    for name in ("v2-lite-bf16", "v2-lite-fp8"):
        path = os.path.join(a.dir, name)
        if not os.path.exists(os.path.join(path, "model.safetensors")):
            print(f"missing {path}: run {a.build}/bench/bench_model first", file=sys.stderr)
            continue
        stats, _ = ours(cli, path, ids, a.new, a.threads)
        rows["deepseek.hpp " + name] = stats
        print(f"deepseek.hpp {name}: prefill {stats['prefill_tokens_per_s']:.2f} tok/s, decode {stats['decode_tokens_per_s']:.2f} tok/s", flush=True)
    if not a.skip_transformers:
        t, _ = theirs(os.path.join(a.dir, "v2-lite-bf16"), ids, a.new, a.threads)
        rows["transformers bf16"] = t
        print(f"transformers v2-lite-bf16: prefill {t['prefill_tokens_per_s']:.2f} tok/s, decode {t['decode_tokens_per_s']:.2f} tok/s (load {t['load_s']:.0f} s)")
        for name in ("v2-lite-bf16", "v2-lite-fp8"):
            k = "deepseek.hpp " + name
            if k in rows:
                print(f"ratio {name} vs transformers bf16: prefill {rows[k]['prefill_tokens_per_s'] / t['prefill_tokens_per_s']:.1f}x, "
                      f"decode {rows[k]['decode_tokens_per_s'] / t['decode_tokens_per_s']:.1f}x")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
