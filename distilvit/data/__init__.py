"""Load image-captioning data from any source into one schema: `image` (datasets.Image) and `captions` (list of str).

`load_caption_splits(specs)` accepts, per spec:
- `"synthetic"`: coloured shapes drawn in-process (`distilvit.data.synthetic`), no files, no network;
- a preset name from `HUB_DATASETS` (`flickr30k`, `flickr`, `coco`) or any Hub dataset id (`namespace/name`):
  resolved to a local snapshot with huggingface_hub (`distilvit.data.hub`: only the files of its splits are
  fetched; offline, the cached snapshot is used), then read as a folder;
- a local folder: a copy of a Hub dataset repository (as `hf download --local-dir` writes it), a `save_to_disk`
  folder, parquet/arrow files, or images with `metadata.jsonl` / `metadata.csv` (`file_name`, `caption`: a string
  or, in jsonl, a list) optionally in train/validation/test subfolders (`distilvit.data.folders`).
Each split's parts are checked and normalised once per dataset version (`distilvit.data.prepare`: unreadable
images and empty captions dropped, `alt_text` as a string or a list, cached), missing splits are made
(`distilvit.data.splits`), and several specs are concatenated split by split. Images stay memory-mapped and are
decoded when a row is read, by `distilvit.image_files.open_cell` (the splits' transform; the `image` feature is
`datasets.Image(decode=False)`), so Pillow's limits are raised for our decodes only.

`distilvit.data.examples` writes sample images of the synthetic test split (`python -m distilvit.data.examples`).

This package knows nothing about tokenizers, image processors or models: it hands over PIL images and caption
strings. Failures the user can cause raise `UserError` with the input and what to do.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import datasets

from distilvit.data.folders import IMAGE_EXTENSIONS, METADATA_FILES, read_folder
from distilvit.data.hub import resolve_hub_dataset
from distilvit.data.prepare import CAPTION_COLUMNS, IMAGE_COLUMNS, Part, prepare_part
from distilvit.data.splits import SPLIT_OFF_FRACTION, SPLITS, complete_splits, split_name
from distilvit.data.synthetic import make_synthetic_splits
from distilvit.errors import UserError
from distilvit.image_files import decoded_rows

logger = logging.getLogger(__name__)

HUB_DATASETS = {
    "flickr30k": "Mozilla/flickr30k-transformed-captions-gpt4o",
    "flickr": "Mozilla/flickr30k-transformed-captions-gpt4o",
    "coco": "Mozilla/coco-gpt4o",
}
# the splits' features: images held undecoded, decoded by the splits' transform (decoded_rows) when a row is read
FEATURES = datasets.Features({"image": datasets.Image(decode=False),
                              "captions": datasets.List(datasets.Value("string"))})
SYNTHETIC_SIZE_KEYS = ("train_size", "validation_size", "test_size", "image_size")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # namespace/name; anything else with a separator is a path

__all__ = ["load_caption_splits", "HUB_DATASETS", "FEATURES", "SPLITS", "SPLIT_OFF_FRACTION", "CAPTION_COLUMNS",
           "IMAGE_COLUMNS", "IMAGE_EXTENSIONS", "METADATA_FILES"]


def load_caption_splits(
    specs: list[str],
    *,
    sample: int | None = None,
    sample_splits: tuple[str, ...] = SPLITS,
    seed: int = 0,
    num_proc: int | None = None,
    synthetic_sizes: dict | None = None,
    cache_dir: str | None = None,
    hub_cache: str | None = None,
) -> datasets.DatasetDict:
    """Load and concatenate `specs` into a DatasetDict with splits train/validation/test: rows {"image": a PIL
    image, "captions": a list of str} (FEATURES, the image column held undecoded and decoded as rows are read).

    `sample` keeps at most that many examples in each of `sample_splits` (a random subset, by `seed`, drawn over
    the concatenation of all specs; `train --sample` caps the train split only). `synthetic_sizes` holds keyword
    arguments for `make_synthetic_splits`
    (train_size, validation_size, test_size, image_size). `num_proc` processes check the images (once per
    dataset version; None: one per core, up to 8). `cache_dir` holds datasets' arrow files and the prepared-rows cache (default: the
    datasets cache under HF_HOME); `hub_cache` is the Hub cache for dataset ids (default: HF_HOME's hub/).
    """
    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    if not specs:
        raise UserError("no dataset given: name at least one of 'synthetic', " + ", ".join(HUB_DATASETS)
                        + ", a local image folder or a Hub dataset id")
    if sample is not None and sample < 1:
        raise UserError(f"sample must be a positive number of examples, got {sample}")
    num_proc = num_proc or min(8, os.cpu_count() or 1)
    loaded = [(str(spec), _load_one(str(spec), seed=seed, num_proc=num_proc, synthetic_sizes=synthetic_sizes,
                                    cache_dir=cache_dir, hub_cache=hub_cache)) for spec in specs]
    result = {}
    for split in SPLITS:
        parts = [(spec, dd[split]) for spec, dd in loaded]
        if sample is not None and split in sample_splits:
            parts = _sample_parts(parts, sample, random.Random(f"{seed}-sample-{split}"))
        kept = [ds for _, ds in parts]
        joined = kept[0] if len(kept) == 1 else datasets.concatenate_datasets(kept)
        result[split] = joined.cast_column("image", datasets.Image(decode=False)).with_transform(decoded_rows)
    out = datasets.DatasetDict(result)
    logger.info("loaded %s: %s", ", ".join(specs), ", ".join(f"{s} {len(out[s])}" for s in SPLITS))
    return out


def _load_one(spec: str, *, seed: int, num_proc: int, synthetic_sizes: dict | None,
              cache_dir: str | None, hub_cache: str | None) -> dict[str, datasets.Dataset]:
    """Resolve one spec to train/validation/test datasets with FEATURES."""
    if spec == "synthetic":
        sizes = dict(synthetic_sizes or {})
        unknown = sorted(set(sizes) - set(SYNTHETIC_SIZE_KEYS))
        if unknown:
            raise UserError(f"unknown synthetic size keys {unknown}; valid keys are {list(SYNTHETIC_SIZE_KEYS)}")
        return make_synthetic_splits(seed=seed, **sizes)
    path = Path(spec).expanduser()
    if spec in HUB_DATASETS:  # a preset name always means the Hub (a folder of that name: pass ./NAME)
        folder = resolve_hub_dataset(HUB_DATASETS[spec], hub_cache)
    elif path.is_dir():
        folder = path
    elif path.exists():
        raise UserError(f"dataset path {spec!r} is a file; give a folder holding images and metadata.jsonl or "
                        "metadata.csv (columns file_name, caption), or a downloaded dataset repository")
    elif _HUB_ID.match(spec) and not spec.startswith((".", "~")):
        folder = resolve_hub_dataset(spec, hub_cache)
    elif os.sep in spec or (os.altsep and os.altsep in spec) or spec.startswith((".", "~")) or os.path.isabs(spec):
        raise UserError(f"dataset folder {spec!r} does not exist (resolved to {path.resolve()}); check the path")
    else:
        raise UserError(f"unknown dataset {spec!r}; use one of {['synthetic', *HUB_DATASETS]}, "
                        "a local image folder, or a Hugging Face Hub dataset id like 'namespace/name'")
    return _from_folder(folder, spec, seed=seed, num_proc=num_proc, cache_dir=cache_dir)


def _from_folder(folder: Path, spec: str, *, seed: int, num_proc: int, cache_dir: str | None):
    raw = read_folder(folder, spec, cache_dir)
    parts: dict[str, list[Part]] = {}
    for split, datasets_of_split in raw.items():
        name = split_name(split)
        if name is None:
            logger.info("ignoring split %r of %s (only %s are used)", split, spec, "/".join(SPLITS))
            continue
        for ds in datasets_of_split:
            if len(ds):
                parts.setdefault(name, []).append(prepare_part(ds, spec, split, num_proc=num_proc,
                                                               cache_dir=cache_dir))
    if not parts:
        raise UserError(f"dataset {spec!r} ({folder}) has no rows in any of the splits {', '.join(SPLITS)} "
                        f"(found splits: {', '.join(raw) or 'none'})")
    return complete_splits(parts, spec, seed)


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
