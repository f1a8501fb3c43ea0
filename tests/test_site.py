"""`distilvit-web site`: the folder a static host serves. Served here by Python's plain `http.server` (no
cross-origin isolation headers, no knowledge of the project) under a subpath, as GitHub Pages serves a project
site, and captioning in real Chromium from it alone."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_listening
from distilvit.errors import UserError
from test_browser import CHROMIUM, FLAGS
from test_demo_page import GIVE_IMAGE

needs_browser = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)"),
    pytest.mark.skipif(shutil.which("npm") is None, reason="the site's transformers.js files come from npm, which is not installed"),
]
@pytest.fixture(scope="module")
def site_folder(short_q8_export, tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from distilvit.cli import app

    www = tmp_path_factory.mktemp("www")
    result = CliRunner().invoke(app, ["site", str(short_q8_export), "--output", str(www / "demo")])
    assert result.exit_code == 0, result.output
    return www / "demo"


def test_the_site_holds_the_page_the_runtime_and_the_models(site_folder, short_q8_export):
    from distilvit.serve.served_site import VENDOR_FILES, build_site, export_version

    index = json.loads((site_folder / "models/index.json").read_text())
    # the same listing `serve` gives for the same export
    assert index == build_site([short_q8_export], vendor=site_folder / "vendor").index()
    (entry,) = index["models"]
    assert entry["path"] == f"short/v{export_version(short_q8_export)}"
    served = {p.relative_to(short_q8_export) for p in short_q8_export.rglob("*") if p.is_file()}
    copied = {p.relative_to(site_folder / "models" / entry["path"]) for p in (site_folder / "models" / entry["path"]).rglob("*") if p.is_file()}
    assert copied == served
    assert all((site_folder / "vendor" / name).stat().st_size > 0 for name in VENDOR_FILES)
    assert "Cross-Origin-Embedder-Policy: require-corp" in (site_folder / "_headers").read_text()
    record = json.loads((site_folder / "distilvit_site.json").read_text())
    assert record["versions"] == {"short": entry["version"]}


def test_an_existing_folder_is_replaced_only_when_asked_and_only_if_it_is_a_site(site_folder, short_q8_export, tmp_path):
    from distilvit.serve.site import write_site

    with pytest.raises(UserError, match="already exists and is not empty; pass --overwrite"):
        write_site([short_q8_export], site_folder)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no distilvit_site.json"):
        write_site([short_q8_export], mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "mine" and len(list(mine.iterdir())) == 1


@pytest.mark.parametrize("_", [None], ids=["python-http.server"])
@needs_browser[0]
@needs_browser[1]
def test_a_plain_static_server_under_a_subpath_captions_in_chromium(site_folder, _):
    """No COOP/COEP from this server: the page runs on one WebAssembly thread and says so; nothing is fetched from
    anywhere but the static server."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                               str(site_folder.parent), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    origin = f"http://127.0.0.1:{port}"
    try:
        wait_listening(server, port, 30)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            outside: list[str] = []
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(origin) else (outside.append(r.request.url), r.abort()))
            page.goto(f"{origin}/{site_folder.name}/")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Model loaded')",
                                   timeout=120_000)
            assert page.is_visible("#note"), "the page does not say it runs on one thread"
            page.evaluate(GIVE_IMAGE, [None])
            page.wait_for_function("document.getElementById('caption').textContent.length > 0", timeout=120_000)
            assert "WASM, 1 thread" in page.text_content("#timing")
            assert page.is_hidden("#error"), page.text_content("#error")
            browser.close()
        assert not outside, outside
    finally:
        server.terminate()
        server.wait()
