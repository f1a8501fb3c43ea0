"""An installed toolkit: the built wheel, in a fresh virtual environment and run outside the checkout, carries
everything `export`, `verify parity` and `serve` read (JavaScript, Hub configs, the demo page) and runs them."""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT_SITE = Path(sysconfig.get_paths()["purelib"])  # the dependencies (torch, transformers, ...) come from here
SKIP_COPY = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "runs", "exports",
                                   "node_modules", ".pytest_cache", "test-artifacts")
needs_node = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="the transformers.js runtime (parity, the demo's vendor files) needs node and npm")


def _can_build_offline() -> bool:
    """setuptools >= 70.1 has bdist_wheel built in; older ones need the `wheel` package."""
    try:
        version = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    except importlib.metadata.PackageNotFoundError:
        return False
    if version >= (70, 1):
        return True
    try:
        importlib.metadata.version("wheel")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _expected_files() -> set[str]:
    """The wheel paths of the repository's data files (the package data pyproject.toml declares)."""
    files = {f"distilvit/runtimes/js/{p.name}" for p in (ROOT / "distilvit/runtimes/js").glob("*.mjs")} | {"distilvit/runtimes/js/package.json"}
    files |= {f"distilvit/{p.relative_to(ROOT / 'distilvit').as_posix()}"
              for p in (ROOT / "distilvit/modeling/hub_configs").rglob("*") if p.is_file()}
    files |= {f"distilvit/web_demo/{p.relative_to(ROOT / 'web-demo').as_posix()}"
              for p in (ROOT / "web-demo").rglob("*") if p.is_file()}
    files |= {f"distilvit/{p.relative_to(ROOT / 'distilvit').as_posix()}"
              for p in (ROOT / "distilvit").rglob("*.py") if "__pycache__" not in p.parts}
    files |= {f"distilvit/{folder}/{p.name}" for folder in ("export", "quantize") for p in (ROOT / folder).glob("*.py")}
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source tree (the build writes build/ and *.egg-info where it runs)."""
    if not _can_build_offline():
        pytest.skip("building the wheel offline needs setuptools >= 70.1 (the [test] extra) or the `wheel` package")
    root = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, root / "src", ignore=SKIP_COPY)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "-q", "-w", str(root / "dist"), str(root / "src")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [built] = (root / "dist").glob("distilvit_web-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; a .pth after its own site-packages lends it the project's dependencies."""
    env = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # `pip --python` installs into that interpreter's environment: its site-packages, entry points on its bin/.
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                             "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # A path line in a .pth is appended after the folder holding it, so the wheel's distilvit wins; the project
    # site's own .pth files (the editable install's finder) are not processed from there.
    (site / "zz_project_dependencies.pth").write_text(f"{PROJECT_SITE}\n")
    return env


def run_env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), PYTHONUNBUFFERED="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def cli(venv: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "distilvit-web"), *args], cwd=cwd, env=run_env(venv),
                          capture_output=True, text=True, timeout=timeout)


def outside(path: Path) -> bool:
    return not Path(path).resolve().is_relative_to(ROOT)


def test_wheel_holds_code_javascript_hub_configs_and_demo(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_expected_files() - names)
    assert not missing, f"the wheel lacks {missing}"
    assert "distilvit/web_demo/index.html" in names and "distilvit/web_demo/samples/captions.json" in names


