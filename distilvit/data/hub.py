"""Resolve a Hub dataset id to a local snapshot folder with `huggingface_hub.snapshot_download`.

Two steps: first the small files that say how the repository is laid out (README.md with its `configs`,
`dataset_dict.json`, `state.json`), then only the data files those name (the split folders of a `save_to_disk`
layout, the `data_files` of the README's default config), never the example images or other configs beside
them. Loading then reads the snapshot folder like any local folder (`distilvit.data.folders`), which is also what
makes the real command work offline: with `HF_HUB_OFFLINE=1` snapshot_download returns the cached snapshot.
(`datasets.load_dataset("org/name")` does not read that cache offline: measured with datasets 5.2.)

This module knows nothing about columns, captions or splits beyond the file patterns.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import yaml

from distilvit.errors import UserError

log = logging.getLogger(__name__)

LAYOUT_FILES = ["README.md", "dataset_dict.json", "state.json", "dataset_info.json", "*/state.json",
                "*/dataset_info.json"]


def _readme_data_files(readme: Path) -> list[str] | None:
    """The file patterns of the README's default config (`configs: - config_name: default, data_files`)."""
    text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if not isinstance(configs, list) or not configs:
        return None
    default = next((c for c in configs if isinstance(c, dict) and (c.get("default") or c.get("config_name") == "default")),
                   configs[0])
    files = default.get("data_files") if isinstance(default, dict) else None
    if isinstance(files, str):
        return [files]
    if isinstance(files, dict):  # {split: path or [paths]}
        files = [{"path": paths} for paths in files.values()]
    patterns = []
    for entry in files or []:
        paths = entry.get("path") if isinstance(entry, dict) else entry
        patterns += [paths] if isinstance(paths, str) else list(paths or [])
    return patterns or None


def data_patterns(layout_folder: Path) -> list[str] | None:
    """The files to fetch for the data of every split, judged from the layout files; None: the whole repo."""
    dataset_dict = layout_folder / "dataset_dict.json"
    if dataset_dict.is_file():
        splits = json.loads(dataset_dict.read_text()).get("splits", [])
        return [f"{split}/*" for split in splits]
    if (layout_folder / "state.json").is_file():
        return ["*.arrow"]
    return _readme_data_files(layout_folder / "README.md")


def _download(repo_id: str, patterns: list[str] | None, cache_dir: str | None) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns, cache_dir=cache_dir))


def resolve_hub_dataset(repo_id: str, cache_dir: str | None = None) -> Path:
    """The local snapshot folder of dataset `repo_id` holding the files of all its splits (downloaded if needed).

    Raises UserError for a repository that is missing, private, not cached while offline, or a disk that fills.
    Nothing is written outside the Hugging Face cache.
    """
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    try:
        layout = _download(repo_id, LAYOUT_FILES, cache_dir)
        patterns = data_patterns(layout)
        log.info("dataset %s: fetching %s", repo_id, ", ".join(patterns) if patterns else "every file")
        folder = _download(repo_id, None if patterns is None else patterns + LAYOUT_FILES, cache_dir)
    except LocalEntryNotFoundError as exc:
        where = cache_dir or os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
        reason = ("HF_HUB_OFFLINE is set and it is not in the cache" if offline
                  else "the Hub cannot be reached and it is not in the cache")
        raise UserError(f"dataset {repo_id!r}: {reason} ({where}). Download it first where there is network, "
                        f"`hf download {repo_id} --repo-type dataset` (same HF_HOME), or download it to a folder "
                        f"with `--local-dir DIR` and pass `--dataset DIR`") from exc
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise UserError(f"dataset {repo_id!r} does not exist on the Hugging Face Hub or is private "
                        "(log in with `hf auth login` for a private one); check the id") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"the disk filled while downloading dataset {repo_id!r} into the Hugging Face cache; "
                            "free space there, or point HF_HOME at a larger disk, then run the command again "
                            "(finished files are kept; nothing else was written)") from exc
        raise UserError(f"could not download dataset {repo_id!r}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # HTTP errors of huggingface_hub / httpx: a gated repo, a server error, a timeout
        if not exc.__class__.__module__.startswith(("huggingface_hub", "httpx", "requests")):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise UserError(f"could not download dataset {repo_id!r} ({type(exc).__name__}: {first}); check the id, "
                        "your network and `hf auth login` for gated or private repositories") from exc
    return folder
