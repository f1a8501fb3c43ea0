"""The demo page in real Chromium (Debian's, driven by Playwright): `distilvit-web serve` on the trained tiny
export, a synthetic test image in, PyTorch's caption out, for fp32 and q8; no request leaves the local server.
A screenshot is saved to test-artifacts/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("DISTILVIT_WEB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)"),
    pytest.mark.skipif(shutil.which("npm") is None, reason="the demo's transformers.js files come from npm, which is not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_tiny, tmp_path_factory):
    from distilvit.export.exporter import export_model

    export = tmp_path_factory.mktemp("served") / "tiny"
    export_model(trained_tiny, export, quantize="q8", agreement_images=0)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "distilvit.cli", "serve", str(export), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300  # the first run installs transformers.js with npm
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"serve exited: {process.stdout.read()}")
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_page_captions_like_pytorch_and_stays_local(server, trained_tiny, tmp_path):
    from playwright.sync_api import sync_playwright

    from distilvit.caption import load_captioner
    from distilvit.synthetic import make_synthetic_splits

    image = make_synthetic_splits(seed=0, train_size=1, validation_size=1, test_size=3)["test"][2]["image"]
    path = tmp_path / "test-image.png"
    image.save(path)
    expected = load_captioner(trained_tiny).caption([image])[0]

    outside: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()

        def only_local(route):
            if route.request.url.startswith(server):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_local)
        page.goto(server)
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Model loaded')", timeout=120_000)
        for dtype in ("fp32", "q8"):
            page.select_option("#dtype", dtype)
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Model loaded')", timeout=120_000)
            page.evaluate("document.getElementById('caption').textContent = ''")
            page.set_input_files("#file", str(path))
            page.wait_for_function("document.getElementById('caption').textContent.length > 0", timeout=120_000)
            assert page.text_content("#caption") == expected, dtype
            assert page.is_hidden("#error")
            page.screenshot(path=str(ARTIFACTS / f"demo-{dtype}.png"))
        browser.close()
    assert outside == [], f"requests outside the local server: {outside}"
