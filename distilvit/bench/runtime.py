"""`distilvit-web bench`: caption latency of the real-size architecture in every runtime, against the machine's floor.

The model is the real preset's shape (SigLIP-base/16 + SmolLM-135M) with random weights, built from configs and
exported here (nothing downloaded). One 224 px image, exactly `tokens` generated tokens (EOS ignored):
  PyTorch eager fp32   the baseline a user has without this toolkit (`generate`-equivalent loop with a KV cache)
  onnxruntime          fp32, fp16, q8, q4 graphs of the pipeline layout (`export/ort_generate.time_caption`)
  transformers.js      q8 and q4 in Node (`js/bench.mjs`)
  Chromium WASM        q8, q4 and vision=q8,decoder=q4 in real Chromium on WebAssembly with 1 thread and with every
                       core (`web-demo/bench.html` through distilvit.runtimes.browser); WebGPU is left out: this
                       machine's adapter is software, so its times mean nothing (its correctness: verify parity)
split into vision encoder, prefill and per-token decode where the runtime allows, with the resident memory each
runtime adds while loading and running the model (each in a fresh process).
Each runtime is timed by `bench.runners`, against the floor `bench.floor` measures on the same machine; a stage
measured below its floor means the floor is wrong, and the report says so. The models come from `bench.variants`. This module measures and reports; it knows nothing about training.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from distilvit.bench.floor import measure_floor, model_flops, stage_floors
from distilvit.bench.runners import (MIX, bench_chromium, bench_onnxruntime, bench_photo_sizes, bench_pytorch_model,
                                     bench_transformers_js, isolated)
from distilvit.bench.variants import bench_peer, bench_variants, prepare_realsize
from distilvit.export import constants as C

log = logging.getLogger(__name__)


def run_bench(workdir: Path, tokens: int = 20, repeats: int = 3, ort_dtypes=("fp32", "fp16", "q8", "q4"),
              js_dtypes=("q8", "q4"), browser_dtypes=("q8", "q4", "mix"), browser_threads=None,
              fewer_tokens: bool = True, full_vocab: bool = True, peer: bool = True, photo_sizes: bool = True) -> dict:
    """Build and export the real-size model under `workdir` (reused when present and made by this exporter code)
    and measure every runtime. `browser_dtypes` run in Chromium WebAssembly with each of `browser_threads`
    (default: 1 and every core); an empty tuple leaves the browser out. `fewer_tokens` also measures q8 with a
    64-token vision tower and `full_vocab` without a caption vocabulary (`bench_variants`; in the browser with every
    core when the browser runs); `peer` the peer architecture (`bench_peer`); `photo_sizes` q8 in the browser with
    every core on a 224 px image, a 1 MP and a 12 MP photo (`bench_photo_sizes`)."""
    from PIL import Image

    workdir = Path(workdir)
    merged, export_dir = workdir / "realsize-merged", workdir / "realsize-export"
    prepare_realsize(merged, export_dir, "fp16,q8,q4")
    if browser_dtypes:
        from distilvit.runtimes.browser import find_chromium

        find_chromium()  # before minutes of other runtimes: a missing Chromium is one clear error now
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((224, 224, 3)) * 255).astype("uint8"))
    image_path = workdir / "bench-image.png"
    image.save(image_path)
    from distilvit.pixels import decode_rgba, raw_tensor

    pixels = raw_tensor(decode_rgba(image_path)).numpy()  # [1, 4, 224, 224]: what the encoder graph takes
    model = machine_and_model(merged, export_dir, ort_dtypes)  # the machine's rates first, as before the runtimes
    threads = browser_threads or sorted({1, os.cpu_count() or 1})
    results = runtime_rows(merged, export_dir, pixels, image_path, tokens, repeats, ort_dtypes, js_dtypes,
                           browser_dtypes, threads)
    variants = []
    names = [n for n, on in (("fewer_tokens", fewer_tokens), ("full_vocab", full_vocab)) if on]
    if names:
        variants += bench_variants(workdir, names, pixels, image_path, tokens, repeats, max(threads),
                                   bool(browser_dtypes), export_dir)
    if peer:
        variants.append(bench_peer(workdir, image_path, tokens, repeats, threads, bool(browser_dtypes)))
    photos = bench_photo_sizes(export_dir, workdir / "photos", tokens, repeats, max(threads)) \
        if photo_sizes and browser_dtypes else []
    return {"tokens": tokens, "repeats": repeats, "results": results, "variants": variants, "photo_sizes": photos,
            **model}


def runtime_rows(merged: Path, export_dir: Path, pixels: np.ndarray, image_path: Path, tokens: int, repeats: int,
                 ort_dtypes, js_dtypes, browser_dtypes, threads: list[int]) -> list[dict]:
    """One row per runtime and dtype: PyTorch eager fp32 and onnxruntime (each in a fresh process), transformers.js
    in Node, Chromium WebAssembly with each of `threads`."""
    results = []
    log.info("PyTorch eager fp32")
    results.append({"runtime": "PyTorch eager", "dtype": "fp32",
                    **isolated(bench_pytorch_model, merged, pixels, tokens, repeats)})
    for dtype in ort_dtypes:
        log.info("onnxruntime %s", dtype)
        results.append({"runtime": "onnxruntime", "dtype": dtype,
                        **isolated(bench_onnxruntime, export_dir, dtype, pixels, tokens, repeats)})
    for dtype in js_dtypes:
        log.info("transformers.js %s", dtype)
        results.append({"runtime": "transformers.js", "dtype": dtype,
                        **bench_transformers_js(export_dir, dtype, image_path, tokens, repeats)})
    for dtype in browser_dtypes:
        for n in threads:
            log.info("Chromium WASM %s, %d thread(s)", dtype, n)
            label = "vision=q8,decoder=q4" if dtype == "mix" else dtype
            results.append({"runtime": f"Chromium WASM, {n} thread{'s' if n > 1 else ''}", "dtype": label,
                            **bench_chromium(export_dir, MIX if dtype == "mix" else dtype, image_path, tokens, repeats, n)})
    return results


def machine_and_model(merged: Path, export_dir: Path, ort_dtypes) -> dict:
    """What the rows are read against: this machine's rates, the model's FLOPs and shape, the files' sizes, the
    floors per stage, and the provenance stamp."""
    from transformers import AutoConfig

    from distilvit.modeling import caption_vocab
    from distilvit.provenance import stamp

    floor = measure_floor()
    config = AutoConfig.from_pretrained(merged)
    flops = model_flops(config)
    sizes = {}
    for dtype in ("fp32",) + tuple(ort_dtypes):
        sizes[dtype] = {g: (export_dir / C.onnx_file(g, dtype)).stat().st_size for g in C.GRAPHS[C.Layout.PIPELINE]}
    floors = stage_floors(flops, floor, {d: decoder_bytes(export_dir, d) / (floor["memory_bandwidth_gbs"] * 1e9) * 1e3
                                         for d in sizes})
    return {"machine": floor, "flops": flops, "floor": floors, "image_tokens": config.image_seq_length,
            "image_size": config.vision_config.image_size, "caption_vocab_tokens": len(caption_vocab.of(config) or []),
            "patch_size": config.vision_config.patch_size, "sizes_bytes": sizes, **stamp()}


def decoder_bytes(export_dir: Path, dtype: str) -> int:
    """Bytes of decoder weights a decoded token reads: the dtype's file, or fp32's for a dtype whose weights the
    session holds as float32 (floor.FLOAT32_IN_MEMORY: q8)."""
    from distilvit.bench.floor import FLOAT32_IN_MEMORY

    path = Path(export_dir) / C.onnx_file("decoder_model_merged", "fp32" if dtype in FLOAT32_IN_MEMORY else dtype)
    return path.stat().st_size
