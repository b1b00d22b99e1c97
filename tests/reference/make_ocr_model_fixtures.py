#!/usr/bin/env python3
"""DeepSeek-OCR end to end (image in, greedy ids out) from the OFFICIAL HF pipeline, on a tiny random checkpoint.

Reference: the HF remote code of deepseek-ai/DeepSeek-OCR (modeling_deepseekocr.py, deepencoder.py,
modeling_deepseekv2.py, configuration_deepseek_v2.py, conversation.py as mirrored in
kurokencom/DeepSeekOcrCPUWin, whose top-level modeling_deepseekocr.py is the CPU copy), read with `git show`
into a temporary package and run by its own `infer()` in transformers 4.46.3 (the version the README pins):
  python3 -m venv --system-site-packages /tmp/venv-ocr
  /tmp/venv-ocr/bin/pip install transformers==4.46.3 tokenizers==0.20.3 addict easydict einops
  /tmp/venv-ocr/bin/pip install --no-deps torchvision
  /tmp/venv-ocr/bin/python tests/reference/make_ocr_model_fixtures.py
Patches, each asserted to apply exactly once (device / dtype / sizes only, never the math):
  * pixels are cast to float32 instead of bfloat16 and the CPU autocast context is a no-op: everything runs in
    float32 on bf16-rounded weights (the checkpoint stores bf16, as the release);
  * `image_token_id = 128815` (the id the released tokenizer gives <image>) becomes the fixture tokenizer's id of
    <image>, the lookup vLLM's official deepseek_ocr.py does (`tokenizer.vocab["<image>"]`);
  * the encoder builders are called with small widths: DeepseekOCRModel's build_sam_vit_b / build_clip_l /
    MlpProjector are replaced by the same classes of deepencoder.py at the widths of
    make_ocr_encoder_fixtures.py (its build()), image_newline / view_seperator get n_embed entries;
  * generate() is wrapped to stop after MAX_NEW tokens and return the logits (infer() asks for 8192);
    temperature 0 (greedy), eos and no_repeat_ngram_size = 20 stay as infer() passes them.
The decoder input embeddings (after the image rows are scattered in) are read with a forward pre-hook on the
first decoder layer.

Writes tests/fixtures/models/ocr_tiny/:
  config.json (deepseek_vl_v2, language_config + the same decoder fields top-level as the release),
  model.safetensors (released tensor names, bf16), tokenizer.json / tokenizer_config.json (the demo model's
  byte-level BPE cut to 600 ids, with the 12 OCR added tokens at 600..611), page.png (a page of the official
  repo's assets/show1.jpg, 32-colour PNG so both sides decode it exactly), reference.safetensors (per case:
  <case>.input_ids [L] int64, <case>.vision [rows, d] = embedding rows at the image positions in sequence order,
  <case>.logits [vocab] = last prompt position, <case>.greedy [MAX_NEW] int64), cases.json (mode, prompt, counts,
  greedy ids, margins, infer()'s placeholder counts for 12 sizes x 5 modes, grounding post-processing cases),
  cli_greedy.txt (case name and greedy ids per line) and page.pdf (the page as a one-page PDF, for `ocr --pdf`).
"""
import contextlib, importlib, io, json, math, os, subprocess, sys, tempfile, types

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "models", "ocr_tiny")
HF_MIRROR = "/work/.mirror/kurokencom+DeepSeekOcrCPUWin/repo"
OCR_MIRROR = "/work/.mirror/deepseek-ai+DeepSeek-OCR/repo"
MAX_NEW = 12
FIXED_DATE = __import__("time").gmtime(1760918400)  # 2025-10-20, as Pillow takes a PDF date
BASE_VOCAB = 600
OCR_TOKENS = ["<image>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>", "<td>", "</td>", "<tr>", "</tr>",
              "<|User|>", "<|Assistant|>"]
VOCAB = 640
N_EMBED = 64
CASES = [  # name, mode (base_size, image_size, crop_mode), prompt
    ("gundam", (1024, 640, True), "<image>\n<|grounding|>Convert the document to markdown. "),
    ("base", (1024, 1024, False), "<image>\nFree OCR."),
    ("tiny", (512, 512, False), "  <image>\nParse the figure.\n"),
]


def git_show(repo, path):
    return subprocess.run(["git", "-C", repo, "show", "HEAD:" + path], check=True, capture_output=True).stdout


