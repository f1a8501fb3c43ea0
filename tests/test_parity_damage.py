"""Checks that cannot be fooled: a small planted damage in any graph of either layout, fp32 or q8, fails
`verify parity` with the graph named; the sound export passes. The model is the 6-step tiny run,
whose captions are mostly empty or "a a a ...": the damage leaves most captions as they were, so what catches it is
the teacher-forced logits (fp32) and the weights check (q8), and the report says the captions carried nothing.
The same damage in the fp32 decoder is refused by export's own validation against the stock model."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from damage import PARTS, graph_of, plant

pytestmark = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="the transformers.js runtime needs node and npm, which are not installed")


@pytest.fixture(scope="module")
def damage_exports(short_run, tmp_path_factory) -> dict:
    from distilvit.data.synthetic import draw_scene
    from distilvit.export.exporter import export_model
    from photos import sample_files

    root = tmp_path_factory.mktemp("damage")
    for layout in ("pipeline", "llava"):
        export_model(short_run, root / layout, layout=layout, quantize="q8", agreement_images=0)
    images = root / "images"
    images.mkdir()
    for path in sample_files():
        shutil.copy(path, images / path.name)
    rng = random.Random(7)
    for i in range(2):
        draw_scene(rng, 64)[0].save(images / f"shapes-{i}.png")
    return {"root": root, "images": images}


def _verify(export: Path, images: Path, dtype: str) -> dict:
    """`verify parity` as the CLI runs it (verify_parity with the CLI's default targets), in this process: onnxruntime
    and transformers.js for fp32; onnxruntime alone for q8, whose damage is in the file (the weights check), which
    every runtime loads the same. tests/test_parity.py runs the installed command on a damaged export (exit 1)."""
    from distilvit.verify.parity import verify_parity

    runtimes = ["onnxruntime", "transformers.js"] if dtype == "fp32" else ["onnxruntime"]
    return verify_parity(export, sorted(images.iterdir()), dtypes=[dtype], runtimes=runtimes)


@pytest.mark.parametrize("dtype", ["fp32", "q8"])
@pytest.mark.parametrize("layout", ["pipeline", "llava"])
def test_sound_exports_pass_on_logits_and_weights(damage_exports, layout, dtype):
    from distilvit.verify.report import markdown

    data = _verify(damage_exports["root"] / layout, damage_exports["images"], dtype)
    assert data["passed"], [(e["runtime"], e["checks"]) for e in data["results"]]
    for entry in data["results"]:
        assert entry["logits"]["steps"] > len(data["images"]), entry["logits"]
        # the comparison is not vacuous: every image's every step, PyTorch's argmax kept
        assert entry["logits"]["missing"] == [] and entry["logits"]["top1_agreement"] == 1.0
        assert "logits" in entry["verdict_from"] and ("weights" in entry["verdict_from"]) == (dtype == "q8")
    if not data["captions_informative"]["informative"]:  # the 6-step model says nothing much: the report says so
        assert all("captions" not in e["verdict_from"] for e in data["results"])
        assert "caption matches are not counted as evidence" in markdown(data)


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("dtype", ["fp32", "q8"])
@pytest.mark.parametrize("layout", ["pipeline", "llava"])
def test_planted_damage_fails_parity_and_names_the_graph(damage_exports, tmp_path, layout, dtype, part):
    from distilvit.verify.report import table

    export = tmp_path / "export"
    shutil.copytree(damage_exports["root"] / layout, export)
    generation = json.loads((export / "generation_config.json").read_text())
    tokenizer = json.loads((export / "tokenizer.json").read_text())["model"]["vocab"]
    what = plant(export, layout, dtype, part, generation["bos_token_id"], tokenizer["a"])
    data = _verify(export, damage_exports["images"], dtype)
    assert not data["passed"], f"{what}: parity passed"
    graph = graph_of(part, layout)
    for entry in data["results"]:
        assert not entry["passed"], (what, entry["runtime"], entry["checks"])
        assert entry["suspect_graph"] == graph, (what, entry["runtime"], entry["suspect_graph"], entry["checks"])
    assert f"suspect {graph}" in table(data)


def test_exports_validation_refuses_the_damaged_fp32_decoder(damage_exports, short_run, tmp_path):
    """export.validate (against LlavaForConditionalGeneration) on the written decoder after the planted damage that
    parity's logits catch: a ValidationError naming the logits. The sound file passes the same call."""
    from distilvit.export.constants import Layout, onnx_file
    from distilvit.export.exporter import load_model
    from distilvit.export.onnx_export import graph_specs
    from distilvit.export.validate import ValidationError, validate_graph

    export = tmp_path / "export"
    shutil.copytree(damage_exports["root"] / "pipeline", export)
    model = load_model(short_run / "merged")
    spec = next(s for s in graph_specs(model, Layout.PIPELINE) if s.name == "decoder_model_merged")
    assert validate_graph(spec, model, export / onnx_file(spec.name, "fp32"))
    plant(export, "pipeline", "fp32", "layers", 0, 1)
    with pytest.raises(ValidationError) as info:
        validate_graph(spec, model, export / onnx_file(spec.name, "fp32"))
    assert "logits: max abs diff" in str(info.value)


def test_export_refuses_q8_weights_its_quantizer_got_wrong(short_run, tmp_path, monkeypatch):
    """A quantizer bug planted once (q8's block scales stored twice too large): export checks every q8 weight
    against the fp32 file's before anything is written, names the weights, and leaves no folder behind."""
    from distilvit.export.exporter import export_model
    from distilvit.quantize import stored_int8

    original = stored_int8.quantize_blocks

    def doubled_scales(weight, axis, block):
        q, scale, used = original(weight, axis, block)
        return q, (scale * 2).astype(scale.dtype), used

    monkeypatch.setattr(stored_int8, "quantize_blocks", doubled_scales)
    with pytest.raises(RuntimeError, match="weights are not the fp32 weights rounded: encoder_model"):
        export_model(short_run, tmp_path / "out", quantize="q8", agreement_images=0)
    assert not (tmp_path / "out").exists()
