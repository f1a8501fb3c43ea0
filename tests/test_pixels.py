"""The one pixel path (distilvit/pixels.py) on real photographs in every mode, and its ONNX twin
(export/pixel_graph.py) against it. The cross-runtime comparison (Node, Chromium) is in test_parity.py and
test_browser.py, through `verify parity`'s pixel report."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from PIL import Image

from distilvit.errors import UserError
from distilvit.export.pixel_graph import prepend_pixels, raw_cases
from distilvit.pixels import DEFAULT_MAX_PIXELS, PixelPreparer, decode_rgba, model_pixels, raw_tensor
from photos import missing_profiles, write_variants

MEAN, STD = [0.5, 0.45, 0.4], [0.5, 0.25, 0.3]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    return write_variants(tmp_path_factory.mktemp("photos"))


def identity_encoder(size: int) -> onnx.ModelProto:
    """A graph whose "encoder" returns its normalised input: the pixel preparation alone."""
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch_size", 3, size, size])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Identity", ["pixel_values"], ["out"])], "identity",
                              [value("pixel_values")], [value("out")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("size", [32, 224])
def test_onnx_pixel_graph_equals_the_torch_path(size, variants):
    """Every channel count, up- and downscales, and the real photographs: ONNX == model_pixels (torch)."""
    session = ort.InferenceSession(prepend_pixels(identity_encoder(size), size, MEAN, STD).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    cases = raw_cases(size, torch.Generator().manual_seed(0))
    cases += [(name, raw_tensor(decode_rgba(path))) for name, path in list(variants.items())[:6]]
    for name, raw in cases:
        got = session.run(None, {"pixel_values": raw.numpy()})[0]
        want = model_pixels(raw, size, MEAN, STD).numpy()
        assert got.shape == want.shape == (raw.shape[0], 3, size, size), name
        assert np.abs(got - want).max() < 1e-4, name


def test_the_resize_is_pillows_bicubic():
    """model_pixels resizes as Pillow's BICUBIC does (an antialiased cubic, a = -0.5, on float samples: the resize of
    transformers' SigLIP image processor), checked against Pillow itself, not against the torch call it makes; plain
    bicubic differs on a downscale (so the comparison would catch a resize without antialiasing)."""
    raw = torch.randint(0, 256, (1, 3, 300, 200), generator=torch.Generator().manual_seed(0)).float()
    ours = model_pixels(raw, 64, [0, 0, 0], [1 / 255] * 3)  # scale 1, shift 0: the resized values themselves
    pillow = torch.from_numpy(np.stack([
        np.asarray(Image.fromarray(raw[0, c].numpy(), mode="F").resize((64, 64), Image.Resampling.BICUBIC))
        for c in range(3)]))[None]
    plain = F.interpolate(raw, size=(64, 64), mode="bicubic", antialias=False, align_corners=False)
    assert (ours - pillow).abs().max() < 1e-3
    assert (pillow - plain).abs().max() > 20


def test_decode_rules_on_real_photographs(variants):
    rgba = {name: decode_rgba(path) for name, path in variants.items()}
    for name, array in rgba.items():
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 4, name
    # EXIF orientation applied: the file stores 200 x 300 sideways; upright it is the 300 x 200 photograph
    from photos import sample_files

    upright = np.asarray(Image.open(sample_files()[1]).convert("RGB").resize((300, 200)), dtype=int)
    assert Image.open(variants["exif-rotated.jpg"]).size == (200, 300)
    assert rgba["exif-rotated.jpg"].shape[:2] == (200, 300)  # (height, width)
    assert np.abs(upright - rgba["exif-rotated.jpg"][..., :3]).mean() < 3  # JPEG noise only
    # 16-bit gray: the high byte, not Pillow's clip to white
    high = (np.asarray(Image.open(variants["gray16.png"]), dtype=np.uint32) >> 8).astype(np.uint8)
    assert np.array_equal(rgba["gray16.png"][..., 0], high) and rgba["gray16.png"][..., :3].mean() < 200
    # transparency kept for compositing: the ramp's left fifth is fully transparent, the palette's colour 0 too
    assert rgba["rgba-ramp.png"][:, :10, 3].max() == 0 and rgba["rgba-ramp.png"][:, -5:, 3].min() == 255
    palette = np.asarray(Image.open(variants["palette-transparent.png"]))
    assert (rgba["palette-transparent.png"][..., 3][palette == 0] == 0).all()
    assert rgba["gray-alpha.png"][:, :10, 3].max() == 0
    # an animated GIF is its first frame
    first = np.asarray(Image.open(variants["animated.gif"]).convert("RGB"))
    assert np.array_equal(rgba["animated.gif"][..., :3], first)
    # gray is replicated, CMYK converted: three channels of colour and opaque
    assert np.array_equal(rgba["gray.jpg"][..., 0], rgba["gray.jpg"][..., 2])
    assert rgba["cmyk.jpg"][..., 3].min() == 255


def test_transparent_pixels_become_white_whatever_colour_they_store():
    """Fully transparent pixels count as white, so a browser (which loses their colour) and Python agree."""
    colour = np.zeros((40, 40, 4), dtype=np.uint8)
    colour[..., 0] = 200  # red under alpha 0
    other = colour.copy()
    other[..., :3] = 0  # what a premultiplied canvas returns for them
    a, b = (model_pixels(raw_tensor(x), 16, MEAN, STD) for x in (colour, other))
    assert torch.equal(a, b)
    white = model_pixels(torch.full((1, 3, 40, 40), 255.0), 16, MEAN, STD)
    assert torch.allclose(a, white, atol=1e-5)


def test_pixel_limit_is_one_clear_error(tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (5000, 4000)).save(big)  # 20 megapixels in a few kilobytes
    with pytest.raises(UserError, match=r"big.png has 5000 x 4000 = 20,000,000 pixels.*--max-image-pixels"):
        decode_rgba(big, max_pixels=10_000_000)
    assert decode_rgba(big, max_pixels=DEFAULT_MAX_PIXELS).shape == (4000, 5000, 4)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UserError, match="cannot read image .*broken.jpg"):
        decode_rgba(broken)


def _png_header(width: int, height: int) -> bytes:
    """A PNG holding only its header: what a decompression bomb shows before any pixel is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def test_an_image_over_twice_pillows_limit_names_ours(tmp_path, monkeypatch):
    """Pillow refuses headers over twice its MAX_IMAGE_PIXELS (~179 MP) inside Image.open, before our own check."""
    pillows = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillows)  # restored after the test whatever the code does
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20_000, 10_000))  # claims 200 megapixels in 45 bytes
    with pytest.raises(UserError, match=r"bomb.png is over the limit of 50,000,000 pixels .*--max-image-pixels"):
        decode_rgba(bomb, max_pixels=50_000_000)
    with pytest.raises(UserError, match=r"bomb.png is too large to decode safely .*--max-image-pixels"):
        decode_rgba(bomb, max_pixels=None)  # training's path: no limit of ours, Pillow's still holds
    with pytest.raises(UserError, match=r"cannot read image .*bomb.png"):  # allowed, then found to hold no pixels
        decode_rgba(bomb, max_pixels=300_000_000)
    assert Image.MAX_IMAGE_PIXELS == pillows  # our higher limit applied to that image only, not the process


