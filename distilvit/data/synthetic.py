"""Synthetic captioning data: coloured shapes on a plain background, drawn with Pillow.

Each image holds one shape ("a red circle") or two shapes in a relation ("a red circle left of a blue
square", "a red circle above a blue square"). The layout makes the relation unambiguous, and the caption always
names the left (or upper) shape first, so every image has exactly one right caption and a small model can
learn the data to high exact-match accuracy. `make_synthetic_splits` returns the same `datasets` schema as
every other source in `distilvit.data` (`image`, `captions`), deterministic by seed.

The pictures vary as drawings made by other programs do (measured on matplotlib's in docs/training.md): each
colour word covers a region of hues, saturations and values (pure red and CSS "crimson" are both "red"), shapes
range from small to a third of the picture, and half the images have a light background, smooth (supersampled)
edges and some dark outlines. This module knows nothing about tokenizers, models or training; it only draws
pictures and writes captions.
"""

from __future__ import annotations

import colorsys
import io
import random
from dataclasses import dataclass

import datasets
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
# Each colour word's typical RGB (what the generator drew before it was widened; tests and docs refer to it)...
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (235, 205, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
}
# ...and the region of hue (degrees), saturation and value each word is drawn from: pure colours, other programs'
# named colours and shades between them get the word a person would use, not only the six RGB values above.
HUES = {"red": (-14, 10), "orange": (22, 40), "yellow": (47, 63), "green": (92, 150), "blue": (208, 244),
        "purple": (272, 302)}
SATURATION = (0.6, 1.0)
VALUE = {"yellow": (0.82, 1.0), "orange": (0.85, 1.0), "green": (0.45, 1.0), "purple": (0.45, 0.95)}
SATURATION_MIN = {"yellow": 0.7, "orange": 0.72}  # less saturated, these read as beige and tan
VALUE_DEFAULT = (0.55, 1.0)
RELATIONS = ("left of", "above")
FEATURES = datasets.Features({"image": datasets.Image(), "captions": datasets.Sequence(datasets.Value("string"))})

_RADIUS_ONE = (0.08, 0.30)  # one shape's half-extent, as a fraction of image_size
_RADIUS_TWO = (0.08, 0.18)  # each of two shapes
_BAND = 0.10  # "left of": centre y differ by at most this fraction of image_size
_ALIGN = 0.05  # "above": centre x differ by at most this fraction of image_size
_MARGIN = 0.06  # centres keep this fraction of image_size away from the middle line
_GAP = 2.0  # pixels between the bounding boxes of two shapes
_PLAIN = 0.5  # share of images drawn as before the widening: white background, no outline, hard edges
_SUPERSAMPLE = 4  # smooth edges (as anti-aliasing programs draw) by drawing 4x larger and shrinking


@dataclass(frozen=True)
class Shape:
    colour: str  # the caption's word
    rgb: tuple[int, int, int]
    shape: str
    cx: float
    cy: float
    r: float  # half-extent in pixels
    outline: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Scene:
    size: int
    shapes: tuple[Shape, ...]
    caption: str
    background: tuple[int, int, int] = (255, 255, 255)
    smooth: bool = False


def colour_rgb(rng: random.Random, colour: str) -> tuple[int, int, int]:
    """An RGB a person would call `colour`: a hue, saturation and value from the word's region."""
    hue = rng.uniform(*HUES[colour]) % 360 / 360
    value = rng.uniform(*VALUE.get(colour, VALUE_DEFAULT))
    saturation = rng.uniform(SATURATION_MIN.get(colour, SATURATION[0]), SATURATION[1])
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def _draw_shape(draw: ImageDraw.ImageDraw, item: Shape, scale: float = 1.0) -> None:
    """Draw one filled shape whose bounding box is [cx - r, cy - r, cx + r, cy + r] (times `scale`)."""
    cx, cy, r = item.cx * scale, item.cy * scale, item.r * scale
    style = {"fill": item.rgb, "outline": item.outline, "width": max(1, round(scale)) if item.outline else 0}
    if item.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), **style)
    elif item.shape == "square":
        s = 0.85 * r  # a little smaller, so squares and circles have similar area
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), **style)
    elif item.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], **style)
    else:
        raise ValueError(f"unknown shape {item.shape!r}; expected one of {SHAPES}")


