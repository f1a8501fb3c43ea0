"""Builds the prefix captioner as a stock `LlavaForConditionalGeneration` from a SigLIP encoder and a Llama decoder.

image -> SigLIP vision tower (frozen) -> projector Linear-GELU-Linear -> N image embeddings as a prefix
-> Llama-family decoder -> caption. The token layout is `[IMG] x N, BOS, caption, EOS` (`distilvit.modeling.prompt`).

Sources are hub ids or local folders, always read through `from_pretrained`, so the tiny preset (folders built
by `distilvit.modeling.tiny`) and the real preset (hub ids) take the same path. This module knows nothing about LoRA,
datasets or training; it only assembles and checks the model, its tokenizer and its processor.
"""

from __future__ import annotations

import logging

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from distilvit.errors import UserError
from distilvit.modeling.prompt import IMAGE_TOKEN  # noqa: F401  (re-exported: the prompt contract lives in distilvit.modeling.prompt)

log = logging.getLogger(__name__)

# Decoder model types we build and export. The browser export writes `decoder.model_type: "llama"`, so the
# decoder must really be one (SmolLM, SmolLM2, TinyLlama and Llama itself are).
LLAMA_FAMILY = ("llama",)
SIGLIP_TYPES = ("siglip", "siglip_vision_model")


def _read_config(source: str, role: str, read):
    try:
        return read(source)
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot read the {role} model config from {source!r}: {err.__class__.__name__}: {str(err).splitlines()[0]}. "
            f"Pass a local model folder holding config.json, or a Hugging Face Hub id (needs network access "
            f"or a cached copy)."
        ) from err


def _load_config(source: str, role: str):
    return _read_config(source, role, AutoConfig.from_pretrained)


def check_encoder(source: str) -> SiglipVisionConfig:
    """The SigLIP vision config behind `source` (a SigLIP model or a SigLIP vision model), or a UserError.

    Read as a SiglipVisionConfig, never as the whole SiglipConfig: the text half of Google's SigLIP checkpoints (never
    used here) keeps CLIP's BOS/EOS ids 49406/49407 beside a 32,000-token vocabulary, and transformers warns about
    those ids ("may result in unexpected behavior") whenever that half is built."""
    model_type = _read_config(source, "encoder", lambda s: PretrainedConfig.get_config_dict(s)[0]).get("model_type")
    if model_type not in SIGLIP_TYPES:
        raise UserError(
            f"--encoder-model {source!r} is a {model_type!r} model; distilvit-web needs a SigLIP vision "
            f"encoder (model_type one of {', '.join(SIGLIP_TYPES)}), e.g. google/siglip-base-patch16-224."
        )
    return _read_config(source, "encoder", SiglipVisionConfig.from_pretrained)


def check_decoder(source: str):
    """The text config behind `source` when it is a decoder-only Llama-family LM, else a UserError."""
    config = _load_config(source, "decoder")
    if config.model_type not in LLAMA_FAMILY or getattr(config, "is_encoder_decoder", False):
        raise UserError(
            f"--decoder-model {source!r} has model type {config.model_type!r}; distilvit-web needs a decoder-only "
            f"Llama-family causal LM (model_type {' or '.join(repr(t) for t in LLAMA_FAMILY)}), "
            f"e.g. HuggingFaceTB/SmolLM-135M."
        )
    return config


def load_tokenizer(decoder_source: str) -> PreTrainedTokenizerBase:
    """The decoder's tokenizer with `<image>` as one special token, and bos/pad tokens guaranteed.

    A tokenizer without a BOS token uses its EOS token as BOS (GPT-2 style); one without a pad token pads with
    EOS (padded positions never carry loss). New tokens would have untrained embeddings and output rows, so
    none are invented except `<image>`, whose embedding is always replaced by image features.
    """
    tokenizer = AutoTokenizer.from_pretrained(decoder_source)
    if tokenizer.eos_token is None:
        raise UserError(
            f"the tokenizer of {decoder_source!r} has no EOS token, so captions could never end; "
            f"use a decoder whose tokenizer defines eos_token."
        )
    if tokenizer.bos_token is None:
        log.info("tokenizer of %s has no BOS token: using EOS %r as BOS", decoder_source, tokenizer.eos_token)
        tokenizer.bos_token = tokenizer.eos_token
    if tokenizer.pad_token is None:
        log.info("tokenizer of %s has no pad token: padding with EOS %r", decoder_source, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    ids = tokenizer.encode(IMAGE_TOKEN, add_special_tokens=False)
    if len(ids) != 1:
        raise RuntimeError(f"{IMAGE_TOKEN!r} encodes to {ids}, expected one token")
    return tokenizer


def num_image_tokens(vision_config: SiglipVisionConfig) -> int:
    """N, the length of the image prefix: one token per patch (SigLIP has no CLS token)."""
    return (vision_config.image_size // vision_config.patch_size) ** 2


def build_captioner(encoder_source: str, decoder_source: str) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A fresh captioner: pretrained encoder and decoder weights, a randomly initialised projector."""
    check_encoder(encoder_source)  # a UserError before any weights load when it is not SigLIP
    text_config = check_decoder(decoder_source)
    tokenizer = load_tokenizer(decoder_source)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    # The MAP pooling head is never used (features are taken before it), so it is neither loaded nor exported.
    vision = SiglipVisionModel.from_pretrained(encoder_source, vision_use_head=False, dtype=torch.float32)
    lm = AutoModelForCausalLM.from_pretrained(decoder_source, dtype=torch.float32)
    # The captioner is built in float32 whatever dtype the checkpoints are stored in (SmolLM's is bfloat16): the
    # LLaVA model takes each part's dtype from its config, so a bfloat16 decoder config made a bfloat16 language
    # model here, trained in bfloat16 on a CPU the run planned as fp32 (torch's bf16 GEMM on an AVX2-only CPU:
    # 0.9 GFLOP/s against fp32's 57, issue 26; 2026-12-03, transformers 5.24). Precision is the training plan's.
    text_config.dtype = torch.float32
    n_image = num_image_tokens(vision.config)
    config = LlavaConfig(
        vision_config=vision.config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=image_token_id,
        image_seq_length=n_image,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(text_config.tie_word_embeddings),
    )
    config.dtype = torch.float32
    model = LlavaForConditionalGeneration(config).to(torch.float32)
    model.model.vision_tower.load_state_dict(vision.state_dict(), strict=True)
    model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(lm.lm_head.state_dict(), strict=True)
    _resize_vocab(model, len(tokenizer))

    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.suppress_tokens = [image_token_id]  # the image placeholder is never a caption word
    gen.do_sample = False
    gen.num_beams = 1

    image_processor = AutoImageProcessor.from_pretrained(encoder_source)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision.config.patch_size,
        vision_feature_select_strategy="full",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=0,
    )
    return model, processor


def _resize_vocab(model: LlavaForConditionalGeneration, vocab_size: int) -> None:
    """Grow the vocabulary to `vocab_size`, new rows set to the mean of the old ones (deterministic)."""
    old = model.get_input_embeddings().weight.shape[0]
    if vocab_size <= old:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight  # [V, D_text]
        emb[old:] = emb[:old].mean(dim=0)
        head = model.get_output_embeddings().weight
        if head.data_ptr() != emb.data_ptr():
            head[old:] = head[:old].mean(dim=0)
