"""What the stock `LlavaForConditionalGeneration` answers for the inputs of each exported graph: the reference
that validation (export.validate) and the parity report compare the ONNX graphs with.

Nothing of the export's own rewrite (export/graphs.py, export/llama_stack.py) is used here:
- image features: `model.model.get_image_features` with the config's feature layer and selection strategy;
- token embeddings: the model's input embedding;
- decoders: the model's own forward on `inputs_embeds` with a `DynamicCache` filled from the flat past tensors,
  `logits_to_keep=1`, with ids outside the model's caption vocabulary masked (distilvit/modeling/caption_vocab.py); the
  presents are that cache's keys and values after the call. For the pipeline decoder the
  image prefix is prepended to the embeddings when the past is empty and positions start at the past length, the
  contract of `PrefixDecoder`.
This module knows nothing about ONNX files or tolerances.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, LlavaForConditionalGeneration

from distilvit.export import constants as C
from distilvit.modeling import caption_vocab


def image_features(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    """`[B, N, D_text]` from the model's own feature path."""
    cfg = model.config
    out = model.model.get_image_features(pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
                                         vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    features = getattr(out, "pooler_output", out)  # transformers 5.24: BaseModelOutputWithPooling, a list per image
    return torch.stack(list(features)) if isinstance(features, (list, tuple)) else features


def _decoder(model: LlavaForConditionalGeneration, embeds: torch.Tensor, attention_mask: torch.Tensor,
             position_ids: torch.Tensor, past: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    cache = DynamicCache(config=model.config.text_config)
    for layer in range(len(past) // 2):
        cache.update(past[2 * layer], past[2 * layer + 1], layer)
    out = model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                use_cache=True, logits_to_keep=1)
    presents = []
    for layer in out.cache.layers:
        presents += [layer.keys, layer.values]  # [B, kv, past + T, hd]
    logits = caption_vocab.mask_logits(out.logits, caption_vocab.of(model.config))  # the generable ids only
    return (logits, *presents)  # logits [B, 1, V]


def graph_reference(input_names: list[str], model: LlavaForConditionalGeneration, inputs: tuple) -> tuple:
    """The stock model's outputs for one graph's inputs (named as the graph names them)."""
    with torch.no_grad():
        if input_names == [C.PIXEL_VALUES]:
            return (image_features(model, inputs[0]),)
        if input_names == [C.INPUT_IDS]:
            return (model.get_input_embeddings()(inputs[0]),)
        if input_names[1] == C.ENCODER_HIDDEN_STATES:
            ids, prefix, *past = inputs
            embeds = model.get_input_embeddings()(ids)  # [B, T, D]
            past_len = past[0].shape[2]
            if past_len == 0:
                embeds = torch.cat([prefix.to(embeds.dtype), embeds], dim=1)  # [B, N + T, D]
            batch, length = embeds.shape[:2]
            positions = (torch.arange(length) + past_len).unsqueeze(0).expand(batch, -1)
            mask = torch.ones(batch, past_len + length, dtype=torch.long)
            return _decoder(model, embeds, mask, positions, tuple(past))
        embeds, mask, positions, *past = inputs
        return _decoder(model, embeds, mask, positions, tuple(past))