def patch_once(text, old, new, count=1):
    assert text.count(old) == count, (old, text.count(old))
    return text.replace(old, new)


def load_hf_code():
    tmp = tempfile.mkdtemp(prefix="dsocr_hf_")
    pkg = os.path.join(tmp, "dsocr_hf")
    os.makedirs(pkg)
    for src, dst in (("modeling_deepseekocr.py", "modeling_deepseekocr.py"), ("model/deepencoder.py", "deepencoder.py"),
                     ("model/modeling_deepseekv2.py", "modeling_deepseekv2.py"),
                     ("model/configuration_deepseek_v2.py", "configuration_deepseek_v2.py"),
                     ("model/conversation.py", "conversation.py")):
        text = git_show(HF_MIRROR, src).decode()
        if dst == "modeling_deepseekocr.py":
            text = patch_once(text, ".to(torch.bfloat16))", ".to(torch.float32))", count=3)
            text = patch_once(text, 'with torch.autocast("cpu", dtype=torch.float32):', "with contextlib.nullcontext():", count=2)
            text = patch_once(text, "image_token_id = 128815", "image_token_id = tokenizer.convert_tokens_to_ids('<image>')")
            text = "import contextlib\n" + text
        open(os.path.join(pkg, dst), "w").write(text)
    open(os.path.join(pkg, "__init__.py"), "w").write("")
    sys.path.insert(0, tmp)
    sys.path.insert(0, HERE)
    return importlib.import_module("dsocr_hf.modeling_deepseekocr"), importlib.import_module("dsocr_hf.deepencoder")


