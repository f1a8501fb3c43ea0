"""The one path from an image to the model's pixels, the same in training, Python captioning, Node and the browser.

Two halves:
  decode   file or PIL image -> uint8 RGBA array [H, W, 4] (`decode_rgba`): the first frame, EXIF orientation
           applied, an embedded ICC profile converted to sRGB (COLOUR_RULE: what browsers and sharp do),
           16-bit samples scaled to 8 bits, palette transparency expanded, CMYK converted, and a pixel-count limit
           checked before anything is decoded. Browsers and sharp (transformers.js in Node) decode by the same
           rules; docs/parity.md has the measured differences per kind of photograph.
  prepare  raw pixels [B, C, H, W], float 0..255, C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) ->
           normalised model input [B, 3, S, S] (`model_pixels`): transparency composited over white, a long
           axis averaged down by an integer factor (`reduction`: 6S pixels or more -> 3S to 6S - 1), an
           antialiased bicubic resize to S x S (torch `interpolate(bicubic, antialias=True)`, Keys a = -0.5,
           half-pixel centres), then (x / 255 - mean) / std.
The exported encoder graph starts with the same "prepare" in ONNX (export/pixel_graph.py), and transformers.js is
told to hand over the decoded pixels untouched (do_resize, do_rescale, do_normalize and do_convert_rgb all false),
so every runtime resizes the same way instead of three different ways (PIL, sharp, canvas). The demo page may
hand over an already reduced image (web-demo/decode.js: the same blocks, their means as float32), which the graph then
leaves at factor 1. This module knows nothing about models, datasets or ONNX.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from distilvit.errors import UserError
from distilvit.image_files import pillow_limits
from distilvit.limits import DEFAULT_MAX_PIXELS

WHITE = 255.0
RESIZE_RULE = "bicubic, antialiased (Keys a=-0.5, half-pixel centres), to size x size"
# The reduction keeps at least 3 x size pixels per axis: Pillow's `reducing_gap=3` ("indistinguishable from"
# resampling the whole image in most cases). On a photograph upscaled to 4032 x 3024, size 224, against the direct
# antialiased bicubic: max 0.021, mean 0.0013 in normalised units (gap 2: 0.057, 0.0034), 2026-12-03.
REDUCE_GAP = 3
REDUCE_RULE = ("before the resize, an axis of 6 x size pixels or more is averaged over whole blocks of "
               "f = length // (3 size) pixels (centred; the at most f - 1 pixels left over are dropped)")


class ImageTooLarge(UserError):
    pass


def rule_is_current(settings: dict | None) -> bool:
    """Whether an export's recorded pixel rule (export_config.json `pixels`, `PixelPreparer.settings`) is this one:
    exports made before the colour rule and the block reduction prepare large or profiled photos differently."""
    return bool(settings) and "reduce" in settings and "colour" in settings


COLOUR_RULE = ("an embedded ICC profile converts the pixels to sRGB (perceptual intent), as browsers and sharp "
               "decode; no profile, or one that cannot be read or does not fit the image's channels: taken as sRGB")
# The profile's colour space (ICC header) each Pillow mode can carry, and the mode the transform works in.
_PROFILE_MODES = {"RGB ": {"RGB": "RGB", "RGBA": "RGB", "RGBX": "RGB"}, "GRAY": {"L": "L", "LA": "L"},
                  "CMYK": {"CMYK": "CMYK"}}


@lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=32)
def _transform(icc: bytes, mode: str) -> tuple[ImageCms.ImageCmsTransform, str] | None:
    """(transform to sRGB, the mode it takes) for `mode` pixels carrying profile `icc`; None where browsers ignore
    the profile (unreadable, or a colour space the pixels do not have). Cached: a dataset's photos share a few."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        working = _PROFILE_MODES.get(profile.profile.xcolor_space, {}).get(mode)
        if working is None:
            return None
        return ImageCms.buildTransform(profile, _srgb(), working, "RGB",
                                       renderingIntent=ImageCms.Intent.PERCEPTUAL), working
    except (OSError, ImageCms.PyCMSError, ValueError, TypeError):
        return None


