"""Tests for distilvit.data.synthetic and distilvit.data: no network, tiny folders under tmp_path. The Hub datasets' real
layouts are tested on replicas in tests/test_hub_replicas.py."""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import logging
import random
import re
import subprocess
import sys

import datasets
import pytest
from PIL import Image, PngImagePlugin

from distilvit.data import FEATURES, load_caption_splits
from distilvit.data.synthetic import COLOURS, HUES, SHAPES, make_synthetic_splits, plan_scene, render
from distilvit.errors import UserError

_COLOUR = "(" + "|".join(COLOURS) + ")"
_SHAPE = "(" + "|".join(SHAPES) + ")"
CAPTION_RE = re.compile(rf"^an? {_COLOUR} {_SHAPE}(?: (left of|above) an? {_COLOUR} {_SHAPE})?$")
SMALL = {"train_size": 30, "validation_size": 4, "test_size": 5}


def _png(colour=(200, 10, 10), size=8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def _folder(root, rows, metadata="jsonl", corrupt=()):
    """Write images 0.png.. with `rows` captions into root; names in `corrupt` get garbage bytes."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(len(rows)):
        name = f"{i}.png"
        colour = tuple(hashlib.sha1(f"{root}/{i}".encode()).digest()[:3])  # distinct images in every folder
        (root / name).write_bytes(b"not a png at all" if name in corrupt else _png(colour))
    if metadata == "jsonl":
        lines = [json.dumps({"file_name": f"{i}.png", "caption": cap}) for i, cap in enumerate(rows)]
        (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    elif metadata == "csv":
        lines = ["file_name,caption"] + [f'{i}.png,"{cap}"' for i, cap in enumerate(rows)]
        (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def _all_captions(dd):
    return sorted(c for split in dd.values() for caps in split["captions"] for c in caps)


# --- synthetic -------------------------------------------------------------------------------------------------

def test_synthetic_is_deterministic_and_test_split_independent_of_train_size():
    a = make_synthetic_splits(seed=3, **SMALL)
    b = make_synthetic_splits(seed=3, **SMALL)
    bytes_of = lambda ds: [x["bytes"] for x in ds.cast_column("image", datasets.Image(decode=False))["image"]]
    for split in ("train", "validation", "test"):
        assert list(a[split]["captions"]) == list(b[split]["captions"])
        assert bytes_of(a[split]) == bytes_of(b[split])
    bigger = make_synthetic_splits(seed=3, **{**SMALL, "train_size": 60})
    assert list(bigger["test"]["captions"]) == list(a["test"]["captions"])
    assert bytes_of(bigger["test"]) == bytes_of(a["test"])
    other_seed = make_synthetic_splits(seed=4, **SMALL)
    assert list(other_seed["train"]["captions"]) != list(a["train"]["captions"])
    assert a["train"].features["image"] == datasets.Image()
    assert [len(a[s]) for s in ("train", "validation", "test")] == [30, 4, 5]


def test_synthetic_captions_follow_templates_and_mix_kinds():
    dd = make_synthetic_splits(seed=0, train_size=300, validation_size=1, test_size=1)
    kinds = {"single": 0, "left of": 0, "above": 0}
    for caps in dd["train"]["captions"]:
        assert len(caps) == 1
        match = CAPTION_RE.match(caps[0])
        assert match, caps[0]
        kinds[match.group(3) or "single"] += 1
    assert all(60 <= n <= 140 for n in kinds.values()), kinds  # about a third each


@pytest.mark.parametrize("image_size", [64, 96])
def test_synthetic_scenes_are_drawn_as_their_captions_say(image_size):
    """Each shape the caption names is drawn in a colour its word covers (hue region), visible at its centre in the
    picture; the named-first shape is really left of (above) the other, in the same band, with a gap between."""
    rng = random.Random(7)
    styles = set()
    for _ in range(150):
        scene = plan_scene(rng, image_size)
        image, n = render(scene), image_size
        assert image.mode == "RGB" and image.size == (n, n)
        match = CAPTION_RE.match(scene.caption)
        words = [(match.group(1), match.group(2))] + ([(match.group(4), match.group(5))] if match.group(3) else [])
        assert [(s.colour, s.shape) for s in scene.shapes] == words, scene
        for shape in scene.shapes:
            hue, saturation, value = colorsys.rgb_to_hsv(*(c / 255 for c in shape.rgb))
            low, high = HUES[shape.colour]
            degrees = (hue * 360 + 180) % 360 - 180 if shape.colour == "red" else hue * 360
            assert low - 0.5 <= degrees <= high + 0.5, (shape, degrees)  # (RGB's rounding moves the hue a little)
            inside = (shape.cx, shape.cy + shape.r / 3 if shape.shape == "triangle" else shape.cy)  # centroid
            pixel = image.getpixel((int(inside[0]), int(inside[1])))
            assert max(abs(a - b) for a, b in zip(pixel, shape.rgb)) <= 2, (scene.caption, shape, pixel)
            assert shape.r <= shape.cx <= n - shape.r and shape.r <= shape.cy <= n - shape.r
        styles.add((scene.background == (255, 255, 255), scene.smooth, any(s.outline for s in scene.shapes)))
        if match.group(3) is None:
            continue
        a, b = scene.shapes
        if match.group(3) == "left of":  # same horizontal band, in separate halves, apart
            assert abs(a.cy - b.cy) <= 0.1 * n and a.cx < n / 2 < b.cx and b.cx - a.cx >= a.r + b.r + 2, scene
        else:
            assert abs(a.cx - b.cx) <= 0.05 * n and a.cy < n / 2 < b.cy and b.cy - a.cy >= a.r + b.r + 2, scene
    # plain pictures (white, hard edges) and varied ones (light backgrounds, smooth edges, outlines) both occur
    assert (True, False, False) in styles and (False, True, True) in styles and (False, True, False) in styles, styles


def test_synthetic_colours_cover_pure_and_other_programs_colours():
    """The words' regions hold the pure colours and CSS's named ones, not only the generator's six RGB values."""
    css = {"red": [(255, 0, 0), (220, 20, 60), (255, 99, 71)], "green": [(0, 128, 0), (50, 205, 50)],
           "blue": [(0, 0, 255), (65, 105, 225)], "yellow": [(255, 255, 0), (255, 215, 0)],
           "purple": [(128, 0, 128), (148, 0, 211)], "orange": [(255, 165, 0), (255, 140, 0)]}
    for word, colours in css.items():
        for rgb in colours + [COLOURS[word]]:
            hue, saturation, value = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
            degrees = (hue * 360 + 180) % 360 - 180 if word == "red" else hue * 360
            assert HUES[word][0] <= degrees <= HUES[word][1], (word, rgb, degrees)


# --- local folders -------------------------------------------------------------------------------------------

def test_folder_with_jsonl_string_captions(tmp_path):
    folder = _folder(tmp_path / "jsonl", [f"caption {i}" for i in range(20)])
    dd = load_caption_splits([str(folder)], cache_dir=str(tmp_path / "cache"))
    assert set(dd) == {"train", "validation", "test"}
    assert [len(dd[s]) for s in ("train", "validation", "test")] == [18, 1, 1]  # 5% each, at least 1
    assert _all_captions(dd) == sorted(f"caption {i}" for i in range(20))
    assert dd["train"][0]["image"].size == (8, 8)
    again = load_caption_splits([str(folder)], cache_dir=str(tmp_path / "cache"))  # split-off is deterministic
    assert list(again["test"]["captions"]) == list(dd["test"]["captions"])
    other_seed = load_caption_splits([str(folder)], seed=5, cache_dir=str(tmp_path / "cache"))
    assert list(other_seed["train"]["captions"]) != list(dd["train"]["captions"])


def test_folder_with_jsonl_list_captions(tmp_path):
    rows = [[f"caption {i}"] for i in range(18)] + [["first of two", "second of two"], ["only one"]]
    folder = _folder(tmp_path / "jsonl", rows)
    dd = load_caption_splits([str(folder)], cache_dir=str(tmp_path / "cache"))
    assert set(dd) == {"train", "validation", "test"}
    assert [len(dd[s]) for s in ("train", "validation", "test")] == [18, 1, 1]  # 5% each, at least 1
    assert _all_captions(dd) == sorted([f"caption {i}" for i in range(18)] + ["first of two", "second of two",
                                                                              "only one"])
    by_image = {}
    for split in dd.values():
        for ex in split.with_format(None):  # the cells as stored (the image column is held undecoded)
            by_image[ex["image"]["path"].rsplit("/", 1)[-1]] = ex["captions"]
    assert by_image["18.png"] == ["first of two", "second of two"]
    assert by_image["3.png"] == ["caption 3"]
    mixed = _folder(tmp_path / "mixed", ["a string", ["a", "list"], "another"])
    with pytest.raises(UserError, match="a string in every line or a list in every line"):
        load_caption_splits([str(mixed)], cache_dir=str(tmp_path / "cache"))


def test_folder_with_csv_and_split_subfolders(tmp_path):
    root = tmp_path / "csv"
    _folder(root / "train", [f"train {i}" for i in range(6)], metadata="csv")
    _folder(root / "validation", ["val 0", "val 1"], metadata="csv")
    _folder(root / "test", ["test, with comma"], metadata="csv")
    dd = load_caption_splits([str(root)], cache_dir=str(tmp_path / "cache"))
    assert sorted(c[0] for c in dd["train"]["captions"]) == [f"train {i}" for i in range(6)]
    assert sorted(c[0] for c in dd["validation"]["captions"]) == ["val 0", "val 1"]
    assert list(dd["test"]["captions"]) == [["test, with comma"]]
    synthetic = load_caption_splits(["synthetic"], synthetic_sizes={"train_size": 1, "validation_size": 1, "test_size": 1})
    assert dd["train"].features == synthetic["train"].features == FEATURES


def test_corrupt_image_is_skipped_and_logged(tmp_path, caplog):
    rows = [f"caption {i}" for i in range(40)]
    folder = _folder(tmp_path / "corrupt", rows, corrupt={"5.png"})
    caplog.set_level(logging.WARNING, logger="distilvit.data")
    dd = load_caption_splits([str(folder)], cache_dir=str(tmp_path / "cache"), num_proc=2)
    assert sum(len(dd[s]) for s in dd) == 39
    assert "caption 5" not in _all_captions(dd)
    assert len(_all_captions(dd)) == 39
    for split in dd.values():  # every kept image decodes
        assert all(img.size == (8, 8) for img in split["image"])
    skips = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(skips) == 1 and "skipped 1 of" in skips[0] and str(folder) in skips[0], skips


def test_all_images_unreadable_raises(tmp_path):
    folder = _folder(tmp_path / "bad", ["a", "b", "c", "d"], corrupt={"0.png", "1.png", "2.png", "3.png"})
    with pytest.raises(UserError, match="unreadable"):
        load_caption_splits([str(folder)], cache_dir=str(tmp_path / "cache"))


def test_an_image_too_large_to_decode_stops_the_run_instead_of_being_skipped(tmp_path):
    """Only damaged files are skipped: a header claiming 200 megapixels (over twice Pillow's limit, a decompression
    bomb) is one error naming its row, with num_proc 1 and in worker processes alike."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    folder = _folder(tmp_path / "bomb", [f"caption {i}" for i in range(40)])
    (folder / "7.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20_000, 10_000, 8, 0, 0, 0, 0))
                                   + chunk(b"IEND", b""))
    for num_proc in (1, 2):
        with pytest.raises(UserError, match=r"row \d+ is too large to decode safely .*remove or shrink it"):
            load_caption_splits([str(folder)], cache_dir=str(tmp_path / f"cache{num_proc}"), num_proc=num_proc)


# --- user errors ---------------------------------------------------------------------------------------------

def test_missing_path_raises_user_error(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(UserError, match=re.escape(str(missing))):
        load_caption_splits([str(missing)])
    with pytest.raises(UserError, match="does not exist"):
        load_caption_splits(["./no_such_folder_here"])


def test_folder_without_metadata_or_images_or_captions(tmp_path):
    no_meta = tmp_path / "no_meta"
    no_meta.mkdir()
    (no_meta / "0.png").write_bytes(_png())
    with pytest.raises(UserError, match="metadata.jsonl or metadata.csv") as info:
        load_caption_splits([str(no_meta)])
    assert str(no_meta) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="no images"):
        load_caption_splits([str(empty)])
    no_caption = tmp_path / "no_caption"
    no_caption.mkdir()
    for i in range(3):
        (no_caption / f"{i}.png").write_bytes(_png())
    (no_caption / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i}.png", "label": i}) + "\n"
                                                       for i in range(3)))
    with pytest.raises(UserError, match="no caption column") as info:
        load_caption_splits([str(no_caption)], cache_dir=str(tmp_path / "cache"))
    assert "label" in str(info.value)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UserError) as info:
        load_caption_splits(["flickr31k"])
    assert "synthetic" in str(info.value) and "coco" in str(info.value) and "flickr31k" in str(info.value)


# --- combining and sampling ----------------------------------------------------------------------------------

def test_two_specs_concatenate_split_by_split(tmp_path):
    folder = _folder(tmp_path / "local", [f"local {i}" for i in range(20)])
    cache = str(tmp_path / "cache")
    local = load_caption_splits([str(folder)], cache_dir=cache)
    both = load_caption_splits(["synthetic", str(folder)], synthetic_sizes=SMALL, cache_dir=cache)
    assert [len(both[s]) for s in ("train", "validation", "test")] == [
        SMALL["train_size"] + len(local["train"]), SMALL["validation_size"] + len(local["validation"]),
        SMALL["test_size"] + len(local["test"])]
    captions = _all_captions(both)
    assert sum(c.startswith("local ") for c in captions) == 20
    assert sum(bool(CAPTION_RE.match(c)) for c in captions) == sum(SMALL.values())


def test_sample_caps_every_split(tmp_path):
    sizes = {"train_size": 50, "validation_size": 12, "test_size": 3}
    dd = load_caption_splits(["synthetic"], sample=10, seed=1, synthetic_sizes=sizes)
    assert [len(dd[s]) for s in ("train", "validation", "test")] == [10, 10, 3]
    full = load_caption_splits(["synthetic"], seed=1, synthetic_sizes=sizes)
    assert set(map(tuple, dd["train"]["captions"])) <= set(map(tuple, full["train"]["captions"]))
    again = load_caption_splits(["synthetic"], sample=10, seed=1, synthetic_sizes=sizes)
    assert list(again["train"]["captions"]) == list(dd["train"]["captions"])
    train_only = load_caption_splits(["synthetic"], sample=10, sample_splits=("train",), seed=1, synthetic_sizes=sizes)
    assert [len(train_only[s]) for s in ("train", "validation", "test")] == [10, 12, 3]
    assert list(train_only["train"]["captions"]) == list(dd["train"]["captions"])  # the same subset
    with pytest.raises(UserError, match="unknown synthetic size keys"):
        load_caption_splits(["synthetic"], synthetic_sizes={"train": 5})


def test_running_out_of_memory_while_checking_images_stops_with_the_row(tmp_path, monkeypatch):
    """A MemoryError while an image is decoded is not an unreadable image: one error naming the row (injected here:
    a real one needs an image larger than this machine's memory)."""
    from distilvit.data import prepare

    folder = _folder(tmp_path / "oom", [f"caption {i}" for i in range(20)])

    def decode_fails(cell):
        raise MemoryError

    monkeypatch.setattr(prepare, "image_key", decode_fails)
    with pytest.raises(UserError, match=r"ran out of memory decoding the image of row 0; .*--num-proc"):
        load_caption_splits([str(folder)], cache_dir=str(tmp_path / "cache"), num_proc=1)


LIMITS_PROBE = r"""
import json, sys
from PIL import Image, PngImagePlugin

def limits():
    return [PngImagePlugin.MAX_TEXT_CHUNK, Image.MAX_IMAGE_PIXELS]

before = limits()
import distilvit.cli, distilvit.training.train, distilvit.data.prepare, distilvit.pixels  # every module training imports
imported = limits()
from distilvit.data import load_caption_splits
from distilvit.pixels import decode_rgba

folder, cache = sys.argv[1], sys.argv[2]
splits = load_caption_splits([folder], cache_dir=cache, num_proc=1)
sizes = {row["captions"][0]: row["image"].size for split in splits.values() for row in split}  # decoded as read
shape = list(decode_rgba(folder + "/0.png").shape)
print(json.dumps({"before": before, "imported": imported, "after": limits(), "sizes": sizes, "shape": shape}))
"""


def test_png_with_a_large_text_chunk_is_kept_and_pillow_limits_are_left_as_they_were(tmp_path):
    """A valid PNG whose text chunk decompresses to more than Pillow's 1 MB (as some of Mozilla/coco-gpt4o's do) is
    kept and decoded, by the data pass, by reading rows (what the collator and evaluation get) and by decode_rgba;
    and Pillow's process-wide limits are what they were before, after importing our modules and after decoding
    (in a fresh process: another test may have imported them already)."""
    folder = _folder(tmp_path / "text", [f"caption {i}" for i in range(20)])
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * (3 * 2**20), zip=True)  # 3 MB once decompressed, a few kB in the file
    Image.new("RGB", (24, 16), (30, 200, 40)).save(folder / "0.png", pnginfo=info)
    with pytest.raises(ValueError, match="MAX_TEXT_CHUNK"):  # what Pillow's own limit does with it
        Image.open(folder / "0.png").load()
    done = subprocess.run([sys.executable, "-c", LIMITS_PROBE, str(folder), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["sizes"]["caption 0"] == [24, 16]
    assert len(probe["sizes"]) == 20
    assert probe["shape"] == [16, 24, 4]
    assert probe["imported"] == probe["before"], "importing distilvit changed Pillow's limits"
    assert probe["after"] == probe["before"], "decoding left Pillow's limits changed"