def make_tokenizer(out):
    demo = json.load(open(os.path.join(ROOT, "examples", "models", "deepseek-v3-demo", "tokenizer.json")))
    vocab = {t: i for t, i in demo["model"]["vocab"].items() if i < BASE_VOCAB}
    merges = [m for m in demo["model"]["merges"] if (m[0] + m[1]) in vocab and m[0] in vocab and m[1] in vocab]
    assert len(merges) == BASE_VOCAB - 259
    demo["model"]["vocab"] = vocab
    demo["model"]["merges"] = merges
    added = [a for a in demo["added_tokens"] if a["id"] < 3]
    for k, t in enumerate(OCR_TOKENS):
        added.append({"id": BASE_VOCAB + k, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
    demo["added_tokens"] = added
    json.dump(demo, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False, indent=None)
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<｜begin▁of▁sentence｜>",
           "eos_token": "<｜end▁of▁sentence｜>", "pad_token": "<｜▁pad▁｜>", "clean_up_tokenization_spaces": False,
           "legacy": True, "model_max_length": 8192, "tokenizer_class": "LlamaTokenizerFast", "unk_token": None,
           "additional_special_tokens": ["<|User|>", "<|Assistant|>"]}
    json.dump(cfg, open(os.path.join(out, "tokenizer_config.json"), "w"), ensure_ascii=False, indent=1)


def make_page(out):
    img = Image.open(io.BytesIO(git_show(OCR_MIRROR, "assets/show1.jpg"))).convert("RGB")
    page = img.crop((5, 12, 405, 538)).resize((700, 940), Image.BICUBIC).quantize(32)
    page.save(os.path.join(out, "page.png"), optimize=True)
    return os.path.join(out, "page.png")


DECODER = dict(vocab_size=VOCAB, hidden_size=N_EMBED, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=4, n_shared_experts=2, n_routed_experts=8, num_experts_per_tok=3,
               ep_size=1, routed_scaling_factor=1.0, kv_lora_rank=None, q_lora_rank=None, qk_rope_head_dim=0, v_head_dim=0,
               qk_nope_head_dim=0, topk_method="greedy", n_group=1, topk_group=1, moe_layer_freq=1, first_k_dense_replace=1,
               norm_topk_prob=False, scoring_func="softmax", hidden_act="silu", max_position_embeddings=4096,
               rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False, rope_theta=10000.0,
               rope_scaling=None, attention_bias=False, attention_dropout=0.0, use_mla=False)
ENC = dict(width=32, depth=4, heads=2, globals_=[2], neck=16, ds=[24, 32], clip_layers=2, clip_heads=2, clip_ffn=64,
           n_embed=N_EMBED)


def config_json():
    lang = dict(DECODER, architectures=["DeepseekV2ForCausalLM"], lm_head=True, rm_head=False, torch_dtype="bfloat16")
    top = dict(DECODER)
    top.update({
        "architectures": ["DeepseekOCRForCausalLM"], "model_type": "deepseek_vl_v2", "tile_tag": "2D",
        "global_view_pos": "head", "candidate_resolutions": [[1024, 1024]], "language_config": lang,
        "projector_config": {"input_dim": 2 * ENC["ds"][1], "model_type": "mlp_projector", "n_embed": N_EMBED,
                             "projector_type": "linear"},
        "vision_config": {"image_size": 1024, "mlp_ratio": 3.7362, "model_name": "deeplip_b_l", "model_type": "vision",
                          "width": {"clip-l-14-224": {"heads": ENC["clip_heads"], "image_size": 224, "layers": ENC["clip_layers"],
                                                      "patch_size": 14, "width": ENC["ds"][1]},
                                    "sam_vit_b": {"downsample_channels": ENC["ds"], "global_attn_indexes": ENC["globals_"],
                                                  "heads": ENC["heads"], "layers": ENC["depth"], "width": ENC["width"]}}},
        "torch_dtype": "bfloat16",
    })
    return top


def build_model(ocr, enc_mod):
    enc_fix = importlib.import_module("make_ocr_encoder_fixtures")
    small = enc_fix.build(enc_mod, enc_mod, enc_mod, **ENC)
    ocr.build_sam_vit_b = lambda: small.sam_model
    ocr.build_clip_l = lambda: small.vision_model
    ocr.MlpProjector = lambda cfg: small.projector
    cfg = ocr.DeepseekOCRConfig(**DECODER)
    cfg._attn_implementation = "eager"
    model = ocr.DeepseekOCRForCausalLM(cfg).eval()
    model.model.image_newline = nn.Parameter(torch.zeros(N_EMBED))
    model.model.view_seperator = nn.Parameter(torch.zeros(N_EMBED))
    gen = torch.Generator().manual_seed(20251022)
    enc_fix.randomize(small, gen)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("model.sam_model", "model.vision_model", "model.projector")):
                p.copy_(p.to(torch.bfloat16).float())  # randomize()d above; stored as bf16 like the rest
                continue
            if name in ("model.image_newline", "model.view_seperator"):
                v = torch.randn(p.shape, generator=gen)
            elif name.endswith("norm.weight") or "layernorm" in name:
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
            elif name == "model.embed_tokens.weight":
                v = torch.randn(p.shape, generator=gen)
            elif name == "lm_head.weight":
                v = torch.randn(p.shape, generator=gen) * 2.0 / math.sqrt(p.shape[1])
            elif name.endswith("mlp.gate.weight"):
                v = torch.randn(p.shape, generator=gen) * 2.0 / math.sqrt(p.shape[1])
            else:
                v = torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1])
            p.copy_(v.to(torch.bfloat16).float())  # the checkpoint is bf16; the reference runs f32 on those values
    return model


