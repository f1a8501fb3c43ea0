"""PyTorch captions: load a merged model (or a run's `merged/`), caption images (PIL, arrays or files), score exact match.

Generation is `LlavaForConditionalGeneration.generate` on the prompt `[IMG] x N, BOS`, greedy unless beams are
asked for, stopping at EOS; the image placeholder is suppressed by the saved generation config, and ids outside the
model's caption vocabulary (distilvit/modeling/caption_vocab.py), when it has one, are masked. Pixels come from
`distilvit.pixels` (the rule every runtime applies), not from the saved image processor's PIL resize. This is the
reference the parity check compares runtimes against. It knows nothing about training or export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import (AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor,
                          LogitsProcessorList)

from distilvit.errors import UserError
from distilvit.image_files import images_in
from distilvit.modeling import caption_vocab
from distilvit.modeling.prompt import prompt_ids
from distilvit.pixels import DEFAULT_MAX_PIXELS, PixelPreparer, check_image, decode_rgba

# What `caption` prints for an image whose first generated token is EOS (an empty caption is never shown as nothing;
# the demo shows the same sentence, web-demo/app.js).
NO_CAPTION = "(the model gave no caption for this image)"
MERGED_DIR = "merged"


@dataclass
class Captioner:
    model: LlavaForConditionalGeneration
    processor: LlavaProcessor
    pixels: PixelPreparer | None = None

    def __post_init__(self):
        if self.pixels is None:
            self.pixels = PixelPreparer.from_processor(self.processor.image_processor,
                                                       self.model.config.vision_config.image_size)

    @property
    def num_image_tokens(self) -> int:
        return self.model.config.image_seq_length

    @torch.no_grad()
    def generate_ids(self, images: list, max_new_tokens: int | None = None, num_beams: int = 1) -> list[list[int]]:
        """Generated token ids per image, cut after the first EOS (EOS excluded)."""
        pixel_values = self.pixels(images)  # [B, 3, S, S]
        device = next(self.model.parameters()).device
        input_ids = prompt_ids(self.processor.tokenizer, len(images), self.num_image_tokens).to(device)  # [B, N + 1]
        vocab = caption_vocab.of(self.model.config)
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=pixel_values.to(device=device, dtype=self.model.dtype),
            max_new_tokens=max_new_tokens or self.model.generation_config.max_new_tokens or 30,
            num_beams=num_beams,
            do_sample=False,
            logits_processor=LogitsProcessorList([caption_vocab.MaskLogits(vocab)] if vocab else []),
        )
        eos = self.processor.tokenizer.eos_token_id
        rows = []
        for row in out[:, input_ids.shape[1] :].tolist():
            rows.append(row[: row.index(eos)] if eos in row else row)
        return rows

    def caption(self, images: list, max_new_tokens: int | None = None, num_beams: int = 1, batch_size: int = 32) -> list[str]:
        """Captions of `images` (PIL images, decoded arrays or file paths), in order."""
        return [c for batch in self.caption_batches(images, max_new_tokens, num_beams, batch_size) for c in batch]

    def caption_batches(self, images: list, max_new_tokens: int | None = None, num_beams: int = 1, batch_size: int = 32):
        """Yields the captions of each `batch_size` images as soon as they are made. File paths are decoded a batch at
        a time, so memory holds one batch of decoded images whatever the number of files."""
        for start in range(0, len(images), batch_size):
            ids = self.generate_ids(images[start : start + batch_size], max_new_tokens, num_beams)
            yield [c.strip() for c in self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def resolve_model_dir(model_dir: Path, merge_if_needed: bool = False) -> Path:
    """A merged model folder, given either that folder or a training run holding `merged/`.

    With `merge_if_needed`, a run without `merged/` has its adapter merged first (what `export` does);
    otherwise that is a UserError saying how to finish the run.
    """
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise UserError(f"model folder {model_dir} does not exist")
    if (model_dir / "config.json").is_file():
        return model_dir
    if (model_dir / MERGED_DIR / "config.json").is_file():
        return model_dir / MERGED_DIR
    if (model_dir / "train_config.json").is_file():
        if merge_if_needed:
            from distilvit.modeling.merge import merge_run

            return merge_run(model_dir)
        raise UserError(f"{model_dir} is a training run without {MERGED_DIR}/; finish it with `distilvit-web train "
                        f"--output-dir {model_dir} --resume` or merge a checkpoint with `distilvit-web merge {model_dir}`")
    raise UserError(f"{model_dir} is not a model: it holds neither config.json nor a training run (train_config.json)")


def load_model_files(path: Path):
    """`AutoModelForImageTextToText.from_pretrained(path)` in float32, or a UserError naming the folder when its
    files are damaged (a truncated or corrupt model.safetensors, an unreadable config)."""
    try:
        return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    except Exception as err:  # safetensors, OSError, JSON and shape errors: the files, not the code
        damaged = isinstance(err, (OSError, ValueError, RuntimeError, KeyError)) or \
            type(err).__module__.startswith("safetensors")
        if not damaged:
            raise
        raise UserError(f"cannot load the model in {path}: {type(err).__name__}: {str(err).splitlines()[0][:300]}. "
                        "Its files look damaged; write them again (`distilvit-web merge RUN --overwrite`)") from err


def load_captioner(model_dir: Path, device: str | None = None) -> Captioner:
    path = resolve_model_dir(model_dir)
    model = load_model_files(path)
    if not isinstance(model, LlavaForConditionalGeneration):
        raise UserError(f"{path} holds a {type(model).__name__}, not a distilvit-web captioner (LlavaForConditionalGeneration)")
    try:
        caption_vocab.check_model(model)
    except ValueError as err:
        raise UserError(f"{path}/config.json: {err}. Train again, or delete caption_vocab from config.json to "
                        "caption with the full vocabulary") from None
    processor = AutoProcessor.from_pretrained(path)
    model.eval()
    if device:
        model.to(device)
    return Captioner(model, processor)


def image_paths(arguments: list[Path], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[Path]:
    """The files to caption: each argument that is a file, and the image files directly inside each that is a folder
    (distilvit.image_files.images_in), in order. Each is checked by its header (exists, is an image, within
    `max_pixels`) before any model loads; a UserError names the first that is not."""
    paths = []
    for argument in map(Path, arguments):
        paths += images_in(argument, str(argument)) if argument.is_dir() else [argument]
    for path in paths:
        check_image(path, max_pixels)
    return paths


def open_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The decoded image at `path` as RGBA (distilvit.pixels rules: first frame, upright, 8 bits), or a UserError
    naming the file (missing, unreadable, or over `max_pixels`)."""
    return Image.fromarray(decode_rgba(Path(path), max_pixels), "RGBA")
