"""Synthetic captioning data: coloured shapes on a white background, drawn with Pillow.

Each image holds one shape ("a red circle") or two shapes in a relation ("a red circle left of a blue
square", "a red circle above a blue square"). The layout makes the relation unambiguous, and the caption always
names the left (or upper) shape first, so every image has exactly one right caption and a small model can
learn the data to high exact-match accuracy. `make_synthetic_splits` returns the same `datasets` schema as
every other source in `distilvit.data` (`image`, `captions`), deterministic by seed.

This module knows nothing about tokenizers, models or training; it only draws pictures and writes captions.
"""

from __future__ import annotations

import io
import random

import datasets
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (235, 205, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
}
RELATIONS = ("left of", "above")
FEATURES = datasets.Features({"image": datasets.Image(), "captions": datasets.Sequence(datasets.Value("string"))})

_RADIUS = (0.11, 0.16)  # shape half-extent, as a fraction of image_size
_BAND = 0.10  # "left of": centre y differ by at most this fraction of image_size
_ALIGN = 0.05  # "above": centre x differ by at most this fraction of image_size
_MARGIN = 0.06  # centres keep this fraction of image_size away from the middle line
_GAP = 2.0  # pixels between the bounding boxes of two shapes


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, colour: str, cx: float, cy: float, r: float) -> None:
    """Draw one filled shape whose bounding box is [cx - r, cy - r, cx + r, cy + r]."""
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = 0.85 * r  # a little smaller, so squares and circles have similar area
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _two_shape_layout(rng: random.Random, relation: str, size: int, r1: float, r2: float):
    """Centres (cx1, cy1, cx2, cy2) for two shapes in `relation`, first one left (or upper). Rejection sampling."""
    mid, margin, rmax = size / 2, _MARGIN * size, max(r1, r2)
    for _ in range(1000):
        if relation == "left of":
            cx1 = rng.uniform(r1, mid - margin)
            cx2 = rng.uniform(mid + margin, size - r2)
            cy1 = rng.uniform(rmax, size - rmax)
            cy2 = cy1 + rng.uniform(-_BAND * size, _BAND * size)
            if r2 <= cy2 <= size - r2 and cx2 - cx1 >= r1 + r2 + _GAP:
                return cx1, cy1, cx2, cy2
        else:  # "above"
            cy1 = rng.uniform(r1, mid - margin)
            cy2 = rng.uniform(mid + margin, size - r2)
            cx1 = rng.uniform(rmax, size - rmax)
            cx2 = cx1 + rng.uniform(-_ALIGN * size, _ALIGN * size)
            if r2 <= cx2 <= size - r2 and cy2 - cy1 >= r1 + r2 + _GAP:
                return cx1, cy1, cx2, cy2
    raise RuntimeError(f"could not place two shapes {relation!r} in a {size}px image (radii {r1:.1f}, {r2:.1f})")


def article(word: str) -> str:
    """'an' before a vowel ("an orange circle"), else 'a'."""
    return "an" if word[0] in "aeiou" else "a"


def draw_scene(rng: random.Random, image_size: int = 64) -> tuple[Image.Image, str]:
    """Draw one random scene; return (RGB image, caption). About 1/3 single shapes, 1/3 "left of", 1/3 "above"."""
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    image = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    kind = rng.randrange(3)  # 0: single, 1: left of, 2: above
    objects = [(rng.choice(list(COLOURS)), rng.choice(SHAPES)) for _ in range(1 if kind == 0 else 2)]
    radii = [rng.uniform(*_RADIUS) * image_size for _ in objects]
    if kind == 0:
        r = radii[0]
        centres = [(rng.uniform(r, image_size - r), rng.uniform(r, image_size - r))]
    else:
        relation = RELATIONS[kind - 1]
        cx1, cy1, cx2, cy2 = _two_shape_layout(rng, relation, image_size, radii[0], radii[1])
        centres = [(cx1, cy1), (cx2, cy2)]
    for (colour, shape), (cx, cy), r in zip(objects, centres, radii):
        _draw_shape(draw, shape, colour, cx, cy, r)
    phrases = [f"{article(colour)} {colour} {shape}" for colour, shape in objects]
    caption = phrases[0] if kind == 0 else f"{phrases[0]} {RELATIONS[kind - 1]} {phrases[1]}"
    return image, caption


def _make_split(rng: random.Random, n: int, image_size: int) -> datasets.Dataset:
    images, captions = [], []
    for _ in range(n):
        image, caption = draw_scene(rng, image_size)
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)
        images.append({"bytes": buf.getvalue(), "path": None})
        captions.append([caption])
    return datasets.Dataset.from_dict({"image": images, "captions": captions}, features=FEATURES)


def make_synthetic_splits(
    seed: int = 0,
    train_size: int = 8000,
    validation_size: int = 200,
    test_size: int = 200,
    image_size: int = 64,
) -> datasets.DatasetDict:
    """Build train/validation/test splits of synthetic scenes (PNG bytes in a `datasets.Image` column).

    Each split draws from its own RNG derived from (seed, split name), so changing one split's size never
    changes another split's images.
    """
    sizes = {"train": train_size, "validation": validation_size, "test": test_size}
    for name, n in sizes.items():
        if n < 0:
            raise ValueError(f"{name}_size must be >= 0, got {n}")
    return datasets.DatasetDict(
        {name: _make_split(random.Random(f"distilvit-synthetic-{seed}-{name}"), n, image_size) for name, n in sizes.items()}
    )
