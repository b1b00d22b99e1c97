#!/usr/bin/env python3
"""One DeepSeek-OCR page through the OFFICIAL HF pipeline (modeling_deepseekocr.py / deepencoder.py /
modeling_deepseekv2.py, loaded by tests/reference/make_ocr_model_fixtures.py's load_hf_code(), run by its own
infer()) on the synthetic checkpoint bench/bench_ocr_page writes, at the same thread count, then our
bench_ocr_page in the same session (one after the other: never both loaded), and the ratios.

Needs transformers 4.46.3 (the version the official README pins):
  python3 -m venv --system-site-packages /tmp/venv-ocr
  /tmp/venv-ocr/bin/pip install transformers==4.46.3 tokenizers==0.20.3 addict easydict einops
  /tmp/venv-ocr/bin/pip install --no-deps torchvision
  /tmp/venv-ocr/bin/python bench/ocr_page_vs_pytorch.py --build build --threads 2 [--size full|reduced]
      [--modes tiny,small,base,gundam] [--dtypes bfloat16,float32] [--new-tokens 500] [--pt-new-tokens 500]
      [--ours-activations bf16,f32]

Per mode, the page is tests/fixtures/models/ocr_tiny/page.png (700 x 940; Gundam: 2 x 3 tiles of 640 + the
1024 global view) and the prompt "<image>\\n<|grounding|>Convert the document to markdown.".
What is timed on the PyTorch side (time stamps from hooks, one infer() per mode and dtype):
  preprocess = infer() start -> first forward of the model (PIL resize / pad / tiles, tokenization, generate setup)
  encoder    = first forward start -> first decoder layer entered (SAM + CLIP + projector on every view, layout,
               scatter into the embeddings)
  prefill    = first decoder layer entered -> first forward returned (decoder over the prompt; the official
               code applies lm_head to every prompt position, reported apart as lm_head_all_ms)
  decode     = first forward returned -> generate() returned: NEW - 1 steps (the first token comes from the prefill)
generate() gets min_new_tokens = max_new_tokens = NEW (EOS masked, so it cannot stop early), greedy
(temperature 0 as infer() passes it), no_repeat_ngram_size 0 (off; our side has no repetition control either).
Patches to the official code are load_hf_code()'s (float32 pixels, no-op CPU autocast, <image> id looked up in
the tokenizer: 128815 here, the released id) plus, for the bfloat16 model, a forward pre-hook casting the pixels
to the weights' dtype (what the unpatched .to(torch.bfloat16) did). float32 = the bf16 checkpoint's values in f32.
With --pt-new-tokens below NEW the PyTorch decode rate is measured over that many tokens and the page time is
extrapolated to NEW tokens (page = preprocess + encoder + prefill + (NEW - 1) / decode rate), flagged as such;
a shorter context decodes a little faster, so this favours PyTorch.
"""
import argparse, json, os, re, subprocess, sys, tempfile, time

import torch
from safetensors import safe_open

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
from make_ocr_model_fixtures import load_hf_code  # noqa: E402
import make_ocr_encoder_fixtures as enc_fix  # noqa: E402

MODES = {"tiny": (512, 512, False), "small": (640, 640, False), "base": (1024, 1024, False), "gundam": (1024, 640, True)}
MODE_INDEX = {"tiny": 0, "small": 1, "base": 2, "gundam": 3}
PROMPT = "<image>\n<|grounding|>Convert the document to markdown."
PAGE = os.path.join(ROOT, "tests", "fixtures", "models", "ocr_tiny", "page.png")


