"""`distilvit-web verify parity`: does the exported model say what the PyTorch model says, per dtype and runtime?

For the same images, PyTorch's greedy captions are the reference. Each runtime (onnxruntime in Python, stock
transformers.js in Node, and stock transformers.js in real Chromium on WebAssembly or WebGPU:
distilvit.browser_runtime) and each dtype is compared two ways:
  model parity       every runtime gets the pixel values PyTorch saw (preprocessing taken out of the comparison);
  end-to-end parity  the runtime preprocesses the image file itself (transformers.js resizes with its own bicubic).
Figures: caption exact-match rate, token agreement, the first divergence, BLEU-4 / CIDEr-D of the runtime's
captions against PyTorch's, and for onnxruntime the max and mean absolute difference of each graph's outputs on
the same inputs (image features; first-step logits), plus file sizes, load time and median caption latency.
When fp32 differs, the graph whose outputs differ is named. This module knows nothing about the CLI.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distilvit.caption import load_captioner
from distilvit.errors import UserError
from distilvit.export import constants as C
from distilvit.export.reference import image_features
from distilvit.export.ort_generate import OrtCaptioner
from distilvit.metrics import caption_scores
from distilvit.prompt import prompt_ids

log = logging.getLogger(__name__)
RUNTIMES = ("onnxruntime", "transformers.js", "chromium-wasm", "chromium-webgpu")
DEFAULT_RUNTIMES = ("onnxruntime", "transformers.js")
# Graph outputs of fp32 farther than this from PyTorch point at a broken graph (validated exports are ~1e-5).
FP32_GRAPH_TOLERANCE = 1e-2


@dataclass
class Reference:
    images: list[Path]
    pixel_values: np.ndarray  # [B, 3, H, W] as PyTorch saw them
    tokens: list[list[int]]
    captions: list[str]
    features: np.ndarray  # [B, N, D]
    first_logits: np.ndarray  # [B, V]


def pytorch_reference(model_dir: Path, images: list[Path], max_new_tokens: int) -> tuple[Reference, object]:
    from distilvit.caption import open_image

    captioner = load_captioner(model_dir)
    pictures = [open_image(p) for p in images]
    pixels = captioner.processor.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    tokens = []
    for i in range(len(pictures)):  # one by one, as the runtimes caption
        tokens += captioner.generate_ids(pictures[i : i + 1], max_new_tokens)
    model = captioner.model
    with torch.no_grad():
        features = image_features(model, pixels)  # the stock model's feature path
        ids = prompt_ids(captioner.processor.tokenizer, len(pictures), model.config.image_seq_length)
        logits = model(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids)).logits[:, -1, :]
    captions = [c.strip() for c in captioner.processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    return Reference(list(images), pixels.numpy(), tokens, captions, features.numpy(), logits.numpy()), captioner


def compare_tokens(reference: Reference, tokens: list[list[int]], captions: list[str]) -> dict:
    """Exact match, token agreement, first divergence and caption scores against the PyTorch captions."""
    agreements, divergences = [], []
    for i, (ref, got) in enumerate(zip(reference.tokens, tokens)):
        width = max(len(ref), len(got)) or 1
        same = sum(a == b for a, b in zip(ref, got))
        agreements.append(same / width)
        if ref != got:
            position = next((k for k, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
            divergences.append({"image": reference.images[i].name, "position": position,
                                "pytorch": reference.captions[i], "runtime": captions[i]})
    scores = caption_scores(captions, [[c] for c in reference.captions]) if any(reference.captions) else {}
    return {
        "exact_match": sum(r == g for r, g in zip(reference.tokens, tokens)) / len(tokens),
        "token_agreement": float(np.mean(agreements)),
        "first_divergence": divergences[0] if divergences else None,
        "divergences": len(divergences),
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
    for i in range(len(reference.images)):
        t0 = time.perf_counter()
        tokens += runtime.generate(reference.pixel_values[i : i + 1], max_new_tokens).tokens
        latencies.append((time.perf_counter() - t0) * 1e3)
    features = runtime.image_features(reference.pixel_values)
    first_logits = runtime.generate(reference.pixel_values, 1).first_logits
    captions = [c.strip() for c in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    graphs = C.GRAPHS[runtime.layout]
    result = {
        "model": compare_tokens(reference, tokens, captions),
        "end_to_end": None,  # onnxruntime is fed by the same Python preprocessing: identical to model parity
        "graphs": {graphs[0]: {"image_features": _diff(reference.features, features)},
                   "decoder_model_merged": {"first_step_logits": _diff(reference.first_logits, first_logits)}},
        "captions": captions,
        "load_ms": load_ms,
        "median_caption_ms": statistics.median(latencies),
    }
    result["end_to_end"] = result["model"]
    return result


def check_transformers_js(export_dir: Path, layout: str, dtype: str, reference: Reference, tokenizer, max_new_tokens: int) -> dict:
    from distilvit import node_runtime

    pixels = reference.pixel_values
    request = {"model_dir": str(export_dir.resolve()), "layout": layout, "dtype": dtype,
               "images": [str(p.resolve()) for p in reference.images], "max_new_tokens": max_new_tokens,
               "pixel_values": {"dims": list(pixels.shape), "data": pixels.astype(np.float32).ravel().tolist()}}
    return _token_entry(node_runtime.run_script("parity.mjs", request), reference, tokenizer)


def check_browser(export_dir: Path, runtime: str, layout: str, dtype: str, reference: Reference, tokenizer,
                  max_new_tokens: int) -> dict:
    """Stock transformers.js in real Chromium (WebAssembly or WebGPU), model and end-to-end parity."""
    from distilvit.browser_runtime import run_parity

    out = run_parity(export_dir, layout, dtype, runtime, reference.images, reference.pixel_values, max_new_tokens)
    return _token_entry(out, reference, tokenizer)


def _token_entry(out: dict, reference: Reference, tokenizer) -> dict:
    """A report entry from a JavaScript runtime's token ids (model parity and end-to-end)."""
    results = out["results"]
    model_tokens = [r["model"] for r in results]
    e2e_tokens = [r["end_to_end"] for r in results]
    decode = lambda ts: [c.strip() for c in tokenizer.batch_decode(ts, skip_special_tokens=True)]
    return {
        "model": compare_tokens(reference, model_tokens, decode(model_tokens)),
        "end_to_end": compare_tokens(reference, e2e_tokens, decode(e2e_tokens)),
        "graphs": None,  # the same files as onnxruntime; their outputs are compared there
        "captions": decode(e2e_tokens),
        "load_ms": out["load_ms"],
        "median_caption_ms": statistics.median(r["ms"] for r in results),
    }


