"""The ship gate: each quantized dtype's greedy captions against fp32's (onnxruntime, the export's own files) on
images of the kind the model was trained on, and the rule that a dtype keeping fewer than MIN_DEFAULT_AGREEMENT of
fp32's captions, or less than MIN_DEFAULT_CIDER_RATIO of fp32's CIDEr-D against the images' reference captions (where
they have them: the run's validation images do, a folder does not), never becomes the export's default (the
`transformers.js_config.dtype` its config.json names, which transformers.js and the demo load, and the card shows).

Images (`export --agreement-images`):
  N (default 16)  the first N images of the training run's validation split, loaded as training loaded them (the
                  run's train_config.json beside merged/: datasets, seed, sample, synthetic sizes; read from the
                  cache, so offline too). A merged folder with no run around it: N synthetic shapes, with a warning
                  that shapes say little about a photo model.
  DIR             the image files directly in a folder of the user's own (at most MAX_FOLDER_IMAGES).
  0               not measured: nothing is gated, and export_config.json says the default is unchecked.

What this does not know: whether the images look like what users will caption, or how a browser's kernels round
(this is onnxruntime on this CPU; `verify parity` compares the runtimes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from distilvit.errors import UserError
from distilvit.limits import MIN_DEFAULT_AGREEMENT, MIN_DEFAULT_CIDER_RATIO

log = logging.getLogger(__name__)

MAX_FOLDER_IMAGES = 64
BATCH = 16


@dataclass
class AgreementImages:
    """Where the images come from (`source`, for export_config.json and the card) and how to get their raw pixels:
    `loaders` each give one [1, 4, H, W] float32 array (decoded when asked, so a folder of phone photos is never
    held in memory at once)."""

    source: str
    loaders: list[Callable[[], np.ndarray]] = field(default_factory=list)
    references: list[list[str]] | None = None  # each image's reference captions, where known (validation rows)

    def batches(self) -> Iterator[np.ndarray]:
        """[B, 4, H, W] arrays of consecutive same-size images, at most BATCH each, in order."""
        pending: list[np.ndarray] = []
        for load in self.loaders:
            pixels = load()
            if pending and (pixels.shape != pending[0].shape or len(pending) == BATCH):
                yield np.concatenate(pending)
                pending = []
            pending.append(pixels)
        if pending:
            yield np.concatenate(pending)


def parse_spec(text: str | int | Path) -> int | Path:
    """`--agreement-images`: a count (digits) or a folder; a UserError for anything else."""
    if isinstance(text, int):
        spec: int | Path = text
    elif isinstance(text, Path) or not str(text).strip().isdigit():
        spec = Path(text)
    else:
        spec = int(str(text).strip())
    if isinstance(spec, Path) and not spec.is_dir():
        raise UserError(f"--agreement-images {text}: not a number of validation images and not a folder of images")
    if isinstance(spec, int) and spec < 0:
        raise UserError(f"--agreement-images {text}: give a number >= 0 or a folder")
    return spec


def _raw(image) -> np.ndarray:
    from distilvit.pixels import decode_rgba, raw_tensor

    return raw_tensor(decode_rgba(image)).numpy()


def _folder_images(folder: Path) -> AgreementImages:
    from distilvit.image_files import images_in
    from distilvit.pixels import check_image

    paths = images_in(folder, f"--agreement-images {folder}")
    for path in paths:  # each file's header first: a bad file is one clear error, before minutes of exporting
        check_image(path)
    if len(paths) > MAX_FOLDER_IMAGES:
        log.warning("--agreement-images %s: using the first %d of its %d images", folder, MAX_FOLDER_IMAGES, len(paths))
        paths = paths[:MAX_FOLDER_IMAGES]
    return AgreementImages(f"{len(paths)} images of {folder}", [lambda p=p: _raw(p) for p in paths])


def _run_of(source_model: Path) -> Path | None:
    from distilvit.config import CONFIG_FILE

    run = Path(source_model).resolve().parent
    return run if (run / CONFIG_FILE).is_file() else None


def _validation_images(run: Path, count: int) -> AgreementImages:
    from distilvit.config import TrainConfig
    from distilvit.data import load_caption_splits

    config = TrainConfig.load(run)
    sizes = dict(config.synthetic_sizes or {})
    sizes["train_size"] = 1  # each synthetic split has its own random stream: validation is unchanged
    try:
        splits = load_caption_splits(list(config.datasets), seed=config.seed, synthetic_sizes=sizes, num_proc=1)
    except UserError as err:
        raise UserError(f"cannot load the validation images of the run {run} to measure each dtype's captions "
                        f"against fp32: {err}\nPass a folder of your own (--agreement-images DIR) or skip the "
                        "check (--agreement-images 0)") from err
    rows = splits["validation"]
    rows = rows.select(range(min(count, len(rows))))
    names = ", ".join(config.datasets)
    return AgreementImages(f"{len(rows)} validation images of {names} (run {run.name})",
                           [lambda i=i: _raw(rows[i]["image"]) for i in range(len(rows))], list(rows["captions"]))


def _synthetic_shapes(count: int) -> AgreementImages:
    from distilvit.data.synthetic import make_synthetic_splits

    rows = make_synthetic_splits(seed=0, train_size=0, validation_size=0, test_size=count)["test"]
    return AgreementImages(f"{count} synthetic shapes", [lambda i=i: _raw(rows[i]["image"]) for i in range(count)])


def load_images(spec: int | Path, source_model: Path) -> AgreementImages | None:
    """The images `spec` names for the model in `source_model` (a merged folder); None for 0."""
    if isinstance(spec, Path):
        return _folder_images(spec)
    if spec == 0:
        return None
    run = _run_of(source_model)
    if run is None:
        log.warning("%s is not inside a training run, so its validation images are unknown: measuring each dtype on "
                    "%d synthetic shapes, which say little about a photo model. Pass your own images with "
                    "--agreement-images DIR", source_model, spec)
        return _synthetic_shapes(spec)
    return _validation_images(run, spec)


def caption_each(captioners: dict, images: AgreementImages, finite: bool = True) -> dict[str, list[list[int]]]:
    """label -> greedy token ids of every image, from each of `captioners` (label -> OrtCaptioner). The images are
    decoded once, a batch at a time, and every captioner runs on that batch before the next is decoded: memory holds
    one batch of pixels, however many images and captioners. `finite`: non-finite logits are an error."""
    tokens: dict[str, list[list[int]]] = {label: [] for label in captioners}
    for batch in images.batches():
        for label, captioner in captioners.items():
            generation = captioner.generate(batch)
            if finite and not np.isfinite(generation.first_logits).all():
                raise RuntimeError(f"the {label} graphs give non-finite logits")
            tokens[label] += generation.tokens
    return tokens


def measure(export_dir: Path, dtypes: list[str | dict], images: AgreementImages) -> dict[str, dict]:
    """Greedy-caption agreement of each dtype (or per-graph mix) with fp32, in onnxruntime, on `images`; where the
    images have reference captions, also each one's CIDEr-D against them as a share of fp32's (`cider_ratio`: None
    when fp32's own CIDEr-D is 0, which says nothing)."""
    from tokenizers import Tokenizer

    from distilvit.export.ort_generate import OrtCaptioner
    from distilvit.metrics import caption_scores

    labels = {(d if isinstance(d, str) else "mix"): d for d in dtypes}
    tokens = caption_each({"fp32": OrtCaptioner(export_dir, "fp32"),
                           **{label: OrtCaptioner(export_dir, d) for label, d in labels.items()}}, images)
    reference = tokens["fp32"]
    tokenizer = Tokenizer.from_file(str(Path(export_dir) / "tokenizer.json"))

    def cider(ids: list[list[int]]) -> float | None:
        if not images.references:
            return None
        captions = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in ids]
        return caption_scores(captions, images.references)["cider"]

    fp32_cider = cider(reference)
    result = {}
    for label in labels:
        same = sum(a == b for a, b in zip(tokens[label], reference))
        score = cider(tokens[label])
        result[label] = {"caption_match_with_fp32": same / len(reference), "images": len(reference),
                         "source": images.source, "cider": score, "fp32_cider": fp32_cider,
                         "cider_ratio": score / fp32_cider if score is not None and fp32_cider else None}
        log.info("  %s: %s", label, describe(result[label]))
    return result


