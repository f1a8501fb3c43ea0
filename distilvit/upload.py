"""`distilvit-web upload`: push an export folder to a Hugging Face Hub model repo with huggingface_hub.

The token comes from `HF_TOKEN` or the huggingface_hub login (`hf auth login`); it is never printed or written.
The export's README.md is its model card. `--dry-run` lists what would be uploaded and touches no network.
This module knows nothing about how the export was made beyond checking it is one.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from distilvit.errors import UserError
from distilvit.export import constants as C

log = logging.getLogger(__name__)
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def files_to_upload(export_dir: Path) -> list[tuple[str, int]]:
    """(relative path, bytes) of every file of the export, README.md and export_config.json included."""
    export_dir = Path(export_dir)
    if not (export_dir / C.EXPORT_CONFIG).is_file():
        raise UserError(f"{export_dir} is not a distilvit-web export ({C.EXPORT_CONFIG} missing); "
                        f"make one with `distilvit-web export`")
    return [(p.relative_to(export_dir).as_posix(), p.stat().st_size)
            for p in sorted(export_dir.rglob("*")) if p.is_file() and not p.name.startswith(".")]


def upload(export_dir: Path, repo_id: str, private: bool = False, dry_run: bool = False, api=None) -> dict:
    """Create (or reuse) `repo_id` and upload the export; with `dry_run`, only list the files."""
    if not REPO_ID.match(repo_id):
        raise UserError(f"--repo-id {repo_id!r} must look like ORG/NAME (letters, digits, '.', '_', '-')")
    files = files_to_upload(export_dir)
    result = {"repo_id": repo_id, "private": private, "files": files, "bytes": sum(s for _, s in files)}
    if dry_run:
        return result
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    if api.token is None and not _logged_in():
        raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then upload again")
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        log.info("uploading %d files (%.1f MB) to %s", len(files), result["bytes"] / 1e6, repo_id)
        api.upload_folder(folder_path=str(export_dir), repo_id=repo_id, repo_type="model",
                          commit_message="Upload distilvit-web export", ignore_patterns=[".*"])
    except Exception as err:  # huggingface_hub raises HTTP, connection and permission errors alike
        if err.__class__.__module__.startswith(("huggingface_hub", "requests", "httpx")):
            raise UserError(f"upload to {repo_id} failed: {err.__class__.__name__}: {str(err).splitlines()[0]}") from err
        raise
    result["url"] = str(url)
    return result


def _logged_in() -> bool:
    from huggingface_hub import get_token

    return get_token() is not None
