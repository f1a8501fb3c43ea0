"""The caption vocabulary: the token ids a captioner may generate, those its training captions use.

A captioner trained on captions never learns to emit most of its decoder's vocabulary (SmolLM: 49,152 tokens, of
which English alt text uses a few thousand). `train` collects the ids of the training split's captions, as the
collator tokenizes them, plus EOS, and the merged model carries them in `config.json` as `caption_vocab` (sorted
ids). Every runtime then chooses only among them:
- PyTorch (`distilvit.modeling.caption.Captioner`): the other ids' logits are set to MASKED_LOGIT before the choice;
- the exported decoder graph computes the output head over these ids only and gives every other id MASKED_LOGIT
  (export/graphs.py), so onnxruntime and transformers.js choose among the same ids without knowing about it.
- stock transformers (`AutoModelForImageTextToText.generate`, README's example, the model card's): the merged
  model's generation_config.json lists every other id in `suppress_tokens`, which transformers' own
  SuppressTokensLogitsProcessor sets to -inf at every step (`apply`).
The head is about a quarter of a decode step on WebAssembly (docs/browser.md), and its matrix a fifth of the q8
download. A model without `caption_vocab` (trained with `--full-vocab`, or before this existed) keeps the full
head; deleting the key from a merged model's config.json turns the restriction off for every runtime at once.

This module knows nothing about training loops, ONNX or browsers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import LogitsProcessor

from distilvit.atomic import write_file
from distilvit.errors import UserError

CONFIG_KEY = "caption_vocab"
FILE = "caption_vocab.json"  # written by train beside train_config.json
# What every id outside the vocabulary scores. Finite (runtimes' logits stay comparable, inf - inf is nan) and exact
# in float16; LM logits are tens, so no kept id ever scores this low.
MASKED_LOGIT = -1.0e4


# A caption vocabulary this small is a closed list of words (the synthetic shapes give 18 tokens): the model can never
# say anything outside it, whatever the image. English alt text uses a few thousand of a BPE decoder's tokens.
SMALL = 1000


def small_warning(tokens: int, vocab_size: int) -> str | None:
    """The warning `train` prints when a caption vocabulary of `tokens` ids is a closed word list for a decoder of
    `vocab_size` tokens (under SMALL and under a tenth of the decoder's); None otherwise (a word-level decoder
    built from the captions, like the tiny preset's, is its own caption vocabulary)."""
    if tokens >= SMALL or tokens * 10 > vocab_size:
        return None
    return (f"the caption vocabulary holds only {tokens} of the decoder's {vocab_size} tokens: the model will only "
            "ever say words of its training captions, whatever the image. Fine for a closed set of labels; for "
            "captions of any photograph train on more varied captions, or pass --full-vocab")


def from_captions(tokenizer, captions: Iterable[str], max_length: int) -> list[int]:
    """Sorted ids of `captions` tokenized as the training collator does (no special tokens, cut at max_length), plus
    EOS (every caption ends with it) and BOS (the decoder's first input)."""
    ids = {tokenizer.eos_token_id, tokenizer.bos_token_id}
    captions = list(captions)
    for start in range(0, len(captions), 4096):  # batches: one call per caption is slow, one for all holds them all
        rows = tokenizer(captions[start : start + 4096], add_special_tokens=False)["input_ids"]
        ids.update(i for row in rows for i in row[:max_length])
    return sorted(i for i in ids if i is not None)


def apply(model, ids: list[int]) -> None:
    """Give `model` (a LlavaForConditionalGeneration) the caption vocabulary `ids`: its config carries them (for our
    code and the export) and its generation config suppresses every other id (for stock transformers' `generate`),
    so the three choose among the same tokens."""
    setattr(model.config, CONFIG_KEY, ids)
    keep = set(ids)
    model.generation_config.suppress_tokens = [i for i in range(model.config.text_config.vocab_size) if i not in keep]


def save(run_dir: Path, ids: list[int], vocab_size: int, captions: int) -> None:
    """Write RUN/caption_vocab.json whole or not at all (an interrupted write leaves the old file or none)."""
    data = {"token_ids": ids, "tokens": len(ids), "of_vocab_size": vocab_size, "from_captions": captions}
    write_file(Path(run_dir) / FILE, json.dumps(data) + "\n", "caption vocabulary")


def load(run_dir: Path) -> list[int] | None:
    """The run's caption vocabulary, None when the run has none (--full-vocab, or older than this file). UserError
    when the file is not one `save` wrote (hand-edited, truncated): merging or resuming on a wrong vocabulary would
    build a different model from the one trained."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    try:
        ids = json.loads(path.read_text())["token_ids"]
        valid = isinstance(ids, list) and bool(ids) and all(type(i) is int and i >= 0 for i in ids)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        valid = False
    if not valid:
        raise UserError(f"{path} is not a caption vocabulary written by train (JSON with a non-empty 'token_ids' "
                        f"list of token ids): restore it (a merged model of this run holds the same ids as "
                        f"'{CONFIG_KEY}' in its config.json), or, if the run is unfinished, delete it and "
                        f"`distilvit-web train --resume` writes it again from the training captions")
    return ids


def of(config) -> list[int] | None:
    """The caption vocabulary of a model's config (a LlavaConfig, or its dict), None when it has none."""
    ids = config.get(CONFIG_KEY) if isinstance(config, dict) else getattr(config, CONFIG_KEY, None)
    return list(ids) if ids else None


def check(ids: list[int], vocab_size: int, generation_config) -> None:
    """The one rule for a caption vocabulary, whichever stage reads it (merge: the run's caption_vocab.json; export
    and `load_captioner`: a merged model's config.json): ValueError unless `ids` are sorted, unique, inside the
    decoder's vocabulary, and hold the decoder's BOS (its first input) and an EOS it stops at (`eos_token_id` may be
    a list, as Llama 3's is: one of them is enough), as `generation_config` names them."""
    if not ids or any(b <= a for a, b in zip(ids, ids[1:])) or ids[0] < 0 or ids[-1] >= vocab_size:
        raise ValueError(f"caption_vocab must hold sorted unique ids in [0, {vocab_size})")
    kept = set(ids)
    bos, eos = generation_config.bos_token_id, generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    missing = [f"BOS ({bos})"] if bos is not None and bos not in kept else []
    if eos and not kept & set(eos):
        missing.append(f"EOS ({eos[0] if len(eos) == 1 else eos})")
    if missing:
        raise ValueError(f"caption_vocab lacks {', '.join(missing)}")


def check_model(model) -> None:
    """`check` on a model's own caption vocabulary (config.json) against its generation config; nothing to check
    when it has none."""
    ids = of(model.config)
    if ids is not None:
        check(ids, model.config.text_config.vocab_size, model.generation_config)


def index_map(ids: list[int], vocab_size: int) -> torch.Tensor:
    """[V] int64: the position of each id in `ids`, len(ids) for ids outside it (the graphs' masked slot)."""
    positions = torch.full((vocab_size,), len(ids), dtype=torch.long)
    positions[torch.tensor(ids, dtype=torch.long)] = torch.arange(len(ids))
    return positions


def keep_mask(ids: list[int], vocab_size: int, device=None) -> torch.Tensor:
    """[V] bool: True at `ids`."""
    keep = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    keep[torch.tensor(ids, dtype=torch.long, device=device)] = True
    return keep


def mask_logits(logits: torch.Tensor, ids: list[int] | None, keep: torch.Tensor | None = None) -> torch.Tensor:
    """`logits` [..., V] with every id outside `ids` set to MASKED_LOGIT (unchanged when ids is None); `keep` is
    `keep_mask(ids, V)` when the caller has it already."""
    if ids is None:
        return logits
    keep = keep_mask(ids, logits.shape[-1], logits.device) if keep is None else keep
    return torch.where(keep, logits, torch.tensor(MASKED_LOGIT, dtype=logits.dtype, device=logits.device))


class MaskLogits(LogitsProcessor):
    """A `generate` logits processor: `mask_logits` on every step's scores (the mask built once per device)."""

    def __init__(self, ids: list[int]):
        self.ids = ids
        self._keep: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._keep is None or self._keep.device != scores.device or self._keep.numel() != scores.shape[-1]:
            self._keep = keep_mask(self.ids, scores.shape[-1], scores.device)
        return mask_logits(scores, self.ids, self._keep)
