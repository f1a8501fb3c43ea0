"""Stock transformers.js in real Chromium, as a runtime of `verify parity`: `chromium-wasm` and `chromium-webgpu`.

An export is served by `distilvit.serve.server` on a free port of 127.0.0.1 (a secure context: WebGPU and multi-threaded
WebAssembly need it), Chromium is started headless through Playwright, and `web-demo/parity.html` runs
transformers.js on the page: the images are served to it from their files (the browser decodes and resizes them
itself: end-to-end parity) and the Python pixel values are handed over as JSON (model parity). WebGPU uses
Chromium's software adapter (`--enable-unsafe-webgpu --enable-unsafe-swiftshader --use-webgpu-adapter=swiftshader`):
its results are correctness only; its times mean nothing. Nothing leaves 127.0.0.1: other requests are refused.

Needs Chromium (`DISTILVIT_WEB_CHROMIUM`, else `chromium` / `chromium-browser` / `google-chrome` on PATH; Debian:
`apt-get install chromium`) and the Python package playwright (`pip install playwright`; its own browser download
is not used). `distilvit-web bench` times captions in the same way (`run_bench`, web-demo/bench.html). This module
knows nothing about PyTorch or the reports; it returns token ids per image, or timings.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
from contextlib import contextmanager
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


@contextmanager
def page_for(export_dir: Path, device: str, files: dict[str, Path], page_name: str, ready: str):
    """A Chromium page at `/<page_name>` of a server on 127.0.0.1 serving `export_dir` (and `files` at their URL
    paths), after `ready` is true on it. Requests outside that server are refused. Yields (page, model path)."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise UserError("the chromium-* runtimes drive Chromium with Playwright: `pip install playwright` "
                        "(its browser download is not needed; the system's Chromium is used)") from err
    from distilvit.serve.served_site import build_site, export_version
    from distilvit.serve.server import make_server

    chromium = find_chromium()
    export_dir = Path(export_dir).resolve()
    server = make_server(build_site([export_dir]), "127.0.0.1", 0)
    server.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_playwright() as playwright:
            flags = FLAGS + (WEBGPU_FLAGS if device == "webgpu" else ["--disable-gpu"])
            browser = playwright.chromium.launch(executable_path=chromium, args=flags)
            try:
                page = browser.new_page()

                def route(r):
                    path = r.request.url[len(origin):] if r.request.url.startswith(origin) else None
                    if path in files:
                        mime = ("text/javascript" if path.endswith(".mjs") else
                                mimetypes.guess_type(files[path].name)[0] or "application/octet-stream")
                        return r.fulfill(status=200, body=files[path].read_bytes(), content_type=mime)
                    return r.continue_() if path is not None else r.abort()

                page.route("**/*", route)
                page.goto(f"{origin}/{page_name}")
                page.wait_for_function(ready, timeout=60_000)
                if device == "webgpu" and not page.evaluate(
                        "async () => !!(navigator.gpu && await navigator.gpu.requestAdapter())"):
                    raise UserError(f"this Chromium ({chromium}) offers no WebGPU adapter, even with the software "
                                    "one asked for")
                yield page, f"{export_dir.name}/v{export_version(export_dir)}"
            finally:
                browser.close()
    except PlaywrightError as err:
        raise RuntimeError(f"Chromium at {chromium} failed: {str(err).splitlines()[0][:500]}") from err
    finally:
        server.shutdown()
        server.server_close()


def run_parity(export_dir: Path, layout: str, dtype: str, runtime: str, images: list[Path], pixel_values,
               max_new_tokens: int, forcing: dict | None = None, timeout_s: float = 900) -> dict:
    """{load_ms, device, results: [{image, end_to_end: ids, model: ids | None, ms, logits}]} from Chromium.
    `pixel_values`: None, or per image {dims, uint8_base64} (distilvit.verify.parity.pixel_payload); `forcing`:
    None, or {forced, watch, top} for teacher-forced logits (js/forced_logits.mjs, served to the page)."""
    if runtime not in DEVICES:
        raise ValueError(f"unknown browser runtime {runtime!r}")
    device = DEVICES[runtime]
    files = {f"/parity-images/{i}{Path(p).suffix}": Path(p) for i, p in enumerate(images)}
    files["/forced_logits.mjs"] = Path(__file__).parent / "js" / "forced_logits.mjs"
    with page_for(export_dir, device, files, "parity.html", "window.parityReady === true") as (page, model):
        request = {"model": model, "layout": layout, "dtype": dtype, "device": device, "images": list(files)[:-1],
                   "max_new_tokens": max_new_tokens, "pixel_values": pixel_values, "forced": None,
                   **(forcing or {})}
        page.set_default_timeout(timeout_s * 1000)
        return page.evaluate("request => window.parity(request)", request)


def run_bench(export_dir: Path, dtype, image: Path, tokens: int, repeats: int, threads: int,
              timeout_s: float = 1800) -> dict:
    """Caption timings of the pipeline layout in Chromium WebAssembly with `threads` threads (web-demo/bench.js),
    and `page_peak_mib`: the page's renderer processes' peak resident memory above what they held before the model
    loaded (Linux: the kernel's high-water mark; elsewhere 5 ms samples), the decoded image and its copies included."""
    from distilvit.runtimes.memory import PeakMemory

    files = {f"/bench-image{Path(image).suffix}": Path(image)}
    with page_for(export_dir, "wasm", files, "bench.html", "window.benchReady === true") as (page, model):
        page.set_default_timeout(timeout_s * 1000)
        request = {"model": model, "dtype": dtype, "device": "wasm", "threads": threads, "image": next(iter(files)),
                   "tokens": tokens, "repeats": repeats}
        peaks = [PeakMemory(pid) for pid in renderer_pids()]
        for peak in peaks:
            peak.__enter__()
        try:
            out = page.evaluate("request => window.bench(request)", request)
        finally:
            for peak in peaks:
                peak.__exit__(None, None, None)
        return {**out, "page_peak_mib": sum(p.mib for p in peaks) if peaks else None}


def renderer_pids() -> list[int]:
    """The Chromium renderer processes started under this process (Playwright's browser): where pages, their
    workers and their WebAssembly memory live."""
    import psutil

    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "--type=renderer" in child.cmdline():
                pids.append(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids
