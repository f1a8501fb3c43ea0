"""`distilvit-web serve`: a small static server for web-demo/, the transformers.js files, and exports.

    /                      web-demo/ (index.html, app.js, worker.js, style.css, samples/)
    /vendor/<file>         transformers.min.js and the onnxruntime-web wasm, from the pinned npm package
    /models/index.json     the served exports: name, path, version, layout, dtypes present, default dtype
    /models/<name>/...     each export folder
    /models/<name>/v<version>/...  the same files under the export's current version (sha256 of its
                           export_config.json): the demo loads from here, so the browser's cache (keyed by URL)
                           keeps a model across reloads and never serves a replaced export; an old version is 404

Missing files get a real 404 (transformers.js probes optional files and must not receive an index.html);
paths are resolved and must stay inside the folder they map to (no `..`, no encoded traversal, no absolute
paths, no symlinks out); it binds 127.0.0.1 unless told otherwise. Responses carry cross-origin isolation
headers so the browser allows multi-threaded WebAssembly. This module knows nothing about models beyond
reading each export's export_config.json for the index.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import shutil
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from distilvit.errors import UserError
from distilvit.export import constants as C
from distilvit.export.layout import BROWSER_PREFERENCE, configured_dtype

log = logging.getLogger(__name__)
# The demo page: distilvit/web_demo/ in an installed wheel, web-demo/ beside the package in a checkout.
DEMO_CANDIDATES = (Path(__file__).resolve().parent / "web_demo", Path(__file__).resolve().parent.parent / "web-demo")
DEMO_DIR = next((d for d in DEMO_CANDIDATES if (d / "index.html").is_file()), DEMO_CANDIDATES[0])
VENDOR_FILES = {
    "transformers.min.js": "node_modules/@huggingface/transformers/dist/transformers.min.js",
    "ort-wasm-simd-threaded.asyncify.mjs": "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm": "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm",
}
MIME = {".onnx": "application/octet-stream", ".onnx_data": "application/octet-stream", ".wasm": "application/wasm",
        ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json", ".html": "text/html",
        ".css": "text/css", ".png": "image/png", ".jpg": "image/jpeg", ".md": "text/markdown", ".txt": "text/plain"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Site:
    demo: Path
    vendor: Path
    models: dict[str, Path]

    def index(self) -> dict:
        entries = []
        for name, folder in self.models.items():
            info = json.loads((folder / C.EXPORT_CONFIG).read_text())
            graphs = info["graphs"]
            dtypes = [d for d in C.DTYPE_SUFFIX if all((folder / C.onnx_file(g, d)).is_file() for g in graphs)]
            # what the export's config.json loads by default: one dtype, or a per-graph mix (transformers.js
            # takes either as its `dtype` option)
            version = export_version(folder)
            default = configured_dtype(folder)
            per_graph = default if isinstance(default, dict) else {g: default for g in graphs}
            if not all((folder / C.onnx_file(g, per_graph.get(g, "fp32"))).is_file() for g in graphs):
                default = next(d for d in BROWSER_PREFERENCE if d in dtypes)  # an older export: what is there
            entries.append({"name": name, "path": f"{name}/v{version}", "version": version, "layout": info["layout"],
                            "dtypes": dtypes, "default_dtype": default})
        return {"models": entries}


def export_version(folder: Path) -> str:
    """12 hex digits of sha256(export_config.json): every export writes a new one (it holds its creation time)."""
    import hashlib

    return hashlib.sha256((Path(folder) / C.EXPORT_CONFIG).read_bytes()).hexdigest()[:12]


def vendor_dir() -> Path:
    """web-demo's third-party files: from the pinned npm package (installed on first use), copied once."""
    from distilvit import node_runtime

    runtime = node_runtime.ensure_installed()
    vendor = runtime / "vendor"
    if not all((vendor / f).is_file() for f in VENDOR_FILES):
        vendor.mkdir(exist_ok=True)
        for name, source in VENDOR_FILES.items():
            shutil.copyfile(runtime / source, vendor / name)
    return vendor


