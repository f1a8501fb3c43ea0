"""Read a dataset folder (a Hub snapshot, a copy made by `hf download --local-dir`, or a user's own folder) into
raw `datasets.Dataset` parts per split, without decoding any image.

Three layouts are recognised, in this order:
- `save_to_disk` (`dataset_dict.json` with split folders, or one `state.json`): every shard is opened on its own
  with `Dataset.from_file` (memory-mapped). Shards of one split may disagree on column types (Mozilla/coco-gpt4o:
  `alt_text` a string in some, a list in others; ids int32 vs int64), which makes `load_dataset` and
  `load_from_disk` fail, so they are never concatenated raw: `distilvit.data.prepare` normalises each first;
- an image folder (images plus `metadata.jsonl` / `metadata.csv`), read with the `imagefolder` builder;
- anything `datasets.load_dataset(folder)` reads: parquet/arrow/csv/json files, split by file names or by the
  README's `configs` (Mozilla/flickr30k-transformed-captions-gpt4o: one split, `test`, in data/test-*.parquet).

Split names are what the files say (`val`, `dev` ... are mapped later). This module knows nothing about captions,
image decoding or how missing splits are made.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets

from distilvit.errors import UserError

log = logging.getLogger(__name__)

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
DATA_SUFFIXES = (".parquet", ".arrow", ".csv", ".json", ".jsonl", ".tsv")  # not .txt: notes are no data
TEXT_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")
try:
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in ImageFolder.EXTENSIONS)
except (ImportError, AttributeError):  # the list moved; these are the common ones
    IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})


def _visible_files(folder: Path) -> list[Path]:
    """Files under `folder`, leaving out hidden ones (`.cache/huggingface` of `hf download`, `.git`)."""
    return [p for p in folder.rglob("*") if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def allowed_root(folder: Path) -> Path:
    """Where the files of `folder` may live: the folder itself, or for a Hub snapshot (…/snapshots/<revision>,
    whose files are symlinks into ../../blobs) its repository folder in the cache."""
    folder = Path(folder).resolve()
    return folder.parents[1] if folder.parent.name == "snapshots" else folder


def check_inside(folder: Path, files: list[Path], spec: str) -> None:
    """A UserError naming the first file that resolves outside `folder` (a symlink pointing elsewhere)."""
    root = allowed_root(folder)
    for path in files:
        target = path.resolve()
        if target != root and root not in target.parents:
            raise UserError(f"dataset {spec!r}: {path} is a link to {target}, outside the dataset folder "
                            f"{folder}; copy the file into the folder instead of linking to it")


def check_utf8(files: list[Path], spec: str) -> None:
    """A UserError naming a metadata file that is not UTF-8, with the first bad byte and its offset."""
    import codecs

    for path in files:
        decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(1 << 20)
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as err:
                    raise UserError(f"dataset {spec!r}: {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} "
                                    f"near offset {offset + err.start}); save it as UTF-8 (e.g. `iconv -f latin1 -t "
                                    "utf-8`)") from None
                if not chunk:
                    break
                offset += len(chunk)


def _shard_files(split_folder: Path) -> list[Path]:
    state = split_folder / "state.json"
    if state.is_file():
        names = [f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
        shards = [split_folder / name for name in names]
    else:
        shards = sorted(split_folder.glob("*.arrow"))
    missing = [str(p) for p in shards if not p.is_file()]
    if missing or not shards:
        raise UserError(f"dataset folder {str(split_folder)!r} is a save_to_disk split without all of its shards "
                        f"(missing: {missing[:3] or 'every .arrow file'}); download it again completely")
    return shards


def _read_saved(folder: Path, spec: str) -> dict[str, list[datasets.Dataset]]:
    """A `save_to_disk` layout, shard by shard."""
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits", [])
        folders = {split: folder / split for split in splits}
    else:
        split = json.loads((folder / "state.json").read_text()).get("_split") or "train"
        folders = {split: folder}
    parts = {}
    for split, split_folder in folders.items():
        shards = _shard_files(split_folder)
        check_inside(folder, shards, spec)
        try:
            parts[split] = [datasets.Dataset.from_file(str(shard)) for shard in shards]
        except Exception as exc:  # a truncated or foreign .arrow file
            raise UserError(f"dataset {spec!r}: cannot read the shards of split {split!r} in {split_folder} "
                            f"({type(exc).__name__}: {str(exc)[:200]}); download it again") from exc
        log.info("%s: split %s in %d shard(s)", spec, split, len(shards))
    return parts


def _text_files(folder: Path) -> list[Path]:
    return [p for p in _visible_files(folder) if p.name in METADATA_FILES or p.suffix.lower() in TEXT_SUFFIXES]


def _read_imagefolder(folder: Path, spec: str, cache_dir: str | None) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset("imagefolder", data_dir=str(folder), cache_dir=cache_dir)
    except Exception as exc:  # malformed metadata, missing files, mixed column types
        check_utf8(_text_files(folder), spec)  # an encoding problem is named as such (only read on failure)
        raise UserError(f"could not read dataset folder {str(folder)!r} ({type(exc).__name__}: {exc}); "
                        "check that metadata.jsonl / metadata.csv has file_name and caption for each image, and "
                        "that in metadata.jsonl caption is a string in every line or a list in every line") from exc


def read_folder(folder: Path, spec: str, cache_dir: str | None = None) -> dict[str, list[datasets.Dataset]]:
    """Raw parts of every split in `folder`; `spec` is what the user typed, for messages."""
    folder = Path(folder)
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return _read_saved(folder, spec)
    files = _visible_files(folder)
    check_inside(folder, files, spec)
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    has_metadata = any(p.name in METADATA_FILES for p in files)
    data_files = [p for p in files if p.suffix.lower() in DATA_SUFFIXES and p.name not in METADATA_FILES]
    if images and has_metadata:
        dd = _read_imagefolder(folder, spec, cache_dir)
        rows = sum(len(ds) for ds in dd.values())
        if rows < len(images):  # imagefolder silently drops images that no metadata line names
            log.warning("%d of %d images in %s have no line in the metadata file and are not used",
                        len(images) - rows, len(images), folder)
        return {split: [ds] for split, ds in dd.items()}
    if not data_files:
        if images:
            raise UserError(f"dataset folder {str(folder)!r} has images but no metadata.jsonl or metadata.csv; "
                            "add one with a file_name column and a caption column (one line per image)")
        raise UserError(f"dataset {spec!r} ({folder}) holds no images and no data files (looked for .png, .jpg, ... "
                        "with metadata.jsonl / metadata.csv, .parquet, .arrow, a save_to_disk layout); put the "
                        "images and a metadata.jsonl (file_name, caption) in it")
    try:
        dd = datasets.load_dataset(str(folder), cache_dir=cache_dir)
    except Exception as exc:
        check_utf8(_text_files(folder), spec)
        raise UserError(f"could not read dataset {spec!r} from {folder} ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}); "
                        "its data files do not form a dataset datasets.load_dataset can read") from exc
    return {split: [ds] for split, ds in dd.items()}
