"""Load image-captioning data from any source into one schema: `image` (datasets.Image) and `captions` (list of str).

`load_caption_splits(specs)` accepts, per spec:
- `"synthetic"`: coloured shapes drawn in-process (`distilvit.synthetic`), no files, no network;
- a short name from `HUB_DATASETS` (`flickr30k`, `flickr`, `coco`), loaded from the Hugging Face Hub;
- a local folder in the `imagefolder` layout: images plus `metadata.jsonl` or `metadata.csv` with `file_name` and
  `caption` (a string, or in jsonl a list of strings; a `captions` column works too), optionally in
  train/validation/test subfolders;
- any other Hub dataset id (`namespace/name`), whose caption and image columns are found by name.
Every source ends with splits `train`, `validation` and `test` (missing ones are split off train, 5% each), several
specs are concatenated split by split, and images that cannot be decoded are skipped and logged. Images stay
lazily decoded by `datasets`, so nothing is loaded into memory up front.

This module knows nothing about tokenizers, image processors or models: it hands over PIL images and caption
strings. Failures the user can cause raise `UserError` with the input and what to do.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
from pathlib import Path

import datasets
from PIL import Image

from distilvit.errors import UserError
from distilvit.synthetic import make_synthetic_splits

logger = logging.getLogger(__name__)

HUB_DATASETS = {
    "flickr30k": "Mozilla/flickr30k-transformed-captions-gpt4o",
    "flickr": "Mozilla/flickr30k-transformed-captions-gpt4o",
    "coco": "Mozilla/coco-gpt4o",
}
SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}
CAPTION_COLUMNS = ("alt_text", "captions", "caption", "text")
IMAGE_COLUMNS = ("image", "img")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
SPLIT_OFF_FRACTION = 0.05  # of train, for each missing validation/test split
FEATURES = datasets.Features({"image": datasets.Image(), "captions": datasets.List(datasets.Value("string"))})
SYNTHETIC_SIZE_KEYS = ("train_size", "validation_size", "test_size", "image_size")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # namespace/name; anything else with a separator is a path
try:
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in ImageFolder.EXTENSIONS)
except (ImportError, AttributeError):  # the list moved; these are the common ones
    IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})


def load_caption_splits(
    specs: list[str],
    *,
    sample: int | None = None,
    seed: int = 0,
    num_proc: int = 1,
    synthetic_sizes: dict | None = None,
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    """Load and concatenate `specs` into a DatasetDict with splits train/validation/test and FEATURES.

    `sample` keeps at most that many examples per split (a random subset, by `seed`, drawn over the
    concatenation of all specs). `synthetic_sizes` holds keyword arguments for `make_synthetic_splits`
    (train_size, validation_size, test_size, image_size). `num_proc` processes check that images decode.
    """
    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    if not specs:
        raise UserError("no dataset given: name at least one of 'synthetic', " + ", ".join(HUB_DATASETS)
                        + ", a local image folder or a Hub dataset id")
    if sample is not None and sample < 1:
        raise UserError(f"sample must be a positive number of examples, got {sample}")
    loaded = [(str(spec), _load_one(str(spec), seed=seed, synthetic_sizes=synthetic_sizes, cache_dir=cache_dir))
              for spec in specs]
    result = {}
    for split in SPLITS:
        parts = [(spec, dd[split]) for spec, dd in loaded]
        if sample is not None:
            parts = _sample_parts(parts, sample, random.Random(f"{seed}-sample-{split}"))
        # synthetic images are drawn in-process and always decode; everything else is checked
        kept = [ds if spec == "synthetic" else _drop_unreadable(ds, spec, split, num_proc) for spec, ds in parts]
        result[split] = kept[0] if len(kept) == 1 else datasets.concatenate_datasets(kept)
    out = datasets.DatasetDict(result)
    logger.info("loaded %s: %s", ", ".join(specs), ", ".join(f"{s} {len(out[s])}" for s in SPLITS))
    return out


def _load_one(spec: str, *, seed: int, synthetic_sizes: dict | None, cache_dir: str | None) -> datasets.DatasetDict:
    """Resolve one spec to a DatasetDict with exactly SPLITS and FEATURES (before the unreadable-image check)."""
    if spec == "synthetic":
        sizes = dict(synthetic_sizes or {})
        unknown = sorted(set(sizes) - set(SYNTHETIC_SIZE_KEYS))
        if unknown:
            raise UserError(f"unknown synthetic size keys {unknown}; valid keys are {list(SYNTHETIC_SIZE_KEYS)}")
        return make_synthetic_splits(seed=seed, **sizes)
    if spec in HUB_DATASETS:
        return _complete_splits(_normalise(_load_hub(HUB_DATASETS[spec], cache_dir), spec), spec, seed)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _complete_splits(_normalise(_load_folder(path, cache_dir), spec), spec, seed)
    if path.exists():
        raise UserError(f"dataset path {spec!r} is a file; give a folder holding images and metadata.jsonl or "
                        "metadata.csv (columns file_name, caption)")
    if _HUB_ID.match(spec):
        return _complete_splits(_normalise(_load_hub(spec, cache_dir), spec), spec, seed)
    if os.sep in spec or (os.altsep and os.altsep in spec) or spec.startswith((".", "~")) or os.path.isabs(spec):
        raise UserError(f"dataset folder {spec!r} does not exist (resolved to {path.resolve()}); check the path")
    raise UserError(f"unknown dataset {spec!r}; use one of {['synthetic', *HUB_DATASETS]}, "
                    "a local image folder, or a Hugging Face Hub dataset id like 'namespace/name'")


def _load_hub(hub_id: str, cache_dir: str | None) -> datasets.DatasetDict:
    try:
        dd = datasets.load_dataset(hub_id, cache_dir=cache_dir)
    except Exception as exc:  # network, auth, missing repo, offline mode: all mean "cannot load it here"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(
            f"could not load dataset {hub_id!r} from the Hugging Face Hub ({type(exc).__name__}: {reason[:300]}); "
            "it needs network access or a cached copy (set cache_dir / HF_HOME to where it is cached). "
            f"If you meant a local folder: no folder {hub_id!r} exists."
        ) from exc
    if not isinstance(dd, datasets.DatasetDict):
        raise UserError(f"dataset {hub_id!r} loaded as {type(dd).__name__}, expected named splits; "
                        "use a dataset with at least a train split")
    return dd


def _load_folder(folder: Path, cache_dir: str | None) -> datasets.DatasetDict:
    files = [p for p in folder.rglob("*") if p.is_file()]
    if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in files):
        raise UserError(f"dataset folder {str(folder)!r} holds no images (looked for .png, .jpg, .webp, ...); "
                        "put the images and a metadata.jsonl or metadata.csv (file_name, caption) in it")
    if not any(p.name in METADATA_FILES for p in files):
        raise UserError(f"dataset folder {str(folder)!r} has images but no metadata.jsonl or metadata.csv; "
                        "add one with a file_name column and a caption column (one line per image)")
    try:
        dd = datasets.load_dataset("imagefolder", data_dir=str(folder), cache_dir=cache_dir)
    except Exception as exc:  # malformed metadata, missing files, mixed column types
        raise UserError(f"could not read dataset folder {str(folder)!r} ({type(exc).__name__}: {exc}); "
                        "check that metadata.jsonl / metadata.csv has file_name and caption for each image, and "
                        "that in metadata.jsonl caption is a string in every line or a list in every line") from exc
    n_images = sum(p.suffix.lower() in IMAGE_EXTENSIONS for p in files)
    n_rows = sum(len(ds) for ds in dd.values())
    if n_rows < n_images:  # imagefolder silently drops images that no metadata line names
        logger.warning("%d of %d images in %s have no line in the metadata file and are not used",
                       n_images - n_rows, n_images, folder)
    return dd


def _as_captions(value) -> list[str]:
    """A caption cell (str, list of str, None) as a list of non-empty strings."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def _normalise(dd: datasets.DatasetDict, spec: str) -> datasets.DatasetDict:
    """Rename split aliases and bring every split to FEATURES; drop examples without any caption."""
    out = {}
    for split, ds in dd.items():
        name = SPLIT_ALIASES.get(split, split)
        if name not in SPLITS:
            logger.info("ignoring split %r of %s (only %s are used)", split, spec, "/".join(SPLITS))
            continue
        cap_col = next((c for c in CAPTION_COLUMNS if c in ds.column_names), None)
        img_col = next((c for c in IMAGE_COLUMNS if c in ds.column_names), None)
        if cap_col is None or img_col is None:
            missing = "caption column (" + ", ".join(CAPTION_COLUMNS) + ")" if cap_col is None else \
                "image column (" + ", ".join(IMAGE_COLUMNS) + ")"
            raise UserError(f"dataset {spec!r} split {split!r} has no {missing}; its columns are {ds.column_names}")
        captions = [_as_captions(v) for v in ds[cap_col]]
        ds = ds.select_columns([img_col])
        if img_col != "image":
            ds = ds.rename_column(img_col, "image")
        try:
            ds = ds.cast_column("image", datasets.Image())
        except Exception as exc:
            raise UserError(f"dataset {spec!r} split {split!r}: column {img_col!r} holds no images "
                            f"({ds.features['image']}): {exc}") from exc
        ds = ds.add_column("captions", captions, feature=FEATURES["captions"])
        keep = [i for i, c in enumerate(captions) if c]
        if not keep:
            raise UserError(f"dataset {spec!r} split {split!r}: all {len(captions)} captions in column {cap_col!r} "
                            "are empty; fill in the captions")
        if len(keep) < len(captions):
            logger.warning("skipped %d of %d examples in %s split %s: empty caption",
                           len(captions) - len(keep), len(captions), spec, name)
            ds = ds.select(keep)
        out[name] = ds
    return datasets.DatasetDict(out)


