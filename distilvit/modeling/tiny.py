"""The `tiny` preset's base models: a tiny SigLIP vision encoder and a tiny Llama with a word-level tokenizer.

Both are built from config objects with random weights (seeded), saved with `save_pretrained` into folders and
then used exactly like hub ids, so everything downstream runs the same code as the real preset. The tokenizer
is trained on the captions it is given (built with the `tokenizers` library: lowercase, whitespace split, no
automatic BOS). This module knows nothing about datasets or training; it only writes the two folders.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

SPECIAL_TOKENS = {"unk_token": "<unk>", "pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}


@dataclass(frozen=True)
class TinySizes:
    """Sizes of the tiny encoder and decoder (64x64 images, patch 8 -> 64 image tokens). The frozen random encoder
    is 128 wide: 64 lost too much of each 8 x 8 x 3 patch for the widened synthetic shapes (docs/training.md)."""

    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 256


def build_tokenizer(captions: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every word of `captions` (lowercased) plus the specials."""
    words = sorted({w for c in captions for w in c.lower().split()})
    if not words:
        raise ValueError("cannot build a tokenizer from an empty caption list")
    specials = list(SPECIAL_TOKENS.values())
    vocab = {t: i for i, t in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def build_tiny_models(folder: Path, captions: list[str], seed: int = 0, sizes: TinySizes = TinySizes()) -> tuple[Path, Path]:
    """Write `folder/encoder` and `folder/decoder` (with its tokenizer); return both paths."""
    folder = Path(folder)
    encoder_dir, decoder_dir = folder / "encoder", folder / "decoder"
    torch.manual_seed(seed)
    vision_config = SiglipVisionConfig(
        hidden_size=sizes.vision_hidden,
        intermediate_size=sizes.vision_hidden * 4,
        num_hidden_layers=sizes.vision_layers,
        num_attention_heads=sizes.vision_heads,
        image_size=sizes.image_size,
        patch_size=sizes.patch_size,
        vision_use_head=False,
    )
    SiglipVisionModel(vision_config).save_pretrained(encoder_dir)
    SiglipImageProcessor(size={"height": sizes.image_size, "width": sizes.image_size}).save_pretrained(encoder_dir)

    tokenizer = build_tokenizer(captions)
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=sizes.text_hidden,
        intermediate_size=sizes.text_intermediate,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=sizes.text_heads,
        num_key_value_heads=sizes.text_kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=False,  # the tiny preset trains its output head, saved untied
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(text_config).save_pretrained(decoder_dir)
    tokenizer.save_pretrained(decoder_dir)
    (folder / "tiny_sizes.json").write_text(json.dumps(asdict(sizes), indent=2) + "\n")
    return encoder_dir, decoder_dir
