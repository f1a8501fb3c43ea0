"""Real photographs in the shapes users' images come in, written as files: for the same-pixels tests.

The photographs are scikit-learn's sample JPEGs (china.jpg, flower.jpg, 640x427, shipped in its wheel): the
original files as they are, and variants of them in every size and mode a browser or Node decodes differently:
tiny and large, grayscale, RGBA with graded transparency (fully transparent corners included), palette with a
transparent colour, grayscale + alpha, 16-bit grayscale, CMYK JPEG, EXIF-rotated JPEG, animated GIF and WebP.
Also: embedded colour profiles (`write_profiled`), every EXIF orientation (`write_orientations`) and a phone's
12 MP photo (`write_phone_photo`). This module knows nothing about models; it returns {file name: path}.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def sample_files() -> list[Path]:
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    return [folder / "china.jpg", folder / "flower.jpg"]


def _alpha_ramp(size: tuple[int, int]) -> Image.Image:
    """Alpha 0 in the left fifth, rising to 255 at the right: every transparency level occurs."""
    w, h = size
    ramp = np.clip((np.arange(w) - w / 5) / (w * 0.6), 0, 1) * 255
    return Image.fromarray(np.tile(ramp.astype(np.uint8), (h, 1)), "L")


def write_variants(folder: Path) -> dict[str, Path]:
    """Write every variant into `folder`; return {name: path}, in a fixed order."""
    folder.mkdir(parents=True, exist_ok=True)
    china_file, flower_file = sample_files()
    china, flower = Image.open(china_file).convert("RGB"), Image.open(flower_file).convert("RGB")
    out: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **options) -> None:
        path = folder / name
        image.save(path, **options)
        out[name] = path

    for source in (china_file, flower_file):  # the original bytes
        out[source.name] = Path(shutil.copyfile(source, folder / source.name))
    save("tiny-14x25.png", flower.crop((300, 200, 314, 225)))
    save("large-1411x1411.jpg", china.resize((1411, 1411), Image.Resampling.LANCZOS), quality=92)
    save("gray.jpg", flower.convert("L"), quality=90)
    rgba = china.crop((100, 50, 500, 350)).convert("RGBA")
    rgba.putalpha(_alpha_ramp(rgba.size))
    save("rgba-ramp.png", rgba)
    palette = flower.resize((320, 213)).quantize(colors=64)
    palette.info["transparency"] = 0
    save("palette-transparent.png", palette, transparency=0)
    la = china.resize((300, 200)).convert("LA")
    la.putalpha(_alpha_ramp(la.size))
    save("gray-alpha.png", la)
    gray16 = (np.asarray(flower.convert("L").resize((256, 171)), dtype=np.uint16) * 257)
    gray16 = gray16 + np.random.default_rng(0).integers(0, 257, gray16.shape, dtype=np.uint16)  # low byte in use
    save("gray16.png", Image.fromarray(gray16))
    save("cmyk.jpg", china.resize((320, 213)).convert("CMYK"), quality=92)
    rotated = flower.resize((300, 200)).transpose(Image.Transpose.ROTATE_270)  # stored sideways ...
    exif = Image.Exif()
    exif[0x0112] = 8  # ... and tagged orientation 8: upright (300 x 200) only if the orientation is applied
    save("exif-rotated.jpg", rotated, quality=90, exif=exif.tobytes())
    frames = [china.resize((240, 160)), flower.resize((240, 160))]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=200, loop=0)
    save("photo.webp", flower.resize((400, 267)), quality=90)
    return out



# Colour profiles as cameras, phones and editors embed them. Debian's packages ship the real files (.ci/run installs
# them: ghostscript's libgs-common, icc-profiles-free, colord-data); Display P3, which no Debian package ships, is
# tests/fixtures/icc/display-p3.icc (see its README).
ICC_DIR = Path("/usr/share/color/icc")
PROFILES = {
    "srgb": ICC_DIR / "sRGB.icc",                            # icc-profiles-free: an sRGB-tagged photo
    "display-p3": Path(__file__).parent / "fixtures" / "icc" / "display-p3.icc",  # every recent phone
    "adobe-rgb": ICC_DIR / "ghostscript" / "a98.icc",         # many cameras
    "prophoto": ICC_DIR / "colord" / "ProPhotoRGB.icc",      # raw developers (ROMM RGB)
    "gray": ICC_DIR / "ghostscript" / "sgray.icc",           # a gray PNG from an editor
    "cmyk": ICC_DIR / "ghostscript" / "default_cmyk.icc",    # a print-ready CMYK JPEG (SWOP-like)
}


def missing_profiles() -> list[Path]:
    return [p for p in PROFILES.values() if not p.is_file()]


def _into(image: Image.Image, name: str, mode: str) -> Image.Image:
    """The sRGB photograph's pixels converted into profile `name`'s colour space (as a camera writes them)."""
    from PIL import ImageCms

    srgb = ImageCms.createProfile("sRGB")
    return ImageCms.profileToProfile(image, srgb, str(PROFILES[name]), outputMode=mode)


def write_profiled(folder: Path) -> dict[str, Path]:
    """Photographs carrying embedded ICC profiles, in the containers that carry them (JPEG APP2, PNG iCCP,
    WebP ICCP): {name: path}. Needs the profile files (`missing_profiles()` says which are absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    china_file, flower_file = sample_files()
    china, flower = Image.open(china_file).convert("RGB"), Image.open(flower_file).convert("RGB")
    out: dict[str, Path] = {}

    def save(name: str, image: Image.Image, profile: str, **options) -> None:
        path = folder / name
        image.save(path, icc_profile=PROFILES[profile].read_bytes(), **options)
        out[name] = path

    save("srgb-tagged.jpg", china, "srgb", quality=92)
    save("display-p3.jpg", _into(flower, "display-p3", "RGB"), "display-p3", quality=92)
    save("display-p3.png", _into(china.resize((320, 213)), "display-p3", "RGB"), "display-p3")
    save("adobe-rgb.jpg", _into(china, "adobe-rgb", "RGB"), "adobe-rgb", quality=92)
    save("prophoto.jpg", _into(flower, "prophoto", "RGB"), "prophoto", quality=95)
    save("prophoto.webp", _into(china.resize((400, 267)), "prophoto", "RGB"), "prophoto", quality=90)
    save("gray-profile.png", flower.convert("L"), "gray")
    save("cmyk-profile.jpg", _into(china.resize((320, 213)), "cmyk", "CMYK"), "cmyk", quality=92)
    rgba = _into(flower.crop((100, 50, 500, 350)), "adobe-rgb", "RGB").convert("RGBA")
    rgba.putalpha(_alpha_ramp(rgba.size))
    save("adobe-rgb-alpha.png", rgba, "adobe-rgb")
    return out


# What each EXIF orientation asks a viewer to do, and the inverse that stores an upright photo under that tag.
_STORED_AS = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
              7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def _oriented(upright: Image.Image, orientation: int) -> tuple[Image.Image, bytes]:
    """(stored pixels, EXIF bytes) of `upright` saved as a camera does with this orientation tag."""
    method = _STORED_AS[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return (upright if method is None else upright.transpose(method)), exif.tobytes()


def write_orientations(folder: Path) -> dict[str, Path]:
    """The flower photograph (300 x 200 upright) stored under each EXIF orientation 1-8: {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    upright = Image.open(sample_files()[1]).convert("RGB").resize((300, 200))
    out = {}
    for orientation in range(1, 9):
        stored, exif = _oriented(upright, orientation)
        out[f"orientation-{orientation}.jpg"] = folder / f"orientation-{orientation}.jpg"
        stored.save(out[f"orientation-{orientation}.jpg"], quality=92, exif=exif)
    return out


def write_phone_photo(folder: Path, orientation: int = 6, profile: str | None = "display-p3") -> Path:
    """A phone's photograph: 4032 x 3024 (12 MP, scikit-learn's china.jpg upscaled), taken in portrait (stored
    sideways under EXIF `orientation`), in Display P3 with its profile embedded, as a JPEG of quality 90."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(sample_files()[0]).convert("RGB").resize((3024, 4032), Image.Resampling.BICUBIC)
    if profile:
        photo = _into(photo, profile, "RGB")
    stored, exif = _oriented(photo, orientation)
    path = folder / f"phone-12mp-orientation-{orientation}{'-' + profile if profile else ''}.jpg"
    options = {"icc_profile": PROFILES[profile].read_bytes()} if profile else {}
    stored.save(path, quality=90, exif=exif, **options)
    return path


def all_photographs(folder: Path) -> dict[str, Path]:
    """Every photograph the parity tests use: every mode, every EXIF orientation, embedded colour profiles and a
    phone's 12 MP photo (the last two where Debian's ICC files are installed)."""
    photos = write_variants(folder / "modes") | write_orientations(folder / "orientations")
    if not missing_profiles():
        phone = write_phone_photo(folder / "phone")
        photos |= write_profiled(folder / "profiled") | {phone.name: phone}
    return photos