def test_installed_package_comes_from_the_fresh_venv(venv, tmp_path):
    probe = ("import json, distilvit, distilvit.export, distilvit.quantize, distilvit.data\n"
             "from distilvit import transformers_js\nfrom distilvit.modeling import realsize\nfrom distilvit.serve import served_site\n"
             "print(json.dumps({'distilvit': distilvit.__file__, 'export': distilvit.export.__file__,\n"
             "    'quantize': distilvit.quantize.__file__, 'data': distilvit.data.__file__,\n"
             "    'demo': str(served_site.demo_dir()), 'js': str(transformers_js.JS_DIR), 'pinned': transformers_js.pinned_version(),\n"
             "    'hub_configs': str(realsize.CONFIG_ROOT)}))")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=run_env(venv),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout)
    assert paths.pop("pinned") == json.loads((ROOT / "distilvit/runtimes/js/package.json").read_text())["dependencies"]["@huggingface/transformers"]
    for name, path in paths.items():
        assert outside(path) and Path(path).resolve().is_relative_to(venv.resolve()), f"{name} comes from {path}"
    assert Path(paths["demo"]).name == "web_demo" and (Path(paths["demo"]) / "index.html").is_file()
    assert sorted(p.name for p in Path(paths["hub_configs"]).iterdir()) == sorted(p.name for p in (ROOT / "distilvit/modeling/hub_configs").iterdir())


@pytest.fixture(scope="module")
def exported(venv, short_run, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("outside")
    assert outside(work)
    result = cli(venv, work, "export", str(short_run / "merged"), "--output", "tiny-export", "--agreement-images", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "tiny-export"


def test_export_writes_every_graph(exported):
    info = json.loads((exported / "export_config.json").read_text())
    assert info["layout"] == "pipeline"
    for graph in info["graphs"]:
        graph_file = exported / "onnx" / f"{graph}.onnx"
        assert graph_file.is_file() and graph_file.stat().st_size > 0, graph_file


@needs_node
def test_parity_fp32_full_match_in_both_runtimes(venv, exported):
    report = exported.parent / "parity.json"
    result = cli(venv, exported.parent, "verify", "parity", str(exported), "--sample", "4", "--dtype", "fp32",
                 "--runtime", "onnxruntime,transformers.js", "--report", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "parity passed" in result.stdout
    data = json.loads(report.read_text())
    assert len(data["images"]) == 4 and data["passed"] is True
    rows = {(e["runtime"], e["dtype"]): e for e in data["results"]}
    assert set(rows) == {("onnxruntime", "fp32"), ("transformers.js", "fp32")}
    for entry in rows.values():
        assert entry["passed"] and entry["model"]["exact_match"] == 1.0 and entry["model"]["divergences"] == 0
        assert entry["model"]["first_divergence"] is None and entry["end_to_end"]["exact_match"] == 1.0
        assert entry["captions"] == data["pytorch_captions"]
    assert "| onnxruntime | fp32 | 100% |" in report.with_suffix(".md").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type").split(";")[0], response.read()
    finally:
        conn.close()


@needs_node
def test_serve_the_demo_and_the_export(venv, exported):
    port = free_port()
    proc = subprocess.Popen([str(venv / "bin" / "distilvit-web"), "serve", str(exported), "--port", str(port)],
                            cwd=exported.parent, env=run_env(venv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{proc.stdout.read()}"
            try:
                status, mime, page = fetch(port, "/")
                break
            except OSError:
                assert time.monotonic() < deadline, "serve did not answer within 120 s"
                time.sleep(0.5)
        assert (status, mime) == (200, "text/html")
        assert page == (ROOT / "web-demo" / "index.html").read_bytes()
        status, mime, body = fetch(port, "/models/index.json")
        assert (status, mime) == (200, "application/json")
        (entry,) = json.loads(body)["models"]
        assert {k: entry[k] for k in ("name", "layout", "dtypes", "default_dtype")} == {
            "name": exported.name, "layout": "pipeline", "dtypes": ["fp32"], "default_dtype": "fp32"}
        assert fetch(port, f"/models/{entry['path']}/config.json")[0] == 200  # the versioned path the demo loads
        for path, mime in (("/worker.js", "text/javascript"), ("/samples/captions.json", "application/json"),
                           ("/vendor/transformers.min.js", "text/javascript"),
                           (f"/models/{exported.name}/export_config.json", "application/json")):
            status, got, body = fetch(port, path)
            assert (status, got) == (200, mime) and body, path
        assert fetch(port, "/nope.html")[0] == 404
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
