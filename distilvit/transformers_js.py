"""The pinned stock transformers.js: its version, the folder it is installed into, and its install.

The package (`@huggingface/transformers`, version in `runtimes/js/package.json`) is installed with npm into a cache
folder (`$DISTILVIT_WEB_CACHE` or `~/.cache/distilvit-web`), once per version, with `ONNXRUNTIME_NODE_INSTALL=skip`
(its postinstall would try to download CUDA libraries). A missing node or npm is a UserError naming what to install.
Commands started at once (two `verify parity`, test workers) take turns through a lock file beside the folder: one
installs, the others wait and find it installed; files in it are replaced whole, never rewritten in place.
Both places our models run in use it: Node (`runtimes.node` runs its scripts there) and the browser (`serve` copies
the package's browser files beside the demo page). This module knows nothing about exports or what runs on it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

from distilvit.errors import UserError

log = logging.getLogger(__name__)
JS_DIR = Path(__file__).parent / "runtimes" / "js"  # package.json (the pin) and the Node scripts
PACKAGE = "@huggingface/transformers"


def pinned_version() -> str:
    return json.loads((JS_DIR / "package.json").read_text())["dependencies"][PACKAGE]


def cache_dir() -> Path:
    root = Path(os.environ.get("DISTILVIT_WEB_CACHE", Path.home() / ".cache" / "distilvit-web"))
    return root / f"node-transformers-{pinned_version()}"


def require_tool(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise UserError(f"`{tool}` was not found on PATH; the transformers.js runtime needs Node.js 18+ and npm "
                        f"(https://nodejs.org, or `apt-get install nodejs npm`)")
    return found


def lock():
    """The lock every change to the cache folder is made under (a FileLock, used as a context manager)."""
    from filelock import FileLock

    folder = cache_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder) + ".lock")


def replace_file(source: Path, target: Path) -> None:
    """`target` gets `source`'s bytes, renamed into place whole (a reader meanwhile sees the old file or the new),
    and is left alone when it already holds them."""
    data = Path(source).read_bytes()
    if target.is_file() and target.read_bytes() == data:
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def ensure_installed() -> Path:
    """The folder holding node_modules with the pinned transformers.js (installed now if missing)."""
    folder = cache_dir()
    marker = folder / "node_modules" / "@huggingface" / "transformers" / "package.json"
    with lock():
        if not marker.is_file():
            _install(folder, marker)
        for script in JS_DIR.glob("*.mjs"):  # Node resolves the package from the scripts' folder
            replace_file(script, folder / script.name)
    return folder


def _install(folder: Path, marker: Path) -> None:
    npm = require_tool("npm")
    require_tool("node")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(JS_DIR / "package.json", folder / "package.json")
    log.info("installing %s@%s into %s (first use)", PACKAGE, pinned_version(), folder)
    env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
    result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0 or not marker.is_file():
        raise UserError(f"npm could not install {PACKAGE}@{pinned_version()} into {folder}:\n{result.stderr[-2000:]}")
