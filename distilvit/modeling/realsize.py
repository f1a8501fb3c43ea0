"""The real preset's models, built from their real config files with random weights: nothing is downloaded.

`distilvit/modeling/hub_configs/` holds google/siglip-base-patch16-224's config.json and preprocessor_config.json and
HuggingFaceTB/SmolLM-135M's config.json, generation_config.json and special_tokens_map.json, byte for byte as
they are on the Hub (sources: hub_configs/README.md). Every config here is read from those files through
`from_pretrained`, so defaults fill the rest exactly as they do for the real ids (SigLIP's config.json is sparse:
hidden size, layers and image size all come from defaults). No value of those configs is typed in this module.

SmolLM's tokenizer.json could not be obtained, so `build_tokenizer` makes a stand-in that behaves like it where
our code can tell: 49,152 tokens, byte-level BPE, the 17 special tokens at ids 0..16 in SmolLM's order,
bos = eos = unk = `<|endoftext|>` = 0, no pad token, and no BOS added on encode. Its ids for ordinary text are
not SmolLM's.

`write_encoder_repo` / `write_decoder_repo` write folders shaped like the two Hub repositories (real config files,
random weights of the real size and dtype, the stand-in tokenizer): the benchmarks and the offline replicas of
the Hub (tests) use them.

`FEWER_TOKENS` is the one typed shape: SigLIP-base's real config with 256 px images in 32 px patches, i.e. 64 image
tokens instead of 196, the shape of google/siglip2-base-patch32-256 (SigLIP 2's fixed-resolution checkpoints load
with the SigLIP classes, model_type "siglip"; their config files are not in hub_configs). The benchmarks use it to
measure what fewer image tokens buy. `CAPTION_VOCAB_TOKENS` is the other: the size of the caption vocabulary the
merged model carries (distilvit/modeling/caption_vocab.py), an assumption (random ids + BOS/EOS), since the real size comes
from the training captions, which are not here: `train` logs it. This module knows nothing about training, datasets
or export.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipVisionConfig,
)

from distilvit.config import PRESETS

CONFIG_ROOT = Path(__file__).parent / "hub_configs"
ENCODER_ID = PRESETS["smollm-135m"]["encoder_model"]  # google/siglip-base-patch16-224
DECODER_ID = PRESETS["smollm-135m"]["decoder_model"]  # HuggingFaceTB/SmolLM-135M
ENCODER_FILES = ("config.json", "preprocessor_config.json")
DECODER_FILES = ("config.json", "generation_config.json", "special_tokens_map.json")
# SmolLM's special tokens, ids 0..16 in this order (its tokenizer.json's added_tokens and special_tokens_map.json,
# huggingface.co/HuggingFaceTB/SmolLM-135M at 08113ae).
SMOLLM_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>", "<filename>",
    "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>",
    "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>",
)


def config_folder(repo_id: str) -> Path:
    """The folder holding `repo_id`'s real config files (`org--name`, as the Hub cache names repositories)."""
    folder = CONFIG_ROOT / repo_id.replace("/", "--")
    if not folder.is_dir():
        raise FileNotFoundError(f"no real config files for {repo_id!r} under {CONFIG_ROOT}")
    return folder


# The vision shape of google/siglip2-base-patch32-256 over SigLIP-base/16-224's (see the module docstring).
FEWER_TOKENS = {"image_size": 256, "patch_size": 32}


def siglip_config(vision: dict | None = None) -> SiglipConfig:
    """SigLIP-base/16's real config; `vision` replaces vision-tower fields (e.g. `FEWER_TOKENS`)."""
    config = SiglipConfig.from_pretrained(config_folder(ENCODER_ID))
    for name, value in (vision or {}).items():
        if not hasattr(config.vision_config, name):
            raise ValueError(f"SiglipVisionConfig has no field {name!r}")
        setattr(config.vision_config, name, value)
    return config


def vision_config() -> SiglipVisionConfig:
    """SigLIP-base/16's vision tower config, as `from_pretrained` fills the sparse real config.json."""
    return siglip_config().vision_config


def text_config() -> LlamaConfig:
    return LlamaConfig.from_pretrained(config_folder(DECODER_ID))


def generation_config() -> GenerationConfig:
    return GenerationConfig.from_pretrained(config_folder(DECODER_ID))


def image_processor() -> SiglipImageProcessor:
    return SiglipImageProcessor.from_pretrained(config_folder(ENCODER_ID))


