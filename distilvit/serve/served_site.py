"""What `distilvit-web serve` serves, independent of the HTTP server: the URL map, the Host rule and the index.

    /                      web-demo/ (index.html, app.js, worker.js, style.css, samples/)
    /vendor/<file>         transformers.min.js and the onnxruntime-web wasm, from the pinned npm package
    /models/index.json     the served exports: name, path, version, layout, dtypes present, default dtype, and
                           the input size web-demo/decode.js block-reduces photos for (`reduce_size`)
    /models/<name>/...     each export folder
    /models/<name>/v<version>/...  the same files under the export's current version (sha256 of its
                           export_config.json): the demo loads from here, so the browser's cache (keyed by URL)
                           keeps a model across reloads and never serves a replaced export; an old version is 404

Paths are resolved and must stay inside the folder they map to (no `..`, no encoded traversal, no absolute
paths, no symlinks out). Only Host headers naming this machine are answered: localhost forms, IP literals, the
name given to --host and `allowed_hosts` (a DNS-rebinding page names its own domain and is refused). An export
whose export_config.json cannot be read is left out of the index with a warning. This module knows nothing of
HTTP (distilvit/serve/server.py) and nothing about models beyond reading each export's export_config.json.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from distilvit.errors import UserError
from distilvit.export import constants as C
from distilvit.export.constants import BROWSER_PREFERENCE, configured_dtype

log = logging.getLogger(__name__)
# The demo page: distilvit/web_demo/ in an installed wheel, web-demo/ beside the package in a checkout.
DEMO_CANDIDATES = (Path(__file__).resolve().parents[1] / "web_demo", Path(__file__).resolve().parents[2] / "web-demo")
DEMO_DIR = next((d for d in DEMO_CANDIDATES if (d / "index.html").is_file()), DEMO_CANDIDATES[0])
VENDOR_FILES = {
    "transformers.min.js": "node_modules/@huggingface/transformers/dist/transformers.min.js",
    "ort-wasm-simd-threaded.asyncify.mjs": "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm": "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm",
    # the plain build: WebAssembly only, what the demo loads for device wasm (web-demo/wasm-build.js)
    "ort-wasm-simd-threaded.mjs": "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm": "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
}
MIME = {".onnx": "application/octet-stream", ".onnx_data": "application/octet-stream", ".wasm": "application/wasm",
        ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json", ".html": "text/html",
        ".css": "text/css", ".png": "image/png", ".jpg": "image/jpeg", ".md": "text/markdown", ".txt": "text/plain"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
VERSIONED = re.compile(r"v[0-9a-f]{12}")


@dataclass(frozen=True)
class Target:
    """A file a URL maps to; `immutable`: under the export's current version, so cacheable for good."""

    path: Path
    immutable: bool = False


@dataclass
class Site:
    demo: Path
    vendor: Path
    models: dict[str, Path]
    allowed_hosts: set[str] = field(default_factory=set)  # extra Host names; "*" turns the check off

    def index(self) -> dict:
        entries = []
        for name, folder in self.models.items():
            try:
                entries.append(self._entry(name, folder))
            except (OSError, ValueError, KeyError, TypeError, StopIteration) as err:
                log.warning("left %s out of /models/index.json: its %s cannot be read (%s: %s)", folder,
                            C.EXPORT_CONFIG, type(err).__name__, err)
        return {"models": entries}

    def _entry(self, name: str, folder: Path) -> dict:
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
        pixels = info.get("pixels", {})  # the input size the page's decode.js block-reduces for (0: none)
        return {"name": name, "path": f"{name}/v{version}", "version": version, "layout": info["layout"],
                "dtypes": dtypes, "default_dtype": default, "trained_on": (info.get("trained_on") or {}).get("text", ""),
                "reduce_size": int(pixels["size"]) if "reduce" in pixels else 0}


def export_version(folder: Path) -> str:
    """12 hex digits of sha256(export_config.json): every export writes a new one (it holds its creation time)."""
    import hashlib

    return hashlib.sha256((Path(folder) / C.EXPORT_CONFIG).read_bytes()).hexdigest()[:12]


def vendor_dir() -> Path:
    """web-demo's third-party files: from the pinned npm package (installed on first use), copied once."""
    from distilvit import transformers_js

    runtime = transformers_js.ensure_installed()
    vendor = runtime / "vendor"
    if not all((vendor / f).is_file() for f in VENDOR_FILES):
        with transformers_js.lock():
            vendor.mkdir(exist_ok=True)
            for name, source in VENDOR_FILES.items():
                transformers_js.replace_file(runtime / source, vendor / name)
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
        C.read_export_config(export)
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


def host_allowed(header: str | None, site: Site, host_name: str) -> bool:
    """Whether a request's Host header names this machine (see the module docstring). `host_name`: what --host
    was given as typed (a name stays a name: the address it resolved to is not what browsers send)."""
    if "*" in site.allowed_hosts:
        return True
    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host in LOCAL_NAMES or host == host_name.lower() or host in {h.lower() for h in site.allowed_hosts}:
        return True
    try:
        ipaddress.ip_address(host)  # an IP literal: a rebinding page cannot make a browser send one for its domain
        return True
    except ValueError:
        return False


def resolve(site: Site, path: str) -> Target | None:
    """The file a (percent-decoded) URL path names, or None (a 404): see the module docstring for the map."""
    if not path.startswith("/") or "\\" in path or "\x00" in path or len(path) > 1024:
        return None
    if posixpath.normpath(path) != path.rstrip("/") and path != "/":
        return None  # `..`, `//`, `/./` and their encoded forms
    if path == "/":
        return Target(site.demo / "index.html")
    if path.startswith("/vendor/"):
        return _target(safe_join(site.vendor, path[len("/vendor/"):]))
    if path.startswith("/models/"):
        name, _, inner = path[len("/models/"):].partition("/")
        if name not in site.models:
            return None
        folder = site.models[name]
        first, _, after = inner.partition("/")
        if VERSIONED.fullmatch(first):  # a versioned path: only the current version exists
            try:
                if first[1:] != export_version(folder):
                    return None
            except OSError:
                return None
            return _target(safe_join(folder, after), immutable=True)  # the URL changes with the content
        return _target(safe_join(folder, inner))
    return _target(safe_join(site.demo, path.lstrip("/")))


def _target(path: Path | None, immutable: bool = False) -> Target | None:
    return Target(path, immutable) if path is not None else None


def is_loopback(host: str) -> bool:
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
