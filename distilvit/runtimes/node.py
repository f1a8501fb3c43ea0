"""Run stock transformers.js in Node: caption and time an export through the scripts in `js/`.

The pinned package is installed on first use by `distilvit.transformers_js` (which also copies `js/*.mjs` beside
it); each call here runs one script with a JSON request on stdin and reads its JSON answer. This module knows
nothing about how an export was made; it passes a folder and image paths to Node.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from distilvit.transformers_js import ensure_installed, require_tool


def run_script(script: str, request: dict, timeout: int = 600) -> dict:
    """Run `js/<script>` in the runtime folder with `request` as JSON on stdin; return its JSON output."""
    folder = ensure_installed()
    node = require_tool("node")
    result = subprocess.run([node, script], cwd=folder, input=json.dumps(request), capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"transformers.js ({script}) failed with status {result.returncode}:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout)


def caption(export_dir: Path, images: list[Path], layout: str, dtype: str = "fp32", max_new_tokens: int = 30) -> dict:
    """Captions of `images` by stock transformers.js loading `export_dir` offline."""
    request = {"model_dir": str(Path(export_dir).resolve()), "layout": layout, "dtype": dtype,
               "images": [str(Path(p).resolve()) for p in images], "max_new_tokens": max_new_tokens}
    return run_script("caption.mjs", request)
