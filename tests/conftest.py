"""Shared fixtures: tiny models built from configs, short training runs. Nothing here downloads anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMALL_SYNTHETIC = {"train_size": 96, "validation_size": 8, "test_size": 8}
CAPTIONS = ["a red circle", "a blue square left of a green triangle", "a yellow circle above a purple square",
            "an orange triangle"]


@pytest.fixture(scope="session")
def tiny_bases(tmp_path_factory) -> tuple[str, str]:
    """(encoder folder, decoder folder) of the tiny preset, built once per session."""
    from distilvit.tiny import build_tiny_models

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
    from distilvit.train import train

    out = tmp_path_factory.mktemp("runs") / "short"
    train(short_config(out))
    return out


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> Path:
    """The tiny preset trained with its defaults (minutes): the model export and parity tests start from."""
    from distilvit.config import TrainConfig
    from distilvit.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(TrainConfig.from_preset("tiny", str(out)))
    return out