def _complete_splits(dd: datasets.DatasetDict, spec: str, seed: int) -> datasets.DatasetDict:
    """Split validation and/or test off train (SPLIT_OFF_FRACTION each, at least 1, by seed) when missing."""
    if "train" not in dd:
        raise UserError(f"dataset {spec!r} has no train split (found {sorted(dd)}); "
                        "add a train split, or put all images in one folder to have them split automatically")
    missing = [s for s in SPLITS if s not in dd]
    if not missing:
        return dd
    train = dd["train"]
    n_off = max(1, round(SPLIT_OFF_FRACTION * len(train)))
    if len(train) < len(missing) * n_off + 1:
        raise UserError(f"dataset {spec!r} has only {len(train)} training examples, too few to split off "
                        f"{'/'.join(missing)}; add more examples (at least {len(missing) + 1})")
    order = list(range(len(train)))
    random.Random(f"{seed}-split-off").shuffle(order)  # not the path: moving a folder keeps its splits
    out = dict(dd)
    for i, split in enumerate(missing):
        out[split] = train.select(sorted(order[i * n_off:(i + 1) * n_off]))
    out["train"] = train.select(sorted(order[len(missing) * n_off:]))
    logger.info("%s: split %s off train (%d examples each)", spec, "/".join(missing), n_off)
    return datasets.DatasetDict({s: out[s] for s in SPLITS})


