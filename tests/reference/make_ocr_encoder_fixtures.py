#!/usr/bin/env python3
"""DeepSeek-OCR vision encoder ("DeepEncoder") fixtures from the official modules.

The reference is DeepSeek's own code: sam_vary_sdpa.py (SAM-B ViTDet + neck + 16x compressor),
clip_sdpa.py (CLIP-L fed with SAM features) and build_linear.py (the linear projector), read from
the mirrored DeepSeek-OCR repository with `git show` into a temporary directory and imported from
there (only the `flash_attn` import is stubbed: the SDPA path never calls it, and the stub raises
if it is called). The three modules are composed as DeepseekOCR's vLLM model does
(deepseek_ocr.py: f1 = sam_model(x); f2 = vision_model(x, f1);
 projector(cat(f2[:, 1:], f1.flatten(2).permute(0, 2, 1)))).

Default (CI fixtures, tests/fixtures/vision_encoder/): the modules are built with small widths
(SAM width 32, 2 heads, depth 4 with block 2 global, window 14, 64x64 position grid as released;
neck 16, net_2 16->24, net_3 24->32; CLIP width 32, 2 heads, 2 layers, ffn 64; projector 64->40),
random seeded weights scaled so activations stay O(1), float32. Inputs cover every released mode
(512, 640 twice: a global view and a tile, 1024, 1280) and two odd sizes (208, 160: grids smaller
than a window, odd compressor outputs). Writes
  model.safetensors      the released tensor names (prefix model.)
  config.json            deepseek_vl_v2 config with vision_config / projector_config
  reference.safetensors  per size S: sam_S [N, C] (SAM features, row-major grid), clip_S [1 + N, C],
                         out_S [N, n_embed]; blocks_640 (SAM trunk output before the neck, [h*w, C]);
                         resampler checks: bicubic antialias (torch F.interpolate) and 1-D linear
Pixels are not stored: pixel(c, y, x) = float32(k) / 1000 with the integer k from pixel_k() below
(salt 1 for the tile, 0 otherwise), reproduced exactly by the C++ test.

--released DIR: the same at the released sizes (SAM-B 768 x 12, CLIP-L 1024 x 24, projector
2048 -> 1280; random weights rounded to bf16 and stored as bf16), inputs 1024 and 640, written to
DIR (about 800 MB; not committed). Run the test tagged [released] against it:
  python3 tests/reference/make_ocr_encoder_fixtures.py --released /tmp/ocr_released
  DEEPSEEK_OCR_RELEASED_DIR=/tmp/ocr_released build/tests/nn/test_nn "[released]"
"""
import argparse, importlib, json, math, os, subprocess, sys, tempfile, types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

MIRROR = "/work/.mirror/deepseek-ai+DeepSeek-OCR/repo"
SRC = "DeepSeek-OCR-master/DeepSeek-OCR-vllm/deepencoder/"


def load_official():
    tmp = tempfile.mkdtemp(prefix="dsocr_")
    pkg = os.path.join(tmp, "deepencoder")
    os.makedirs(pkg)
    for f in ("sam_vary_sdpa.py", "clip_sdpa.py", "build_linear.py"):
        text = subprocess.run(["git", "-C", MIRROR, "show", "HEAD:" + SRC + f], check=True, capture_output=True, text=True).stdout
        open(os.path.join(pkg, f), "w").write(text)
    open(os.path.join(pkg, "__init__.py"), "w").write("")
    stub = types.ModuleType("flash_attn")

    def _never(*a, **k):
        raise RuntimeError("flash_attn called: the SDPA path must not use it")

    stub.flash_attn_qkvpacked_func = _never
    stub.flash_attn_func = _never
    sys.modules["flash_attn"] = stub
    sys.path.insert(0, tmp)
    sam = importlib.import_module("deepencoder.sam_vary_sdpa")
    clip = importlib.import_module("deepencoder.clip_sdpa")
    lin = importlib.import_module("deepencoder.build_linear")
    return sam, clip, lin