def suspect_graph(entry: dict) -> str | None:
    """The graph whose fp32 outputs are far from PyTorch's (image features first, then the decoder)."""
    graphs = entry.get("graphs") or {}
    for graph, outputs in graphs.items():
        for diff in outputs.values():
            if diff["max_abs_diff"] > FP32_GRAPH_TOLERANCE:
                return graph
    return None


def verify_parity(export_dir: Path, images: list[Path], model_dir: Path | None = None, dtypes: list[str] | None = None,
                  runtimes: list[str] | None = None, max_new_tokens: int | None = None, min_match: float = 0.0,
                  fp32_min_match: float = 1.0) -> dict:
    """Compare every (runtime, dtype) with PyTorch on `images`; return the report (with `passed`)."""
    export_dir = Path(export_dir)
    config_file = export_dir / C.EXPORT_CONFIG
    if not config_file.is_file():
        raise UserError(f"{export_dir} is not a distilvit-web export ({C.EXPORT_CONFIG} is missing)")
    export_info = json.loads(config_file.read_text())
    model_dir = Path(model_dir or export_info["source_model"])
    if not model_dir.exists():
        raise UserError(f"the source model {model_dir} (from {config_file}) is gone; pass --model MODEL_DIR")
    layout = export_info["layout"]
    graphs = tuple(export_info["graphs"])
    present = available_dtypes(export_dir, graphs)
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
    max_new = max_new_tokens or export_info.get("max_new_tokens") or 30

    reference, captioner = pytorch_reference(model_dir, images, max_new)
    tokenizer = captioner.processor.tokenizer
    entries = []
    for runtime in runtimes:
        for dtype in dtypes:
            log.info("parity: %s %s", runtime, dtype)
            if runtime == "onnxruntime":
                entry = check_onnxruntime(export_dir, dtype, reference, tokenizer, max_new)
            elif runtime == "transformers.js":
                entry = check_transformers_js(export_dir, layout, dtype, reference, tokenizer, max_new)
            else:
                entry = check_browser(export_dir, runtime, layout, dtype, reference, tokenizer, max_new)
            threshold = fp32_min_match if dtype == "fp32" else min_match
            entry.update(runtime=runtime, dtype=dtype, sizes_bytes=_sizes(export_dir, graphs, dtype),
                         threshold=threshold, passed=entry["model"]["exact_match"] >= threshold)
            entry["suspect_graph"] = suspect_graph(entry) if dtype == "fp32" else None
            entries.append(entry)
    return {
        "export": str(export_dir.resolve()),
        "model": str(model_dir.resolve()),
        "layout": layout,
        "images": [str(p) for p in images],
        "max_new_tokens": max_new,
        "pytorch_captions": reference.captions,
        "results": entries,
        "passed": all(e["passed"] for e in entries),
    }