def _to_srgb(image: Image.Image) -> Image.Image:
    """`image` with its embedded ICC profile applied (COLOUR_RULE): RGB(A), gray(+alpha), palette or CMYK pixels
    in that profile's space -> sRGB, alpha kept. Images without a usable profile are returned as they are."""
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    if image.mode in _SIXTEEN_BIT_GRAY:
        image = _high_byte(image)
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    found = _transform(bytes(icc), image.mode)
    if found is None:
        return image
    transform, working = found
    converted = transform.apply(image.convert(working) if image.mode != working else image)  # RGB, in sRGB
    if "A" in image.mode:
        converted.putalpha(image.getchannel("A"))
    return converted


def _first_frame_upright(image: Image.Image) -> Image.Image:
    """The first frame, EXIF orientation applied, in sRGB (`_to_srgb` last: its output carries no EXIF)."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    return _to_srgb(ImageOps.exif_transpose(image) or image)


_SIXTEEN_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _high_byte(image: Image.Image) -> Image.Image:
    """8-bit gray from 16-bit gray: the high byte, as Chromium and sharp reduce 16-bit samples (Pillow's
    convert("L") would clip every value above 255 to white)."""
    gray = (np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L")


def _to_rgba(image: Image.Image) -> np.ndarray:
    """uint8 [H, W, 4] from any Pillow mode."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_GRAY:
        image = _high_byte(image)
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
    try:
        with pillow_limits(max_pixels), Image.open(path) as image:
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


def reduction(length: int, size: int) -> tuple[int, int, int]:
    """(factor, kept, start) of an image axis of `length` pixels before the resize to `size`: the integer factor
    f = max(1, length // (3 size)) it is averaged down by, the `kept` = (length // f) * f pixels that fill whole
    f-blocks, and the `start` of those, centred ((length - kept) // 2; at most f - 1 pixels are left out). Once
    reduced, the axis has length // f pixels, between 3 size and 6 size - 1 when it had 6 size or more: the
    bicubic then reads a bounded image, so a 12-megapixel photo costs the resize what a 1-megapixel one does."""
    factor = max(1, length // (REDUCE_GAP * size))
    kept = (length // factor) * factor
    return factor, kept, (length - kept) // 2


def reduce_area(colour: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, H // fh, W // fw]: the centred whole blocks of `colour` [B, 3, H, W] averaged (`reduction` per axis);
    the image itself when both factors are 1. export/pixel_graph.py and web-demo/decode.js do the same."""
    (fh, kh, top), (fw, kw, left) = reduction(colour.shape[2], size), reduction(colour.shape[3], size)
    if fh == fw == 1:
        return colour
    blocks = colour[:, :, top : top + kh, left : left + kw].reshape(colour.shape[0], 3, kh // fh, fh, kw // fw, fw)
    return blocks.mean(dim=(3, 5))  # [B, 3, H // fh, W // fw] (4x faster than avg_pool2d on a 12 MP photo)


def model_pixels(raw: torch.Tensor, size: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """Normalised [B, 3, size, size] from raw [B, C, H, W] float 0..255."""
    colour = reduce_area(composite(raw.float()), size)
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
        return {"size": self.size, "image_mean": self.mean, "image_std": self.std, "reduce": REDUCE_RULE,
                "resize": RESIZE_RULE, "alpha": "composited over white", "orientation": "EXIF orientation applied",
                "colour": COLOUR_RULE, "decode": "first frame; 16-bit samples: high byte"}

    def prepare_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] from raw [B, C, H, W] float 0..255 (one size for the batch)."""
        return model_pixels(raw, self.size, self.mean, self.std)

    def raw(self, image) -> torch.Tensor:
        return raw_tensor(image if isinstance(image, np.ndarray) else decode_rgba(image, self.max_pixels))

    def __call__(self, images: list) -> torch.Tensor:
        return torch.cat([model_pixels(self.raw(im), self.size, self.mean, self.std) for im in images])  # [B, 3, S, S]
