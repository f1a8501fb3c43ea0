"""`distilvit-web verify parity`: does the exported model say what the PyTorch model says, per dtype and runtime?

For the same images, PyTorch's greedy captions are the reference. Each runtime (onnxruntime in Python, stock
transformers.js in Node, and stock transformers.js in real Chromium on WebAssembly or WebGPU:
distilvit.runtimes.browser) and each dtype is compared two ways:
  model parity       every runtime gets the pixels Python decoded (distilvit.pixels: decoding taken out of the
                     comparison; the graph still composites, resizes and normalises them, as PyTorch's path does);
  end-to-end parity  the runtime decodes the image file itself (sharp in Node, the browser's decoders in Chromium).
Figures: caption exact-match rate, token agreement, the first divergence, BLEU-4 / CIDEr-D of the runtime's
captions against PyTorch's, and for onnxruntime the max and mean absolute difference of each graph's outputs on
the same inputs (image features; first-step logits), plus file sizes, load time and median caption latency.
When fp32 differs, the graph whose outputs differ is named. This module knows nothing about the CLI.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distilvit.errors import UserError
from distilvit.export import constants as C
from distilvit.export.ort_generate import OrtCaptioner
from distilvit.export.reference import image_features
from distilvit.limits import PIXEL_MAX_TOLERANCE, PIXEL_MEAN_TOLERANCE
from distilvit.metrics import caption_scores
from distilvit.modeling import caption_vocab
from distilvit.modeling.caption import load_captioner
from distilvit.modeling.prompt import prompt_ids
from distilvit.pixels import DEFAULT_MAX_PIXELS, PixelPreparer, reduction, rule_is_current
from distilvit.provenance import stamp
from distilvit.verify.logits import ForcedReference, forced_reference
from distilvit.verify.logits import compare as compare_logits, report as report_logits
from distilvit.verify.targets import Targets, captions_informative, suspect_graph, verdict_from
from distilvit.quantize.rounding import compare_files

log = logging.getLogger(__name__)
RUNTIMES = ("onnxruntime", "transformers.js", "chromium-wasm", "chromium-webgpu")
DEFAULT_RUNTIMES = ("onnxruntime", "transformers.js")


@dataclass
class Reference:
    images: list[Path]
    raw: list[np.ndarray]  # per image [1, 4, H, W] float32 0..255: the decoded pixels the runtimes are handed
    pixel_values: np.ndarray  # [B, 3, S, S] as PyTorch saw them (`prepare.prepare_raw` of `raw`)
    prepare: PixelPreparer  # the model's pixel rule (size, mean, std)
    tokens: list[list[int]]
    captions: list[str]
    features: np.ndarray  # [B, N, D]
    first_logits: np.ndarray  # [B, V]
    forced: ForcedReference  # PyTorch's logits at every step of its captions (verify.logits)
    embed_ids: np.ndarray  # [1, T] the prompt's and the captions' token ids
    embeddings: np.ndarray  # [1, T, D] their embeddings (the llava layout's embed_tokens graph computes them)


def pytorch_reference(model_dir: Path, images: list[Path], max_new_tokens: int,
                      max_image_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Reference, object]:
    from distilvit.modeling.caption import open_image

    pictures = [open_image(p, max_image_pixels) for p in images]  # every image checked before the model loads
    captioner = load_captioner(model_dir)
    captioner.pixels.max_pixels = max_image_pixels
    raw = [captioner.pixels.raw(p) for p in pictures]
    pixels = torch.cat([captioner.pixels.prepare_raw(r) for r in raw])  # [B, 3, S, S]
    tokens = []
    for i in range(len(pictures)):  # one by one, as the runtimes caption
        tokens += captioner.generate_ids(pictures[i : i + 1], max_new_tokens)
    model = captioner.model
    with torch.no_grad():
        features = image_features(model, pixels)  # the stock model's feature path
        ids = prompt_ids(captioner.processor.tokenizer, len(pictures), model.config.image_seq_length)
        logits = model(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids)).logits[:, -1, :]
        logits = caption_vocab.mask_logits(logits, caption_vocab.of(model.config))  # as generation sees them
    captions = [c.strip() for c in captioner.processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    forced = forced_reference(model, ids[:1], pixels, tokens, max_new_tokens)
    embed_ids = torch.tensor([sorted({int(i) for i in ids[0]} | {t for steps in forced.forced for t in steps})])
    with torch.no_grad():
        embeddings = model.get_input_embeddings()(embed_ids)
    return (Reference(list(images), [r.numpy() for r in raw], pixels.numpy(), captioner.pixels, tokens, captions,
                      features.numpy(), logits.numpy(), forced, embed_ids.numpy(), embeddings.numpy()), captioner)


def compare_tokens(reference: Reference, tokens: list[list[int] | None], captions: list[str],
                   errors: list[str | None] | None = None) -> dict:
    """Exact match, token agreement, first divergence and caption scores against the PyTorch captions. A None in
    `tokens` is an image the runtime could not caption (its message in `errors`): a divergence at position 0."""
    errors = errors or [None] * len(tokens)
    agreements, divergences = [], []
    for i, (ref, got) in enumerate(zip(reference.tokens, tokens)):
        if got is None:
            agreements.append(0.0)
            divergences.append({"image": reference.images[i].name, "position": 0, "pytorch": reference.captions[i],
                                "runtime": None, "error": errors[i]})
            continue
        width = max(len(ref), len(got)) or 1
        same = sum(a == b for a, b in zip(ref, got))
        agreements.append(same / width)
        if ref != got:
            position = next((k for k, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
            divergences.append({"image": reference.images[i].name, "position": position,
                                "pytorch": reference.captions[i], "runtime": captions[i]})
    scores = caption_scores([c or "" for c in captions], [[c] for c in reference.captions]) if any(reference.captions) else {}
    return {
        "exact_match": sum(r == g for r, g in zip(reference.tokens, tokens)) / len(tokens),
        "token_agreement": float(np.mean(agreements)),
        "first_divergence": divergences[0] if divergences else None,
        "divergences": len(divergences),
        "divergent_images": [d["image"] for d in divergences],
        "bleu4_vs_pytorch": scores.get("bleu4"),
        "cider_vs_pytorch": scores.get("cider"),
    }


def _diff(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean())}


def available_dtypes(export_dir: Path, graphs: tuple[str, ...]) -> list[str]:
    return [d for d in C.DTYPE_SUFFIX if all((export_dir / C.onnx_file(g, d)).is_file() for g in graphs)]


def _sizes(export_dir: Path, graphs, dtype: str) -> dict[str, int]:
    out = {}
    for g in graphs:
        p = export_dir / C.onnx_file(g, dtype)
        out[p.name] = p.stat().st_size + (p.with_name(p.name + "_data").stat().st_size if p.with_name(p.name + "_data").exists() else 0)
    return out


def check_onnxruntime(export_dir: Path, dtype: str, reference: Reference, tokenizer, max_new_tokens: int) -> dict:
    t0 = time.perf_counter()
    runtime = OrtCaptioner(export_dir, dtype)
    load_ms = (time.perf_counter() - t0) * 1e3
    tokens, latencies = [], []
    for raw in reference.raw:  # one by one: images differ in size
        t0 = time.perf_counter()
        tokens += runtime.generate(raw, max_new_tokens).tokens
        latencies.append((time.perf_counter() - t0) * 1e3)
    features = np.concatenate([runtime.image_features(raw) for raw in reference.raw])
    first_logits = np.concatenate([runtime.generate(raw, 1).first_logits for raw in reference.raw])
    forced = [report_logits(runtime.forced_logits(raw, steps), reference.forced.watch)
              for raw, steps in zip(reference.raw, reference.forced.forced)]
    captions = [c.strip() for c in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    graphs = C.GRAPHS[runtime.layout]
    outputs = {graphs[0]: {"image_features": _diff(reference.features, features)}}
    if "embed_tokens" in runtime.sessions:
        embedded = runtime.sessions["embed_tokens"].run(None, {C.INPUT_IDS: reference.embed_ids})[0]
        outputs["embed_tokens"] = {"token_embeddings": _diff(reference.embeddings, embedded)}
    outputs["decoder_model_merged"] = {"first_step_logits": _diff(reference.first_logits, first_logits)}
    result = {
        "model": compare_tokens(reference, tokens, captions),
        "end_to_end": None,  # onnxruntime is fed by the same Python decoding: identical to model parity
        "pixels": None,
        "graphs": outputs,
        "logits": compare_logits(reference.forced, forced, [p.name for p in reference.images]),
        "captions": captions,
        "load_ms": load_ms,
        "median_caption_ms": statistics.median(latencies),
    }
    result["end_to_end"] = result["model"]
    return result


def check_transformers_js(export_dir: Path, layout: str, dtype: str, reference: Reference, tokenizer, max_new_tokens: int,
                          targets: "Targets") -> dict:
    from distilvit.runtimes import node as node_runtime

    request = {"model_dir": str(export_dir.resolve()), "layout": layout, "dtype": dtype,
               "images": [str(p.resolve()) for p in reference.images], "max_new_tokens": max_new_tokens,
               "pixel_values": pixel_payload(reference.raw), **reference.forced.request()}
    return _token_entry(node_runtime.run_script("parity.mjs", request), reference, tokenizer, targets)


def check_browser(export_dir: Path, runtime: str, layout: str, dtype: str, reference: Reference, tokenizer,
                  max_new_tokens: int, targets: "Targets") -> dict:
    """Stock transformers.js in real Chromium (WebAssembly or WebGPU), model and end-to-end parity."""
    from distilvit.runtimes.browser import run_parity

    out = run_parity(export_dir, layout, dtype, runtime, reference.images, pixel_payload(reference.raw), max_new_tokens,
                     reference.forced.request())
    return _token_entry(out, reference, tokenizer, targets)


def pixel_payload(raw: list[np.ndarray]) -> list[dict]:
    """Decoded pixels as JSON for the JavaScript runtimes: per image {dims, base64 of the uint8 samples}."""
    import base64

    return [{"dims": list(r.shape), "uint8_base64": base64.b64encode(r.astype(np.uint8).tobytes()).decode("ascii")}
            for r in raw]


def _token_entry(out: dict, reference: Reference, tokenizer, targets: "Targets") -> dict:
    """A report entry from a JavaScript runtime's token ids (model parity and end-to-end)."""
    results = out["results"]
    model_tokens = [r["model"] for r in results]
    e2e_tokens = [r["end_to_end"] for r in results]
    errors = [r.get("error") for r in results]
    decode = lambda ts: [None if t is None else tokenizer.decode(t, skip_special_tokens=True).strip() for t in ts]
    times = [r["ms"] for r in results if r.get("ms") is not None]
    return {
        "model": compare_tokens(reference, model_tokens, decode(model_tokens)),
        "end_to_end": compare_tokens(reference, e2e_tokens, decode(e2e_tokens), errors),
        "pixels": compare_pixels(reference, [r.get("pixels") for r in results], errors, targets.pixel_max,
                                 targets.pixel_mean),
        "graphs": None,  # the same files as onnxruntime; their outputs are compared there
        "logits": compare_logits(reference.forced, [r.get("logits") for r in results],
                                 [p.name for p in reference.images]),
        "captions": decode(e2e_tokens),
        "load_ms": out["load_ms"],
        "median_caption_ms": statistics.median(times) if times else None,
    }