def build_tokenizer(vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """The SmolLM stand-in: a byte-level BPE with exactly `vocab_size` (default: SmolLM's) tokens.

    Ids 0..16 are SmolLM's special tokens, 17..272 the 256 byte symbols, the rest merges of two byte symbols
    (printable ones first), so any text encodes and every id decodes.
    """
    config = text_config()
    vocab_size = vocab_size or config.vocab_size
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(SMOLLM_SPECIAL_TOKENS)}
    for symbol in alphabet:
        vocab[symbol] = len(vocab)
    # printable ASCII letters (and the byte-level space "Ġ") before the rest, so common pairs merge
    common = [s for s in alphabet if s.isalnum() and s.isascii()] + ["Ġ"]
    ordered = common + [s for s in alphabet if s not in common]
    merges = []
    for a in ordered:
        for b in ordered:
            if len(vocab) >= vocab_size:
                break
            if a + b not in vocab:
                vocab[a + b] = len(vocab)
                merges.append((a, b))
    if len(vocab) != vocab_size:
        raise ValueError(f"cannot build a {vocab_size}-token byte-level vocabulary (made {len(vocab)})")
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    eot = SMOLLM_SPECIAL_TOKENS[0]
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=eot, eos_token=eot, unk_token=eot,
                                   additional_special_tokens=list(SMOLLM_SPECIAL_TOKENS),
                                   model_max_length=config.max_position_embeddings)


def _copy_config_files(repo_id: str, names: tuple[str, ...], folder: Path) -> None:
    source = config_folder(repo_id)
    for name in names:
        shutil.copyfile(source / name, folder / name)


def write_encoder_repo(folder: Path, seed: int = 0, vision: dict | None = None) -> Path:
    """A folder shaped like google/siglip-base-patch16-224: its config files byte for byte and a full
    SiglipModel (vision and text towers, float32 as there) with random weights in model.safetensors.

    With `vision` (fields of the vision tower, e.g. `FEWER_TOKENS`) the config files are save_pretrained's and
    the image processor's size follows the new image size: a variant of that repository, not a copy of one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = siglip_config(vision)
    SiglipModel(config).save_pretrained(folder)
    if vision:
        processor = image_processor()
        processor.size = {"height": config.vision_config.image_size, "width": config.vision_config.image_size}
        processor.save_pretrained(folder)
    else:
        _copy_config_files(ENCODER_ID, ENCODER_FILES, folder)  # the real files, not save_pretrained's rewrite
    return folder


def write_decoder_repo(folder: Path, seed: int = 0) -> Path:
    """A folder shaped like HuggingFaceTB/SmolLM-135M: its config files byte for byte, random weights in
    bfloat16 (the checkpoint's dtype) with the tied head stored once, and the stand-in tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    LlamaForCausalLM(text_config()).to(torch.bfloat16).save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    _copy_config_files(DECODER_ID, DECODER_FILES, folder)
    return folder


def build_realsize_models(folder: Path, seed: int = 0, vision: dict | None = None) -> tuple[Path, Path]:
    """Write `folder/encoder` and `folder/decoder` (random weights, real shapes and files); return both paths."""
    folder = Path(folder)
    return write_encoder_repo(folder / "encoder", seed, vision), write_decoder_repo(folder / "decoder", seed)


# Tokens a captioner trained on English alt text generates (its caption vocabulary): assumed, of SmolLM's 49,152.
CAPTION_VOCAB_TOKENS = 10_000


def save_realsize_merged(folder: Path, seed: int = 0, vision: dict | None = None,
                         caption_vocab_tokens: int | None = CAPTION_VOCAB_TOKENS) -> Path:
    """A merged-model folder (what `train` writes to merged/) of the real-size architecture with random
    weights: the input `distilvit-web export` and the benchmarks use. `vision` as in `write_encoder_repo`;
    `caption_vocab_tokens` random ids (with BOS and EOS) as its caption vocabulary, None for the full one.
    Returns `folder`."""
    from distilvit.modeling import caption_vocab
    from distilvit.modeling.model import build_captioner

    folder = Path(folder)
    bases = folder.parent / f".{folder.name}-bases"
    encoder, decoder = build_realsize_models(bases, seed, vision)
    model, processor = build_captioner(str(encoder), str(decoder))
    model.generation_config.max_new_tokens = 30
    if caption_vocab_tokens:
        g = torch.Generator().manual_seed(seed)
        special = {processor.tokenizer.bos_token_id, processor.tokenizer.eos_token_id}
        others = [i for i in torch.randperm(model.config.text_config.vocab_size, generator=g).tolist()
                  if i not in special and i != model.config.image_token_index]
        setattr(model.config, caption_vocab.CONFIG_KEY, sorted(special | set(others[: caption_vocab_tokens - len(special)])))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    shutil.rmtree(bases)
    return folder


if __name__ == "__main__":
    import sys

    print(save_realsize_merged(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/realsize-merged")))
