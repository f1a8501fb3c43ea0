"""The export's ship gate (export/agreement.py): agreement measured on the run's own validation images or a folder of
the user's, and a dtype that rewrites fp32's captions never made the default."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

import photos
from distilvit.errors import UserError
from distilvit.export import agreement
from distilvit.export.constants import BROWSER_PREFERENCE, configured_dtype
from distilvit.export.exporter import export_model
from distilvit.limits import MIN_DEFAULT_AGREEMENT, MIN_DEFAULT_CIDER_RATIO

GRAPHS = ["encoder_model", "decoder_model_merged"]


def measured(share: float) -> dict:
    return {"caption_match_with_fp32": share, "images": 16, "source": "16 test images"}


def test_a_dtype_below_the_gate_is_never_the_default():
    passing, failing = measured(MIN_DEFAULT_AGREEMENT), measured(MIN_DEFAULT_AGREEMENT - 1 / 16)
    pick, warnings = agreement.gate(BROWSER_PREFERENCE, ["fp32", "q8"], {}, GRAPHS, {"q8": passing})
    assert pick == {g: "q8" for g in GRAPHS} and warnings == []
    pick, warnings = agreement.gate(BROWSER_PREFERENCE, ["fp32", "q8"], {}, GRAPHS, {"q8": failing})
    assert pick == {g: "fp32" for g in GRAPHS}
    assert len(warnings) == 1 and "q8 keeps 84% of fp32's captions on 16 test images" in warnings[0]
    pick, _ = agreement.gate(BROWSER_PREFERENCE, ["fp32", "q8", "fp16", "q4"], {}, GRAPHS,
                             {"q8": failing, "fp16": passing, "q4": passing})
    assert pick == {g: "fp16" for g in GRAPHS}  # the next preferred that passes
    mix = {"encoder_model": "q8", "decoder_model_merged": "q4"}
    assert agreement.gate(BROWSER_PREFERENCE, ["fp32"], mix, GRAPHS, {"mix": passing})[0] == mix
    assert agreement.gate(BROWSER_PREFERENCE, ["fp32"], mix, GRAPHS, {"mix": failing})[0] == {g: "fp32" for g in GRAPHS}
    # CIDEr-D against the references as a share of fp32's, where the images have references: below the bound fails
    # even with every caption's share of equality above the gate; a zero fp32 CIDEr-D (None) says nothing
    worse = {**passing, "cider": 2.0, "fp32_cider": 2.5, "cider_ratio": 0.8}
    pick, warnings = agreement.gate(BROWSER_PREFERENCE, ["fp32", "q8"], {}, GRAPHS, {"q8": worse})
    assert pick == {g: "fp32" for g in GRAPHS} and "CIDEr-D 2.00 (80% of fp32's 2.50)" in warnings[0]
    as_good = {**passing, "cider": 2.4, "fp32_cider": 2.5, "cider_ratio": MIN_DEFAULT_CIDER_RATIO}
    unscored = {**passing, "cider": 0.0, "fp32_cider": 0.0, "cider_ratio": None}
    for kept in (as_good, unscored):
        assert agreement.gate(BROWSER_PREFERENCE, ["fp32", "q8"], {}, GRAPHS, {"q8": kept})[0] == {g: "q8" for g in GRAPHS}
    # not measured (--agreement-images 0): nothing to gate on, the preference stands
    assert agreement.gate(BROWSER_PREFERENCE, ["fp32", "q8"], {}, GRAPHS, {})[0] == {g: "q8" for g in GRAPHS}


@pytest.mark.parametrize("text", ["-3", "no-such-folder", "1.5"])
def test_agreement_images_is_a_count_or_a_folder(text):
    with pytest.raises(UserError, match="--agreement-images"):
        agreement.parse_spec(text)


def test_export_measures_on_the_runs_validation_images_by_default(short_run, tmp_path):
    info = export_model(short_run, tmp_path / "export", quantize="q8", agreement_images=16)
    q8 = info["caption_agreement_with_fp32"]["q8"]
    validation = json.loads((short_run / "train_config.json").read_text())["synthetic_sizes"]["validation_size"]
    assert q8["images"] == min(16, validation)
    assert q8["source"] == f"{q8['images']} validation images of synthetic (run {short_run.name})"
    gate = info["default_dtype"]
    assert gate["checked"] and configured_dtype(tmp_path / "export") == gate["dtype"]["decoder_model_merged"]
    # CIDEr-D measured (validation rows have references); as a share of fp32's only where fp32's says something (a
    # 6-step run's captions can score 0)
    assert q8["cider"] is not None and q8["fp32_cider"] is not None
    assert q8["cider_ratio"] == (q8["cider"] / q8["fp32_cider"] if q8["fp32_cider"] else None)
    assert agreement.passes(q8) == (gate["dtype"]["decoder_model_merged"] == "q8")
    assert "validation images of synthetic" in (tmp_path / "export" / "README.md").read_text()


def test_a_folder_of_the_users_images(short_run, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for path in photos.sample_files():
        shutil.copy(path, folder / path.name)
    images = agreement.load_images(agreement.parse_spec(str(folder)), short_run / "merged")
    assert images.source == f"2 images of {folder}"
    assert [b.shape for b in images.batches()] == [(2, 4, 427, 640)]  # china.jpg, flower.jpg: same size, one batch


def test_a_damaged_image_in_the_folder_fails_before_anything_is_written(short_run, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(photos.sample_files()[0], folder / "good.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError, match="broken.png"):
        export_model(short_run, tmp_path / "export", quantize="q8", agreement_images=str(folder))
    assert not (tmp_path / "export").exists()


def test_a_merged_folder_outside_its_run_falls_back_to_shapes_and_says_so(short_run, tmp_path, caplog):
    merged = tmp_path / "standalone"
    shutil.copytree(short_run / "merged", merged)
    with caplog.at_level(logging.WARNING):
        images = agreement.load_images(4, merged)
    assert images.source == "4 synthetic shapes" and len(images.loaders) == 4
    assert "say little about a photo model" in caplog.text


def test_without_measurement_the_default_is_marked_unchecked(short_run, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        info = export_model(short_run, tmp_path / "export", quantize="q8", agreement_images=0)
    assert info["default_dtype"]["checked"] is False and info["caption_agreement_with_fp32"] == {}
    assert "the default dtype q8 is unchecked" in caplog.text
    assert "not measured (`--agreement-images 0`)" in (tmp_path / "export" / "README.md").read_text()
