"""FP8 KV-cache rows as FlashMLA quantizes them (the V3.2 FP8 sparse-decoding layout, 656 bytes a
token): tests/fixtures/kv_cache/fp8_flashmla.safetensors, checked by tests/nn/test_kv_cache.cpp.

FlashMLA's own tests/quant.py (quantize_k_cache / dequantize_k_cache, FP8KVCacheLayout.V32_FP8Sparse)
is read from the public repository deepseek-ai/FlashMLA at run time (a local mirror or a clone:
FLASHMLA_DIR, default /work/.mirror/deepseek-ai+FlashMLA/repo, a bare git repository is fine) and
run on the CPU with PyTorch. Nothing of it is copied here.

Rows: bf16-valued [c_kv (512) ; k_pe (64)], with blocks of very different magnitude, an all-zero block
(the 1e-4 scale floor), a block whose amax/448 sits exactly on a power of two, values at +-448 x
scale, and subnormal e4m3 codes. Written: rows (f32 [N, 576], exactly the bf16 inputs), quantized
(u8 [N, 656], FlashMLA's bytes), dequantized (f32 [N, 576], FlashMLA's dequantize_k_cache).
"""
import os
import subprocess
import sys
import tempfile
import importlib.util

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "kv_cache")
FLASHMLA = os.environ.get("FLASHMLA_DIR", "/work/.mirror/deepseek-ai+FlashMLA/repo")


def load_quant():
    src = subprocess.run(["git", "-C", FLASHMLA, "show", "HEAD:tests/quant.py"], check=True,
                         capture_output=True, text=True).stdout
    d = tempfile.mkdtemp()
    path = os.path.join(d, "flashmla_quant.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("flashmla_quant", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    q = load_quant()
    g = torch.Generator().manual_seed(11)
    N, D = 24, 576
    x = torch.randn(N, D, generator=g)
    # per-row, per-block magnitudes over 10 decades
    for r in range(N):
        for b in range(4):
            x[r, b * 128:(b + 1) * 128] *= 10.0 ** (float(torch.randint(-6, 4, (1,), generator=g)))
    x[0, 0:128] = 0.0                                   # all-zero block: the 1e-4 floor of the scale
    x[1, 128:256] = torch.linspace(-1, 1, 128) * 448.0 * 0.25  # amax / 448 = 0.25 exactly: scale 0.25
    x[2, 256:384] *= 1e-3                               # tiny values: e4m3 subnormals after scaling
    x[3, 384:512] = torch.linspace(-7e-3, 7e-3, 128)    # amax/448 below 1e-4: floor again
    x = x.to(torch.bfloat16)
    quant = q.quantize_k_cache(x.view(1, N, 1, D), q.FP8KVCacheLayout.V32_FP8Sparse)
    deq = q.dequantize_k_cache(quant, q.FP8KVCacheLayout.V32_FP8Sparse)
    qb = quant.view(N, -1).view(torch.uint8).numpy().copy()
    assert qb.shape == (N, 656), qb.shape
    scales = quant.view(N, -1)[:, 512:528].view(torch.float32)
    assert float(scales[1, 1]) == 0.25, scales[1]
    assert float(scales[0, 0]) == 2.0 ** -13, scales[0]  # 1e-4 -> 2^ceil(log2 1e-4) = 2^-13
    save_file({"rows": x.float().numpy(), "quantized": qb, "dequantized": deq.view(N, D).float().numpy()},
              os.path.join(OUT, "fp8_flashmla.safetensors"))
    print("wrote", N, "rows; FlashMLA", subprocess.run(["git", "-C", FLASHMLA, "log", "-1", "--format=%H"],
                                                       capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    sys.exit(main())
