"""`distilvit-web bench train` runs the real-size architecture (random weights, nothing downloaded) on this
machine and reports comparable figures for LoRA + projector and full fine-tuning."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from distilvit.bench.train import realsize_captioner
from distilvit.cli import app
from distilvit.modeling.realsize import text_config


def test_realsize_architecture_has_the_real_shapes():
    model = realsize_captioner()
    assert model.config.image_seq_length == 196
    assert model.config.text_config.num_hidden_layers == text_config().num_hidden_layers == 30
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied, as SmolLM
    assert 215e6 < sum(p.numel() for p in model.parameters()) < 230e6


def test_bench_train_reports_both_modes(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "train", "--device", "cpu", "--batch-size", "1", "--steps", "1",
                                      "--warmup", "0", "--mode", "lora,full", "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    lora, full = report["results"]
    assert (lora["mode"], full["mode"]) == ("lora", "full")
    assert lora["trainable_parameters"] < full["trainable_parameters"] / 50
    assert report["lora_over_full"] == lora["samples_per_second"] / full["samples_per_second"]
    assert "lora / full" in result.output
