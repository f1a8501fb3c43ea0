"""The once-per-dataset-version pass over a raw part: which rows have a decodable image and a caption, the
captions as lists of strings, a content hash per image, and the `split` column when there is one.

The result is cached as a small JSON file (row indices, captions, hashes; no pixels) under the datasets cache
(`HF_DATASETS_CACHE/distilvit-web-prepared/`), keyed by the part's files (resolved path, size, modification time:
for a Hub snapshot that is the content-addressed blob) or, for parts `datasets` built itself, by its fingerprint.
A second start on the same data reads that file and decodes no image. The normalised part is then a view on the
memory-mapped original (image column + an in-memory captions column, unusable rows left out through an index
mapping), so memory stays flat whatever the size of the images.

This module knows nothing about split names, sampling or tokenizers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import platform
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import datasets
from PIL import Image
from tqdm.auto import tqdm

from distilvit.errors import UserError
from distilvit.image_files import cell_bytes, open_bytes

log = logging.getLogger(__name__)

PREPARE_VERSION = 1  # bump when what is computed per row changes: old cache files are then ignored
CAPTION_COLUMNS = ("alt_text", "captions", "caption", "text")
IMAGE_COLUMNS = ("image", "img")
SPLIT_COLUMN = "split"
CHUNK_ROWS = 256
CAPTIONS_FEATURE = datasets.List(datasets.Value("string"))


@dataclass
class Part:
    """One prepared part: `dataset` has columns `image` (datasets.Image) and `captions` and only usable rows."""

    dataset: datasets.Dataset
    keys: list[str]  # sha1 of each kept row's image bytes (identical images share a key)
    split_values: list[str] | None  # the part's `split` column for each kept row, if it has one
    source: str  # spec and split, for messages


def as_captions(value) -> list[str]:
    """A caption cell (str, list of str, None) as a list of non-empty stripped strings."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def _columns(ds: datasets.Dataset, spec: str, split: str) -> tuple[str, str]:
    cap_col = next((c for c in CAPTION_COLUMNS if c in ds.column_names), None)
    img_col = next((c for c in IMAGE_COLUMNS if c in ds.column_names), None)
    if cap_col is None or img_col is None:
        missing = ("caption column (" + ", ".join(CAPTION_COLUMNS) + ")" if cap_col is None
                   else "image column (" + ", ".join(IMAGE_COLUMNS) + ")")
        raise UserError(f"dataset {spec!r} split {split!r} has no {missing}; its columns are {ds.column_names}. "
                        "distilvit-web needs one image and one caption column per row")
    return img_col, cap_col


def _version_key(ds: datasets.Dataset, img_col: str, cap_col: str) -> str:
    if ds.cache_files:
        files = []
        for entry in ds.cache_files:
            path = Path(entry["filename"]).resolve()
            stat = path.stat()
            files.append([str(path), stat.st_size, stat.st_mtime_ns])
        identity = {"files": files}
    else:
        identity = {"fingerprint": ds._fingerprint}
    identity.update(version=PREPARE_VERSION, rows=len(ds), image=img_col, caption=cap_col,
                    split_column=SPLIT_COLUMN in ds.column_names)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _cache_folder(cache_dir: str | None) -> Path:
    return Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "distilvit-web-prepared"


# What decoding a damaged or foreign file raises in Pillow 13 (truncated data, bad headers, unknown formats, broken
# compressed streams): such an image is unreadable and its row is skipped. Anything else (a decompression bomb, running
# out of memory, a bug) stops the run: skipping it would drop valid images from training without a word.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def image_key(cell: dict) -> str | None:
    """sha1 of an undecoded `datasets.Image` cell's bytes when PIL can fully decode it, None when the file is
    damaged (DECODE_ERRORS); anything else raises."""
    try:
        data = cell_bytes(cell)
        open_bytes(data).close()
        return hashlib.sha1(data).hexdigest()
    except DECODE_ERRORS:
        return None


def _scan(job) -> list[str | None]:
    """Image keys of rows [start, stop) of an undecoded image column (runs in worker processes); a UserError naming
    the row for an image that is too large to decode or for running out of memory."""
    images, start, stop, what = job
    keys = []
    for row, cell in enumerate(images[start:stop]["image"], start):
        try:
            keys.append(image_key(cell))
        except Image.DecompressionBombError as err:
            raise UserError(f"{what}: the image of row {row} is too large to decode safely ({err}); remove or "
                            "shrink it (rows that are too large are not skipped silently)") from None
        except MemoryError:
            raise UserError(f"{what}: ran out of memory decoding the image of row {row}; free memory or check the "
                            "images with fewer processes (--num-proc)") from None
    return keys


