"""`distilvit-web upload`: push an export folder to a Hugging Face Hub model repo with huggingface_hub.

The token comes from `HF_TOKEN` or the huggingface_hub login (`hf auth login`); it is never printed or written.
The export's README.md is its model card. The repo mirrors the export: exactly the files `files_to_upload` lists are
sent, and the repo's files the export lacks (a dtype dropped since the last upload, an old card's images) are deleted,
in one commit (a `CommitOperationAdd` per file sent, a `CommitOperationDelete` per file removed; the repo's hidden
files, such as the Hub's `.gitattributes`, are kept). Files sent: regular files inside the export only, never a
symlink (it could point anywhere, e.g. /etc/passwd) and nothing hidden (`.git/`, `.owner`, editor files); each is
opened once, without following links, and checked on the open handle (a regular file of the size listed), so a file
swapped for a link after the listing is refused rather than followed. `--dry-run` lists the same files and, read
from the Hub (no token needed for a public repo, nothing written), the files that would be deleted; offline it says
that list is unknown. The repo id is checked with huggingface_hub's own rules before anything else. This module knows
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
    C.read_export_config(export_dir)
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


def stale_files(present: list[str], files: list[tuple[str, int]]) -> list[str]:
    """The repo's files (`present`) that the export (`files`) lacks, hidden ones (`.gitattributes`) kept."""
    sent = {rel for rel, _ in files}
    return sorted(f for f in present if f not in sent and not any(p.startswith(".") for p in f.split("/")))


def _repo_files(api, repo_id: str) -> list[str]:
    """The repo's files; [] for a repo that does not exist yet (the upload creates it)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return api.list_repo_files(repo_id=repo_id, repo_type="model")
    except RepositoryNotFoundError:
        return []


def _open_checked(export_dir: Path, rel: str, size: int):
    """`rel` opened for reading without following a link, checked on the handle: a regular file of `size` bytes."""
    path = Path(export_dir) / rel
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise UserError(f"{path} changed after it was listed ({err.strerror or err}); upload again") from err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        os.close(fd)
        raise UserError(f"{path} changed after it was listed (now {info.st_size} bytes, listed {size}); upload again")
    return os.fdopen(fd, "rb")


def upload(export_dir: Path, repo_id: str, private: bool = False, dry_run: bool = False, api=None) -> dict:
    """Create (or reuse) `repo_id` and make it mirror the export; with `dry_run`, only list what would change."""
    check_repo_id(repo_id)
    files, skipped = select_files(export_dir)
    result = {"repo_id": repo_id, "private": private, "files": files, "bytes": sum(s for _, s in files),
              "skipped": skipped, "deleted": None}
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    if dry_run:
        try:
            result["deleted"] = stale_files(_repo_files(api, repo_id), files)
        except Exception as err:  # offline, no network, a private repo without a token: the list is unknown
            result["deletions_unknown"] = f"{err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return result
    if api.token is None and not _logged_in():
        raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then upload again")
    handles = []
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        result["deleted"] = stale_files(_repo_files(api, repo_id), files)
        log.info("uploading %d files (%.1f MB) to %s%s", len(files), result["bytes"] / 1e6, repo_id,
                 f", deleting {len(result['deleted'])} the export no longer has" if result["deleted"] else "")
        operations = [CommitOperationDelete(path_in_repo=rel) for rel in result["deleted"]]
        for rel, size in files:
            handles.append(_open_checked(export_dir, rel, size))
            operations.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=handles[-1]))
        api.create_commit(repo_id=repo_id, repo_type="model", operations=operations,
                          commit_message="Upload distilvit-web export")
    except Exception as err:  # huggingface_hub raises HTTP, connection and permission errors alike
        if err.__class__.__module__.startswith(("huggingface_hub", "requests", "httpx")):
            raise UserError(f"upload to {repo_id} failed: {err.__class__.__name__}: {str(err).splitlines()[0]}") from err
        raise
    finally:
        for handle in handles:
            handle.close()
    result["url"] = str(url)
    return result


def _logged_in() -> bool:
    from huggingface_hub import get_token

    return get_token() is not None
