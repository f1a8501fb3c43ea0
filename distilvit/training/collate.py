"""Turns dataset rows (image + captions) into training batches in the canonical token layout.

    input_ids:  [IMG] x N, BOS, caption tokens (<= max_length), EOS, PAD...
    labels:     -100 x (N + 1), caption tokens, EOS, -100...

Loss is on the caption and EOS only; the model shifts labels itself. Rows with several captions get one chosen
at random (seeded) each time the row is drawn. Pixels: distilvit.pixels (the rule the exported graph repeats in
every runtime). This module knows nothing about where the data came from.
"""

from __future__ import annotations

import random

import torch
from transformers import LlavaProcessor

from distilvit.modeling.prompt import training_row
from distilvit.pixels import PixelPreparer

IGNORE_INDEX = -100


class CaptionCollator:
    """Callable for `Trainer(data_collator=...)`: rows with `image` (PIL) and `captions` (list of str)."""

    def __init__(self, processor: LlavaProcessor, num_image_tokens: int, max_length: int, image_size: int, seed: int = 0):
        self.processor = processor
        # no pixel limit here: the data pass (distilvit.data.prepare) already decoded every image
        self.pixels = PixelPreparer.from_processor(processor.image_processor, image_size, max_pixels=None)
        self.tokenizer = processor.tokenizer
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.rng = random.Random(seed)

    def token_rows(self, captions: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """input_ids and labels rows (unpadded) for one caption per image."""
        tok = self.tokenizer
        # Cut by slicing: `truncation=True` would leave truncation settings in the tokenizer, and so in the saved
        # tokenizer.json, where they silently cut the processor's 64-token image prompts.
        encoded = [ids[: self.max_length] for ids in tok(captions, add_special_tokens=False)["input_ids"]]
        rows = [training_row(tok, self.num_image_tokens, ids, IGNORE_INDEX) for ids in encoded]
        return [r[0] for r in rows], [r[1] for r in rows]

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        images = [row["image"] for row in rows]
        captions = [self._choose(row["captions"]) for row in rows]
        inputs, labels = self.token_rows(captions)
        width = max(len(r) for r in inputs)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # [B, T]
        label_ids = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # [B, T]
        attention = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
        for i, (ids, lab) in enumerate(zip(inputs, labels)):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            label_ids[i, : len(lab)] = torch.tensor(lab)
            attention[i, : len(ids)] = 1
        pixel_values = self.pixels(images)  # [B, 3, S, S]
        return {"input_ids": input_ids, "attention_mask": attention, "labels": label_ids, "pixel_values": pixel_values}

    def _choose(self, captions) -> str:
        if isinstance(captions, str):
            return captions
        if not captions:
            raise ValueError("a dataset row has no caption")
        return captions[0] if len(captions) == 1 else self.rng.choice(list(captions))
