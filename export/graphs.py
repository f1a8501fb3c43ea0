"""The torch modules that become ONNX graphs: thin wrappers around a merged `LlavaForConditionalGeneration`.

Pipeline layout (vision-encoder-decoder, what `pipeline('image-to-text')` runs):
    ImagePrefixEncoder   pixel_values [B,3,H,W] -> last_hidden_state [B,N,D_text]   (SigLIP + projector)
    PrefixDecoder        input_ids [B,T], encoder_hidden_states [B,N,D], past k/v -> logits [B,1,V], present k/v
                         The graph prepends the image prefix only when the past is empty, and builds its own
                         positions and all-ones attention mask (transformers.js would build them without the prefix).
LLaVA layout (`AutoModelForImageTextToText` + `generate`):
    ImagePrefixEncoder   pixel_values -> image_features
    TokenEmbedder        input_ids -> inputs_embeds
    EmbedsDecoder        inputs_embeds, attention_mask, position_ids, past k/v -> logits [B,1,V], present k/v

Every decoder computes logits for the last position only: generation reads nothing else. Past keys and values
come in and go out as flat tensors `[B, kv_heads, past, head_dim]` (a DynamicCache cannot be an export input);
each layer of `export/llama_stack.py` concatenates its past with the new keys and values. This module knows
nothing about ONNX files, dtypes or layouts on disk.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlavaForConditionalGeneration

from distilvit.export.llama_stack import ExportLlama
from distilvit.modeling import caption_vocab


def vision_features(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected image features `[B, N, D_text]`: SigLIP's last hidden state (before post_layernorm) -> projector.

    The same as `LlavaModel.get_image_features` with `vision_feature_layer=-1` and strategy `full`, without
    computing the unused post-layernorm.
    """
    tower = model.model.vision_tower
    hidden = tower.encoder(inputs_embeds=tower.embeddings(pixel_values)).last_hidden_state  # [B, N, D_vision]
    return model.model.multi_modal_projector(hidden)  # [B, N, D_text]


class ImagePrefixEncoder(nn.Module):
    def __init__(self, model: LlavaForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return vision_features(self.model, pixel_values)


class TokenEmbedder(nn.Module):
    def __init__(self, model: LlavaForConditionalGeneration):
        super().__init__()
        self.embed = model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)  # [B, T, D_text]


class _CachedDecoder(nn.Module):
    """Runs the language model on embeddings with a cache rebuilt from flat past tensors."""

    def __init__(self, model: LlavaForConditionalGeneration):
        super().__init__()
        self.stack = ExportLlama(model.model.language_model)
        self.lm_head = model.lm_head
        self.embed = model.get_input_embeddings()
        # A tied output head (SmolLM) is exported as ONE transposed matrix [D, V] that both the output MatMul and
        # the token lookup (a Gather along axis 1) read: the weight is stored once, and dynamic quantization turns
        # the MatMul into an int8 MatMulInteger instead of dequantizing the whole matrix to float every step.
        self.tied = self.lm_head.weight.data_ptr() == self.embed.weight.data_ptr()
        weight = self.lm_head.weight.detach()  # [V, D]
        vocab = caption_vocab.of(model.config)
        self.restricted = vocab is not None
        if self.restricted:
            # The caption vocabulary (distilvit/modeling/caption_vocab.py): the head's matrix holds its V' ids plus one zero
            # column [D, V' + 1]; `index` maps every id to its column (V' for the others), so the logits are the
            # V' + 1 products gathered back to [.., V] with the last slot fixed at MASKED_LOGIT by `slot_bias`.
            # Ids outside the vocabulary, which generation never picks, embed as zeros in a tied decoder.
            self.head_t = nn.Parameter(torch.cat([weight[vocab], weight.new_zeros(1, weight.shape[1])]).t().contiguous(),
                                       requires_grad=False)  # [D, V' + 1]
            self.register_buffer("index", caption_vocab.index_map(vocab, weight.shape[0]), persistent=False)  # [V]
            bias = torch.zeros(len(vocab) + 1)
            bias[-1] = caption_vocab.MASKED_LOGIT
            self.register_buffer("slot_bias", bias, persistent=False)  # [V' + 1]
        elif self.tied:
            self.head_t = nn.Parameter(weight.t().contiguous(), requires_grad=False)  # [D, V]

    def embed_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not self.tied:
            return self.embed(input_ids)  # [B, T, D]
        columns = self.index[input_ids.reshape(-1)] if self.restricted else input_ids.reshape(-1)  # [B*T]
        rows = torch.index_select(self.head_t, 1, columns)  # [D, B*T]
        return rows.t().reshape(input_ids.shape[0], input_ids.shape[1], -1)  # [B, T, D]

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.restricted:
            return torch.index_select(hidden @ self.head_t + self.slot_bias, 2, self.index)  # [B, 1, V]
        return hidden @ self.head_t if self.tied else self.lm_head(hidden)

    def _run(self, embeds, attention_mask, position_ids, past: tuple[torch.Tensor, ...]):
        hidden, presents = self.stack(embeds, position_ids, attention_mask, past)  # presents [B, kv, past + T, hd]
        logits = self.head(hidden[:, -1:, :])  # [B, 1, V]: only what generation reads
        return (logits, *presents)


class PrefixDecoder(_CachedDecoder):
    """Pipeline layout decoder: prepends the image prefix on the first step (empty past) only."""

    def forward(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor, *past: torch.Tensor):
        embeds = self.embed_ids(input_ids)  # [B, T, D]
        prefix_len = encoder_hidden_states.shape[1]  # N
        new_len = input_ids.shape[1]  # T
        past_len = past[0].shape[2]
        # start = N when there is a past (skip the prefix), 0 when there is none; integer shape arithmetic and
        # `narrow` export correctly with both exporters (a `[:, start:]` slice or torch.sym_min did not).
        start = prefix_len * (1 - 1 // (past_len + 1))
        x = torch.cat([encoder_hidden_states.to(embeds.dtype), embeds], dim=1)  # [B, N + T, D]
        x = x.narrow(1, start, prefix_len + new_len - start)  # [B, L, D], L = N + T or T
        length = x.shape[1]
        position_ids = (torch.arange(length, device=x.device) + past_len).unsqueeze(0).expand(x.shape[0], -1)  # [B, L]
        return self._run(x, None, position_ids, past)  # no padding: every position attends (causally)


class EmbedsDecoder(_CachedDecoder):
    """LLaVA layout decoder: embeddings, mask and positions come from transformers.js."""

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor):
        return self._run(inputs_embeds, attention_mask, position_ids, past)


def kv_shape(model: LlavaForConditionalGeneration) -> tuple[int, int]:
    """(kv_heads, head_dim) of the decoder: static dims of every past/present tensor."""
    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.num_key_value_heads, head_dim


def empty_past(model: LlavaForConditionalGeneration, batch: int, length: int = 0, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Flat past tensors for every layer (random values when length > 0, as validation inputs)."""
    heads, head_dim = kv_shape(model)
    n = model.config.text_config.num_hidden_layers
    return [torch.randn(batch, heads, length, head_dim, generator=generator) for _ in range(2 * n)]
