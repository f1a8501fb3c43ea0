"""The real preset's architecture with random weights, built from configs: nothing is downloaded.

SigLIP-base/16 at 224 px (google/siglip-base-patch16-224's vision tower) + SmolLM-135M (HuggingFaceTB/SmolLM-135M:
30 layers, hidden 576, 9 heads, 3 kv heads, vocab 49152, tied embeddings). Benchmarks and the real-size export
check use it: the shapes, FLOPs and bytes are the real model's, the captions are noise. The config values are
copied from those models' config.json files; this module knows nothing about their trained weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

SIGLIP_BASE_224 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
SMOLLM_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                   num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5,
                   rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, hidden_act="silu")


def vision_config() -> SiglipVisionConfig:
    return SiglipVisionConfig(**SIGLIP_BASE_224, vision_use_head=False)


def text_config() -> LlamaConfig:
    return LlamaConfig(**SMOLLM_135M)


def build_tokenizer(vocab_size: int = SMOLLM_135M["vocab_size"]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with SmolLM's vocabulary size (token 0 is BOS/EOS, as in SmolLM)."""
    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for i in range(len(vocab), vocab_size):
        vocab[f"w{i}"] = i
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<unk>")


def build_realsize_models(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write `folder/encoder` and `folder/decoder` (random weights, real shapes); return both paths."""
    folder = Path(folder)
    torch.manual_seed(seed)
    encoder, decoder = folder / "encoder", folder / "decoder"
    SiglipVisionModel(vision_config()).save_pretrained(encoder)
    SiglipImageProcessor(size={"height": 224, "width": 224}).save_pretrained(encoder)
    LlamaForCausalLM(text_config()).save_pretrained(decoder)
    build_tokenizer().save_pretrained(decoder)
    return encoder, decoder


def save_realsize_merged(folder: Path, seed: int = 0) -> Path:
    """A merged-model folder (what `train` writes to merged/) of the real-size architecture with random
    weights: the input `distilvit-web export` and the benchmarks use. Returns `folder`."""
    from distilvit.model import build_captioner

    folder = Path(folder)
    bases = folder.parent / f".{folder.name}-bases"
    encoder, decoder = build_realsize_models(bases, seed)
    model, processor = build_captioner(str(encoder), str(decoder))
    model.generation_config.max_new_tokens = 30
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    import shutil

    shutil.rmtree(bases)
    return folder


if __name__ == "__main__":
    import sys

    print(save_realsize_merged(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/realsize-merged")))
