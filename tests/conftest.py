"""Shared fixtures: tiny models built from configs, short training runs. Nothing here downloads anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that sleep when idle: `make test` runs two pytest workers on two cores, and OpenMP's default
# spinning made two tiny trainings at once 7x slower each (218 s vs 32 s for 300 steps); sleeping, both took ~50 s
# (a lone run ~12% slower). Read when torch loads, so before any test imports it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SMALL_SYNTHETIC = {"train_size": 96, "validation_size": 8, "test_size": 8}
CAPTIONS = ["a red circle", "a blue square left of a green triangle", "a yellow circle above a purple square",
            "an orange triangle"]


@pytest.fixture(scope="session")
def tiny_bases(tmp_path_factory) -> tuple[str, str]:
    """(encoder folder, decoder folder) of the tiny preset, built once per session."""
    from distilvit.modeling.tiny import build_tiny_models

    enc, dec = build_tiny_models(tmp_path_factory.mktemp("tiny-bases"), CAPTIONS, seed=0)
    return str(enc), str(dec)


def short_config(output_dir: Path, **overrides):
    """The tiny preset shrunk to seconds: 96 synthetic images, a few steps."""
    from distilvit.config import TrainConfig

    values = dict(max_steps=6, per_device_train_batch_size=8, effective_batch_size=8, eval_steps=3, logging_steps=2,
                  eval_sample=8, synthetic_sizes=SMALL_SYNTHETIC)
    values.update(overrides)
    return TrainConfig.from_preset("tiny", str(output_dir), **values)


@pytest.fixture(scope="session")
def short_run(tmp_path_factory) -> Path:
    """A finished 6-step tiny run (merged/ written), shared by read-only tests."""
    from distilvit.training.train import train

    out = tmp_path_factory.mktemp("runs") / "short"
    train(short_config(out))
    return out


@pytest.fixture(scope="session")
def short_q8_export(short_run, tmp_path_factory) -> Path:
    """short_run exported with fp32 + q8 (the demo's default dtype), agreement not measured: for page tests."""
    from distilvit.export.exporter import export_model

    export = tmp_path_factory.mktemp("short-export") / "short"
    export_model(short_run, export, quantize="q8", agreement_images=0)
    return export


def start_serve(*args: str, wait_s: float = 300):
    """`distilvit-web serve ARGS --port P` in its own process, once it accepts connections (the first run installs
    transformers.js with npm): (process, "http://127.0.0.1:P/"). The caller terminates it."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "distilvit.cli", "serve", *args, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_listening(process, port, wait_s)
    return process, f"http://127.0.0.1:{port}/"


def wait_listening(process, port: int, wait_s: float) -> None:
    """Return once `process` accepts connections on 127.0.0.1:`port`; fail the test if it exits or takes longer."""
    import socket
    import time

    deadline = time.time() + wait_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"{process.args[:4]} exited: {process.stdout.read() if process.stdout else ''}")
            if time.time() > deadline:
                process.kill()
                pytest.fail(f"{process.args[:4]} did not listen within {wait_s:.0f} s")
            time.sleep(0.3)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> Path:
    """The tiny preset trained with its defaults (minutes): the model export and parity tests start from. Trained
    once per test session: under pytest-xdist (`make test`) the first worker to need it trains it in the folder all
    workers share while the others wait on a lock; the tests only read it."""
    import shutil

    from filelock import FileLock

    from distilvit.config import TrainConfig
    from distilvit.training.train import train

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    out = root / "trained-tiny"
    with FileLock(str(root / "trained-tiny.lock")):
        if not (out / "eval.json").is_file():  # written last: a run another worker finished
            shutil.rmtree(out, ignore_errors=True)
            train(TrainConfig.from_preset("tiny", str(out)))
    return out


def pytest_collection_modifyitems(config, items):
    """Order for two workers (`make test`: pytest-xdist, one module at a time per worker, in this order): the test
    module that trains the tiny preset first, the modules that need no trained model next, and the other modules that
    read the trained run last, so one worker trains while the other runs everything that does not wait for it."""
    def rank(item) -> int:
        if "trained_tiny" not in item.fixturenames:
            return 1
        return 0 if item.module.__name__.endswith("test_tiny_quality") else 2

    items.sort(key=rank)  # stable: the order within each rank is kept