def pixel_k(S, salt):
    """Integer k in [-650, 650] per (c, y, x): a blocky pattern plus a hash, all in uint32 arithmetic (salt picks
    another image of the same size)."""
    c = np.arange(3, dtype=np.uint32)[:, None, None]
    y = np.arange(S, dtype=np.uint32)[None, :, None]
    x = np.arange(S, dtype=np.uint32)[None, None, :]
    h = (x * np.uint32(73856093)) ^ (y * np.uint32(19349663)) ^ (c * np.uint32(83492791)) ^ np.uint32(salt * 0x27D4EB2D)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0x5BD1E995)
    h = h ^ (h >> np.uint32(15))
    noise = (h % np.uint32(601)).astype(np.int64) - 300            # [-300, 300]
    smooth = ((x // 16 + 2 * (y // 16) + 5 * c) % np.uint32(15)).astype(np.int64) * 50 - 350  # [-350, 350]
    return (noise + smooth).astype(np.int64)


def pixels(S, salt):
    return torch.from_numpy(pixel_k(S, salt).astype(np.float32) / np.float32(1000.0))[None]


class DeepEncoder(nn.Module):
    def __init__(self, sam_model, vision_model, projector):
        super().__init__()
        self.sam_model, self.vision_model, self.projector = sam_model, vision_model, projector

    def forward(self, x):
        f1 = self.sam_model(x)
        f2 = self.vision_model(x, f1)
        feats = torch.cat((f2[:, 1:], f1.flatten(2).permute(0, 2, 1)), dim=-1)
        return f1, f2, self.projector(feats)


def build(sam_m, clip_m, lin_m, *, width, depth, heads, globals_, neck, ds, clip_layers, clip_heads, clip_ffn, n_embed):
    sam_model = sam_m.ImageEncoderViT(
        depth=depth, embed_dim=width, img_size=1024, mlp_ratio=4, norm_layer=__import__("functools").partial(nn.LayerNorm, eps=1e-6),
        num_heads=heads, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=globals_, window_size=14,
        out_chans=neck)
    sam_model.net_2 = nn.Conv2d(neck, ds[0], kernel_size=3, stride=2, padding=1, bias=False)
    sam_model.net_3 = nn.Conv2d(ds[0], ds[1], kernel_size=3, stride=2, padding=1, bias=False)
    cfg = clip_m.adict(num_layers=clip_layers, hidden_size=ds[1], num_heads=clip_heads, num_attention_heads=clip_heads,
                       ffn_hidden_size=clip_ffn, seq_length=256, max_position_embeddings=256, use_flash_attn=False,
                       understand_projector_stride=2, hidden_dropout=0.0, attention_dropout=0.0, no_persist_layer_norm=False,
                       layernorm_epsilon=1e-5, pre_layernorm_epsilon=1e-5, image_size=224, patch_size=14, recompute_list=[])
    vision_model = clip_m.VitModel(cfg=cfg, freeze_embed=False, freeze_pre_norm=False)
    projector = lin_m.MlpProjector(clip_m.adict(projector_type="linear", input_dim=2 * ds[1], n_embed=n_embed))
    return DeepEncoder(sam_model, vision_model, projector).eval()


def randomize(model, gen):
    """Weights with unit-gain linears (attention logits O(1), decisive softmax), LayerNorm affine near (1, 0),
    rel-pos tables and position embeddings large enough to matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            if name.endswith("rel_pos_h") or name.endswith("rel_pos_w"):
                v = torch.randn(shape, generator=gen) * 0.5
            elif "pos_embed" in name or "position_embedding" in name or "class_embedding" in name:
                v = torch.randn(shape, generator=gen) * 0.5
            elif p.dim() == 1 and ("norm" in name or "neck.1" in name or "neck.3" in name or "layrnorm" in name):
                v = (1.0 + 0.2 * torch.randn(shape, generator=gen)) if name.endswith("weight") else 0.2 * torch.randn(shape, generator=gen)
            elif p.dim() == 1:  # linear / conv biases
                v = 0.2 * torch.randn(shape, generator=gen)
            else:
                fan_in = int(np.prod(shape[1:]))
                v = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
            p.copy_(v)


def state_dict_released(model):
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("position_ids"):
            continue
        sd["model." + k] = v.detach().contiguous()
    return sd


def config_json(width, depth, heads, globals_, ds, clip_width, clip_layers, clip_heads, n_embed):
    return {
        "architectures": ["DeepseekOCRForCausalLM"], "model_type": "deepseek_vl_v2", "tile_tag": "2D",
        "global_view_pos": "head", "candidate_resolutions": [[1024, 1024]],
        "projector_config": {"input_dim": 2 * ds[1], "n_embed": n_embed, "projector_type": "linear"},
        "vision_config": {"image_size": 1024, "mlp_ratio": 3.7362, "model_name": "deeplip_b_l", "model_type": "vision",
                          "width": {"clip-l-14-224": {"heads": clip_heads, "image_size": 224, "layers": clip_layers,
                                                      "patch_size": 14, "width": clip_width},
                                    "sam_vit_b": {"downsample_channels": list(ds), "global_attn_indexes": list(globals_),
                                                  "heads": heads, "layers": depth, "width": width}}},
        "language_config": {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": n_embed,
                            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "use_mla": False,
                            "kv_lora_rank": None, "q_lora_rank": None, "qk_nope_head_dim": 0, "qk_rope_head_dim": 0,
                            "v_head_dim": 0, "intermediate_size": 64, "n_routed_experts": 0, "vocab_size": 64,
                            "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "float32"},
        "torch_dtype": "float32",
    }


def run_sizes(model, sizes, ref, tag_blocks=None):
    stats = {}
    for name, S, salt in sizes:
        x = pixels(S, salt)
        captured = {}
        hook = None
        if tag_blocks is not None and name == tag_blocks:
            hook = model.sam_model.blocks[-1].register_forward_hook(lambda m, i, o: captured.setdefault("b", o))
        with torch.no_grad():
            f1, f2, out = model(x)
        if hook is not None:
            hook.remove()
            b = captured["b"][0]
            ref["blocks_" + name] = b.reshape(-1, b.shape[-1]).contiguous()
        ref["sam_" + name] = f1[0].flatten(1).permute(1, 0).contiguous()
        ref["clip_" + name] = f2[0].contiguous()
        ref["out_" + name] = out[0].contiguous()
        stats[name] = {"S": S, "sam": list(f1.shape), "max|sam|": float(f1.abs().max()), "max|clip|": float(f2.abs().max()),
                       "max|out|": float(out.abs().max()), "std(out)": float(out.std())}
    return stats


def resampler_checks(ref, gen):
    # Bicubic antialias (the recipe of both get_abs_pos): [1, C, n, n] -> [1, C, m, m], fp32.
    for n, m in ((64, 32), (64, 40), (64, 80), (64, 13), (64, 10), (64, 5), (16, 8), (16, 10), (16, 20), (16, 3), (16, 1), (5, 12)):
        t = torch.randn(1, 3, n, n, generator=gen)
        r = F.interpolate(t, size=(m, m), mode="bicubic", antialias=True, align_corners=False)
        ref[f"bicubic_in_{n}_{m}"] = t[0].contiguous()
        ref[f"bicubic_out_{n}_{m}"] = r[0].contiguous()
    # 1-D linear, align_corners False (get_rel_pos): [L, C] -> [M, C].
    for L, M in ((127, 63), (127, 79), (127, 159), (127, 19), (27, 27 * 3 + 2), (127, 1)):
        t = torch.randn(L, 4, generator=gen)
        r = F.interpolate(t.reshape(1, L, -1).permute(0, 2, 1), size=M, mode="linear").reshape(-1, M).permute(1, 0)
        ref[f"linear_in_{L}_{M}"] = t.contiguous()
        ref[f"linear_out_{L}_{M}"] = r.contiguous()


def sensitivity(model, sam_m, S=640):
    """How far plausible slips move the output at S (relative to max |out|): each must exceed 5x the C++
    tolerance (2e-5), so the fixture tells them from the official code."""
    x = pixels(S, 0)
    with torch.no_grad():
        want = model(x)[2]
    rel = lambda got: float((got - want).abs().max() / want.abs().max())
    out = {}
    interp = F.interpolate

    def no_aa(*a, **k):  # the non-antialiased bicubic (a = -0.75) some ports use
        k.pop("antialias", None)
        return interp(*a, **k)

    sam_m.F.interpolate = no_aa
    with torch.no_grad():
        out["bicubic_without_antialias"] = rel(model(x)[2])
    sam_m.F.interpolate = interp
    acts = [b.mlp.act for b in model.sam_model.blocks]
    for b in model.sam_model.blocks:
        b.mlp.act = nn.GELU(approximate="tanh")
    with torch.no_grad():
        out["tanh_gelu"] = rel(model(x)[2])
    for b, a in zip(model.sam_model.blocks, acts):
        b.mlp.act = a
    decomposed = sam_m.add_decomposed_rel_pos
    sam_m.add_decomposed_rel_pos = lambda q, *a: decomposed(q * q.shape[-1] ** -0.5, *a)
    with torch.no_grad():
        out["rel_pos_with_scaled_q"] = rel(model(x)[2])
    sam_m.add_decomposed_rel_pos = decomposed
    with torch.no_grad():
        f1 = model.sam_model(x)
        f2 = model.vision_model(x, f1)
        out["concat_sam_first"] = rel(model.projector(torch.cat((f1.flatten(2).permute(0, 2, 1), f2[:, 1:]), dim=-1)))
    for name, v in out.items():
        assert v > 1e-4, f"{name} moves the output by only {v:.2e}: the fixture cannot tell it from the official code"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--released", metavar="DIR", help="released sizes, bf16 weights, written to DIR")
    args = ap.parse_args()
    torch.set_num_threads(1 if not args.released else 2)
    sam_m, clip_m, lin_m = load_official()
    gen = torch.Generator().manual_seed(20251020)
    if args.released:
        dims = dict(width=768, depth=12, heads=12, globals_=[2, 5, 8, 11], neck=256, ds=[512, 1024], clip_layers=24,
                    clip_heads=16, clip_ffn=4096, n_embed=1280)
        out_dir = args.released
        sizes = [("1024", 1024, 0), ("640", 640, 0)]
    else:
        dims = dict(width=32, depth=4, heads=2, globals_=[2], neck=16, ds=[24, 32], clip_layers=2, clip_heads=2, clip_ffn=64,
                    n_embed=40)
        out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "vision_encoder")
        sizes = [("512", 512, 0), ("640", 640, 0), ("tile640", 640, 1), ("1024", 1024, 0), ("1280", 1280, 0), ("208", 208, 0),
                 ("160", 160, 0)]
    os.makedirs(out_dir, exist_ok=True)
    model = build(sam_m, clip_m, lin_m, **dims)
    randomize(model, gen)
    if args.released:  # the released checkpoint is bf16: round, store bf16, run the reference in f32 on the same values
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    sd = state_dict_released(model)
    if args.released:
        sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    cfg = config_json(dims["width"], dims["depth"], dims["heads"], dims["globals_"], dims["ds"], dims["ds"][1],
                      dims["clip_layers"], dims["clip_heads"], dims["n_embed"])
    json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"), indent=2)

    ref = {}
    stats = run_sizes(model, sizes, ref, tag_blocks=None if args.released else "640")
    sens = {}
    if not args.released:
        resampler_checks(ref, gen)
    save_file(ref, os.path.join(out_dir, "reference.safetensors"), metadata={"format": "pt"})
    if not args.released:
        sens = sensitivity(model, sam_m)
    print(json.dumps({"dir": out_dir, "stats": stats, "sensitivity_rel_at_640": sens}, indent=1))


if __name__ == "__main__":
    main()
