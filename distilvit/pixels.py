"""The one path from an image to the model's pixels, the same in training, Python captioning, Node and the browser.

Two halves:
  decode   file or PIL image -> uint8 RGBA array [H, W, 4] (`decode_rgba`): the first frame, EXIF orientation
           applied, 16-bit samples scaled to 8 bits, palette transparency expanded, CMYK converted, and a
           pixel-count limit checked before anything is decoded. Browsers and sharp (transformers.js in Node)
           decode by the same rules; tests/test_pixels.py measures how close they come on real photographs.
  prepare  raw pixels [B, C, H, W], float 0..255, C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) ->
           normalised model input [B, 3, S, S] (`model_pixels`): transparency composited over white, an
           antialiased bicubic resize to S x S (torch `interpolate(bicubic, antialias=True)`, Keys a = -0.5,
           half-pixel centres), then (x / 255 - mean) / std.
The exported encoder graph starts with the same "prepare" in ONNX (export/pixel_graph.py: Gather, Resize with
antialias=1, ...), and transformers.js is told to hand over the decoded pixels untouched (do_resize, do_rescale,
do_normalize and do_convert_rgb all false), so every runtime resizes the same way instead of three different
ways (PIL, sharp, canvas). This module knows nothing about models, datasets or ONNX.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from distilvit.data.images import allow_large_png_text
from distilvit.errors import UserError
from distilvit.limits import DEFAULT_MAX_PIXELS

WHITE = 255.0
RESIZE_RULE = "bicubic, antialiased (Keys a=-0.5, half-pixel centres; ONNX Resize antialias=1), to size x size"


class ImageTooLarge(UserError):
    pass


def _first_frame_upright(image: Image.Image) -> Image.Image:
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    return ImageOps.exif_transpose(image) or image


def _to_rgba(image: Image.Image) -> np.ndarray:
    """uint8 [H, W, 4] from any Pillow mode."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit gray: the high byte, as Chromium and sharp reduce 16-bit samples (Pillow's convert("L") would
        # clip every value above 255 to white).
        gray = (np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(gray, "L")
    elif mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8), "L")
    elif mode == "P" and "transparency" in image.info:
        image = image.convert("PA")
    return np.array(image.convert("RGBA"), dtype=np.uint8)  # a writable copy


def decode_rgba(source: Path | Image.Image, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 [H, W, 4] of an image file or PIL image; a UserError naming the file when it cannot be read or has
    more than `max_pixels` pixels (None: no limit)."""
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels, "an image")
        return _to_rgba(_first_frame_upright(source))
    return _opened(Path(source), max_pixels, lambda image: _to_rgba(_first_frame_upright(image)))


def check_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """What `decode_rgba` refuses that a file's header shows (missing, not an image, over `max_pixels`), without
    decoding it: the same UserError. Damage further into the file shows only when it is decoded."""
    _opened(Path(path), max_pixels, lambda image: None)


def _opened(path: Path, max_pixels: int | None, use):
    """`use(image)` on the opened file, its size checked first; every way of failing is a UserError naming it."""
    if not path.is_file():
        raise UserError(f"image {path} does not exist")
    allow_large_png_text()
    if max_pixels and max_pixels > Image.MAX_IMAGE_PIXELS:  # our limit is the one that applies: Pillow would
        Image.MAX_IMAGE_PIXELS = max_pixels                 # refuse twice its own before we could check
    try:
        with Image.open(path) as image:
            _check_size(image.size, max_pixels, str(path))
            return use(image)
    except Image.DecompressionBombError as err:  # over twice Pillow's own limit: refused before we see its size
        limit = f"over the limit of {max_pixels:,} pixels" if max_pixels else "too large to decode safely"
        raise ImageTooLarge(f"image {path} is {limit} ({err}); shrink it or raise the limit with "
                            "--max-image-pixels if it is meant to be this large") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UserError(f"cannot read image {path}: {err}") from err


def _check_size(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    width, height = size
    if max_pixels and width * height > max_pixels:
        raise ImageTooLarge(f"{name} has {width} x {height} = {width * height:,} pixels, over the limit of "
                            f"{max_pixels:,}; shrink it or raise the limit with --max-image-pixels")


def raw_tensor(rgba: np.ndarray) -> torch.Tensor:
    """[1, 4, H, W] float32 0..255 from a decoded uint8 [H, W, 4] array: what runtimes are handed."""
    return torch.from_numpy(np.ascontiguousarray(rgba)).permute(2, 0, 1).unsqueeze(0).float()


def composite(raw: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] colour over white from [B, C, H, W], C in 1..4 (export/pixel_graph.py does the same)."""
    channels = raw.shape[1]
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"pixel values have {channels} channels; expected 1, 2, 3 or 4")
    has_alpha = channels % 2 == 0
    colour = raw[:, [0, 1, 2]] if channels >= 3 else raw[:, [0, 0, 0]]
    if not has_alpha:
        return colour
    alpha = raw[:, channels - 1 :] / 255.0
    return colour * alpha + WHITE * (1.0 - alpha)


def model_pixels(raw: torch.Tensor, size: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """Normalised [B, 3, size, size] from raw [B, C, H, W] float 0..255."""
    colour = composite(raw.float())
    resized = F.interpolate(colour, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
    return resized * scale - shift


class PixelPreparer:
    """`model_pixels` with a model's size, mean and std: images (PIL or decoded arrays) -> [B, 3, S, S]."""

    def __init__(self, size: int, mean: list[float], std: list[float], max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.size, self.mean, self.std, self.max_pixels = int(size), list(mean), list(std), max_pixels

    @classmethod
    def from_processor(cls, image_processor, size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> "PixelPreparer":
        """From a transformers image processor (its mean and std) and the vision tower's `image_size`."""
        return cls(size, list(image_processor.image_mean), list(image_processor.image_std), max_pixels)

    @classmethod
    def from_model_dir(cls, model_dir: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> "PixelPreparer":
        """From a merged model folder: config.json's vision image_size, processor_config.json's mean and std."""
        import json

        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        processor = json.loads((model_dir / "processor_config.json").read_text())
        image = processor.get("image_processor", processor)
        return cls(config["vision_config"]["image_size"], image["image_mean"], image["image_std"], max_pixels)

    def settings(self) -> dict:
        """What export_config.json records about the pixels."""
        return {"size": self.size, "image_mean": self.mean, "image_std": self.std, "resize": RESIZE_RULE,
                "alpha": "composited over white", "orientation": "EXIF orientation applied",
                "decode": "first frame; 16-bit samples: high byte"}

    def prepare_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] from raw [B, C, H, W] float 0..255 (one size for the batch)."""
        return model_pixels(raw, self.size, self.mean, self.std)

    def raw(self, image) -> torch.Tensor:
        return raw_tensor(image if isinstance(image, np.ndarray) else decode_rgba(image, self.max_pixels))

    def __call__(self, images: list) -> torch.Tensor:
        return torch.cat([model_pixels(self.raw(im), self.size, self.mean, self.std) for im in images])  # [B, 3, S, S]