def demo_dir() -> Path:
    """The web demo's folder (installed package first, then the checkout); a UserError naming both if neither."""
    for folder in DEMO_CANDIDATES:
        if (folder / "index.html").is_file():
            return folder
    raise UserError(f"the demo page is missing: neither {DEMO_CANDIDATES[0]}/index.html (installed package) nor "
                    f"{DEMO_CANDIDATES[1]}/index.html (checkout) exists; reinstall distilvit-web")


def build_site(exports: list[Path], demo: Path | None = None, vendor: Path | None = None) -> Site:
    demo = demo_dir() if demo is None else Path(demo)
    if not (demo / "index.html").is_file():
        raise UserError(f"the demo page {demo}/index.html is missing")
    models: dict[str, Path] = {}
    for export in exports:
        export = Path(export)
        if not (export / C.EXPORT_CONFIG).is_file():
            raise UserError(f"{export} is not a distilvit-web export ({C.EXPORT_CONFIG} missing); "
                            f"make one with `distilvit-web export`")
        name = export.resolve().name
        if not NAME.match(name) or name in models:
            raise UserError(f"cannot serve {export} as /models/{name}/: the folder name must be unique and use only "
                            f"letters, digits, '.', '_' and '-'")
        models[name] = export.resolve()
    return Site(demo.resolve(), (vendor or vendor_dir()).resolve(), models)


def safe_join(root: Path, relative: str) -> Path | None:
    """`root/relative` if it stays inside `root` (after resolving links), else None."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if any(p == ".." or "\\" in p or "\x00" in p or ":" in p for p in parts):
        return None
    candidate = (root / Path(*parts)).resolve() if parts else root
    try:
        candidate.relative_to(root)
    except ValueError:
        return None
    return candidate


class DemoHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, site: Site, **kwargs):
        self.site = site
        super().__init__(*args, directory=str(site.demo), **kwargs)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, fmt, *args):
        log.debug("%s - %s", self.address_string(), fmt % args)

    def resolve(self) -> Path | None:
        raw = urlsplit(self.path).path
        path = unquote(raw)
        if not path.startswith("/") or "\\" in path or "\x00" in path:
            return None
        if posixpath.normpath(path) != path.rstrip("/") and path != "/":
            return None  # `..`, `//`, `/./` and their encoded forms
        if path == "/":
            return self.site.demo / "index.html"
        if path.startswith("/vendor/"):
            return safe_join(self.site.vendor, path[len("/vendor/"):])
        if path.startswith("/models/"):
            rest = path[len("/models/"):]
            name, _, inner = rest.partition("/")
            if name not in self.site.models:
                return None
            folder = self.site.models[name]
            first, _, after = inner.partition("/")
            if re.fullmatch(r"v[0-9a-f]{12}", first):  # a versioned path: only the current version exists
                return safe_join(folder, after) if first[1:] == export_version(folder) else None
            return safe_join(folder, inner)
        return safe_join(self.site.demo, path.lstrip("/"))

    def do_GET(self):
        self._serve(head=False)

    def do_HEAD(self):
        self._serve(head=True)

    def _serve(self, head: bool):
        if urlsplit(self.path).path == "/models/index.json":
            body = json.dumps(self.site.index()).encode()
            return self._send(HTTPStatus.OK, "application/json", body, head)
        target = self.resolve()
        if target is None or not target.is_file():
            return self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n", head)
        data = target.read_bytes()
        self._send(HTTPStatus.OK, MIME.get(target.suffix, "application/octet-stream"), data, head)

    def _send(self, status: HTTPStatus, mime: str, body: bytes, head: bool):
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def make_server(site: Site, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    try:
        return ThreadingHTTPServer((host, port), partial(DemoHandler, site=site))
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror}; pass another --port") from err