def _two_shape_layout(rng: random.Random, relation: str, size: int, r1: float, r2: float):
    """Centres (cx1, cy1, cx2, cy2) for two shapes in `relation`, first one left (or upper). Rejection sampling
    along the relation's axis (a: x for "left of", y for "above") and across it (b), then mapped back to x, y."""
    mid, margin, rmax = size / 2, _MARGIN * size, max(r1, r2)
    spread = (_BAND if relation == "left of" else _ALIGN) * size
    for _ in range(1000):
        a1 = rng.uniform(r1, mid - margin)
        a2 = rng.uniform(mid + margin, size - r2)
        b1 = rng.uniform(rmax, size - rmax)
        b2 = b1 + rng.uniform(-spread, spread)
        if r2 <= b2 <= size - r2 and a2 - a1 >= r1 + r2 + _GAP:
            return (a1, b1, a2, b2) if relation == "left of" else (b1, a1, b2, a2)
    raise RuntimeError(f"could not place two shapes {relation!r} in a {size}px image (radii {r1:.1f}, {r2:.1f})")


def article(word: str) -> str:
    """'an' before a vowel ("an orange circle"), else 'a'."""
    return "an" if word[0] in "aeiou" else "a"


def plan_scene(rng: random.Random, image_size: int = 64) -> Scene:
    """One random scene: about 1/3 single shapes, 1/3 "left of", 1/3 "above"; half drawn plain (white, hard edges,
    no outline), half with a light background, smooth edges and some outlines."""
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    kind = rng.randrange(3)  # 0: single, 1: left of, 2: above
    words = [(rng.choice(list(COLOURS)), rng.choice(SHAPES)) for _ in range(1 if kind == 0 else 2)]
    radii = [rng.uniform(*(_RADIUS_ONE if kind == 0 else _RADIUS_TWO)) * image_size for _ in words]
    if kind == 0:
        r = radii[0]
        centres = [(rng.uniform(r, image_size - r), rng.uniform(r, image_size - r))]
    else:
        cx1, cy1, cx2, cy2 = _two_shape_layout(rng, RELATIONS[kind - 1], image_size, radii[0], radii[1])
        centres = [(cx1, cy1), (cx2, cy2)]
    plain = rng.random() < _PLAIN
    background = (255, 255, 255) if plain or rng.random() < 0.3 else tuple(rng.randint(226, 255) for _ in range(3))
    shapes = tuple(Shape(colour, colour_rgb(rng, colour), shape, cx, cy, r,
                         None if plain or rng.random() < 0.7 else (rng.randint(0, 60),) * 3)
                   for (colour, shape), (cx, cy), r in zip(words, centres, radii))
    phrases = [f"{article(colour)} {colour} {shape}" for colour, shape in words]
    caption = phrases[0] if kind == 0 else f"{phrases[0]} {RELATIONS[kind - 1]} {phrases[1]}"
    return Scene(image_size, shapes, caption, background, smooth=not plain)


def render(scene: Scene) -> Image.Image:
    """The scene as an RGB image of scene.size pixels a side."""
    scale = _SUPERSAMPLE if scene.smooth else 1
    image = Image.new("RGB", (scene.size * scale,) * 2, scene.background)
    draw = ImageDraw.Draw(image)
    for item in scene.shapes:
        _draw_shape(draw, item, scale)
    return image.resize((scene.size, scene.size), Image.Resampling.BOX) if scale > 1 else image


def draw_scene(rng: random.Random, image_size: int = 64) -> tuple[Image.Image, str]:
    """Draw one random scene (plan_scene); return (RGB image, caption)."""
    scene = plan_scene(rng, image_size)
    return render(scene), scene.caption


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