def compare_pixels(reference: Reference, pixels: list[dict | None], errors: list[str | None],
                   max_tolerance: float = PIXEL_MAX_TOLERANCE, mean_tolerance: float = PIXEL_MEAN_TOLERANCE) -> dict:
    """Per image: the runtime's decoded pixels, prepared by distilvit.pixels, against PyTorch's model input."""
    import base64

    rows = []
    for i, payload in enumerate(pixels):
        name = reference.images[i].name
        if payload is None:
            rows.append({"image": name, "error": errors[i] or "no pixels returned"})
            continue
        dims = payload["dims"]
        if "float32_base64" in payload:  # block means from the demo's decode.js
            raw = np.frombuffer(base64.b64decode(payload["float32_base64"]), dtype=np.float32).reshape(dims)
        else:
            raw = np.frombuffer(base64.b64decode(payload["uint8_base64"]), dtype=np.uint8).reshape(dims)
        height, width = reference.raw[i].shape[2:]
        size = reference.prepare.size
        reduced = (height // reduction(height, size)[0], width // reduction(width, size)[0])
        # the runtime's own size, or (the demo's decode.js) the block-reduced one the graph then leaves as it is
        if tuple(dims[2:]) not in ((height, width), reduced):
            rows.append({"image": name, "error": f"decoded as {dims[3]}x{dims[2]}, Python decodes {width}x{height}"
                         + (f" (reduced: {reduced[1]}x{reduced[0]})" if reduced != (height, width) else "")})
            continue
        got = reference.prepare.prepare_raw(torch.from_numpy(raw.astype(np.float32)))
        rows.append({"image": name, "channels": dims[1],
                     **_diff(got.numpy(), reference.pixel_values[i : i + 1])})
    measured = [r for r in rows if "error" not in r]
    worst = max(measured, key=lambda r: r["max_abs_diff"], default=None)
    return {
        "images": rows,
        "max_abs_diff": worst["max_abs_diff"] if worst else None,
        "mean_abs_diff": float(np.mean([r["mean_abs_diff"] for r in measured])) if measured else None,
        "worst_image": worst["image"] if worst else None,
        "within_target": [r["image"] for r in measured if r["max_abs_diff"] <= max_tolerance
                          and r["mean_abs_diff"] <= mean_tolerance],
        "target": {"max_abs_diff": max_tolerance, "mean_abs_diff": mean_tolerance},
    }


def verify_parity(export_dir: Path, images: list[Path], model_dir: Path | None = None, dtypes: list[str] | None = None,
                  runtimes: list[str] | None = None, max_new_tokens: int | None = None, min_match: float = 0.0,
                  fp32_min_match: float = 1.0, max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
                  targets: Targets | None = None) -> dict:
    """Compare every (runtime, dtype) with PyTorch on `images`; return the report (with `passed`). `targets`
    (default: `Targets(min_match, fp32_min_match)`) says what each row must reach; a row passes when its model
    match, end-to-end match and pixels all do (`checks` in the row names each)."""
    targets = targets or Targets(min_match=min_match, fp32_min_match=fp32_min_match)
    export_dir = Path(export_dir)
    export_info, model_dir, dtypes, runtimes = _checked_request(export_dir, images, model_dir, dtypes, runtimes)
    layout, graphs = export_info["layout"], tuple(export_info["graphs"])
    max_new = max_new_tokens or export_info.get("max_new_tokens") or 30

    reference, captioner = pytorch_reference(model_dir, images, max_new, max_image_pixels)
    tokenizer = captioner.processor.tokenizer
    informative = captions_informative(reference.captions)
    if not informative["informative"]:
        log.warning("parity: PyTorch's captions %s: caption matches are not counted as evidence; the logits "
                    "and pixels checks carry the verdict", informative["why"])
    entries, weights = [], {}
    for runtime in runtimes:
        for dtype in dtypes:
            log.info("parity: %s %s", runtime, dtype)
            if runtime == "onnxruntime":
                entry = check_onnxruntime(export_dir, dtype, reference, tokenizer, max_new)
            elif runtime == "transformers.js":
                entry = check_transformers_js(export_dir, layout, dtype, reference, tokenizer, max_new, targets)
            else:
                entry = check_browser(export_dir, runtime, layout, dtype, reference, tokenizer, max_new, targets)
            if dtype not in weights:
                weights[dtype] = compare_files({g: (export_dir / C.onnx_file(g, "fp32"), export_dir / C.onnx_file(g, dtype))
                                                for g in graphs}, dtype)
            entry.update(runtime=runtime, dtype=dtype, sizes_bytes=_sizes(export_dir, graphs, dtype),
                         weights=weights[dtype])
            entry["checks"] = targets.checks(entry)
            entry["verdict_from"] = verdict_from(entry, informative)
            entry["passed"] = all(c["passed"] for c in entry["checks"].values()) and bool(entry["verdict_from"])
            entry["suspect_graph"] = suspect_graph(entry) if not entry["passed"] else None
            entries.append(entry)
    for entry in entries:  # JavaScript rows run the same files: onnxruntime's row of the dtype names the graph
        if not entry["passed"] and entry["suspect_graph"] is None:
            entry["suspect_graph"] = next((e["suspect_graph"] for e in entries if e["dtype"] == entry["dtype"]
                                           and e["runtime"] == "onnxruntime" and e["suspect_graph"]), None)
    return {
        "export": str(export_dir.resolve()),
        "model": str(model_dir.resolve()),
        "layout": layout,
        "images": [str(p) for p in images],
        "max_new_tokens": max_new,
        "pytorch_captions": reference.captions,
        "captions_informative": informative,
        "results": entries,
        "passed": all(e["passed"] for e in entries),
        "cpu_dependent_dtypes": {d: n for d, n in (export_info.get("cpu_dependent_dtypes") or {}).items()
                                 if d in dtypes},
        **stamp(),  # the CPU's instruction sets among them: quantized dtypes' captions can depend on them
    }


def _checked_request(export_dir: Path, images: list[Path], model_dir: Path | None, dtypes: list[str] | None,
                     runtimes: list[str] | None) -> tuple[dict, Path, list[str], list[str]]:
    """Everything a parity run needs, checked before any model loads: the export's export_config.json (its pixel
    rule current), the source model (default: the one the export names), the dtypes (default: all the export
    holds) and runtimes asked for, some images. UserError naming what is wrong."""
    config_file = export_dir / C.EXPORT_CONFIG
    export_info = C.read_export_config(export_dir)
    if not rule_is_current(export_info.get("pixels")):
        raise UserError(f"{export_dir} was exported by an earlier distilvit-web, whose graphs prepare pixels by an "
                        "older rule (no colour profile, no block reduction of large photos); re-export it "
                        "(`distilvit-web export MODEL --output DIR --overwrite`)")
    model_dir = Path(model_dir or export_info["source_model"])
    if not model_dir.exists():
        raise UserError(f"the source model {model_dir} (from {config_file}) is gone; pass --model MODEL_DIR")
    present = available_dtypes(export_dir, tuple(export_info["graphs"]))
    dtypes = present if not dtypes or dtypes == ["all"] else dtypes
    missing = [d for d in dtypes if d not in present]
    if missing:
        raise UserError(f"{export_dir} has no {', '.join(missing)} files; it holds {', '.join(present)}")
    runtimes = runtimes or list(DEFAULT_RUNTIMES)
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise UserError(f"unknown --runtime {unknown}; choose from {', '.join(RUNTIMES)}")
    if not images:
        raise UserError("no images to compare")
    return export_info, model_dir, dtypes, runtimes
