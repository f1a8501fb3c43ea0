"""The tiny preset really learns: trained with its defaults (16000 synthetic images, 4000 steps, about 5 minutes
on 2 CPU cores), its merged model captions the held-out test split with exact match >= 0.8.

This is the one slow test (marked `slow`; `pytest -m "not slow"` skips it). Its run is shared through the
`trained_tiny` fixture with later tests that need a trained model.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_tiny_preset_reaches_exact_match_0_8(trained_tiny):
    result = json.loads((trained_tiny / "eval.json").read_text())
    assert result["num_images"] == 200
    assert result["exact_match"] >= 0.8, result["examples"]


def test_quickstart_reuses_the_run_and_ends_with_parity(trained_tiny, tmp_path):
    """`quickstart` on a workdir whose run is already trained: training is skipped, export and parity run."""
    import shutil

    from distilvit.quickstart import run_quickstart

    shutil.copytree(trained_tiny, tmp_path / "runs" / "tiny")
    result = run_quickstart(tmp_path)
    assert result["parity_passed"]
    assert (tmp_path / "exports/tiny/onnx/decoder_model_merged_quantized.onnx").is_file()
    assert (tmp_path / "parity.json").is_file() and (tmp_path / "parity.md").is_file()
    assert "transformers.js  fp32" in result["parity_table"]
    config_file = tmp_path / "exports/tiny/export_config.json"  # holds its creation time: a new export rewrites it
    exported = config_file.read_bytes()
    trained = (tmp_path / "runs/tiny/metrics.json").read_bytes()
    again = run_quickstart(tmp_path)  # everything reused
    assert again["parity_passed"]
    assert config_file.read_bytes() == exported, "the finished export was made again"
    assert (tmp_path / "runs/tiny/metrics.json").read_bytes() == trained, "the finished run was trained again"
    # an export made by an earlier pixel rule (no block reduction, no colour rule recorded) is exported again,
    # not refused by parity
    import json

    old = json.loads(config_file.read_text())
    for key in ("reduce", "colour"):
        old["pixels"].pop(key)
    config_file.write_text(json.dumps(old))
    renewed = run_quickstart(tmp_path)
    assert renewed["parity_passed"] and "reduce" in json.loads(config_file.read_text())["pixels"]
