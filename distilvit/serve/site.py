"""`distilvit-web site`: a folder any static host serves as it is, holding the demo page and the models.

    index.html, app.js, worker.js, decode.js, wasm-build.js, style.css, samples/   the demo page (web-demo/)
    vendor/                       transformers.min.js and the onnxruntime-web builds (the pinned npm package)
    models/index.json             the exports listed as `serve` lists them
    models/<name>/v<version>/     each export, under its current version (the page loads from there)
    _headers                      COOP/COEP and nosniff for hosts that read it (Netlify, Cloudflare Pages)
    distilvit_site.json           what was written: the exports and their versions, the transformers.js version

The page's paths are relative, so the folder works at a host's root or under a subpath (GitHub Pages). A host
that sends no cross-origin isolation headers still runs the page, on one WebAssembly thread, and the page says so.
The folder is written whole or not at all (a temporary folder renamed into place). This module knows what the
page needs (served_site's URL map, laid out as files); it knows nothing of HTTP or of the models' contents.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from distilvit.atomic import atomic_dir
from distilvit.serve.served_site import VENDOR_FILES, build_site, export_version

MARKER = "distilvit_site.json"
PAGE = ("index.html", "app.js", "worker.js", "decode.js", "wasm-build.js", "style.css", "samples")
HEADERS = """/*
  Cross-Origin-Opener-Policy: same-origin
  Cross-Origin-Embedder-Policy: require-corp
  X-Content-Type-Options: nosniff
"""


def _regular_files_only(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: hidden files and anything that is not a regular file or folder (a link is left out)."""
    return [n for n in names if n.startswith(".") or (Path(folder) / n).is_symlink()]


def write_site(exports: list[Path], output: Path, overwrite: bool = False) -> dict:
    """Write the static site for `exports` into `output` (see the module docstring); returns what
    distilvit_site.json records. UserErrors: an export that is not one, an output that holds something else."""
    from distilvit import transformers_js

    site = build_site(exports)
    with atomic_dir(Path(output), overwrite, marker=MARKER, what="static site") as tmp:
        for name in PAGE:
            source = site.demo / name
            if source.is_dir():
                shutil.copytree(source, tmp / name, ignore=_regular_files_only)
            else:
                shutil.copy2(source, tmp / name)
        (tmp / "vendor").mkdir()
        for name in VENDOR_FILES:
            shutil.copy2(site.vendor / name, tmp / "vendor" / name)
        models = tmp / "models"
        versions = {}
        for name, folder in site.models.items():
            versions[name] = export_version(folder)
            shutil.copytree(folder, models / name / f"v{versions[name]}", ignore=_regular_files_only)
        index = site.index()
        (models / "index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "_headers").write_text(HEADERS)
        record = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "exports": {n: str(p) for n, p in site.models.items()},
                  "versions": versions, "transformers.js": transformers_js.pinned_version(),
                  "bytes": sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())}
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n")
    return record
