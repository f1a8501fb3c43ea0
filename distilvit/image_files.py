"""Image decoding shared by the data pipeline and every command that opens images: Pillow's two process-wide
decoding limits, scoped to our own decodes; how a dataset cell becomes a PIL image; which files of a folder are
images.

Pillow keeps its limits in module globals. `PngImagePlugin.MAX_TEXT_CHUNK` (1 MB) refuses PNG files whose text
chunks decompress to more: "Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK". Some of
Mozilla/coco-gpt4o's PNG images carry such chunks (its Arrow files at huggingface.co/datasets/Mozilla/coco-gpt4o,
commit 70f916d; tarekziade/distilvit2's loader raises the limit for them), and they are valid images. `Image.MAX_IMAGE_PIXELS` refuses, inside `Image.open`,
images over twice its value before our own pixel limit (distilvit.pixels, --max-image-pixels) could see them.
`pillow_limits` raises both while one of our decodes runs and puts Pillow's values back when the last one ends, so
other code in the process keeps Pillow's defaults (they are visible to other threads in the meantime: Pillow has
no per-call setting). Pillow 13, 2026-12-06.

Datasets hand images over undecoded (`datasets.Image(decode=False)`) with `decoded_rows` as their transform, so
training, evaluation and parity decode through `open_cell`, under these limits, when a row is read. This module
knows nothing about models, captions or pixel preparation.
"""

from __future__ import annotations

import io
import threading
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, PngImagePlugin

from distilvit.errors import UserError
from distilvit.limits import IMAGE_SUFFIXES

PNG_TEXT_CHUNK_LIMIT = 64 * 2**20

_lock = threading.Lock()
_users = 0
_saved: tuple[int, int | None] = (0, None)


@contextmanager
def pillow_limits(max_pixels: int | None = None):
    """Pillow's limits for the images opened inside: PNG text chunks up to PNG_TEXT_CHUNK_LIMIT, and
    `Image.MAX_IMAGE_PIXELS` raised to `max_pixels` when that is higher (None: Pillow's own). Nested and
    concurrent uses share one raise; Pillow's values are put back when the last one ends."""
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = (PngImagePlugin.MAX_TEXT_CHUNK, Image.MAX_IMAGE_PIXELS)
        _users += 1
        PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, PNG_TEXT_CHUNK_LIMIT)
        if max_pixels and Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                PngImagePlugin.MAX_TEXT_CHUNK, Image.MAX_IMAGE_PIXELS = _saved


def cell_bytes(cell: dict) -> bytes:
    """The file bytes of an undecoded `datasets.Image` cell ({"bytes", "path"}): its bytes, or its file's."""
    data = cell.get("bytes")
    if data:
        return data
    with open(cell["path"], "rb") as f:
        return f.read()


def open_bytes(data: bytes) -> Image.Image:
    """An image file's bytes decoded whole (`load()`), under `pillow_limits()`; Pillow's errors raised as they are."""
    with pillow_limits():
        image = Image.open(io.BytesIO(data))
        image.load()
    return image


def open_cell(cell: dict | None) -> Image.Image | None:
    """The PIL image of an undecoded `datasets.Image` cell (None stays None)."""
    return None if cell is None else open_bytes(cell_bytes(cell))


def decoded_rows(batch: dict) -> dict:
    """A `datasets` transform (`Dataset.with_transform`): the batch with its `image` cells decoded by `open_cell`
    (a batch of other columns only, as `dataset["captions"]` reads, is returned as it is)."""
    if "image" not in batch:
        return batch
    return {**batch, "image": [open_cell(cell) for cell in batch["image"]]}


def images_in(folder: Path, name: str) -> list[Path]:
    """The image files directly in `folder` (by suffix, any case), sorted; a UserError naming it (as `name`, e.g.
    "--images DIR") when it is not a folder or holds none. Subfolders and other files are not looked at."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{name} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise UserError(f"{name} holds no image files ({' '.join(IMAGE_SUFFIXES)})")
    return paths