def main():
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    ocr, enc_mod = load_hf_code()
    from transformers import AutoTokenizer
    make_tokenizer(OUT)
    json.dump(config_json(), open(os.path.join(OUT, "config.json"), "w"), indent=2)
    page = make_page(OUT)
    tok = AutoTokenizer.from_pretrained(OUT)
    assert tok.convert_tokens_to_ids("<image>") == BASE_VOCAB and tok.eos_token_id == 1
    model = build_model(ocr, enc_mod)
    sd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    save_file(sd, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})

    captured = {}
    orig_generate = model.generate

    def generate(input_ids, **kw):
        assert kw["temperature"] == 0.0 and kw["no_repeat_ngram_size"] == 20 and kw["eos_token_id"] == 1
        kw = dict(kw, max_new_tokens=MAX_NEW, output_logits=True, return_dict_in_generate=True, streamer=None)
        captured["input_ids"] = input_ids[0].clone()
        captured["mask"] = kw["images_seq_mask"][0].clone()
        captured["crop"] = kw["images_spatial_crop"].clone()
        out = orig_generate(input_ids, **kw)
        captured["out"] = out
        return out.sequences

    model.generate = generate

    def pre_hook(module, args, kwargs):
        h = kwargs.get("hidden_states", args[0] if args else None)
        if "embeds" not in captured:
            captured["embeds"] = h[0].detach().clone()

    model.model.layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)

    ref, cases = {}, []
    for name, (base_size, image_size, crop), prompt in CASES:
        captured.clear()
        with torch.no_grad():
            model.infer(tok, prompt=prompt, image_file=page, output_path=tempfile.mkdtemp(), base_size=base_size,
                        image_size=image_size, crop_mode=crop, save_results=False, eval_mode=False)
        out = captured["out"]
        ids = captured["input_ids"]
        mask = captured["mask"]
        L = ids.shape[0]
        logits = torch.stack([l[0] for l in out.logits])  # [steps, vocab], raw
        greedy = out.sequences[0, L:]
        assert greedy.shape[0] == MAX_NEW, "stopped early (EOS): pick another seed"
        top2 = logits.topk(2, dim=-1).values
        margins = (top2[:, 0] - top2[:, 1]).tolist()
        assert torch.equal(logits.argmax(-1), greedy), "no-repeat n-gram changed a greedy step"
        assert min(margins) > 1e-2, ("greedy step too close to a tie", margins)
        vision = captured["embeds"][mask]
        ref[name + ".input_ids"] = ids.to(torch.int64).contiguous()
        ref[name + ".vision"] = vision.float().contiguous()
        ref[name + ".logits"] = logits[0].float().contiguous()
        ref[name + ".greedy"] = greedy.to(torch.int64).contiguous()
        crop_shape = captured["crop"][0].tolist()
        cases.append({"name": name, "base_size": base_size, "image_size": image_size, "crop_mode": crop, "prompt": prompt,
                      "prompt_tokens": L, "vision_rows": int(mask.sum()), "tiles": crop_shape,
                      "greedy": greedy.tolist(), "min_margin": min(margins),
                      "max_abs_logit": float(logits[0].abs().max())})
        print(json.dumps(cases[-1]))
    save_file(ref, os.path.join(OUT, "reference.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(OUT, "cli_greedy.txt"), "w") as f:  # one line per case, for tests/cli/ocr.cmake
        for c in cases:
            f.write(c["name"] + " " + " ".join(str(i) for i in c["greedy"]) + "\n")
    # A one-page PDF of the page at half size (72 dpi in the file, so 144 dpi renders it near 700 x 940).
    Image.open(page).convert("RGB").resize((350, 470), Image.BICUBIC).save(
        os.path.join(OUT, "page.pdf"), resolution=72.0, creationDate=FIXED_DATE, modDate=FIXED_DATE)  # dated: reproducible
    layout = layout_counts(model, tok, generate)
    grounding = grounding_cases(ocr, page)
    json.dump({"transformers": __import__("transformers").__version__, "max_new": MAX_NEW, "cases": cases,
               "layout": layout, "grounding": grounding},
              open(os.path.join(OUT, "cases.json"), "w"), indent=1, ensure_ascii=False)
    print(json.dumps({"layout_cases": len(layout), "grounding_cases": len(grounding)}))


class _Abort(Exception):
    pass


def layout_counts(model, tok, real_generate):
    """Placeholder counts infer() builds for image sizes x modes (generate aborted before the model runs)."""
    sizes = [(641, 300), (800, 600), (1000, 1000), (3000, 1000), (1700, 2200), (600, 800), (640, 640), (300, 2000),
             (2000, 301), (1280, 1279), (700, 940), (64, 48)]
    modes = {"tiny": (512, 512, False), "small": (640, 640, False), "base": (1024, 1024, False),
             "large": (1280, 1280, False), "gundam": (1024, 640, True)}
    got = {}

    def generate(input_ids, **kw):
        got["n"] = int(kw["images_seq_mask"][0].sum())
        got["L"] = int(input_ids.shape[1])
        got["crop"] = kw["images_spatial_crop"][0].tolist()
        raise _Abort()

    model.generate = generate
    out = []
    tmp = tempfile.mkdtemp()
    for W, H in sizes:
        path = os.path.join(tmp, f"{W}x{H}.png")
        Image.new("RGB", (W, H), (200, 100, 50)).save(path)
        for mode, (base_size, image_size, crop) in modes.items():
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    model.infer(tok, prompt="<image>\nFree OCR.", image_file=path, output_path=tmp, base_size=base_size,
                                image_size=image_size, crop_mode=crop)
            except _Abort:
                pass
            out.append({"width": W, "height": H, "mode": mode, "vision_rows": got["n"], "tiles": got["crop"]})
    model.generate = real_generate
    return out


def official_block(script, start, end):
    """The lines of an official runner from the one containing `start` through the one containing `end`, dedented."""
    lines = git_show(OCR_MIRROR, "DeepSeek-OCR-master/DeepSeek-OCR-vllm/" + script).decode().split("\n")
    a = next(i for i, l in enumerate(lines) if start in l)
    b = next(i for i in range(a, len(lines)) if end in lines[i])
    block = lines[a:b + 1]
    indent = min(len(l) - len(l.lstrip()) for l in block if l.strip())
    return "\n".join(l[indent:] for l in block)


def grounding_cases(ocr, page_path):
    """re_match / crops (HF modeling_deepseekocr's re_match and process_image_with_refs) and the markdown
    post-processing loops of run_dpsk_ocr_image.py and run_dpsk_ocr_pdf.py, run on hand-made outputs."""
    from tqdm import tqdm
    image_loop = official_block("run_dpsk_ocr_image.py", "for idx, a_match_image in enumerate(tqdm(matches_images",
                                "\\eqqcolon', '=:')")
    pdf_loop = official_block("run_dpsk_ocr_pdf.py", "for idx, a_match_image in enumerate(matches_images)",
                              "\\eqqcolon', '=:').replace('\\n\\n\\n\\n'")
    page = Image.open(page_path).convert("RGB")
    W, H = page.size
    texts = [
        "<|ref|>title<|/ref|><|det|>[[10, 20, 990, 80]]<|/det|>\n# Heading\n\n<|ref|>text<|/ref|><|det|>[[10, 100, 500, 300]]<|/det|>\n"
        "Let $a \\coloneqq b$ and $c \\eqqcolon d$.\n\n\n\n<|ref|>image<|/ref|><|det|>[[100, 400, 600, 700], [0, 0, 999, 999]]<|/det|>\n"
        "<|ref|>image_caption<|/ref|><|det|>[[100,710,600,740]]<|/det|>\nFigure 1",
        "no grounding here \\coloneqq stays",
        "<|ref|>image<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|> then <|ref|>image<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|> twice",
        "<|ref|>text<|/ref|><|det|>[[1, 2, 3]]<|/det|>bad box; <|ref|>image<|/ref|><|det|>[[50, 50, 40, 60]]<|/det|>x2<x1",
        "<|ref|>a<|ref|>b<|/ref|><|det|>[[5, 5, 10, 10]]<|/det|><|ref|>unclosed<|/ref|><|det|>[[1, 1, 2, 2]]",
        "<|ref|>text<|/ref|><|det|>__import__('os')<|/det|> <|ref|>equation<|/ref|><|det|>[[ -5 , 10,1000, 999 ]]<|/det|>\\[x\\]",
        "<|ref|>image<|/ref|><|det|>[[900, 900, 1100, 1100]]<|/det|>\n<|ref|>table<|/ref|><|det|>[[0, 0, 10, 10]]<|/det|>\n<table><tr><td>1</td></tr></table>",
    ]
    out = []
    for text in texts:
        matches, matches_images, mathes_other = ocr.re_match(text)
        refs = []
        for m in matches:
            r = ocr.extract_coordinates_and_label(m, W, H) if m[2].strip().startswith("[") and "__" not in m[2] else None
            refs.append({"label": m[1], "det": m[2], "boxes": r[1] if r else None})
        tmp = tempfile.mkdtemp()
        os.makedirs(os.path.join(tmp, "images"))
        with contextlib.redirect_stdout(io.StringIO()):
            ocr.process_image_with_refs(page.copy(), matches, tmp)
        crops = []
        for k in range(64):
            f = os.path.join(tmp, "images", f"{k}.jpg")
            crops.append(list(Image.open(f).size) if os.path.exists(f) else None)
        while crops and crops[-1] is None:
            crops.pop()
        env = {"outputs": text, "matches_images": matches_images, "mathes_other": mathes_other, "tqdm": lambda x, desc=None: x}
        with contextlib.redirect_stderr(io.StringIO()):
            exec(image_loop, env)
        env_pdf = {"content": text, "matches_images": matches_images, "mathes_other": mathes_other, "jdx": 3}
        exec(pdf_loop, env_pdf)
        out.append({"text": text, "width": W, "height": H, "refs": refs, "crops": crops, "markdown": env["outputs"],
                    "markdown_pdf_page3": env_pdf["content"]})
    return out


if __name__ == "__main__":
    main()
