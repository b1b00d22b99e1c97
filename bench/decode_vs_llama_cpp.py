#!/usr/bin/env python3
"""Side by side at long context: deepseek.hpp vs llama.cpp (and transformers) on one checkpoint.

The checkpoint is the synthetic DeepSeek-V2-Lite-shaped one of bench/synthetic_checkpoint.hpp with
the V3 tokenizer's vocabulary (llama.cpp's converter needs a real tokenizer.json in the folder, and
the one in assets/ has 129,280 ids), 4 layers, bf16. Prepare it once:

  build/bench/write_v2_lite_checkpoint /tmp/v2l --layers 4 --vocab 129280
  cp ../shared/assets/deepseek-v3-tokenizer/tokenizer*.json /tmp/v2l/
  python3 llama.cpp/convert_hf_to_gguf.py /tmp/v2l --outtype bf16 --outfile /tmp/v2l.gguf

(llama.cpp's sources come with `pip download llama-cpp-python --no-binary :all:`; `pip install
llama-cpp-python` builds the library this script calls). Both files are read through the page
cache; pages that the writer or the converter left there may sit in small folios, which costs the
reading side TLB misses (llama.cpp measured 14.8 -> 17.3 tok/s at 1K once both files were reread),
so start each side from pages that readahead brought in:

  sync; echo 1 > /proc/sys/vm/drop_caches; cat /tmp/v2l/model.safetensors /tmp/v2l.gguf > /dev/null

Then

  python3 bench/decode_vs_llama_cpp.py --build build --model /tmp/v2l --gguf /tmp/v2l.gguf \\
      --contexts 1024,8192,32768 --threads 2 [--transformers 8192]

For each context N the same N random prompt ids (seeded) go to every side; each side fills its
cache with them from empty (prefill, timed once) and then decodes greedily. This machine's memory
bandwidth drifts by tens of percent within minutes, so decode is measured in --rounds rounds of
--burst tokens, the sides taking turns within each round (the order rotating from round to round),
every side rolling its cache back to the prompt before each burst; the table gives each side's
median and best round. Sides:
  read     decode_bursts' `read`: the same threads reading, as a plain stream, the bytes one decode
           step reads (the routed experts changing every step), from the same mapping; its rate
           is what a model streaming weights at that bandwidth would decode, and every side is
           also reported as a share of it, round by round (this machine's yardstick for the
           memory limit, measured in the same rounds)
  ours     build/bench/decode_bursts: models::DeepSeekV3 with exact f32 activations (the default)
           and with bf16 activations, default bf16 cache; at contexts above --both-prefill-max
           only the bf16 model prefills and the f32 one decodes from a copy of that cache
  llama.cpp  llama-cpp-python, f16 KV cache (its default), flash attention off and on (its two CPU
           attention paths; --flash), the same threads for prefill and decode; decode time is
           the wall clock of the same steps (argmax included, as ours)
  transformers  DeepseekV2ForCausalLM in bf16 with sdpa, one run at the contexts after --transformers
Prints one JSON line per measurement, then a table.
"""
import argparse, json, os, random, statistics, subprocess, sys, tempfile, time


def warm(path):
    with open(path, "rb") as f:
        while f.read(1 << 26):
            pass


def prompt_ids(n, vocab, seed):
    rng = random.Random(seed)
    return [rng.randrange(1000, min(vocab, 100000)) for _ in range(n)]


class Ours:
    def __init__(self, exe, model, ids_path, threads, prefill):
        warm(os.path.join(model, "model.safetensors"))
        self.p = subprocess.Popen([exe, model, ids_path, "--threads", str(threads), "--prefill", prefill],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.prefill = {}
        for _ in range(2 if prefill == "both" else 1):
            j = json.loads(self.p.stdout.readline())
            self.prefill[j["prefill"]] = j["prefill_tok_s"]

    def burst(self, mode, k):
        self.p.stdin.write("%s %d\n" % (mode, k))
        self.p.stdin.flush()
        j = json.loads(self.p.stdout.readline())
        return j["decode_tok_s"], j.get("ids", [])

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.close()
        self.p.wait()


class Llama:
    def __init__(self, gguf, ids, threads, flash, capacity, mmap):
        import llama_cpp
        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(model_path=gguf, n_ctx=capacity, n_threads=threads, n_threads_batch=threads,
                                   n_batch=512, n_ubatch=512, flash_attn=flash, verbose=False, use_mmap=mmap,
                                   # llama.cpp takes a DeepSeek-V2 file without q_lora_rank to be V2-Lite only
                                   # when it has 26 or 27 layers (src/models/deepseek2.cpp); 0 says so for ours
                                   kv_overrides={"deepseek2.attention.q_lora_rank": 0})
        self.n = len(ids)
        t0 = time.time()
        self.llm.eval(ids)
        self.prefill = len(ids) / (time.time() - t0)
        self.first = self.last()

    def last(self):
        import numpy as np
        p = self.llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(p, shape=(self.llm.n_vocab(),))))

    def burst(self, k):
        self.llm.n_tokens = self.n  # eval() drops the cache past n_tokens: back to the prompt
        gen = [self.first]
        t0 = time.time()
        for _ in range(k - 1):
            self.llm.eval([gen[-1]])
            gen.append(self.last())
        return (k - 1) / (time.time() - t0), gen


