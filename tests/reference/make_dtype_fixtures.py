#!/usr/bin/env python3
"""Generate tests/fixtures/dtypes/dtypes.safetensors: dtype-conversion and FP8 block-dequant references.

All conversions are done by torch (the reference semantics); the file is written by the `safetensors`
package. Deterministic (fixed seeds, numpy only for bit patterns).

Usage:  python tests/reference/make_dtype_fixtures.py [--out tests/fixtures/dtypes/dtypes.safetensors]

Notes on the torch conversions recorded here (torch 2.15):
  * f32 -> bf16 / f16: round-to-nearest-even; f16 overflows to +-inf at >= 65520.
  * f32 -> float8_e4m3fn: round-to-nearest-even and SATURATING: every finite |x| >= 448 (including
    values >= 480) and +-inf become +-448; NaN stays NaN (0x7f / 0xff).
  * f32 -> float8_e8m0fnu: exponent-only; torch rounds non-powers-of-two UP (3.0 -> 4.0, 0.75 -> 1.0),
    0 and tiny values -> 2^-127 (byte 0), inf/NaN/too large -> NaN (byte 255).
"""
import argparse
import math
import os

import numpy as np
import torch
from safetensors.torch import save_file

torch.set_num_threads(1)


def f32_from_bits(bits):
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def bits_of(x):
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def build_samples():
    rng = np.random.default_rng(1234)
    vals = []

    def add(x):
        vals.extend(np.asarray(x, dtype=np.float32).ravel().tolist())

    inf, nan = np.float32(np.inf), np.float32(np.nan)
    # specials
    add([0.0, -0.0, inf, -inf, nan, -nan, 1.0, -1.0, 0.5, 2.0, 3.0, -3.0, 0.1, -0.1])
    # f32 extremes and subnormals
    add(f32_from_bits([0x00000001, 0x80000001, 0x00000002, 0x007FFFFF, 0x807FFFFF, 0x00400000,
                       0x00800000, 0x80800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F000000, 0x00000100]))
    add(f32_from_bits(rng.integers(1, 0x007FFFFF, size=40, dtype=np.uint32)))
    add(f32_from_bits(rng.integers(1, 0x007FFFFF, size=20, dtype=np.uint32) | 0x80000000))
    add([1e-45, 1e-40, 1e-38, 1e-30, 1e-20, 1e-10, 1e10, 1e20, 1e30, 1e38, 3e38, -3e38])

    # ---- bf16 ties: low 16 bits == 0x8000 (exact halfway), both mantissa parities; +-1 ulp around
    base = rng.integers(0x0001, 0x7F7F, size=200, dtype=np.uint32) << 16
    base[:100] &= ~np.uint32(1 << 16)  # even bf16 lsb
    base[100:] |= np.uint32(1 << 16)  # odd bf16 lsb
    sign = (rng.integers(0, 2, size=200, dtype=np.uint32) << 31)
    b = base | sign
    add(f32_from_bits(b | 0x8000))
    add(f32_from_bits(b | 0x7FFF))
    add(f32_from_bits(b | 0x8001))
    # bf16 rounding that carries into the exponent / overflow to inf
    add(f32_from_bits([0x3F7FFFFF, 0x3F7F8000, 0x7F7F8000, 0x7F7FFFFF, 0x7F7F7FFF, 0xFF7F8000, 0x00008000,
                       0x00018000, 0x80008000]))

    # ---- f16 ties: normal range, halfway between adjacent f16 (f32 mantissa low 13 bits == 0x1000)
    h = rng.integers(0x0400, 0x7BFF, size=200, dtype=np.uint16)  # finite normal f16 (excluding max)
    h[:100] &= ~np.uint16(1)
    h[100:] |= np.uint16(1)
    hf = h.view(np.float16).astype(np.float32)
    hb = bits_of(hf)
    sign = (rng.integers(0, 2, size=200, dtype=np.uint32) << 31)
    add(f32_from_bits((hb | 0x1000) | sign))
    add(f32_from_bits((hb | 0x0FFF) | sign))
    add(f32_from_bits((hb | 0x1001) | sign))
    # f16 subnormal ties: (k + 0.5) * 2^-24
    k = np.arange(0, 1024, 17)
    t = ((k + 0.5) * 2.0 ** -24).astype(np.float32)
    add(t)
    add(-t)
    add(np.nextafter(t, np.float32(1.0)))
    add(np.nextafter(t, np.float32(0.0)))
    add([2.0 ** -25, 2.0 ** -25 * 1.0001, 2.0 ** -26, 2.0 ** -24, 2.0 ** -14, 2.0 ** -14 * (1 - 2 ** -11)])
    # f16 overflow boundary
    add([65504.0, 65505.0, 65519.0, 65519.996, 65520.0, 65520.004, 65536.0, 70000.0, -65504.0, -65520.0,
         -65519.0, 1e5, 6e4, 32768.5, 2048.5, 2049.0, 2051.0])

    # ---- e4m3 ties: halfway between adjacent e4m3 normals (f32 mantissa low 20 bits == 0x80000)
    e = np.arange(0, 256, dtype=np.uint8)
    e4 = torch.from_numpy(e.copy()).view(torch.float8_e4m3fn).float().numpy()
    normals = e4[(np.abs(e4) >= 2.0 ** -6) & np.isfinite(e4) & (np.abs(e4) < 448)]
    nb = bits_of(normals)
    add(f32_from_bits(nb | 0x80000))
    add(f32_from_bits(nb | 0x7FFFF))
    add(f32_from_bits(nb | 0x80001))
    # e4m3 subnormal range 2^-9 .. 2^-6 and its ties (k + 0.5) * 2^-9
    k = np.arange(0, 8)
    t = ((k + 0.5) * 2.0 ** -9).astype(np.float32)
    add(t)
    add(-t)
    add(np.nextafter(t, np.float32(1.0)))
    add(np.nextafter(t, np.float32(0.0)))
    add(np.linspace(2.0 ** -10, 2.0 ** -6, 97, dtype=np.float32))
    add(-np.linspace(2.0 ** -11, 2.0 ** -5, 61, dtype=np.float32))
    add([2.0 ** -10, 2.0 ** -10 * 1.0001, 2.0 ** -10 * 0.9999, 2.0 ** -11, 2.0 ** -6 * (1 - 2.0 ** -5)])
    # near / above the e4m3 max (448) -- torch saturates
    add([416.0, 432.0, 440.0, 447.0, 448.0, 449.0, 455.0, 456.0, 463.9, 464.0, 464.1, 470.0, 479.0,
         479.99, 480.0, 480.01, 481.0, 496.0, 500.0, 512.0, 1000.0, 1e6])
    add(-np.array([440.0, 448.0, 464.0, 479.0, 480.0, 481.0, 1e4], dtype=np.float32))
    add(np.linspace(400.0, 520.0, 121, dtype=np.float32))

    # ---- e8m0-relevant: powers of two and neighbours
    p = np.float32(2.0) ** np.arange(-127, 128, 7, dtype=np.float32)
    add(p)
    add(p * np.float32(1.5))
    add(np.nextafter(p, np.float32(np.inf)))

    # ---- random values: log-uniform over many exponents, and random finite bit patterns
    n_now = len(vals)
    n_rand = max(0, 4000 - n_now)
    half = n_rand // 2
    ex = rng.uniform(-40.0, 40.0, size=half)
    m = rng.uniform(1.0, 2.0, size=half)
    s = rng.choice([-1.0, 1.0], size=half)
    add((s * m * np.exp2(ex)).astype(np.float32))
    rb = rng.integers(0, 2 ** 32, size=n_rand - half, dtype=np.uint64).astype(np.uint32)
    rf = f32_from_bits(rb)
    rf = np.where(np.isnan(rf), np.float32(1.25), rf)  # keep NaN payloads out (only canonical NaN above)
    add(rf)

    out = np.asarray(vals, dtype=np.float32)
    return torch.from_numpy(out.copy())


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "dtypes", "dtypes.safetensors"))
    args = ap.parse_args()
    torch.manual_seed(0)

    t = {}
    x = build_samples()
    t["f32_samples"] = x
    t["f32_to_bf16"] = x.to(torch.bfloat16)
    t["f32_to_f16"] = x.to(torch.float16)
    t["f32_to_f8_e4m3"] = x.to(torch.float8_e4m3fn)
    t["f32_to_e8m0"] = x.to(torch.float8_e8m0fnu)

    u16 = torch.from_numpy(np.arange(65536, dtype=np.uint16).view(np.int16).copy())
    t["bf16_all"] = u16.view(torch.bfloat16).clone()
    t["bf16_all_to_f32"] = t["bf16_all"].to(torch.float32)
    t["f16_all"] = u16.view(torch.float16).clone()
    t["f16_all_to_f32"] = t["f16_all"].to(torch.float32)
    u8 = torch.arange(256, dtype=torch.uint8)
    t["f8_e4m3_all"] = u8.view(torch.float8_e4m3fn).clone()
    t["f8_e4m3_all_to_f32"] = t["f8_e4m3_all"].to(torch.float32)
    t["e8m0_all"] = u8.view(torch.float8_e8m0fnu).clone()
    t["e8m0_all_to_f32"] = t["e8m0_all"].to(torch.float32)

    t["i64_values"] = torch.tensor([-(2 ** 62), -1, 0, 1, 2 ** 62], dtype=torch.int64)
    t["i32_values"] = torch.tensor([-(2 ** 31), -1, 0, 2 ** 31 - 1], dtype=torch.int32)
    t["u8_values"] = torch.tensor([0, 127, 255], dtype=torch.uint8)
    t["bool_values"] = torch.tensor([True, False, False, True], dtype=torch.bool)
    t["f32_matrix"] = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float32)
    t["f32_3d"] = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    t["f16_4d"] = (torch.arange(12, dtype=torch.float32) * 0.5).to(torch.float16).reshape(1, 2, 2, 3)

    # FP8 block dequant (spec §7.3): W[i,j] = fp8(Wq[i,j]) * S[i//128, j//128]
    g = torch.Generator().manual_seed(77)
    raw = torch.randint(0, 256, (300, 200), generator=g, dtype=torch.int32).to(torch.uint8)
    raw[(raw == 0x7F) | (raw == 0xFF)] = 0x3C  # no NaN encodings in the weight
    w = raw.view(torch.float8_e4m3fn).clone()
    s = (torch.rand(3, 2, generator=g, dtype=torch.float32) * 0.02 + 1e-4)
    sfull = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:300, :200]
    t["fp8_weight"] = w
    t["fp8_weight_scale_inv"] = s
    t["fp8_weight_dequant_f32"] = w.to(torch.float32) * sfull

    t = {k: v.contiguous() for k, v in t.items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # single metadata key: safetensors writes the metadata map in hash order (non-deterministic bytes)
    save_file(t, args.out, metadata={"format": "pt"})
    print(f"wrote {args.out}: {len(t)} tensors, f32_samples N={x.numel()}")


if __name__ == "__main__":
    main()
