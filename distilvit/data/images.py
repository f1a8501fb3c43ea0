"""Image decoding settings shared by the data pipeline and every command that opens images, and which files of a
folder those commands take for images.

Pillow refuses PNG files whose text chunks decompress to more than `PngImagePlugin.MAX_TEXT_CHUNK` (1 MB):
"Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK". Some of Mozilla/coco-gpt4o's PNG images carry such
chunks (recorded by tarekziade/distilvit2's loader; shared/hub-facts/DATASETS.md), and they are valid images, so the
limit is raised for text chunks only (the pixel-count bomb check stays). Pillow 13, 2026-12-01.
"""

from __future__ import annotations

from pathlib import Path

from PIL import PngImagePlugin

from distilvit.errors import UserError

PNG_TEXT_CHUNK_LIMIT = 64 * 2**20
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}  # what browsers and sharp both decode


def allow_large_png_text() -> None:
    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, PNG_TEXT_CHUNK_LIMIT)


def images_in(folder: Path, name: str) -> list[Path]:
    """The image files directly in `folder` (by suffix, any case), sorted; a UserError naming it (as `name`, e.g.
    "--images DIR") when it is not a folder or holds none. Subfolders and other files are not looked at."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{name} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise UserError(f"{name} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths
