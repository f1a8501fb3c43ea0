"""Image decoding settings shared by the data pipeline and every command that opens images.

Pillow refuses PNG files whose text chunks decompress to more than `PngImagePlugin.MAX_TEXT_CHUNK` (1 MB):
"Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK". Some of Mozilla/coco-gpt4o's PNG images carry such
chunks (recorded by tarekziade/distilvit2's loader; shared/hub-facts/DATASETS.md), and they are valid images, so the
limit is raised for text chunks only (the pixel-count bomb check stays). Pillow 13, 2026-12-01.
"""

from __future__ import annotations

from PIL import PngImagePlugin

PNG_TEXT_CHUNK_LIMIT = 64 * 2**20


def allow_large_png_text() -> None:
    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, PNG_TEXT_CHUNK_LIMIT)
