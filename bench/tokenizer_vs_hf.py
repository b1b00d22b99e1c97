#!/usr/bin/env python3
"""Single-thread throughput of deepseek.hpp's tokenizer vs HF `tokenizers`, same corpus, same session.

  python3 bench/tokenizer_vs_hf.py --build BUILD_DIR [--repeats 5]

HF: Tokenizer.from_file(assets/tokenizers/deepseek-v3/tokenizer.json).encode_batch(documents,
add_special_tokens=False) with RAYON_NUM_THREADS=1 (set before `tokenizers` is imported), best of
--repeats. Ours: BUILD_DIR/bench/bench_tokenizer --benchmark_filter=BM_encode_corpus (one encode()
per document, same documents), and the CLI end to end (`deepseek-cli tokenize --jsonl`, including
process start and tokenizer load), whose ids are checked against HF's. Prints MB/s (10^6 bytes of
UTF-8 input per second) and the ratio.
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402  (after RAYON_NUM_THREADS)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
TOK = os.path.join(ROOT, "assets", "tokenizers", "deepseek-v3")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="CMake build dir with bench_tokenizer and deepseek-cli")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    blob = open(os.path.join(FIX, "corpus.bin"), "rb").read()
    index = json.load(open(os.path.join(FIX, "corpus_index.json")))["docs"]
    docs = [blob[d["text_offset"]:d["text_offset"] + d["text_len"]].decode("utf-8") for d in index]
    nbytes = sum(d["text_len"] for d in index)

    hf = Tokenizer.from_file(os.path.join(TOK, "tokenizer.json"))
    hf.encode_batch(docs[:20], add_special_tokens=False)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        hf_ids = [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
        best = min(best, time.perf_counter() - t)
    hf_mbs = nbytes / best / 1e6

    bench = os.path.join(args.build, "bench", "bench_tokenizer")
    out = subprocess.run([bench, "--benchmark_filter=BM_encode_corpus", "--benchmark_format=json",
                          "--benchmark_repetitions=%d" % args.repeats, "--benchmark_report_aggregates_only=false"],
                         check=True, capture_output=True, text=True).stdout
    runs = [b for b in json.loads(out)["benchmarks"] if b.get("run_type") == "iteration"]
    ours_mbs = max(b["bytes_per_second"] for b in runs) / 1e6

    cli = os.path.join(args.build, "examples", "cli", "deepseek-cli")
    payload = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
    t = time.perf_counter()
    res = subprocess.run([cli, "tokenize", "--tokenizer", TOK, "--jsonl", "--threads", "1"], input=payload,
                         check=True, capture_output=True)
    cli_s = time.perf_counter() - t
    cli_ids = [json.loads(line)["ids"] for line in res.stdout.decode().splitlines()]
    identical = cli_ids == hf_ids

    print("corpus: %d documents, %.2f MB" % (len(docs), nbytes / 1e6))
    print("HF tokenizers (RAYON_NUM_THREADS=1, encode_batch): %.1f MB/s" % hf_mbs)
    print("deepseek.hpp bench_tokenizer BM_encode_corpus:     %.1f MB/s" % ours_mbs)
    print("ratio ours / HF: %.2fx" % (ours_mbs / hf_mbs))
    print("deepseek-cli tokenize --jsonl end to end (load + JSON I/O): %.2f s = %.1f MB/s; ids identical to HF: %s"
          % (cli_s, nbytes / cli_s / 1e6, identical))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
