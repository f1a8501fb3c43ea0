"""`distilvit-web serve`: files under their folders only, real 404s, the right MIME types, loopback by default."""

from __future__ import annotations

import http.client
import json

import pytest

from distilvit.errors import UserError
from distilvit.serve.served_site import DEMO_DIR, build_site
from distilvit.serve.server import make_server


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
    server = make_server(build_site([export], vendor=vendor), port=0).start()
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
    assert (status, content_type.split(";")[0]) == (200, mime)  # text types also name their charset (utf-8)


def test_index_lists_models_and_dtypes(served):
    status, _, body = get(served, "/models/index.json")
    assert status == 200
    (entry,) = json.loads(body)["models"]
    version = entry.pop("version")
    # reduce_size 0: this export_config.json names no block reduction (an export made before it)
    assert entry == {"name": "mymodel", "path": f"mymodel/v{version}", "layout": "pipeline", "dtypes": ["fp32"],
                     "default_dtype": "fp32", "reduce_size": 0, "trained_on": ""}


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


# --- limits: streaming, ranges, caching headers, the Host rule, timeouts, a broken export ---------------------

def request(server, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


def test_range_etag_and_nosniff(served):
    whole, body = request(served, "/models/mymodel/onnx/encoder_model.onnx")
    assert whole.status == 200 and body == b"onnx" and whole.getheader("Accept-Ranges") == "bytes"
    assert whole.getheader("X-Content-Type-Options") == "nosniff" and whole.getheader("Last-Modified")
    part, body = request(served, "/models/mymodel/onnx/encoder_model.onnx", {"Range": "bytes=1-2"})
    assert part.status == 206 and body == b"nn" and part.getheader("Content-Range") == "bytes 1-2/4"
    tail, body = request(served, "/models/mymodel/onnx/encoder_model.onnx", {"Range": "bytes=-3"})
    assert tail.status == 206 and body == b"nnx"
    bad, _ = request(served, "/models/mymodel/onnx/encoder_model.onnx", {"Range": "bytes=10-"})
    assert bad.status == 416 and bad.getheader("Content-Range") == "bytes */4"
    again, body = request(served, "/models/mymodel/onnx/encoder_model.onnx", {"If-None-Match": whole.getheader("ETag")})
    assert again.status == 304 and body == b""


def test_versioned_model_files_are_immutable(served):
    index = json.loads(request(served, "/models/index.json")[1])
    path = index["models"][0]["path"]
    response, _ = request(served, f"/models/{path}/onnx/encoder_model.onnx")
    assert response.status == 200 and "immutable" in response.getheader("Cache-Control")
    assert request(served, "/app.js")[0].getheader("Cache-Control") == "no-cache"


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:8000", 200), ("localhost:8000", 200), ("[::1]:8000", 200), ("192.168.1.20:8000", 200),
    ("evil.example.com", 403), ("127.0.0.1.evil.example:80", 403),
    ("", 400),  # HTTP/1.1 requires a Host header: h11 refuses the request before the app sees it
])
def test_only_host_headers_naming_this_machine_are_answered(served, host, status):
    """A DNS-rebinding page sends its own domain as Host; IP literals and localhost names cannot be rebound."""
    conn = http.client.HTTPConnection("127.0.0.1", served.server_address[1], timeout=10)
    conn.putrequest("GET", "/models/index.json", skip_host=True)
    if host:
        conn.putheader("Host", host)
    conn.endheaders()
    assert conn.getresponse().status == status


def test_the_name_given_to_host_is_answered(tmp_path):
    """`serve --host NAME` answers `Host: NAME` (the name as typed, not the address it resolved to)."""
    import socket as socketlib

    name = socketlib.gethostname()
    try:
        address = socketlib.getaddrinfo(name, 0, type=socketlib.SOCK_STREAM)[0][4][0]
    except OSError:
        pytest.skip(f"this machine's own name {name!r} does not resolve, so it cannot be bound")
    export = tmp_path / "named"
    (export / "onnx").mkdir(parents=True)
    (export / "export_config.json").write_text(json.dumps({"layout": "pipeline", "graphs": ["encoder_model"]}))
    server = make_server(build_site([export], vendor=tmp_path), host=name, port=0).start()
    try:
        conn = http.client.HTTPConnection(address, server.server_address[1], timeout=10)
        conn.request("GET", "/models/index.json", headers={"Host": f"{name}:{server.server_address[1]}"})
        assert conn.getresponse().status == 200
    finally:
        server.shutdown()
        server.server_close()


def test_errors_under_a_versioned_path_are_not_cached(served):
    """Only a file found under the export's current version is `immutable`: a 404 there may become a file."""
    (entry,) = json.loads(request(served, "/models/index.json")[1])["models"]
    missing, _ = request(served, f"/models/{entry['path']}/tokenizer.json")
    assert missing.status == 404 and missing.getheader("Cache-Control") == "no-cache"
    found, _ = request(served, f"/models/{entry['path']}/config.json")
    again, _ = request(served, f"/models/{entry['path']}/config.json", {"If-None-Match": found.getheader("ETag")})
    assert again.status == 304 and "immutable" in again.getheader("Cache-Control")


def test_allowed_hosts_and_wildcard(served):
    site = served.site
    site.allowed_hosts = {"models.intranet"}
    assert request(served, "/", {"Host": "models.intranet:8000"})[0].status == 200
    assert request(served, "/", {"Host": "other.intranet"})[0].status == 403
    site.allowed_hosts = {"*"}  # `--allow-host '*'`: any name is answered
    assert request(served, "/", {"Host": "other.intranet"})[0].status == 200
    assert request(served, "/", {"Host": "evil.example.com:8000"})[0].status == 200


