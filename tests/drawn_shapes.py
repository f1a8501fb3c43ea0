"""Shapes drawn by a program that is not distilvit's generator: matplotlib (anti-aliased patches, CSS colours,
its own geometry), at several image sizes, shape sizes and positions, on white and on light backgrounds, some with
outlines. Captions follow the generator's rule (one shape; or two, named left-to-right or top-to-bottom), so a
model trained on the synthetic shapes can be scored on them. Used by tests/test_tiny_quality.py and by the
measurement in docs/training.md; never by training.
"""

from __future__ import annotations

import io
import math
import random

from PIL import Image

# matplotlib's own named colours (CSS): pure and off-palette compared with the generator's RGB values
CSS = {"red": ["red", "crimson", "tomato"], "green": ["green", "limegreen", "forestgreen"],
       "blue": ["blue", "royalblue", "mediumblue"], "yellow": ["yellow", "gold"],
       "purple": ["purple", "darkviolet", "darkorchid"], "orange": ["orange", "darkorange"]}
SHAPES = ("circle", "square", "triangle")


def _patch(shape: str, cx: float, cy: float, r: float, colour: str, outline: bool):
    from matplotlib import patches

    style = dict(facecolor=colour, edgecolor="black" if outline else colour, linewidth=1.5 if outline else 0)
    if shape == "circle":
        return patches.Circle((cx, cy), r, **style)
    if shape == "square":
        return patches.Rectangle((cx - 0.85 * r, cy - 0.85 * r), 1.7 * r, 1.7 * r, **style)
    return patches.RegularPolygon((cx, cy), 3, radius=r, orientation=math.pi, **style)  # pointing up (y runs down)


def draw(objects, centres, radius, pixels: int, background: str) -> Image.Image:
    """An RGB image of `pixels` a side: each (colour name, shape) at its centre (0..1, y down), radius 0..1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1), dpi=pixels)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)  # y down, as in the captions' "above"
    ax.axis("off")
    fig.patch.set_facecolor(background)
    for (colour, shape, outline), (cx, cy) in zip(objects, centres):
        ax.add_patch(_patch(shape, cx, cy, radius, colour, outline))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=pixels, facecolor=background)
    plt.close(fig)
    return Image.open(buffer).convert("RGB")


def drawn_shapes(count: int = 60, seed: int = 11) -> list[tuple[Image.Image, str]]:
    """`count` (image, caption) pairs: a third single shapes, a third "left of", a third "above"."""
    rng = random.Random(seed)
    items = []
    for i in range(count):
        kind = i % 3
        names = [rng.choice(list(CSS)) for _ in range(1 if kind == 0 else 2)]
        objects = [(rng.choice(CSS[n]), rng.choice(SHAPES), rng.random() < 0.3) for n in names]
        if kind == 0:
            radius = rng.uniform(0.08, 0.3)
            centres = [(rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius))]
        else:
            radius = rng.uniform(0.08, 0.16)
            a, b = rng.uniform(radius + 0.02, 0.42), rng.uniform(0.58, 1 - radius - 0.02)
            across = rng.uniform(radius + 0.05, 1 - radius - 0.05)
            centres = [(a, across), (b, across)] if kind == 1 else [(across, a), (across, b)]
        background = rng.choice(["white", "white", "whitesmoke", "ivory", "aliceblue", "#f4f0e8"])
        image = draw(objects, centres, radius, rng.choice([48, 64, 96, 128, 200]), background)
        phrases = [f"{'an' if n[0] in 'aeiou' else 'a'} {n} {o[1]}" for n, o in zip(names, objects)]
        caption = phrases[0] if kind == 0 else f"{phrases[0]} {'left of' if kind == 1 else 'above'} {phrases[1]}"
        items.append((image, caption))
    return items
