"""Stock transformers.js in real Chromium, as a runtime of `verify parity`: `chromium-wasm` and `chromium-webgpu`.

An export is served by `distilvit.server` on a free port of 127.0.0.1 (a secure context: WebGPU and multi-threaded
WebAssembly need it), Chromium is started headless through Playwright, and `web-demo/parity.html` runs
transformers.js on the page: the images are served to it from their files (the browser decodes and resizes them
itself: end-to-end parity) and the Python pixel values are handed over as JSON (model parity). WebGPU uses
Chromium's software adapter (`--enable-unsafe-webgpu --enable-unsafe-swiftshader --use-webgpu-adapter=swiftshader`):
its results are correctness only; its times mean nothing. Nothing leaves 127.0.0.1: other requests are refused.

Needs Chromium (`DISTILVIT_WEB_CHROMIUM`, else `chromium` / `chromium-browser` / `google-chrome` on PATH; Debian:
`apt-get install chromium`) and the Python package playwright (`pip install playwright`; its own browser download
is not used). This module knows nothing about PyTorch or the report; it returns token ids per image.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import threading
from pathlib import Path

from distilvit.errors import UserError

CHROMIUM_ENV = "DISTILVIT_WEB_CHROMIUM"
FLAGS = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
WEBGPU_FLAGS = ["--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", "--use-webgpu-adapter=swiftshader"]
DEVICES = {"chromium-wasm": "wasm", "chromium-webgpu": "webgpu"}


def find_chromium() -> str:
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        if not Path(configured).is_file():
            raise UserError(f"{CHROMIUM_ENV}={configured} is not a file; point it at a Chromium executable")
        return configured
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise UserError("the chromium-* runtimes need Chromium: install it (Debian/Ubuntu: `apt-get install chromium`) "
                    f"or set {CHROMIUM_ENV} to its executable")


def run_parity(export_dir: Path, layout: str, dtype: str, runtime: str, images: list[Path], pixel_values,
               max_new_tokens: int, timeout_s: float = 900) -> dict:
    """{load_ms, device, results: [{image, end_to_end: ids, model: ids | None, ms}]} from Chromium."""
    if runtime not in DEVICES:
        raise ValueError(f"unknown browser runtime {runtime!r}")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise UserError(f"--runtime {runtime} drives Chromium with Playwright: `pip install playwright` "
                        "(its browser download is not needed; the system's Chromium is used)") from err
    from distilvit.server import build_site, export_version, make_server

    chromium = find_chromium()
    export_dir = Path(export_dir).resolve()
    site = build_site([export_dir])
    server = make_server(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    device = DEVICES[runtime]
    request = {"model": f"{export_dir.name}/v{export_version(export_dir)}", "layout": layout, "dtype": dtype,
               "device": device, "images": [f"/parity-images/{i}{Path(p).suffix}" for i, p in enumerate(images)],
               "max_new_tokens": max_new_tokens,
               "pixel_values": None if pixel_values is None else
               {"dims": list(pixel_values.shape), "data": pixel_values.astype("float32").ravel().tolist()}}
    files = {f"/parity-images/{i}{Path(p).suffix}": Path(p) for i, p in enumerate(images)}
    try:
        with sync_playwright() as playwright:
            flags = FLAGS + (WEBGPU_FLAGS if device == "webgpu" else ["--disable-gpu"])
            browser = playwright.chromium.launch(executable_path=chromium, args=flags)
            try:
                page = browser.new_page()

                def route(r):
                    path = r.request.url[len(origin):] if r.request.url.startswith(origin) else None
                    if path in files:
                        mime = mimetypes.guess_type(files[path].name)[0] or "application/octet-stream"
                        return r.fulfill(status=200, body=files[path].read_bytes(), content_type=mime)
                    return r.continue_() if path is not None else r.abort()

                page.route("**/*", route)
                page.goto(f"{origin}/parity.html")
                page.wait_for_function("window.parityReady === true", timeout=60_000)
                if device == "webgpu" and not page.evaluate("async () => !!(navigator.gpu && await navigator.gpu.requestAdapter())"):
                    raise UserError(f"--runtime {runtime}: this Chromium ({chromium}) offers no WebGPU adapter, "
                                    "even with the software one asked for")
                page.set_default_timeout(timeout_s * 1000)
                return page.evaluate("request => window.parity(request)", request)
            finally:
                browser.close()
    except PlaywrightError as err:
        raise RuntimeError(f"{runtime} (Chromium at {chromium}) failed: {str(err).splitlines()[0][:500]}") from err
    finally:
        server.shutdown()
        server.server_close()
