#!/usr/bin/env python3
"""Side by side: batched generation throughput, deepseek.hpp's scheduler vs transformers' batched
generate(), on the same checkpoint and thread count, in one run.

At S = 1, 4, 16, 64 concurrent sequences, each of --prompt tokens (the same distinct ids on both
sides) followed by exactly --new greedy tokens (EOS ignored: min_new_tokens on their side):
  ours          build/bench/batch_throughput (generate::Scheduler over one KV pool, every prompt in
                the first step, then one batched forward per token for all S)
  transformers  model.generate(input_ids [S, prompt], do_sample=False, max_new_tokens=min_new_tokens=new)
Throughput is generated tokens / wall time, prefill included on both sides (ours also prints its
decode-only rate, and a STREAM triad measured in its process). Checkpoints:
  --v2-lite DIR  the V2-Lite-shaped bf16 checkpoint bench_model writes (DEEPSEEK_BENCH_LAYERS_BF16=4
                 for 4 layers); transformers in bf16 with sdpa; ours with bf16 activations (as
                 transformers in bf16) and with exact f32 activations, bf16 KV cache
  --demo DIR     the shipped demo model (FP8 weights); transformers loads it dequantized to f32
                 (tests/reference/make_demo_fixtures.py's loader); ours f32 activations, f32 cache

  python3 bench/batched_vs_transformers.py --v2-lite /tmp/dsb4/v2-lite-bf16 --demo examples/models/deepseek-v3-demo
"""
import argparse, json, os, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ours(build, model, seqs, prompt, new, threads, act, cache):
    out = subprocess.run([os.path.join(build, "bench/batch_throughput"), model, "--sequences", ",".join(map(str, seqs)),
                          "--prompt", str(prompt), "--new", str(new), "--threads", str(threads), "--activations", act,
                          "--cache-dtype", cache], check=True, capture_output=True, text=True).stdout
    rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    for r in rows:
        if "triad_gb_s" in r:
            print(f"  ours {act}: STREAM triad {r['triad_gb_s']:.1f} GB/s in the same process, checkpoint {r['checkpoint_bytes'] / 1e9:.2f} GB")
    return {r["sequences"]: r for r in rows if "sequences" in r}


def theirs(m, vocab, seqs, prompt, new):
    import torch
    res = {}
    for S in seqs:
        ids = torch.tensor([[(1000 + 37 * i + 101 * s) % vocab for i in range(prompt)] for s in range(S)])
        with torch.no_grad():
            t0 = time.time()
            out = m.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new, min_new_tokens=new,
                             pad_token_id=0)
            dt = time.time() - t0
        assert out.shape == (S, prompt + new)
        res[S] = {"sequences": S, "seconds": dt, "tok_s": S * new / dt}
        print(f"  transformers S={S}: {S * new / dt:.1f} tok/s ({dt:.1f} s)", flush=True)
    return res


def report(name, rows, seqs):
    print(f"\n{name}: tokens/s at S sequences (generated tokens / wall, prefill included)")
    print("| side | " + " | ".join(f"S={S}" for S in seqs) + " |")
    print("|---|" + "---|" * len(seqs))
    for side, r in rows.items():
        print(f"| {side} | " + " | ".join(f"{r[S]['tok_s']:.1f}" for S in seqs) + " |")
    hf = rows.get("transformers")
    for side, r in rows.items():
        if side == "transformers":
            continue
        line = f"{side}: {r[seqs[-1]]['tok_s'] / r[1]['tok_s']:.2f}x its batch-1 rate at S={seqs[-1]}"
        if 16 in r:
            line += f", {r[16]['tok_s'] / r[1]['tok_s']:.2f}x at S=16"
        if hf:
            line += "; vs transformers " + ", ".join(f"S={S} {r[S]['tok_s'] / hf[S]['tok_s']:.2f}x" for S in seqs)
        print(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--v2-lite", default="")
    ap.add_argument("--demo", default=os.path.join(ROOT, "examples/models/deepseek-v3-demo"))
    ap.add_argument("--sequences", default="1,4,16,64")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    seqs = [int(x) for x in a.sequences.split(",")]
    import torch
    torch.set_num_threads(a.threads)
    results = {}
    if a.v2_lite:
        rows = {}
        for act in ("bf16", "f32"):
            rows[f"deepseek.hpp {act} activations"] = ours(a.build, a.v2_lite, seqs, a.prompt, a.new, a.threads, act, "bf16")
            print(f"  ours {act}: " + ", ".join(f"S={S} {r['tok_s']:.1f}" for S, r in rows[f'deepseek.hpp {act} activations'].items()), flush=True)
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained(a.v2_lite, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
        rows["transformers"] = theirs(m, m.config.vocab_size, seqs, a.prompt, a.new)
        del m
        report(f"V2-Lite shape ({a.v2_lite})", rows, seqs)
        results["v2_lite"] = rows
    if a.demo:
        rows = {"deepseek.hpp f32": ours(a.build, a.demo, seqs, a.prompt, a.new, a.threads, "f32", "f32")}
        print("  ours demo: " + ", ".join(f"S={S} {r['tok_s']:.1f}" for S, r in rows["deepseek.hpp f32"].items()), flush=True)
        sys.path.insert(0, os.path.join(ROOT, "tests/reference"))
        from make_demo_fixtures import load_demo
        m, _, cfg = load_demo(a.demo)
        rows["transformers"] = theirs(m, cfg.vocab_size, seqs, a.prompt, a.new)
        report(f"demo model ({a.demo})", rows, seqs)
        results["demo"] = rows
    print(json.dumps(results))


if __name__ == "__main__":
    main()
