"""The prompt contract, in one place: what the decoder sees before and around a caption.

    training:     [IMG] x N, BOS, caption tokens, EOS        (loss on the caption tokens and EOS)
    generation:   [IMG] x N, BOS                             (then greedy or beam search until EOS)

`<image>` (IMAGE_TOKEN) is one added special token whose N embeddings are replaced by the projected image features;
BOS is the decoder tokenizer's BOS (its EOS when it has none: distilvit.modeling.model.load_tokenizer). Three forms:
- token ids (`prefix_ids`, `prompt_ids`, `training_row`): training, PyTorch captioning, the onnxruntime loop, bench;
- text for a processor (`prompt_text`): `LlavaProcessor` expands one `<image>` to N image tokens. The text already
  holds BOS, so it must be tokenized WITHOUT special tokens (PROCESSOR_KWARGS): a tokenizer that adds BOS on
  encode (Llama-2, Mistral, TinyLlama) would otherwise make it `BOS, [IMG] x N, BOS` and change every caption.
  transformers.js passes the processor's options on to its tokenizer, so the same rule reads
  `processor(image, '<image>' + processor.tokenizer.bos_token, { add_special_tokens: false })` (JS_CALL);
- the pipeline layout: transformers.js starts the decoder from `decoder_start_token_id` = BOS and the graph
  prepends the N image features itself, so no text is tokenized.
The JavaScript files, the demo, the model card and the README example cannot import this module; tests
(tests/test_prompt.py) check that each of them holds JS_PROMPT and JS_CALL (or PYTHON_CALL) verbatim.
This module knows nothing about models, images or files.
"""

from __future__ import annotations

IMAGE_TOKEN = "<image>"
PROCESSOR_KWARGS = {"add_special_tokens": False}
JS_PROMPT = "'<image>' + processor.tokenizer.bos_token"
JS_OPTIONS = "{ add_special_tokens: false }"
JS_CALL = f"processor(image, prompt, {JS_OPTIONS})"
PYTHON_CALL = "add_special_tokens=False"


def prefix_ids(image_token_id: int, bos_token_id: int, num_image_tokens: int) -> list[int]:
    """`[IMG] x N, BOS` as a list of ids."""
    return [image_token_id] * num_image_tokens + [bos_token_id]


def _ids(tokenizer, num_image_tokens: int) -> list[int]:
    return prefix_ids(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.bos_token_id, num_image_tokens)


def prompt_ids(tokenizer, batch_size: int, num_image_tokens: int):
    """The generation prompt for a batch, int64 `[B, N + 1]` (a torch tensor)."""
    import torch

    return torch.tensor([_ids(tokenizer, num_image_tokens)] * batch_size, dtype=torch.long)


def prompt_text(tokenizer) -> str:
    """The text a processor is given for the same prompt (tokenize it with PROCESSOR_KWARGS)."""
    return IMAGE_TOKEN + tokenizer.bos_token


def training_row(tokenizer, num_image_tokens: int, caption_ids: list[int], ignore_index: int = -100):
    """(input_ids, labels) of one training example: the prompt, the caption, EOS; loss on caption and EOS only."""
    prefix = _ids(tokenizer, num_image_tokens)
    tail = list(caption_ids) + [tokenizer.eos_token_id]
    return prefix + tail, [ignore_index] * len(prefix) + tail
