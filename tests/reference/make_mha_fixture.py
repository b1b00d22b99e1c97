#!/usr/bin/env python3
"""Plain multi-head attention fixture (the DeepSeek-OCR decoder's use_mla: false attention).

DeepSeek-OCR's language model is DeepseekV2 with use_mla false: Llama-style q/k/v/o projections
with rotate_half (half-split) RoPE. transformers' LlamaAttention is that block, so it is the
reference: random weights (std chosen so attention is decisive), random inputs, eager attention,
causal. Writes tests/fixtures/blocks/mha/{config.json, model.safetensors, reference.safetensors}.
"""
import json, os, torch
from safetensors.torch import save_file
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

torch.manual_seed(0)
torch.set_num_threads(1)
out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "blocks", "mha")
os.makedirs(out, exist_ok=True)

hidden, heads, kv_heads, head_dim, T = 96, 4, 2, 24, 11
cfg = LlamaConfig(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                  intermediate_size=128, vocab_size=64, max_position_embeddings=256, rope_theta=10000.0,
                  attention_bias=False, attn_implementation="eager")
attn = LlamaAttention(cfg, layer_idx=0).eval()
with torch.no_grad():
    for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
        lin.weight.normal_(0.0, 2.0 / lin.in_features ** 0.5)
rope = LlamaRotaryEmbedding(cfg)
x = torch.randn(1, T, hidden)
pos = torch.arange(T)[None]
cos, sin = rope(x, pos)
mask = torch.full((T, T), float("-inf")).triu(1)[None, None]
with torch.no_grad():
    y, _ = attn(x, (cos, sin), attention_mask=mask)

weights = {f"model.layers.0.self_attn.{n}.weight": getattr(attn, n).weight.detach().contiguous()
           for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
save_file(weights, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
save_file({"x": x[0].contiguous(), "y": y[0].contiguous()}, os.path.join(out, "reference.safetensors"), metadata={"format": "pt"})
config = {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "use_mla": False,
          "hidden_size": hidden, "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
          "num_hidden_layers": 1, "vocab_size": 64, "intermediate_size": 128, "n_routed_experts": 0,
          "max_position_embeddings": 256, "rope_theta": 10000.0, "rope_scaling": None, "q_lora_rank": None,
          "kv_lora_rank": None, "bos_token_id": 0, "eos_token_id": 1}
json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
print("wrote", out, "max |y|", float(y.abs().max()))