def test_long_paths_and_a_broken_export_do_not_break_the_server(served, tmp_path, caplog):
    assert request(served, "/" + "a" * 300)[0].status == 404
    assert request(served, "/models/mymodel/" + "b" * 5000)[0].status == 404
    site = served.site
    broken = tmp_path / "broken"
    (broken / "onnx").mkdir(parents=True)
    (broken / "export_config.json").write_text("{ not json")
    site.models["broken"] = broken
    with caplog.at_level("WARNING"):
        index = json.loads(request(served, "/models/index.json")[1])
    assert [m["name"] for m in index["models"]] == ["mymodel"]
    assert "left" in caplog.text and "broken" in caplog.text


def test_bad_ports_and_hosts_are_one_line(tmp_path):
    site = build_site([], demo=DEMO_DIR, vendor=tmp_path)
    with pytest.raises(UserError, match="70000 is not a TCP port"):
        make_server(site, port=70000)
    with pytest.raises(UserError, match="cannot listen on no-such-host.invalid"):
        make_server(site, host="no-such-host.invalid", port=0)


SERVER_SCRIPT = """
import sys, threading
from pathlib import Path
from distilvit.serve.served_site import build_site
from distilvit.serve.server import make_server
root = Path(sys.argv[1])
server = make_server(build_site([root / "big"], vendor=root / "vendor"), port=0, timeout=float(sys.argv[2]))
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def big_server(tmp_path):
    """`distilvit.serve.server` in its own process, serving an export with a 200 MB file."""
    import subprocess
    import sys

    export = tmp_path / "big"
    (export / "onnx").mkdir(parents=True)
    (export / "export_config.json").write_text(json.dumps({"layout": "pipeline", "graphs": ["encoder_model"]}))
    (export / "config.json").write_text("{}")
    with open(export / "onnx" / "encoder_model.onnx", "wb") as f:
        f.truncate(200 * 2**20)  # 200 MB (sparse: quick to write, read back as zeros)
    (tmp_path / "vendor").mkdir()
    process = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(tmp_path), "2"], stdout=subprocess.PIPE, text=True)
    port = int(process.stdout.readline())
    yield process, port
    process.kill()
    process.wait()


def _download(port, path="/models/big/onnx/encoder_model.onnx") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    response = conn.getresponse()
    total = 0
    while chunk := response.read(1 << 20):
        total += len(chunk)
    return total


def test_memory_stays_flat_under_load_and_stalled_readers_are_released(big_server):
    """8 clients x 2 downloads of a 200 MB file: the server's RSS grows < 50 MiB; clients that stop reading, and
    clients that connect and send nothing, are cut off after the timeout (2 s here): the server holds no
    connection of theirs afterwards."""
    import socket as socketlib
    import time
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    process, port = big_server
    server = psutil.Process(process.pid)
    _download(port)  # warm up: first-request allocations are not growth
    before = server.memory_info().rss
    peak = before
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_download, port) for _ in range(16)]
        while not all(f.done() for f in futures):
            peak = max(peak, server.memory_info().rss)
            time.sleep(0.05)
        assert all(f.result() == 200 * 2**20 for f in futures)
    assert (peak - before) / 2**20 < 50, f"RSS grew {(peak - before) / 2**20:.0f} MiB"

    def held() -> int:
        return sum(c.status == psutil.CONN_ESTABLISHED for c in server.net_connections(kind="tcp"))

    stalled = []
    for _ in range(4):  # ask for the big file, read nothing
        s = socketlib.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /models/big/onnx/encoder_model.onnx HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        stalled.append(s)
    idle = [socketlib.create_connection(("127.0.0.1", port)) for _ in range(20)]  # connect, send nothing
    time.sleep(0.5)
    busy = held()
    assert busy == 24, f"the server holds {busy} connections, not the 24 opened"
    deadline = time.time() + 15
    while time.time() < deadline and held() > 0:
        time.sleep(0.2)
    assert held() == 0, f"connections still held: {held()} (were {busy})"
    assert server.memory_info().rss - before < 50 * 2**20
    for s in stalled + idle:
        s.close()
    assert _download(port, "/models/index.json") > 0  # still serving


def test_a_client_dripping_its_request_is_cut_off(big_server):
    """A request head must arrive within the timeout (2 s here), however often its bytes trickle in (one each
    0.5 s here, which a per-read timeout never catches)."""
    import socket as socketlib
    import time

    _, port = big_server
    s = socketlib.create_connection(("127.0.0.1", port))
    s.settimeout(0.5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    opened = time.monotonic()
    closed = None
    while time.monotonic() - opened < 15 and closed is None:
        try:
            s.sendall(b"a")
            if s.recv(1) == b"":
                closed = time.monotonic() - opened
        except socketlib.timeout:
            pass
        except OSError:
            closed = time.monotonic() - opened
    s.close()
    assert closed is not None, "a client sending a byte every 0.5 s was kept for 15 s"
    assert _download(port, "/models/index.json") > 0  # still serving


def test_a_non_loopback_host_says_what_it_exposes(tmp_path):
    """`serve --host 0.0.0.0` prints a warning naming what is shared and on which port, before serving."""
    import subprocess
    import sys

    export = tmp_path / "shared-model"
    (export / "onnx").mkdir(parents=True)
    (export / "export_config.json").write_text(json.dumps({"layout": "pipeline", "graphs": ["encoder_model"]}))
    (export / "config.json").write_text("{}")
    process = subprocess.Popen([sys.executable, "-m", "distilvit.cli", "serve", str(export), "--host", "0.0.0.0",
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        while line and "warning:" not in line:
            line = process.stderr.readline()
    finally:
        process.kill()
        process.wait()
    assert "--host 0.0.0.0 exposes the demo page and" in line and "shared-model" in line and "on port" in line
