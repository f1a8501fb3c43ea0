"""`distilvit-web upload`: push an export folder to a Hugging Face Hub model repo with huggingface_hub.

The token comes from `HF_TOKEN` or the huggingface_hub login (`hf auth login`); it is never printed or written.
The export's README.md is its model card. Exactly the files `files_to_upload` lists are sent, in one commit (one
`CommitOperationAdd` each), and `--dry-run` lists the same files and touches no network: regular files inside the
export only, never a symlink (it could point anywhere, e.g. /etc/passwd) and nothing hidden (`.git/`, `.owner`,
editor files). The repo id is checked with huggingface_hub's own rules before anything else. This module knows
nothing about how the export was made beyond checking it is one.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from distilvit.errors import UserError
from distilvit.export import constants as C

log = logging.getLogger(__name__)


def select_files(export_dir: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """((relative path, bytes) of every regular, non-hidden file of the export; relative paths left out and why)."""
    export_dir = Path(export_dir)
    if not (export_dir / C.EXPORT_CONFIG).is_file() or (export_dir / C.EXPORT_CONFIG).is_symlink():
        raise UserError(f"{export_dir} is not a distilvit-web export ({C.EXPORT_CONFIG} missing); "
                        f"make one with `distilvit-web export`")
    files, skipped = [], []
    for folder, dirs, names in os.walk(export_dir, followlinks=False):
        here = Path(folder)
        for d in sorted(dirs):
            rel = (here / d).relative_to(export_dir).as_posix()
            if d.startswith(".") or (here / d).is_symlink():
                skipped.append(f"{rel}/ ({'hidden' if d.startswith('.') else 'a symlink'})")
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here / d).is_symlink())
        for name in sorted(names):
            path = here / name
            rel = path.relative_to(export_dir).as_posix()
            if name.startswith("."):
                skipped.append(f"{rel} (hidden)")
            elif path.is_symlink():
                skipped.append(f"{rel} (a symlink, to {os.readlink(path)})")
            elif not stat.S_ISREG(path.lstat().st_mode):
                skipped.append(f"{rel} (not a regular file)")
            else:
                files.append((rel, path.lstat().st_size))
    return sorted(files), skipped


def files_to_upload(export_dir: Path) -> list[tuple[str, int]]:
    """(relative path, bytes) of every file that is sent, README.md and export_config.json included."""
    return select_files(export_dir)[0]


def check_repo_id(repo_id: str) -> None:
    """A UserError unless the Hub would accept `repo_id` as ORG/NAME (huggingface_hub's validate_repo_id)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise UserError(f"--repo-id {repo_id!r} must look like ORG/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UserError(f"--repo-id {repo_id!r} is not a valid Hub repo id: {str(err).splitlines()[0]}") from err
    if repo_id.endswith(".git") or ".." in repo_id:
        raise UserError(f"--repo-id {repo_id!r} is not a valid Hub repo id: no '..' and no '.git' ending")


def upload(export_dir: Path, repo_id: str, private: bool = False, dry_run: bool = False, api=None) -> dict:
    """Create (or reuse) `repo_id` and upload the export; with `dry_run`, only list the files."""
    check_repo_id(repo_id)
    files, skipped = select_files(export_dir)
    result = {"repo_id": repo_id, "private": private, "files": files, "bytes": sum(s for _, s in files),
              "skipped": skipped}
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
        from huggingface_hub import CommitOperationAdd

        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(Path(export_dir) / rel))
                      for rel, _ in files]
        api.create_commit(repo_id=repo_id, repo_type="model", operations=operations,
                          commit_message="Upload distilvit-web export")
    except Exception as err:  # huggingface_hub raises HTTP, connection and permission errors alike
        if err.__class__.__module__.startswith(("huggingface_hub", "requests", "httpx")):
            raise UserError(f"upload to {repo_id} failed: {err.__class__.__name__}: {str(err).splitlines()[0]}") from err
        raise
    result["url"] = str(url)
    return result


def _logged_in() -> bool:
    from huggingface_hub import get_token

    return get_token() is not None
