#!/usr/bin/env python3
"""Times DeepSeek's official PyTorch vision encoder (sam_vary_sdpa.py + clip_sdpa.py + build_linear.py from
the mirrored DeepSeek-OCR repository, composed as deepseek_ocr.py does) at the released sizes (SAM-B 768 x 12,
CLIP-L 1024 x 24, projector 2048 -> 1280) on the views bench_ocr_encoder times: 512, 640, 1024, 1280 and a
Gundam page (1024 + 6 x 640), in float32 and bfloat16 (the official runs use bf16), with
torch.set_num_threads(THREADS). Reports wall time and process CPU time (all threads) per encode: on a
machine shared with other jobs the CPU time is the steadier basis for the ratio. Random weights (timing does not depend on them). Then, with --build, runs
build/bench/bench_ocr_encoder on the same machine right after and prints the ratios.

  python3 bench/ocr_encoder_vs_pytorch.py --threads 2 [--build build] [--sizes 640,1024] [--repeat 2] [--filter REGEX]
"""
import argparse, json, os, re, subprocess, sys, time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from make_ocr_encoder_fixtures import build, load_official, randomize  # noqa: E402

RELEASED = dict(width=768, depth=12, heads=12, globals_=[2, 5, 8, 11], neck=256, ds=[512, 1024], clip_layers=24,
                clip_heads=16, clip_ffn=4096, n_embed=1280)


def views(name):
    return [(1024, 1), (640, 6)] if name == "gundam" else [(int(name), 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="512,640,1024,1280,gundam")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--build", help="build dir with bench/bench_ocr_encoder: run it too and print ratios")
    ap.add_argument("--filter", default="", help="--benchmark_filter for bench_ocr_encoder (e.g. 'BM_Encoder/(512|640|1024|0)/')")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sam_m, clip_m, lin_m = load_official()
    model = build(sam_m, clip_m, lin_m, **RELEASED)
    randomize(model, torch.Generator().manual_seed(1))
    results = {}
    for dt in args.dtypes.split(","):
        dtype = getattr(torch, dt)
        m = model.to(dtype)
        for name in args.sizes.split(","):
            xs = {s: torch.rand(1, 3, s, s).mul(2).sub(1).to(dtype) for s, _ in views(name)}
            with torch.no_grad():
                for s, _ in views(name):
                    m(xs[s])  # warm-up
                best, best_cpu = float("inf"), float("inf")
                for _ in range(args.repeat):
                    t0, c0 = time.perf_counter(), time.process_time()
                    for s, n in views(name):
                        for _ in range(n):
                            m(xs[s])
                    best = min(best, time.perf_counter() - t0)
                    best_cpu = min(best_cpu, time.process_time() - c0)
            results[(dt, name)] = (best * 1e3, best_cpu * 1e3)
            print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "dtype": dt, "view": name, "ms": round(best * 1e3, 1),
                              "process_cpu_ms": round(best_cpu * 1e3, 1), "threads": args.threads}), flush=True)
    if args.build:
        exe = os.path.join(args.build, "bench", "bench_ocr_encoder")
        env = dict(os.environ, DEEPSEEK_NUM_THREADS=str(args.threads))
        cmd = [exe, "--benchmark_format=json"] + (["--benchmark_filter=" + args.filter] if args.filter else [])
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        for b in json.loads(out)["benchmarks"]:
            m = re.match(r"BM_Encoder/(\d+)/(\d)", b["name"])
            view = "gundam" if m.group(1) == "0" else m.group(1)
            act = "bf16" if m.group(2) == "1" else "f32"
            ours, ours_cpu = b["real_time"], b["cpu_time"]
            line = {"ours": "deepseek.hpp", "view": view, "activations": act, "ms": round(ours, 1), "process_cpu_ms": round(ours_cpu, 1),
                    "GFLOP/s": round(b["GFLOP/s"], 1)}
            for dt in args.dtypes.split(","):
                if (dt, view) in results:
                    line["speedup_vs_torch_" + dt] = round(results[(dt, view)][0] / ours, 2)
                    line["cpu_speedup_vs_torch_" + dt] = round(results[(dt, view)][1] / ours_cpu, 2)
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
