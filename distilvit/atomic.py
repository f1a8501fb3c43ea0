"""Write a folder (or a report file) all at once: build it under a temporary name beside the target, rename at the end.

A crash or an error inside the block removes the temporary folder, so the target either does not exist or is
complete. What `--overwrite` may replace is decided here: only a folder this toolkit wrote, recognised by its
marker file (an export's export_config.json, a merged model's distilvit_model.json); anything else is refused
with the path named, before any work is done (`check_replaceable`). The temporary folder holds an `.owner` file
with the writing process id, so a later run of the same command recognises the leftovers of a killed one
(`.NAME.tmp-*`, `.NAME.old-*`), names and removes them. The result gets the user's normal permissions (umask),
not the 0700 of a temporary folder. This module knows nothing about what goes in the folder.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from distilvit.errors import UserError

log = logging.getLogger(__name__)
OWNER_FILE = ".owner"
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def check_creatable(target: Path, what: str) -> None:
    """A UserError naming the obstacle when folder `target` could not be made where it does not exist yet: a file
    where one of the folders above it should be, or a nearest existing folder this user may not write in (the OS
    says so for users other than root; what the OS refuses only when asked, such as /proc, shows when the folder is
    made). Creates nothing."""
    target = Path(target)
    above = next((p for p in target.parents if p.exists() or p.is_symlink()), None)
    if above is None or target.exists():
        return
    if not above.is_dir():
        raise UserError(f"cannot write the {what} {target}: {above} is a file, not a folder; choose another path")
    if not os.access(above, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the {what} {target}: no permission to create folders in {above}; "
                        "choose a folder you can write to")


def check_writable_file(path: Path, what: str) -> None:
    """Before any work: a UserError when file `path` could not be written later, because a folder stands there or
    its folder could not be made (`check_creatable`). An existing file is fine: `write_file` replaces it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"the {what} {path} is a folder; name a file")
    check_creatable(path, what)


def write_file(path: Path, text: str | bytes, what: str) -> None:
    """`text` (str as UTF-8, or bytes) into file `path` whole, its folders made: written beside it under a temporary
    name and renamed, so an earlier file is replaced only by a complete one. A UserError naming it when the OS
    refuses."""
    path = Path(path)
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise UserError(f"cannot write the {what} {path}: {err.strerror or err}; choose a path you can write to") from err


def check_replaceable(target: Path, overwrite: bool, marker: str | None, what: str) -> None:
    """A UserError unless `target` may be written: absent, empty, or (with `overwrite`) a `what` holding `marker`."""
    target = Path(target)
    check_creatable(target, what)
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve():
        raise UserError(f"--output {target} is the current folder, one above it or your home folder; "
                        f"name a new folder for the {what}")
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} exists and is not a folder; choose another output for the {what}")
    if not target.exists() or not any(target.iterdir()):
        return
    if not overwrite:
        raise UserError(f"{target} already exists and is not empty; pass --overwrite to replace it")
    if marker and not (target / marker).is_file():
        raise UserError(f"{target} holds no {marker}, so it is not a distilvit-web {what}, and --overwrite replaces "
                        f"only those. Nothing was changed: move its files away or choose another output")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(folder: Path) -> bool:
    """Whether another live process wrote `folder`'s `.owner` (it is still at work on it)."""
    owner = Path(folder) / OWNER_FILE
    try:
        pid = int(owner.read_text().strip()) if owner.is_file() else None
    except (ValueError, OSError):
        pid = None
    return pid is not None and pid != os.getpid() and _alive(pid)


def set_aside(folder: Path) -> Path:
    """Rename `folder` to `.NAME.old-*` beside it, marked with this process as its owner, and return the new path:
    kept until the caller removes it or puts it back (remove_leftovers restores it if NAME is then missing)."""
    folder = Path(folder)
    aside = folder.with_name(f".{folder.name}.old-{os.getpid()}{secrets.token_hex(3)}")
    folder.rename(aside)
    (aside / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return aside


def put_back(aside: Path, folder: Path) -> None:
    """`aside` (from set_aside) becomes `folder` again, `folder` (what replaced it) removed first."""
    shutil.rmtree(folder, ignore_errors=True)
    (aside / OWNER_FILE).unlink(missing_ok=True)
    aside.rename(folder)


def remove_leftovers(target: Path) -> list[Path]:
    """Remove the temporary folders an interrupted write of `target` left beside it; return them. A folder whose
    writer is still running (its `.owner` pid alive) is kept."""
    removed = []
    for path in sorted(Path(target).parent.glob(f".{Path(target).name}.*-*")):
        kind = path.name[len(Path(target).name) + 2 :].split("-", 1)[0]
        if kind not in ("tmp", "old") or not path.is_dir() or owner_alive(path):
            continue
        if kind == "old" and not Path(target).exists():
            # the earlier content, moved aside by a replace that stopped before the new content took its place:
            # the only copy there is, so it goes back
            (path / OWNER_FILE).unlink(missing_ok=True)
            path.rename(target)
            log.warning("restored %s from %s, left by an interrupted replace", target, path)
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.warning("removed %s, left by an interrupted earlier write of %s", path, target)
        removed.append(path)
    return removed


def _put_back(old: Path, target: Path) -> None:
    """Return the earlier content moved aside to `old` to `target` after the new content failed to take its place;
    if even that fails, say where it is (remove_leftovers restores it on the next write of `target`)."""
    try:
        old.rename(target)
    except OSError as err:
        raise UserError(f"replacing {target} failed and its earlier content could not be put back: it is in {old} "
                        f"({err.strerror or err}); rename it to {target.name} to restore it") from err


@contextmanager
def atomic_dir(target: Path, overwrite: bool = False, marker: str | None = None, what: str = "folder"):
    """Yield a fresh temporary folder that becomes `target` when the block ends without an error.

    With `overwrite`, an existing `target` is replaced only after the new content is complete, and only if it
    holds `marker` (when given).
    """
    target = Path(target)
    check_replaceable(target, overwrite, marker, what)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        (tmp / OWNER_FILE).write_text(f"{os.getpid()}\n")
    except OSError as err:
        raise UserError(f"cannot write the {what} {target}: {err.strerror or err} in {target.parent}; "
                        "choose a folder you can write to") from err
    try:
        yield tmp
        (tmp / OWNER_FILE).unlink()
        tmp.chmod(0o777 & ~_umask())
        if target.exists():
            check_replaceable(target, overwrite, marker, what)  # it may have changed while the block ran
            if any(target.iterdir()):
                old = target.with_name(f".{target.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
                target.rename(old)
                try:
                    tmp.rename(target)
                except BaseException:
                    _put_back(old, target)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                target.rmdir()
                tmp.rename(target)
        else:
            tmp.rename(target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in DISK_ERRORS:  # the disk, not the code: one line naming the folder and the cause
            raise UserError(f"writing the {what} {target} failed: {os.strerror(err.errno)}; nothing was written "
                            f"(free space or choose another output)") from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