def build_model(ocr, enc_mod, folder):
    cfg_json = json.load(open(os.path.join(folder, "config.json")))
    sam = cfg_json["vision_config"]["width"]["sam_vit_b"]
    clip = cfg_json["vision_config"]["width"]["clip-l-14-224"]
    if (sam["layers"], clip["layers"]) != (12, 24):  # reduced: the same deepencoder.py classes, fewer blocks
        small = enc_fix.build(enc_mod, enc_mod, enc_mod, width=sam["width"], depth=sam["layers"], heads=sam["heads"],
                              globals_=sam["global_attn_indexes"], neck=256, ds=sam["downsample_channels"],
                              clip_layers=clip["layers"], clip_heads=clip["heads"], clip_ffn=4096, n_embed=1280)
        ocr.build_sam_vit_b = lambda: small.sam_model
        ocr.build_clip_l = lambda: small.vision_model
        ocr.MlpProjector = lambda cfg: small.projector
    dec = {k: v for k, v in cfg_json["language_config"].items() if k not in ("architectures", "model_type", "torch_dtype")}
    cfg = ocr.DeepseekOCRConfig(**dec)
    cfg._attn_implementation = "eager"  # the MHA classes are eager or flash_attention_2 (CUDA only)
    from transformers.modeling_utils import no_init_weights
    torch.set_default_dtype(torch.bfloat16)  # as from_pretrained(torch_dtype=torch.bfloat16) builds it
    try:
        with no_init_weights():
            model = ocr.DeepseekOCRForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    params = dict(model.named_parameters())
    seen = set()
    with torch.no_grad(), safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        for k in f.keys():
            assert k in params, ("checkpoint tensor the model lacks", k)
            t = f.get_tensor(k)
            assert t.shape == params[k].shape, (k, t.shape, params[k].shape)
            params[k].data = t.to(torch.bfloat16) if params[k].dtype == torch.bfloat16 else t.to(params[k].dtype)
            seen.add(k)
    missing = set(params) - seen
    assert not missing, ("model parameters not in the checkpoint", sorted(missing)[:5])
    return model


