"""The export-only Llama stack (export/llama_stack.py) against transformers' LlamaModel: same hidden states, same cache."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaModel

from distilvit.export.llama_stack import ExportLlama

BASE = dict(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)


def reference(model: LlamaModel, embeds, position_ids, attention_mask, past):
    n = model.config.num_hidden_layers
    cache = DynamicCache(ddp_cache_data=[(past[2 * i].clone(), past[2 * i + 1].clone()) for i in range(n)])
    out = model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True)
    return out.last_hidden_state, [t for layer in out.cache.layers for t in (layer.keys, layer.values)]


@pytest.mark.parametrize("extra", [{}, {"attention_bias": True, "mlp_bias": True},
                                   {"num_key_value_heads": 4}, {"num_key_value_heads": 1},
                                   {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}],
                         ids=["gqa", "bias", "mha", "mqa", "linear-rope"])
@pytest.mark.parametrize("past_len,new", [(0, 7), (5, 1), (3, 4)])
def test_same_hidden_states_and_cache_as_transformers(extra, past_len, new):
    torch.manual_seed(0)
    config = LlamaConfig(**{**BASE, **extra})
    model = LlamaModel(config).eval()
    with torch.no_grad():  # random biases, so a dropped bias shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    stack = ExportLlama(model).eval()
    head_dim = config.hidden_size // config.num_attention_heads
    past = [torch.randn(2, config.num_key_value_heads, past_len, head_dim) for _ in range(2 * config.num_hidden_layers)]
    embeds = torch.randn(2, new, config.hidden_size)
    positions = torch.arange(past_len, past_len + new)[None].expand(2, -1)
    with torch.no_grad():
        ours, our_cache = stack(embeds, positions, None, tuple(past))
        theirs, their_cache = reference(model, embeds, positions, None, past)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for a, b in zip(our_cache, their_cache, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_padding_mask_matches_transformers_on_real_positions():
    """Left padding (batch row 1 starts two positions late): every non-padded position agrees."""
    torch.manual_seed(0)
    config = LlamaConfig(**BASE)
    model = LlamaModel(config).eval()
    stack = ExportLlama(model).eval()
    head_dim = config.hidden_size // config.num_attention_heads
    past = [torch.zeros(2, config.num_key_value_heads, 0, head_dim) for _ in range(2 * config.num_hidden_layers)]
    embeds = torch.randn(2, 6, config.hidden_size)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours, our_cache = stack(embeds, positions, mask, tuple(past))
        theirs, their_cache = reference(model, embeds, positions, mask, past)
        unpadded, _ = stack(embeds[1:, 2:], positions[1:, 2:], None, tuple(p[1:] for p in past))
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1, 2:], theirs[1, 2:], rtol=1e-5, atol=1e-5)
    # and a padded row equals the same sequence without padding
    torch.testing.assert_close(ours[1, 2:], unpadded[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(our_cache, their_cache, strict=True):
        torch.testing.assert_close(a[:, :, 2:], b[:, :, 2:], rtol=1e-5, atol=1e-5)
