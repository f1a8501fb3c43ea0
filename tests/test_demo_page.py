"""The demo page's state in real Chromium, on the 6-step tiny run's export (the captions mean nothing; the page's
bookkeeping is what is checked): images released, a failed load said, a caption in flight kept across a device
switch, the progress bar gone once the model is ready."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import start_serve
from test_browser import CHROMIUM, FLAGS

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)"),
    pytest.mark.skipif(shutil.which("npm") is None, reason="the demo's transformers.js files come from npm, which is not installed"),
]

# Records every object URL the page makes and releases (the page's own calls, unchanged).
RECORD_URLS = """
window.__made = []; window.__released = [];
const make = URL.createObjectURL.bind(URL), release = URL.revokeObjectURL.bind(URL);
URL.createObjectURL = (o) => { const u = make(o); window.__made.push(u); return u; };
URL.revokeObjectURL = (u) => { window.__released.push(u); release(u); };
"""
# Gives the page an image through its file input (as a user choosing a file does), then, in the same task (so the
# caption is certainly in flight), optionally switches the device.
GIVE_IMAGE = """async ([device]) => {
  const blob = await (await fetch('samples/example-0.png')).blob();
  const input = document.getElementById('file');
  const files = new DataTransfer();
  files.items.add(new File([blob], 'example.png', { type: 'image/png' }));
  input.files = files.files;
  input.dispatchEvent(new Event('change'));
  if (device) { const select = document.getElementById('device'); select.value = device; select.dispatchEvent(new Event('change')); }
}"""
LOADED = "(text) => document.getElementById('status').textContent.startsWith('Model loaded') && document.getElementById('status').textContent.includes(text)"
CAPTIONED = "document.getElementById('caption').textContent.length > 0"
STATE = "['status', 'error', 'caption', 'timing'].map((id) => id + ': ' + document.getElementById(id).textContent).join(' | ')"


def wait_for(page, condition, console, arg=None, timeout=120_000):
    """page.wait_for_function, failing with what the page showed and logged (a bare timeout says nothing)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition, arg=arg, timeout=timeout)
    except PlaywrightTimeout:
        pytest.fail(f"waited {timeout / 1000:.0f} s for {condition} ({arg}); the page shows {page.evaluate(STATE)}; "
                    f"console: {console[-15:]}")


@pytest.fixture(scope="module")
def short_server(short_q8_export):
    process, url = start_serve(str(short_q8_export))
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_the_pages_state_through_captions_a_device_switch_and_a_failed_load(short_server):
    from playwright.sync_api import sync_playwright

    from distilvit.runtimes.browser import WEBGPU_FLAGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[f for f in FLAGS if f != "--disable-gpu"] + WEBGPU_FLAGS)
        page = browser.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        page.add_init_script(RECORD_URLS)
        page.goto(short_server)
        wait_for(page, LOADED, console, arg="(WASM, ")
        assert page.is_hidden("#progress"), "the download progress bar stays once the model is ready"
        # what the model knows, from its export: the 6-step tiny run was trained on the synthetic shapes
        assert "trained on synthetic drawings of coloured circles" in page.text_content("#trained-on")

        # a caption in flight when the device changes is made by the new device's worker, not dropped
        page.evaluate(GIVE_IMAGE, ["webgpu"])
        # (the status line is cleared once the caption shows, so the caption's timing line is what is waited for)
        wait_for(page, "document.getElementById('timing').textContent.includes('on WebGPU;')", console, timeout=240_000)
        assert page.text_content("#caption")
        assert page.is_hidden("#progress") and page.is_hidden("#error"), page.text_content("#error")

        # each new image releases the previous one's object URL: the page holds one image, however many it captions
        page.evaluate(GIVE_IMAGE, [None])
        wait_for(page, CAPTIONED, console)
        made, released = page.evaluate("[window.__made, window.__released]")
        assert len(made) >= 3 and released == made[:-1], (made, released)

        # a model that cannot load (its graphs refused; a fresh context, so no cached copy answers instead): said
        # at once for an image given afterwards, never "Waiting for the model..."
        failing = browser.new_context()
        failing.route("**/*.onnx*", lambda route: route.abort())
        page = failing.new_page()
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.goto(short_server)
        page.wait_for_selector("#error:not([hidden])", timeout=120_000)
        page.evaluate(GIVE_IMAGE, [None])
        wait_for(page, "document.getElementById('error').textContent.includes('did not load')", console, timeout=30_000)
        assert page.text_content("#status") != "Waiting for the model..."
        browser.close()


def test_an_empty_caption_shows_a_message(short_q8_export, tmp_path):
    """A caption of no words (the model's first token is EOS) is shown as a sentence saying so, never as nothing. The
    planted model: a copy of the export whose generation_config.json suppresses every token but EOS (stock
    transformers.js' SuppressTokensLogitsProcessor), so the page's own pipeline returns ""."""
    import json

    from playwright.sync_api import sync_playwright

    export = tmp_path / "export"
    shutil.copytree(short_q8_export, export)
    gen_file = export / "generation_config.json"
    gen = json.loads(gen_file.read_text())
    vocab = json.loads((export / "config.json").read_text())["decoder"]["vocab_size"]
    gen["suppress_tokens"] = [i for i in range(vocab) if i != gen["eos_token_id"]]
    gen_file.write_text(json.dumps(gen))
    process, url = start_serve(str(export))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.goto(url)
            wait_for(page, LOADED, console, arg="(WASM, ")
            page.evaluate(GIVE_IMAGE, [None])
            wait_for(page, CAPTIONED, console)
            assert page.text_content("#caption") == "The model gave no caption for this image."
            assert "no-caption" in page.get_attribute("#caption", "class")
            assert page.is_hidden("#error"), page.text_content("#error")
            browser.close()
    finally:
        process.terminate()