def describe(measured: dict) -> str:
    """One line of a dtype's agreement: '14/16 captions equal to fp32, CIDEr-D 3.21 (98% of fp32's 3.27)'."""
    line = f"{round(measured['caption_match_with_fp32'] * measured['images'])}/{measured['images']} captions equal " \
           "to fp32"
    if measured.get("cider") is not None:
        ratio = measured.get("cider_ratio")
        line += f", CIDEr-D {measured['cider']:.2f}" + (f" ({ratio:.0%} of fp32's {measured['fp32_cider']:.2f})"
                                                       if ratio is not None else " (fp32's is 0: not compared)")
    return line


def passes(agreement: dict | None) -> bool:
    """At least MIN_DEFAULT_AGREEMENT of fp32's captions and, where measured, MIN_DEFAULT_CIDER_RATIO of its CIDEr-D."""
    if agreement is None:
        return True
    ratio = agreement.get("cider_ratio")
    return agreement["caption_match_with_fp32"] >= MIN_DEFAULT_AGREEMENT and \
        (ratio is None or ratio >= MIN_DEFAULT_CIDER_RATIO)


def gate(preference: tuple[str, ...], dtypes: list[str], mix: dict[str, str], graphs: list[str],
         agreement: dict[str, dict]) -> tuple[dict[str, str], list[str]]:
    """graph -> default dtype, and the warnings said: the mix if asked for and it passes, else the first dtype of
    `preference` that was exported and passes (fp32 always does: it is the reference)."""
    warnings = []
    for label, measured in agreement.items():
        if not passes(measured):
            warnings.append(f"{label} keeps {measured['caption_match_with_fp32']:.0%} of fp32's captions on "
                            f"{measured['source']} ({describe(measured)}; the gate: >= {MIN_DEFAULT_AGREEMENT:.0%} of "
                            f"the captions and >= {MIN_DEFAULT_CIDER_RATIO:.0%} of fp32's CIDEr-D): it is written but "
                            "is not the export's default")
    if mix and passes(agreement.get("mix")):
        return {g: mix[g] for g in graphs}, warnings
    pick = next(d for d in preference if d in dtypes + ["fp32"] and (d == "fp32" or passes(agreement.get(d))))
    return {g: pick for g in graphs}, warnings
