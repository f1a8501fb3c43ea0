"""`distilvit-web serve`: files under their folders only, real 404s, the right MIME types, loopback by default."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from distilvit.errors import UserError
from distilvit.server import DEMO_DIR, build_site, make_server


@pytest.fixture
def served(tmp_path):
    export = tmp_path / "mymodel"
    (export / "onnx").mkdir(parents=True)
    (export / "export_config.json").write_text(json.dumps({"layout": "pipeline", "graphs": ["encoder_model", "decoder_model_merged"]}))
    for name in ("encoder_model.onnx", "decoder_model_merged.onnx"):
        (export / "onnx" / name).write_bytes(b"onnx")
    (export / "config.json").write_text("{}")
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / "ort-wasm-simd-threaded.asyncify.wasm").write_bytes(b"\0asm")
    (vendor / "transformers.min.js").write_text("export {}")
    (tmp_path / "secret.txt").write_text("do not serve")
    server = make_server(build_site([export], vendor=vendor), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def get(server, path):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", path)  # sent as is: no client-side normalisation of `..`
    response = conn.getresponse()
    return response.status, response.getheader("Content-Type"), response.read()


def test_binds_loopback_by_default(served):
    assert served.server_address[0] == "127.0.0.1"


@pytest.mark.parametrize("path, mime", [
    ("/", "text/html"),
    ("/app.js", "text/javascript"),
    ("/worker.js", "text/javascript"),
    ("/vendor/ort-wasm-simd-threaded.asyncify.wasm", "application/wasm"),
    ("/vendor/transformers.min.js", "text/javascript"),
    ("/models/mymodel/config.json", "application/json"),
    ("/models/mymodel/onnx/encoder_model.onnx", "application/octet-stream"),
])
def test_files_and_mime_types(served, path, mime):
    status, content_type, _ = get(served, path)
    assert (status, content_type) == (200, mime)


def test_index_lists_models_and_dtypes(served):
    status, _, body = get(served, "/models/index.json")
    assert status == 200
    (entry,) = json.loads(body)["models"]
    version = entry.pop("version")
    assert entry == {"name": "mymodel", "path": f"mymodel/v{version}", "layout": "pipeline", "dtypes": ["fp32"],
                     "default_dtype": "fp32"}


def test_versioned_model_paths_serve_only_the_current_export(served, tmp_path):
    """The demo loads /models/NAME/vVERSION/...: the browser may cache those for good, because a new export (a new
    export_config.json) gets a new version and the old URLs answer 404."""
    (entry,) = json.loads(get(served, "/models/index.json")[2])["models"]
    status, _, body = get(served, f"/models/{entry['path']}/config.json")
    assert status == 200 and body == get(served, "/models/mymodel/config.json")[2]
    assert get(served, "/models/mymodel/v000000000000/config.json")[0] == 404
    assert get(served, f"/models/{entry['path']}/../../secret.txt")[0] == 404


@pytest.mark.parametrize("path", ["/models/mymodel/tokenizer.json", "/models/other/config.json", "/nope.html",
                                  "/vendor/missing.wasm"])
def test_missing_files_are_real_404s(served, path):
    status, _, body = get(served, path)
    assert status == 404 and b"<html" not in body.lower()


@pytest.mark.parametrize("path", [
    "/../secret.txt", "/models/mymodel/../../secret.txt", "/models/mymodel/%2e%2e/%2e%2e/secret.txt",
    "/models/mymodel/..%2f..%2fsecret.txt", "/vendor/..%2F..%2Fsecret.txt", "//etc/passwd", "/%2Fetc%2Fpasswd",
    "/models/mymodel/%5c..%5c..%5csecret.txt", "/models/mymodel/onnx/%00", "/models/mymodel//etc/passwd",
])
def test_traversal_is_refused(served, path):
    status, _, body = get(served, path)
    assert status == 404 and b"do not serve" not in body and b"root:" not in body


def test_folder_that_is_not_an_export_is_refused(tmp_path):
    with pytest.raises(UserError, match="is not a distilvit-web export"):
        build_site([tmp_path], vendor=tmp_path)


def test_demo_page_is_in_the_checkout():
    assert (DEMO_DIR / "index.html").is_file() and (DEMO_DIR / "worker.js").is_file()