def _sample_parts(parts: list[tuple[str, datasets.Dataset]], cap: int, rng: random.Random):
    """Keep a random subset of at most `cap` examples drawn over the concatenation of `parts`, in original order."""
    total = sum(len(ds) for _, ds in parts)
    if total <= cap:
        return parts
    chosen = sorted(rng.sample(range(total), cap))
    out, start = [], 0
    for spec, ds in parts:
        out.append((spec, ds.select([i - start for i in chosen if start <= i < start + len(ds)])))
        start += len(ds)
    return out


def _is_readable(image: dict) -> bool:
    """Whether PIL can fully decode an undecoded `datasets.Image` cell ({"bytes", "path"})."""
    try:
        source = io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]
        with Image.open(source) as img:
            img.load()
        return True
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError... all mean unreadable
        return False


def _readable_batch(images: list[dict]) -> list[bool]:
    return [_is_readable(image) for image in images]


def _drop_unreadable(ds: datasets.Dataset, spec: str, split: str, num_proc: int) -> datasets.Dataset:
    """Drop examples whose image cannot be decoded; log how many; UserError if none are left."""
    if len(ds) == 0:
        return ds
    kept = ds.cast_column("image", datasets.Image(decode=False)).filter(
        _readable_batch, batched=True, input_columns=["image"],
        num_proc=min(num_proc, len(ds)) if num_proc > 1 else None, desc=f"checking images of {spec} {split}",
    )
    skipped = len(ds) - len(kept)
    if skipped == len(ds):
        raise UserError(f"dataset {spec!r} split {split!r}: all {len(ds)} images are unreadable; "
                        "check that the files exist and are valid images")
    if skipped:
        logger.warning("skipped %d of %d images in %s split %s: unreadable (corrupt or missing file)",
                       skipped, len(ds), spec, split)
    return kept.cast_column("image", datasets.Image())