def test_training_batches_and_captioning_share_the_path(variants, tmp_path, short_run):
    """What the training collator feeds the model for a dataset's images (PIL images as `datasets` opens them, colour
    profile in their info) equals what `caption` feeds it for the same files (opened by path): two code paths, one
    rule, colour profile included."""
    from distilvit.modeling.caption import load_captioner, open_image
    from distilvit.training.collate import CaptionCollator

    captioner = load_captioner(short_run)
    config = captioner.model.config
    collator = CaptionCollator(captioner.processor, config.image_seq_length, 12, config.vision_config.image_size)
    files = [variants[name] for name in ("rgba-ramp.png", "exif-rotated.jpg", "gray16.png")]
    if not missing_profiles():
        from photos import write_profiled

        files.append(write_profiled(tmp_path)["display-p3.png"])
    rows = [{"image": Image.open(f), "captions": ["a red circle"]} for f in files]
    training = collator(rows)["pixel_values"]
    captioning = captioner.pixels([open_image(f) for f in files])
    assert training.shape == captioning.shape == (len(files), 3, config.vision_config.image_size,
                                                  config.vision_config.image_size)
    assert torch.equal(training, captioning)
    if not missing_profiles():  # the profile counts: dropping it changes the pixels
        untagged = Image.open(files[-1]).convert("RGB")
        untagged.info.pop("icc_profile", None)
        assert (collator([{"image": untagged, "captions": ["x"]}])["pixel_values"] - training[-1:]).abs().max() > 0.1


needs_profiles = pytest.mark.skipif(bool(missing_profiles()), reason=f"ICC profile files missing: {missing_profiles()} "
                                    "(.ci/run installs Debian's libgs-common, icc-profiles-free and colord-data)")


