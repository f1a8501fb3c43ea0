"""The Llama decoder stack rewritten for export: the same arithmetic as transformers' `LlamaModel`, fewer graph ops.

A decoded token runs every op of the decoder graph once, and at ~135 M parameters most ops are tiny, so onnxruntime's
per-op cost, not arithmetic, set the per-token time: transformers' modules exported to ~83 ops per layer (2591 in
all). This module computes the same function with ~45 ops per layer:

- q, k and v projections are one MatMul over the concatenated weights, gate and up one more (7 -> 4 MatMuls, and
  one dynamic activation quantization per MatMul in q8);
- the rotary embedding is applied once, to queries and keys together;
- grouped-query attention stacks the query heads that share a key/value head as rows of one GEMM
  (`[B, kv, groups*T, hd] @ [B, kv, hd, S]`) instead of repeating keys and values per query head;
- the causal (and padding) mask is built once per call, as an additive float mask, not per layer;
- RMSNorm is written `x / sqrt(mean(x^2) + eps) * w`, the pattern onnxruntime fuses into one
  SimplifiedLayerNormalization at load time (transformers' `x * rsqrt(...)` is not fused).

Cosines and sines come from the model's own rotary module, so every rope type transformers implements for Llama
is computed as it is there. `export.validate` checks the exported graphs against the unmodified model; this module
knows nothing about ONNX, caches on disk or tensor names.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaModel, rotate_half


def _fused_linear(*linears: nn.Linear) -> nn.Linear:
    """One Linear whose output is the concatenation of `linears`' outputs (weights concatenated, not shared)."""
    weight = torch.cat([lin.weight.detach() for lin in linears], dim=0)
    has_bias = [lin.bias is not None for lin in linears]
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=any(has_bias), dtype=weight.dtype)
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if any(has_bias):
        fused.bias = nn.Parameter(torch.cat([lin.bias.detach() if lin.bias is not None else torch.zeros(lin.out_features)
                                             for lin in linears]), requires_grad=False)
    return fused


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm (float32 statistics), in the form onnxruntime fuses."""
    dtype = x.dtype
    x = x.float()
    return weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)).to(dtype)


class ExportLayer(nn.Module):
    """One `LlamaDecoderLayer` (pre-norm attention + SwiGLU MLP) on the weights of `layer`; q/k/v and gate/up are
    concatenated copies made here, the other weights are the layer's own."""

    def __init__(self, layer, config):
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling
        self.eps = layer.input_layernorm.variance_epsilon
        self.input_norm = layer.input_layernorm.weight
        self.post_norm = layer.post_attention_layernorm.weight
        self.qkv = _fused_linear(attn.q_proj, attn.k_proj, attn.v_proj)
        self.o_proj = attn.o_proj
        self.gate_up = _fused_linear(mlp.gate_proj, mlp.up_proj)
        self.down_proj = mlp.down_proj
        self.act = mlp.act_fn
        self.intermediate = mlp.gate_proj.out_features

    def forward(self, x, cos, sin, mask, past_key, past_value):
        """x [B, T, D]; cos/sin [B, T, 1, hd]; mask [B|1, 1, groups*T, S] additive; past [B, kv, P, hd]."""
        b, t = x.shape[0], x.shape[1]
        groups = self.heads // self.kv_heads
        qkv = self.qkv(rms_norm(x, self.input_norm, self.eps)).unflatten(-1, (self.heads + 2 * self.kv_heads, self.head_dim))
        qk, v = qkv.split([self.heads + self.kv_heads, self.kv_heads], dim=2)  # [B, T, H + kv, hd], [B, T, kv, hd]
        qk = qk * cos + rotate_half(qk) * sin
        q, k = qk.split([self.heads, self.kv_heads], dim=2)
        key = torch.cat([past_key, k.transpose(1, 2)], dim=2)  # [B, kv, S, hd]
        value = torch.cat([past_value, v.transpose(1, 2)], dim=2)
        # one GEMM per key/value head: its `groups` query heads stacked as rows, ordered (group, position)
        q = q.reshape(b, t, self.kv_heads, groups, self.head_dim).permute(0, 2, 3, 1, 4)  # [B, kv, groups, T, hd]
        q = q.reshape(b, self.kv_heads, groups * t, self.head_dim)
        scores = (q * self.scaling) @ key.transpose(-1, -2)  # [B, kv, groups*T, S]
        probs = torch.softmax(scores + mask, dim=-1, dtype=torch.float32).to(q.dtype)
        attn = (probs @ value).reshape(b, self.kv_heads, groups, t, self.head_dim)  # [B, kv, groups, T, hd]
        attn = attn.permute(0, 3, 1, 2, 4).reshape(b, t, self.heads * self.head_dim)  # [B, T, H*hd]
        x = x + self.o_proj(attn)
        gate, up = self.gate_up(rms_norm(x, self.post_norm, self.eps)).split([self.intermediate, self.intermediate], dim=-1)
        x = x + self.down_proj(self.act(gate) * up)
        return x, key, value


class ExportLlama(nn.Module):
    """`LlamaModel` on embeddings with a flat past: (last hidden state [B, T, D], presents k0, v0, k1, v1, ...)."""

    def __init__(self, model: LlamaModel):
        super().__init__()
        self.layers = nn.ModuleList(ExportLayer(layer, model.config) for layer in model.layers)
        self.norm = model.norm.weight
        self.eps = model.norm.variance_epsilon
        self.rotary_emb = model.rotary_emb

    def forward(self, embeds: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                past: tuple[torch.Tensor, ...]):
        """embeds [B, T, D]; position_ids [B, T]; attention_mask [B, P + T] (1 = attend) or None (all ones)."""
        t = embeds.shape[1]
        total = past[0].shape[2] + t
        cos, sin = self.rotary_emb(embeds, position_ids)  # [B, T, hd]
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # broadcast over heads
        query_pos = torch.arange(t, device=embeds.device) + (total - t)  # [T]
        allowed = torch.arange(total, device=embeds.device)[None, :] <= query_pos[:, None]  # [T, S] causal
        allowed = allowed[None]  # [1, T, S]
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, :]  # [B, T, S]
        neg = torch.finfo(embeds.dtype).min
        groups = self.layers[0].heads // self.layers[0].kv_heads
        mask = torch.where(allowed, 0.0, neg).to(embeds.dtype).repeat(1, groups, 1)[:, None]  # [B|1, 1, groups*T, S]
        x, presents = embeds, []
        for i, layer in enumerate(self.layers):
            x, key, value = layer(x, cos, sin, mask, past[2 * i], past[2 * i + 1])
            presents += [key, value]
        return rms_norm(x, self.norm, self.eps), presents
