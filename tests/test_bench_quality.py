"""`distilvit-web bench quality` on the short tiny run: every candidate is built in the `q8` slot, captions the run's
validation images through the same loader, and is compared with fp32 (the fp32 candidate with itself: all equal).
The figures that choose q8's recipe come from a real-weights model (docs/quantization.md), not from this test."""

from __future__ import annotations

import json

import onnx
from typer.testing import CliRunner

from distilvit.cli import app


def test_bench_quality_builds_and_compares_every_candidate(short_run, tmp_path):
    out = tmp_path / "quality.md"
    result = CliRunner().invoke(app, ["bench", "quality", str(short_run), "--recipes",
                                      "fp32,stored-int8,weight-int8,dynamic-int8,dynamic-int8@no-vnni,"
                                      "dynamic-int8-pair-safe",
                                      "--sample", "4", "--no-browser", "--workdir", str(tmp_path / "work"),
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["recipes"] == ["fp32", "stored-int8", "weight-int8", "dynamic-int8", "dynamic-int8@no-vnni",
                                 "dynamic-int8-pair-safe"]
    assert report["cpu"]["int8_kernel_path"] and "isa" in report["cpu"]
    fp32 = report["results"]["fp32"]["validation"]
    assert fp32["agreement"] == 1.0 and fp32["images"] == 4 and fp32["cider_vs_references"] is not None
    for name in report["recipes"]:
        assert 0 <= report["results"][name]["validation"]["agreement"] <= 1
    # each candidate's graphs are what its recipe makes: weight-only has MatMulNBits and no run-time quantization
    decoder = tmp_path / "work" / "candidates" / "weight-int8" / "onnx" / "decoder_model_merged_quantized.onnx"
    ops = {n.op_type for n in onnx.load_model(str(decoder)).graph.node}
    assert "MatMulNBits" in ops and "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops
    dynamic = tmp_path / "work" / "candidates" / "dynamic-int8" / "onnx" / "decoder_model_merged_quantized.onnx"
    assert "MatMulInteger" in {n.op_type for n in onnx.load_model(str(dynamic)).graph.node}
    assert (report["results"]["weight-int8"]["sizes_bytes"]["decoder_model_merged"]
            < report["results"]["fp32"]["sizes_bytes"]["decoder_model_merged"])
    assert "| weight-int8 |" in out.read_text()
    # stored-int8 (q8): int8 blocks and the constant nodes that turn them into float32, no run-time quantization
    stored = tmp_path / "work" / "candidates" / "stored-int8" / "onnx" / "decoder_model_merged_quantized.onnx"
    nodes = onnx.load_model(str(stored)).graph.node
    assert any(n.name.endswith("/stored_int8/mul") for n in nodes)
    assert not {"DynamicQuantizeLinear", "MatMulInteger"} & {n.op_type for n in nodes}
    sizes = {n: report["results"][n]["sizes_bytes"]["decoder_model_merged"] for n in ("fp32", "stored-int8")}
    assert sizes["stored-int8"] < 0.4 * sizes["fp32"], sizes
    # CIDEr-D as a share of fp32's, where the images have references; no prose on a caption-vocabulary run
    assert report["results"]["fp32"]["validation"]["cider_ratio"] in (1.0, None)
    assert report["prose"] is None and "prose top-1" not in out.read_text()
    # @no-vnni: the recipe's graphs with the AVX2 kernel's saturation emulated (quantize/kernel_paths.py)
    emulated = tmp_path / "work" / "candidates" / "dynamic-int8@no-vnni" / "onnx" / "decoder_model_merged_quantized.onnx"
    assert any(n.name.startswith("u8s8_emulated_") for n in onnx.load_model(str(emulated)).graph.node)


def test_an_unknown_recipe_is_one_clear_error(short_run, tmp_path):
    result = CliRunner().invoke(app, ["bench", "quality", str(short_run), "--recipes", "int7", "--no-browser",
                                      "--workdir", str(tmp_path / "work"), "--output", str(tmp_path / "q.md")])
    assert result.exit_code != 0 and "unknown recipe(s) int7" in str(result.exception or result.output)


def test_prose_needs_a_run_with_its_full_vocabulary(short_run, tmp_path):
    """A caption vocabulary restricts the logits to the captions' tokens: prose cannot be scored, and `bench quality`
    says what to do instead of a figure that means nothing."""
    result = CliRunner().invoke(app, ["bench", "quality", str(short_run), "--recipes", "fp32", "--sample", "2",
                                      "--no-browser", "--prose-model", str(short_run), "--workdir",
                                      str(tmp_path / "work"), "--output", str(tmp_path / "q.md")])
    assert result.exit_code != 0 and "--full-vocab" in str(result.exception or result.output)