def _scan_images(images: datasets.Dataset, num_proc: int, desc: str) -> list[str | None]:
    jobs = [(images, start, min(start + CHUNK_ROWS, len(images)), desc) for start in range(0, len(images), CHUNK_ROWS)]
    keys: list[str | None] = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=None) as bar:
        if num_proc > 1 and len(jobs) > 1:
            # each job carries the dataset pickled: for memory-mapped Arrow files that is their path, not the bytes
            context = multiprocessing.get_context("fork" if platform.system() == "Linux" else "spawn")
            with context.Pool(min(num_proc, len(jobs))) as pool:
                for chunk in pool.imap(_scan, jobs):
                    keys += chunk
                    bar.update(len(chunk))
        else:
            for job in jobs:
                chunk = _scan(job)
                keys += chunk
                bar.update(len(chunk))
    return keys


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rows_info(ds: datasets.Dataset, img_col: str, cap_col: str, spec: str, split: str, num_proc: int,
               cache_dir: str | None) -> dict:
    """{"captions": per row, "keys": per row (None: unreadable), "split": per row or None}: cached or computed."""
    cache_file = _cache_folder(cache_dir) / f"{_version_key(ds, img_col, cap_col)}.json"
    if cache_file.is_file():
        try:
            info = json.loads(cache_file.read_text())
            if len(info["keys"]) == len(ds):
                log.info("%s split %s: %d rows checked before (reused %s)", spec, split, len(ds), cache_file.name)
                return info
        except (ValueError, KeyError):
            pass  # a damaged cache file: compute again
    captions = [as_captions(v) for v in ds.data.column(cap_col).to_pylist()]
    split_values = ds.data.column(SPLIT_COLUMN).to_pylist() if SPLIT_COLUMN in ds.column_names else None
    images = ds.select_columns([img_col])
    if img_col != "image":
        images = images.rename_column(img_col, "image")
    try:
        images = images.cast_column("image", datasets.Image(decode=False))
    except Exception as exc:
        raise UserError(f"dataset {spec!r} split {split!r}: column {img_col!r} holds no images "
                        f"({ds.features[img_col]}): {exc}") from exc
    keys = _scan_images(images, num_proc, f"checking images of {spec} {split}")
    info = {"captions": captions, "keys": keys, "split": split_values}
    _write_json(cache_file, info)
    return info


def prepare_part(ds: datasets.Dataset, spec: str, split: str, num_proc: int = 1, cache_dir: str | None = None) -> Part:
    """The usable rows of raw part `ds` as a Part; UserError when it has no image/caption column, or no row left."""
    img_col, cap_col = _columns(ds, spec, split)
    info = _rows_info(ds, img_col, cap_col, spec, split, num_proc, cache_dir)
    keep = [i for i, (caps, key) in enumerate(zip(info["captions"], info["keys"])) if caps and key]
    no_caption = sum(not caps for caps in info["captions"])
    unreadable = sum(key is None for caps, key in zip(info["captions"], info["keys"]) if caps)
    if len(ds) and no_caption == len(ds):
        raise UserError(f"dataset {spec!r} split {split!r}: all {len(ds)} captions in column {cap_col!r} are empty; "
                        "fill in the captions")
    if len(ds) and not keep:
        raise UserError(f"dataset {spec!r} split {split!r}: all {len(ds) - no_caption} images are unreadable "
                        "(corrupt or missing files); check that the files exist and are valid images")
    if no_caption:
        log.warning("skipped %d of %d examples in %s split %s: empty caption", no_caption, len(ds), spec, split)
    if unreadable:
        log.warning("skipped %d of %d images in %s split %s: unreadable (corrupt or missing file)",
                    unreadable, len(ds), spec, split)
    base = ds.select_columns([img_col])
    if img_col != "image":
        base = base.rename_column(img_col, "image")
    if base.features["image"] != datasets.Image():
        base = base.cast_column("image", datasets.Image())
    base = base.add_column("captions", info["captions"], feature=CAPTIONS_FEATURE)
    if len(keep) < len(base):
        base = base.select(keep)
    split_values = [info["split"][i] for i in keep] if info["split"] is not None else None
    return Part(base, [info["keys"][i] for i in keep], split_values, f"{spec} {split}")
