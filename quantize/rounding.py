"""Are a quantized file's weights the fp32 file's weights, rounded? A check of the files themselves, per graph.

A damaged q8 weight (negated, swapped rows, a wrong scale) can leave a handful of captions unchanged and move the
logits by less than q8's own rounding does on a real decoder, so neither captions nor a distribution bound can
catch it on every model. The rounding, though, is known exactly: q8 stores each weight as int8 in blocks with
the scale it was rounded with (quantize/stored_int8.py), so every dequantized value lies within half a step of
the fp32 value; fp16 casts each weight to the nearest float16. A weight outside that is damage, and its graph and
name say where. The int8/uint8 (dynamic), q4 and bnb4 files are written by onnxruntime's own quantizers in
their formats: they are not checked here (their logits distribution is, by `verify parity`). Used by export (a
quantizer that wrote wrong weights stops the export) and `verify parity` (a file damaged since). This module knows
nothing about images, runtimes or export layouts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from distilvit.quantize.stored_int8 import SUFFIX, dequantize

CHECKED_DTYPES = ("q8", "fp16")
FLOAT16_STEP = 2.0 ** -11  # half the spacing of float16 values, relative
FLOAT16_SMALLEST = 2.0 ** -24
FLOAT16_MAX = 65504.0


def _arrays(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _excess(want: np.ndarray, got: np.ndarray, tolerance: np.ndarray | float) -> tuple[float, int]:
    """(largest amount by which |got - want| passes its tolerance, how many values do)."""
    over = np.abs(got.astype(np.float64) - want.astype(np.float64)) - tolerance
    return float(over.max()) if over.size else 0.0, int((over > 0).sum())


def compare_graph(fp32_file: Path, quantized_file: Path) -> tuple[int, list[dict]]:
    """(weights checked, the ones off: {weight, values_off, max_excess}) of one graph's quantized file."""
    reference, stored = _arrays(fp32_file), _arrays(quantized_file)
    checked, off = 0, []
    for name, values in stored.items():
        if name.endswith(SUFFIX + "/q"):
            base = name[: -len(SUFFIX + "/q")]
            if base not in reference:
                continue
            scale = stored[base + SUFFIX + "/scale"].astype(np.float64)
            want = reference[base]
            got = dequantize(values, scale, want.shape)
            # half a step of the block's scale (the stored one, so exactly), broadcast over the block's values
            step = np.broadcast_to(scale, values.shape).reshape(want.shape)
            excess, count = _excess(want, got, 0.5 * step * (1 + 1e-6) + 1e-12)
        elif name in reference and values.dtype == np.float16 and reference[name].dtype == np.float32:
            want = np.clip(reference[name], -FLOAT16_MAX, FLOAT16_MAX)  # a mask's float32 minimum saturates
            if want.shape != values.shape:
                off.append({"weight": name, "values_off": int(values.size), "max_excess": float("inf")})
                continue
            excess, count = _excess(want, values, np.abs(want) * FLOAT16_STEP + FLOAT16_SMALLEST)
        else:
            continue
        checked += 1
        if count:
            off.append({"weight": name, "values_off": count, "max_excess": excess})
    return checked, off


def compare_files(files: dict[str, tuple[Path, Path]], dtype: str) -> dict:
    """{checked, off: [{graph, weight, values_off, max_excess}], graphs_off, skipped} for one dtype, given per graph
    (its fp32 file, its `dtype` file); a graph whose files are missing is left out."""
    if dtype not in CHECKED_DTYPES:
        return {"checked": 0, "off": [], "graphs_off": [],
                "skipped": f"{dtype} files are written by onnxruntime's quantizers; their weights are not compared"}
    checked, off = 0, []
    for graph, (fp32, quantized) in files.items():
        if not (fp32.is_file() and quantized.is_file()):
            continue
        n, graph_off = compare_graph(fp32, quantized)
        checked += n
        off += [{"graph": graph, **o} for o in graph_off]
    order = list(files)
    return {"checked": checked, "off": off, "graphs_off": sorted({o["graph"] for o in off}, key=order.index),
            "skipped": None}