@needs_profiles
def test_an_embedded_profile_is_converted_to_srgb(tmp_path):
    """Photographs converted from sRGB into Display P3, Adobe RGB and ProPhoto and tagged with that profile decode
    back to the sRGB photograph (lossless PNG; 8 bits in a wide gamut round to a few levels: measured max 1, 3 and 4,
    mean 0.1-0.3); without the conversion they would be far off."""
    from photos import PROFILES, sample_files

    china = Image.open(sample_files()[0]).convert("RGB").resize((320, 213))
    want = np.asarray(china, dtype=int)
    for name in ("display-p3", "adobe-rgb", "prophoto"):
        from photos import _into

        path = tmp_path / f"{name}.png"
        _into(china, name, "RGB").save(path, icc_profile=PROFILES[name].read_bytes())
        got = decode_rgba(path)[..., :3].astype(int)
        ignored = np.asarray(Image.open(path).convert("RGB"), dtype=int)  # the pixels as stored
        assert np.abs(got - want).max() <= 5 and np.abs(got - want).mean() < 0.5, name
        assert np.abs(ignored - want).mean() > 1, name  # the check would see a decoder that ignores the profile


@needs_profiles
def test_profiles_in_every_mode_and_broken_ones(tmp_path, variants):
    from photos import write_profiled

    photos = write_profiled(tmp_path / "profiled")
    rgba = {name: decode_rgba(path) for name, path in photos.items()}
    gray = rgba["gray-profile.png"]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])  # still gray
    alpha = np.asarray(Image.open(photos["adobe-rgb-alpha.png"]).getchannel("A"))
    assert np.array_equal(rgba["adobe-rgb-alpha.png"][..., 3], alpha)  # transparency kept through the conversion
    assert rgba["cmyk-profile.jpg"].shape == (213, 320, 4)
    # a profile that cannot be read, or one for other channels than the image has, is ignored as browsers do
    stored = Image.open(variants["china.jpg"])
    stored.save(tmp_path / "garbage.jpg", icc_profile=b"not a profile" * 20, quality=95)
    rgb_profile = Image.open(photos["adobe-rgb.jpg"]).info["icc_profile"]
    stored.convert("L").save(tmp_path / "rgb-profile-on-gray.png", icc_profile=rgb_profile)
    assert np.array_equal(decode_rgba(tmp_path / "garbage.jpg"), np.array(Image.open(tmp_path / "garbage.jpg").convert("RGBA")))
    assert np.array_equal(decode_rgba(tmp_path / "rgb-profile-on-gray.png")[..., 0], np.asarray(stored.convert("L")))


def test_a_phone_sized_photo_is_area_reduced_the_same_in_the_graph_and_in_torch(variants):
    """A 12-megapixel photograph (scikit-learn's, upscaled to 4031 x 3023: pixels left over on both axes): the ONNX
    pixel graph equals the torch rule, the resize reads a reduced image of 3S..6S - 1 pixels per axis, and what
    the model sees stays close to the direct antialiased bicubic of the whole photo (the measured bound)."""
    from distilvit.pixels import reduction

    size = 224
    photo = Image.open(variants["china.jpg"]).convert("RGB").resize((4031, 3023), Image.Resampling.BICUBIC)
    raw = raw_tensor(np.array(photo.convert("RGBA")))
    session = ort.InferenceSession(prepend_pixels(identity_encoder(size), size, MEAN, STD).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixel_values": raw.numpy()})[0]
    want = model_pixels(raw, size, MEAN, STD)
    assert np.abs(got - want.numpy()).max() < 1e-4
    for length in (4031, 3023):
        factor, kept, start = reduction(length, size)
        assert 3 * size <= length // factor < 6 * size and kept == (length // factor) * factor and factor > 1
        assert start == (length - kept) // 2 and 0 < length - kept < factor  # pixels are left over: both edges
    direct = F.interpolate(raw[:, :3], size=(size, size), mode="bicubic", antialias=True)
    direct = (direct / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    # measured 2026-12-03: mean 0.012, max 0.31 in these units (std down to 0.25): the block average and the
    # dropped edge pixels (< f) move the image by a fraction of an output pixel. A resize without antialiasing is
    # off by mean 0.097, max 1.85, so the bound still tells a right rule from a wrong one.
    diff = (want - direct).abs()
    assert diff.mean() < 0.03 and diff.max() < 0.6, (diff.mean(), diff.max())


def test_every_exif_orientation_decodes_upright(tmp_path):
    """A photo stored under each EXIF orientation 1-8 decodes to the upright photo (JPEG noise only); stored
    pixels read without the tag would be mirrored or turned (the check can fail)."""
    from photos import sample_files, write_orientations

    upright = np.asarray(Image.open(sample_files()[1]).convert("RGB").resize((300, 200)), dtype=int)
    for name, path in write_orientations(tmp_path).items():
        got = decode_rgba(path)[..., :3].astype(int)
        assert got.shape == upright.shape and np.abs(got - upright).mean() < 3, name
        if not name.endswith("-1.jpg"):
            stored = np.asarray(Image.open(path).convert("RGB"), dtype=int)
            assert stored.shape != upright.shape or np.abs(stored - upright).mean() > 10, name
