"""The images a parity check captions: a folder of files, or the test split of a dataset written to temporary
PNG files (transformers.js reads files). Knows nothing about models.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from distilvit.errors import UserError
from distilvit.image_files import images_in


@contextmanager
def collect_images(folder: Path | None, dataset: str | None, sample: int):
    """Yield image paths: `folder`'s images, or `sample` test images of `dataset` (default: synthetic)."""
    if folder is not None and dataset is not None:
        raise UserError("pass --images or --dataset, not both")
    if folder is not None:
        yield images_in(folder, f"--images {folder}")
        return
    from PIL import Image

    from distilvit.data import load_caption_splits
    from distilvit.pixels import decode_rgba

    splits = load_caption_splits([dataset or "synthetic"], synthetic_sizes={"train_size": 1, "validation_size": 1,
                                                                            "test_size": sample})
    test = splits["test"].select(range(min(sample, len(splits["test"]))))
    with tempfile.TemporaryDirectory(prefix="distilvit-parity-") as tmp:
        paths = []
        for i, row in enumerate(test):
            paths.append(Path(tmp) / f"image-{i:03d}.png")
            # decoded by the one rule (orientation applied, transparency kept), so every runtime reads the same
            Image.fromarray(decode_rgba(row["image"]), "RGBA").save(paths[-1])
        yield paths
