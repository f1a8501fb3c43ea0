"""`distilvit-web serve`: a small static server for web-demo/, the transformers.js files, and exports.

    /                      web-demo/ (index.html, app.js, worker.js, style.css, samples/)
    /vendor/<file>         transformers.min.js and the onnxruntime-web wasm, from the pinned npm package
    /models/index.json     the served exports: name, path, version, layout, dtypes present, default dtype, and
                           the input size web-demo/decode.js block-reduces photos for (`reduce_size`)
    /models/<name>/...     each export folder
    /models/<name>/v<version>/...  the same files under the export's current version (sha256 of its
                           export_config.json): the demo loads from here, so the browser's cache (keyed by URL)
                           keeps a model across reloads and never serves a replaced export; an old version is 404

Missing files get a real 404 (transformers.js probes optional files and must not receive an index.html);
paths are resolved and must stay inside the folder they map to (no `..`, no encoded traversal, no absolute
paths, no symlinks out); it binds 127.0.0.1 unless told otherwise. Responses carry cross-origin isolation
headers so the browser allows multi-threaded WebAssembly, `X-Content-Type-Options: nosniff`, an ETag and
Last-Modified (a matching If-None-Match is a 304); versioned model files are `immutable`.

Limits (docs/browser.md): files are streamed in 64 KiB chunks (memory does not grow with file size or clients),
single byte ranges are answered (206), a connection idle or stalled for `timeout` seconds (default 30) is closed,
at most MAX_THREADS requests run at once (more wait in the listen queue), and only Host headers naming this
machine are answered: localhost forms, IP literals, the bound name and `allowed_hosts` (a DNS-rebinding page
names its own domain and gets a 403). An export whose export_config.json cannot be read is left out of the
index with a warning. This module knows nothing about models beyond reading each export's export_config.json.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import os
import posixpath
import re
import socket
import threading
from dataclasses import dataclass, field
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
    # the plain build: WebAssembly only, what the demo loads for device wasm (web-demo/wasm-build.js)
    "ort-wasm-simd-threaded.mjs": "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm": "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
}
MIME = {".onnx": "application/octet-stream", ".onnx_data": "application/octet-stream", ".wasm": "application/wasm",
        ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json", ".html": "text/html",
        ".css": "text/css", ".png": "image/png", ".jpg": "image/jpeg", ".md": "text/markdown", ".txt": "text/plain"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CHUNK = 64 * 1024
MAX_THREADS = 32
DEFAULT_TIMEOUT_S = 30.0
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
VERSIONED = re.compile(r"v[0-9a-f]{12}")


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
                "dtypes": dtypes, "default_dtype": default,
                "reduce_size": int(pixels["size"]) if "reduce" in pixels else 0}


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
        with node_runtime.lock():
            vendor.mkdir(exist_ok=True)
            for name, source in VENDOR_FILES.items():
                node_runtime.replace_file(runtime / source, vendor / name)
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


def host_allowed(header: str | None, site: Site, bound: str) -> bool:
    """Whether a request's Host header names this machine (see the module docstring)."""
    if "*" in site.allowed_hosts:
        return True
    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host in LOCAL_NAMES or host == bound.lower() or host in {h.lower() for h in site.allowed_hosts}:
        return True
    try:
        ipaddress.ip_address(host)  # an IP literal: a rebinding page cannot make a browser send one for its domain
        return True
    except ValueError:
        return False


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive) of a single `bytes=` range; None to send everything (absent, several or malformed
    ranges); "unsatisfiable" when it lies outside the file."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # the last N bytes
        length = int(match[2])
        return (max(size - length, 0), size - 1) if length and size else "unsatisfiable"
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end


class DemoHandler(SimpleHTTPRequestHandler):
    timeout = DEFAULT_TIMEOUT_S  # per socket operation: idle and stalled connections are closed after it

    def __init__(self, *args, site: Site, timeout: float = DEFAULT_TIMEOUT_S, **kwargs):
        self.site = site
        self.timeout = timeout
        self.cache_control = "no-cache"
        super().__init__(*args, directory=str(site.demo), **kwargs)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", self.cache_control)
        super().end_headers()

    def log_message(self, fmt, *args):
        log.debug("%s - %s", self.address_string(), fmt % args)

    def resolve(self) -> Path | None:
        raw = urlsplit(self.path).path
        path = unquote(raw)
        if not path.startswith("/") or "\\" in path or "\x00" in path or len(path) > 1024:
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
            if VERSIONED.fullmatch(first):  # a versioned path: only the current version exists
                try:
                    current = export_version(folder)
                except OSError:
                    return None
                if first[1:] != current:
                    return None
                self.cache_control = "public, max-age=31536000, immutable"  # the URL changes with the content
                return safe_join(folder, after)
            return safe_join(folder, inner)
        return safe_join(self.site.demo, path.lstrip("/"))

    def do_GET(self):
        self._serve(head=False)

    def do_HEAD(self):
        self._serve(head=True)

    def _serve(self, head: bool):
        self.cache_control = "no-cache"
        try:
            if not host_allowed(self.headers.get("Host"), self.site, self.server.server_address[0]):
                return self._send(HTTPStatus.FORBIDDEN, "text/plain", b"this Host is not served\n", head)
            if urlsplit(self.path).path == "/models/index.json":
                body = json.dumps(self.site.index()).encode()
                return self._send(HTTPStatus.OK, "application/json", body, head)
            try:
                target = self.resolve()
                found = target is not None and target.is_file()
            except OSError:  # e.g. a name too long for the file system
                found = False
            if not found:
                return self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n", head)
            self._send_file(target, head)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, socket.timeout):
            self.close_connection = True  # the client went away or stalled past the timeout

    def _send_file(self, target: Path, head: bool):
        with open(target, "rb") as handle:
            st = os.fstat(handle.fileno())
            size = st.st_size
            etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
            if etag in [t.strip() for t in (self.headers.get("If-None-Match") or "").split(",")]:
                self.send_response(HTTPStatus.NOT_MODIFIED)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            wanted = parse_range(self.headers.get("Range"), size)
            if wanted == "unsatisfiable":
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = wanted if wanted else (0, size - 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if wanted else HTTPStatus.OK)
            self.send_header("Content-Type", MIME.get(target.suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(max(end - start + 1, 0)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head:
                return
            handle.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def _send(self, status: HTTPStatus, mime: str, body: bytes, head: bool):
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


class BoundedServer(ThreadingHTTPServer):
    """A thread per request, at most `max_threads` at once: the accept loop waits for a free slot, so further
    clients queue in the kernel's listen backlog instead of each holding a thread."""

    daemon_threads = True

    def __init__(self, address, handler, max_threads: int = MAX_THREADS):
        self.slots = threading.BoundedSemaphore(max_threads)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        self.slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def make_server(site: Site, host: str = "127.0.0.1", port: int = 8000, timeout: float = DEFAULT_TIMEOUT_S,
                max_threads: int = MAX_THREADS) -> ThreadingHTTPServer:
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port (0 to 65535)")
    server_class = BoundedServer
    if ":" in host:  # an IPv6 address
        server_class = type("BoundedServer6", (BoundedServer,), {"address_family": socket.AF_INET6})
    try:
        return server_class((host, port), partial(DemoHandler, site=site, timeout=timeout), max_threads)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}; pass another --host or --port") from err


def is_loopback(host: str) -> bool:
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