def cast_to_weights(module, args):
    dt = next(module.parameters()).dtype
    return tuple(a.to(dt) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def run_pytorch(args, folder):
    torch.set_num_threads(args.threads)
    ocr, enc_mod = load_hf_code()
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.convert_tokens_to_ids("<image>") == 128815 and tok.eos_token_id == 1
    t0 = time.perf_counter()
    model = build_model(ocr, enc_mod, folder)
    print(json.dumps({"peer": "pytorch", "load_s": round(time.perf_counter() - t0, 1)}), flush=True)
    model.model.sam_model.register_forward_pre_hook(cast_to_weights)
    model.model.vision_model.register_forward_pre_hook(cast_to_weights)
    T = {}
    now = time.perf_counter

    def top_pre(m, a):
        T.setdefault("first_pre", now())
        T.setdefault("first_pre_cpu", time.process_time())

    def top_post(m, a, o):
        T.setdefault("first_post", now())
        T.setdefault("first_post_cpu", time.process_time())
        T["forwards"] = T.get("forwards", 0) + 1

    def layer0_pre(m, a):
        T.setdefault("enc_end", now())
        T.setdefault("enc_end_cpu", time.process_time())

    def head_pre(m, a):
        T.setdefault("head_pre", now())

    def head_post(m, a, o):
        T.setdefault("head_post", now())

    model.register_forward_pre_hook(top_pre)
    model.register_forward_hook(top_post)
    model.model.layers[0].register_forward_pre_hook(layer0_pre)
    model.lm_head.register_forward_pre_hook(head_pre)
    model.lm_head.register_forward_hook(head_post)
    orig_generate = model.generate
    new = args.pt_new_tokens

    def generate(input_ids, **kw):
        kw = dict(kw, max_new_tokens=new, min_new_tokens=new, no_repeat_ngram_size=0, streamer=None)
        T["prompt_tokens"] = int(input_ids.shape[1])
        T["vision_tokens"] = int(kw["images_seq_mask"].sum())
        out = orig_generate(input_ids, **kw)
        T["gen_end"] = now()
        T["gen_end_cpu"] = time.process_time()
        T["generated"] = int(out.shape[1] - input_ids.shape[1])
        return out

    model.generate = generate
    results = {}
    out_dir = tempfile.mkdtemp(prefix="ocr_page_pt_")
    for dt in args.dtypes.split(","):
        if dt == "float32":
            model.float()
        elif dt == "bfloat16":
            model.to(torch.bfloat16)
        else:
            raise SystemExit("--dtypes: bfloat16 or float32, not " + dt)
        for mode in args.modes.split(","):
            base_size, image_size, crop = MODES[mode]
            T.clear()
            t_start, c_start = now(), time.process_time()
            with torch.no_grad():
                model.infer(tok, prompt=PROMPT, image_file=args.page, output_path=out_dir, base_size=base_size,
                            image_size=image_size, crop_mode=crop, save_results=False, eval_mode=False)
            t_end, c_end = now(), time.process_time()
            assert T["generated"] == new, T
            r = {"peer": "pytorch", "torch": torch.__version__, "dtype": dt, "mode": mode, "threads": args.threads,
                 "prompt_tokens": T["prompt_tokens"], "vision_tokens": T["vision_tokens"], "new_tokens": new,
                 "preprocess_ms": (T["first_pre"] - t_start) * 1e3, "encoder_ms": (T["enc_end"] - T["first_pre"]) * 1e3,
                 "prefill_ms": (T["first_post"] - T["enc_end"]) * 1e3, "lm_head_all_ms": (T["head_post"] - T["head_pre"]) * 1e3,
                 "decode_ms": (T["gen_end"] - T["first_post"]) * 1e3, "page_s": t_end - t_start,
                 "encoder_cpu_ms": (T["enc_end_cpu"] - T["first_pre_cpu"]) * 1e3,
                 "decode_cpu_ms_per_tok": (T["gen_end_cpu"] - T["first_post_cpu"]) * 1e3 / max(new - 1, 1),
                 "page_cpu_s": c_end - c_start}
            r["prefill_tok/s"] = r["prompt_tokens"] / (r["prefill_ms"] / 1e3)
            r["decode_tok/s"] = (new - 1) / (r["decode_ms"] / 1e3) if new > 1 else 0.0
            if new != args.new_tokens:
                r["page_s_extrapolated_to"] = args.new_tokens
                r["page_s"] = (r["preprocess_ms"] + r["encoder_ms"] + r["prefill_ms"]) / 1e3 + (args.new_tokens - 1) / r["decode_tok/s"]
                r["page_s_measured"] = t_end - t_start
                r["page_cpu_s"] = (T["first_post_cpu"] - c_start) + (args.new_tokens - 1) * r["decode_cpu_ms_per_tok"] / 1e3
            r["pages/s"] = 1.0 / r["page_s"]
            results[(dt, mode)] = r
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    del model
    return results


def run_ours(args):
    exe = os.path.join(args.build, "bench", "bench_ocr_page")
    env = dict(os.environ, DEEPSEEK_NUM_THREADS=str(args.threads), DEEPSEEK_BENCH_OCR_SIZE=args.size,
               DEEPSEEK_BENCH_NEW_TOKENS=str(args.new_tokens), DEEPSEEK_BENCH_PAGE=args.page)
    acts = {"bf16": "1", "f32": "0"}
    filt = "BM_Page/(%s)/(%s)/" % ("|".join(str(MODE_INDEX[m]) for m in args.modes.split(",")),
                                   "|".join(acts[a] for a in args.ours_activations.split(",")))
    cmd = [exe, "--benchmark_format=json", "--benchmark_filter=" + filt]
    print(json.dumps({"ours_cmd": " ".join(cmd), "env": {k: env[k] for k in ("DEEPSEEK_NUM_THREADS", "DEEPSEEK_BENCH_OCR_SIZE",
                                                                             "DEEPSEEK_BENCH_NEW_TOKENS")}}), flush=True)
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    results = {}
    inv = {v: k for k, v in MODE_INDEX.items()}
    for b in json.loads(out)["benchmarks"]:
        m = re.match(r"BM_Page/(\d)/(\d)", b["name"])
        mode, act = inv[int(m.group(1))], "bf16" if m.group(2) == "1" else "f32"
        r = {"ours": "deepseek.hpp", "activations": act, "mode": mode}
        for k in ("threads", "prompt_tokens", "vision_tokens", "tiles", "new_tokens", "eos_argmax", "preprocess_ms", "encoder_ms",
                  "prefill_ms", "prefill_tok/s", "decode_ms", "decode_tok/s", "page_s", "pages/s", "encoder_cpu_ms",
                  "decode_cpu_ms_per_tok", "page_cpu_s"):
            r[k] = b[k]
        results[(act, mode)] = r
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="build dir with bench/bench_ocr_page")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="full", choices=["full", "reduced"])
    ap.add_argument("--modes", default="tiny,small,base,gundam")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--ours-activations", default="bf16,f32")
    ap.add_argument("--new-tokens", type=int, default=500)
    ap.add_argument("--pt-new-tokens", type=int, default=None, help="tokens PyTorch decodes (default --new-tokens)")
    ap.add_argument("--page", default=PAGE)
    ap.add_argument("--ours-json", help="take our numbers from this log of an earlier run instead of running bench_ocr_page")
    args = ap.parse_args()
    if args.pt_new_tokens is None:
        args.pt_new_tokens = args.new_tokens
    folder = os.path.join(os.environ.get("DEEPSEEK_BENCH_DIR", "/tmp/deepseek-bench"), "ocr-page-" + args.size)
    print(json.dumps({"uptime": open("/proc/loadavg").read().split()[:3], "time": time.strftime("%H:%M:%S", time.gmtime())}), flush=True)
    if args.ours_json:  # our lines of an earlier run of this script (its {"ours": ...} lines), e.g. to rerun PyTorch alone
        ours = {}
        for line in open(args.ours_json):
            if line.startswith('{"ours": "deepseek.hpp"'):
                r = json.loads(line)
                ours[(r["activations"], r["mode"])] = r
        ours = {k: v for k, v in ours.items() if k[1] in args.modes.split(",")}
    else:
        ours = run_ours(args)  # first: it writes the checkpoint if missing; its process is gone before PyTorch loads
    print(json.dumps({"uptime": open("/proc/loadavg").read().split()[:3], "time": time.strftime("%H:%M:%S", time.gmtime())}), flush=True)
    pt = run_pytorch(args, folder)
    print(json.dumps({"uptime": open("/proc/loadavg").read().split()[:3], "time": time.strftime("%H:%M:%S", time.gmtime())}), flush=True)
    dtypes = args.dtypes.split(",")
    print("\nratios = PyTorch time / our time (speed-up), per mode; 'best' = the faster PyTorch dtype for that figure")
    print("%-7s %-5s %10s %10s %10s %10s | %s" % ("mode", "ours", "enc_ms", "page_s", "dec_tok/s", "pages/s", "encoder x / page x / decode x / prefill x vs " + ",".join(dtypes) + ",best"))
    for (act, mode), o in sorted(ours.items(), key=lambda kv: (kv[0][0], MODE_INDEX[kv[0][1]])):
        if not any((dt, mode) in pt for dt in dtypes):
            continue
        cols = []
        best = {"encoder_ms": float("inf"), "page_s": float("inf"), "decode_ms_per_tok": float("inf"), "prefill_ms": float("inf")}
        for dt in dtypes:
            p = pt.get((dt, mode))
            if not p:
                continue
            per_tok = 1e3 / p["decode_tok/s"]
            best = {"encoder_ms": min(best["encoder_ms"], p["encoder_ms"]), "page_s": min(best["page_s"], p["page_s"]),
                    "decode_ms_per_tok": min(best["decode_ms_per_tok"], per_tok), "prefill_ms": min(best["prefill_ms"], p["prefill_ms"])}
            cols.append("%.2f/%.2f/%.2f/%.2f" % (p["encoder_ms"] / o["encoder_ms"], p["page_s"] / o["page_s"],
                                                 o["decode_tok/s"] / p["decode_tok/s"], p["prefill_ms"] / o["prefill_ms"]))
        cols.append("%.2f/%.2f/%.2f/%.2f" % (best["encoder_ms"] / o["encoder_ms"], best["page_s"] / o["page_s"],
                                             best["decode_ms_per_tok"] * o["decode_tok/s"] / 1e3, best["prefill_ms"] / o["prefill_ms"]))
        print("%-7s %-5s %10.1f %10.2f %10.2f %10.4f | %s" % (mode, act, o["encoder_ms"], o["page_s"], o["decode_tok/s"], o["pages/s"], "  ".join(cols)))
        cpu_enc = min(pt[(dt, mode)]["encoder_cpu_ms"] for dt in dtypes if (dt, mode) in pt)
        cpu_page = min(pt[(dt, mode)]["page_cpu_s"] for dt in dtypes if (dt, mode) in pt)
        print("%-7s %-5s process CPU time: encoder %.0f ms (x%.2f vs best PyTorch), page %.1f s (x%.2f)" % (
            "", "", o["encoder_cpu_ms"], cpu_enc / o["encoder_cpu_ms"], o["page_cpu_s"], cpu_page / o["page_cpu_s"]))
    print("\nPyTorch:")
    print("%-7s %-9s %10s %10s %12s %10s %10s %s" % ("mode", "dtype", "enc_ms", "prefill_ms", "lm_head_all", "dec_tok/s", "page_s", "pages/s"))
    for (dt, mode), p in pt.items():
        print("%-7s %-9s %10.1f %10.1f %12.1f %10.2f %10.2f %.4f%s" % (mode, dt, p["encoder_ms"], p["prefill_ms"], p["lm_head_all_ms"], p["decode_tok/s"],
                                                                   p["page_s"], p["pages/s"], " (extrapolated from %d tokens)" % p["new_tokens"] if "page_s_measured" in p else ""))


if __name__ == "__main__":
    main()