def transformers_run(model, ids, new, threads):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    warm(os.path.join(model, "model.safetensors"))
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        t0 = time.time()
        out = m(x, use_cache=True, logits_to_keep=1)
        prefill = time.time() - t0
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        gen = [int(nxt)]
        t0 = time.time()
        for _ in range(new - 1):
            out = m(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            gen.append(int(nxt))
        decode = time.time() - t0
    del m
    return len(ids) / prefill, (new - 1) / decode, gen


def agree(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", required=True, help="the safetensors checkpoint folder")
    ap.add_argument("--gguf", required=True, help="the same checkpoint converted by convert_hf_to_gguf.py")
    ap.add_argument("--contexts", default="1024,8192,32768")
    ap.add_argument("--transformers", default="", help="contexts at which transformers runs too, e.g. 8192")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--burst", type=int, default=17)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--flash", default="off,on", help="llama.cpp flash attention settings, e.g. off,on")
    ap.add_argument("--flash-long", default="on", help="the settings above --both-prefill-max")
    ap.add_argument("--both-prefill-max", type=int, default=8192)
    ap.add_argument("--llama-mmap", default="on", choices=["on", "off"],
                    help="llama.cpp maps the file (its default) or reads it into its own memory")
    a = ap.parse_args()
    exe = os.path.join(a.build, "bench", "decode_bursts")
    vocab = json.load(open(os.path.join(a.model, "config.json")))["vocab_size"]
    hf = {int(x) for x in a.transformers.split(",") if x}
    rows = []
    for n in [int(x) for x in a.contexts.split(",")]:
        ids = prompt_ids(n, vocab, a.seed)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(" ".join(map(str, ids)))
            ids_path = f.name
        both = n <= a.both_prefill_max
        ours = Ours(exe, a.model, ids_path, a.threads, "both" if both else "bf16")
        print(json.dumps({"context": n, "ours_prefill_tok_s": ours.prefill}), flush=True)
        warm(a.gguf)
        llamas = {}
        for fl in (a.flash if both else a.flash_long).split(","):
            llamas[fl] = Llama(a.gguf, ids, a.threads, fl == "on", n + a.burst + 8, a.llama_mmap == "on")
            print(json.dumps({"context": n, "llama_flash": fl, "prefill_tok_s": llamas[fl].prefill}), flush=True)
        sides = ["read", "ours f32", "ours bf16"] + ["llama " + fl for fl in llamas]
        rates = {s: [] for s in sides}
        gens = {}
        for r in range(a.rounds):
            for s in sides[r % len(sides):] + sides[:r % len(sides)]:
                if s == "read":
                    rate, gen = ours.burst("read", a.burst)
                elif s.startswith("ours"):
                    rate, gen = ours.burst(s.split()[1], a.burst)
                else:
                    rate, gen = llamas[s.split()[1]].burst(a.burst)
                rates[s].append(rate)
                gens.setdefault(s, gen)
                print(json.dumps({"context": n, "side": s, "round": r, "decode_tok_s": rate}), flush=True)
        ours.close()
        for l in llamas.values():
            del l.llm
        os.unlink(ids_path)
        ref = gens["ours f32"]
        best_llama_round = [max(rates[s][r] for s in sides if s.startswith("llama")) for r in range(a.rounds)]
        for s in sides:
            if s == "read":
                pf = None
            else:
                pf = ours.prefill.get(s.split()[1]) if s.startswith("ours") else llamas[s.split()[1]].prefill
            rows.append({"context": n, "side": s, "prefill_tok_s": pf, "decode_median": statistics.median(rates[s]),
                         "decode_best": max(rates[s]), "agree": agree(gens[s], ref) if s != "read" else None,
                         "of_read": statistics.median(rates[s][r] / rates["read"][r] for r in range(a.rounds)),
                         "vs_best_llama_by_round": statistics.median(rates[s][r] / best_llama_round[r]
                                                                     for r in range(a.rounds))})
        if n in hf:
            pf, dec, gen = transformers_run(a.model, ids, a.burst, a.threads)
            rows.append({"context": n, "side": "transformers bf16 sdpa", "prefill_tok_s": pf, "decode_median": dec,
                         "decode_best": dec, "agree": agree(gen, ref)})
            print(json.dumps(rows[-1]), flush=True)

    print("\n| context | side | prefill tok/s | decode tok/s, median of rounds | best round | share of read (median by round) "
          "| / best llama.cpp (median by round) | greedy ids equal to ours f32 (of %d) |" % a.burst)
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["side"] == "read":
            pf = "-"
        else:
            pf = "%.1f" % r["prefill_tok_s"] if r["prefill_tok_s"] else "(from the bf16 prefill)"
        share = "%.2f" % r["of_read"] if "of_read" in r else "-"
        vs = "%.2f" % r["vs_best_llama_by_round"] if "vs_best_llama_by_round" in r else "-"
        ag = "-" if r["agree"] is None else "%d" % r["agree"]
        print("| %d | %s | %s | %.2f | %.2f | %s | %s | %s |" % (r["context"], r["side"], pf, r["decode_median"], r["decode_best"],
                                                              share, vs, ag))
    for n in sorted({r["context"] for r in rows}):
        med = {r["side"]: r["decode_median"] for r in rows if r["context"] == n}
        best_llama = max(v for s, v in med.items() if s.startswith("llama"))
        line = "context %d: ours f32 / best llama.cpp = %.2f, ours bf16 / best llama.cpp = %.2f (medians)" % (
            n, med["ours f32"] / best_llama, med["ours bf16"] / best_llama)
        if "transformers bf16 sdpa" in med:
            line += ", ours f32 / transformers = %.1f" % (med["ours f32"] / med["transformers bf16 sdpa"])
        print(line)


if __name__ == "__main__":
    main()
