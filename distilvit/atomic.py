"""Write a folder all at once: build it under a temporary name beside the target, rename at the end.

A crash or an error inside the block removes the temporary folder, so the target either does not exist or is
complete. This module knows nothing about what goes in the folder.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(target: Path, overwrite: bool = False):
    """Yield a fresh temporary folder that becomes `target` when the block ends without an error.

    With `overwrite`, an existing `target` is replaced only after the new content is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{target} appeared while it was being written")
            old = target.with_name(f".{target.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
