"""One timed caption run per runtime for `bench`: PyTorch eager, onnxruntime, transformers.js in Node, Chromium
WebAssembly (and photographs of several sizes there), each returning the stage times (ms) and the memory it added.
It knows nothing about which export it is given or what the timings are compared with (`bench.floor`)."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from distilvit.pixels import PixelPreparer
from distilvit.runtimes.memory import PeakMemory

log = logging.getLogger(__name__)


def isolated(fn, *args):
    """Run `fn(*args)` in a fresh process, so its peak memory is its own and not what earlier runtimes left."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def bench_pytorch_model(model_dir: Path, pixel_values: np.ndarray, tokens: int, repeats: int) -> dict:
    """Load the merged model and time it (median of `repeats` after a warm-up); peak memory includes the load."""
    from transformers import AutoModelForImageTextToText

    with PeakMemory() as memory:
        model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
        pixels = torch.from_numpy(pixel_values)  # raw [1, C, H, W]: prepared inside the timed encoder stage
        prepare = PixelPreparer.from_model_dir(model_dir)
        bench_pytorch(model, pixels, tokens, prepare)
        runs = [bench_pytorch(model, pixels, tokens, prepare) for _ in range(repeats)]
    return {**_median(runs), "peak_mib": memory.mib}


def bench_pytorch(model, pixel_values: torch.Tensor, tokens: int, prepare: PixelPreparer) -> dict:
    """Eager fp32 PyTorch: pixel preparation + vision features (as the encoder graph does), prefill with a cache,
    then one token at a time."""
    from transformers import DynamicCache

    from distilvit.export.graphs import vision_features

    cfg = model.config
    n = cfg.image_seq_length
    from distilvit.modeling.prompt import prefix_ids

    ids = torch.tensor([prefix_ids(cfg.image_token_index, model.generation_config.bos_token_id, n)])
    with torch.no_grad(), PeakMemory() as memory:
        t0 = time.perf_counter()
        features = vision_features(model, prepare.prepare_raw(pixel_values))
        t1 = time.perf_counter()
        embeds = model.get_input_embeddings()(ids)
        embeds[:, :n] = features
        cache = DynamicCache()
        out = model.model.language_model(inputs_embeds=embeds, cache=cache, use_cache=True)
        nxt = model.lm_head(out.last_hidden_state[:, -1:]).argmax(-1)
        t2 = time.perf_counter()
        for _ in range(tokens - 1):
            out = model.model.language_model(input_ids=nxt, cache=out.cache, use_cache=True)
            nxt = model.lm_head(out.last_hidden_state[:, -1:]).argmax(-1)
        t3 = time.perf_counter()
    return {"encoder_ms": (t1 - t0) * 1e3, "prefill_ms": (t2 - t1) * 1e3,
            "per_token_ms": (t3 - t2) * 1e3 / max(tokens - 1, 1), "total_ms": (t3 - t0) * 1e3, "peak_mib": memory.mib}


def _median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs if r.get(k) is not None) for k in runs[0] if runs[0].get(k) is not None}


def bench_onnxruntime(export_dir: Path, dtype: str, pixel_values: np.ndarray, tokens: int, repeats: int) -> dict:
    from distilvit.export.ort_generate import OrtCaptioner, time_caption

    with PeakMemory() as memory:
        captioner = OrtCaptioner(export_dir, dtype)
        time_caption(captioner, pixel_values, tokens)  # warm-up
        runs = [time_caption(captioner, pixel_values, tokens) for _ in range(repeats)]
    return {**_median(runs), "peak_mib": memory.mib}


def median_run(caption_ms: list[float], first_token_ms: list[float], tokens: int) -> dict:
    """The run with the median caption time, whole (its own first token): medians taken figure by figure can put
    the first token after the whole caption. The per-token time is the rest of that caption over `tokens` - 1."""
    total, first = sorted(zip(caption_ms, first_token_ms))[(len(caption_ms) - 1) // 2]
    return {"first_token_ms": first, "per_token_ms": (total - first) / max(tokens - 1, 1), "total_ms": total}


def bench_transformers_js(export_dir: Path, dtype: str, image: Path, tokens: int, repeats: int) -> dict:
    from distilvit.runtimes import node as node_runtime

    out = node_runtime.run_script("bench.mjs", {"model_dir": str(Path(export_dir).resolve()), "dtype": dtype,
                                                "image": str(Path(image).resolve()), "tokens": tokens, "repeats": repeats})
    return {**median_run(out["caption_ms"], out["first_token_ms"], tokens), "peak_mib": out["peak_mib"]}


MIX = {"encoder_model": "q8", "decoder_model_merged": "q4"}  # vision=q8,decoder=q4: the smallest fast-encoder mix


def bench_chromium(export_dir: Path, dtype, image: Path, tokens: int, repeats: int, threads: int) -> dict:
    """Stock transformers.js in Chromium WebAssembly with `threads` threads (distilvit.runtimes.browser)."""
    from distilvit.runtimes.browser import run_bench as run_in_chromium

    out = run_in_chromium(export_dir, dtype, image, tokens, repeats, threads)
    return {**median_run(out["caption_ms"], out["first_token_ms"], tokens),
            "load_ms": out["load_ms"], "first_caption_ms": out["warmup_ms"], "threads": threads,
            "page_peak_mib": out.get("page_peak_mib")}


# The photographs `bench_photo_sizes` captions: name, width, height, EXIF orientation.
PHOTO_SIZES = (("224 px", 224, 224, 1), ("1 MP", 1152, 864, 1), ("12 MP", 4032, 3024, 1),
               ("12 MP, EXIF-rotated", 4032, 3024, 6))


def write_photos(folder: Path) -> dict[str, Path]:
    """Photo-like JPEGs (quality 90) in the sizes of PHOTO_SIZES: a synthetic scene (shapes over a gradient,
    upscaled with bicubic, plus sensor-like noise), so the decoder has a photograph's work; the rotated one is
    stored sideways under EXIF orientation 6, as a phone in portrait writes it."""
    from PIL import Image

    from distilvit.data.synthetic import make_synthetic_splits

    folder.mkdir(parents=True, exist_ok=True)
    scene = make_synthetic_splits(seed=0, train_size=1, validation_size=1, test_size=1)["test"][0]["image"].convert("RGB")
    rng = np.random.default_rng(0)
    out = {}
    for name, width, height, orientation in PHOTO_SIZES:
        image = scene.resize((width, height), Image.Resampling.BICUBIC)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, (height, width, 3), dtype=np.int16)
        image = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
        exif = Image.Exif()
        exif[0x0112] = orientation
        if orientation == 6:
            image = image.transpose(Image.Transpose.ROTATE_90)
        path = folder / f"photo-{width}x{height}-orientation-{orientation}.jpg"
        image.save(path, quality=90, exif=exif.tobytes())
        out[name] = path
    return out


def bench_photo_sizes(export_dir: Path, folder: Path, tokens: int, repeats: int, threads: int,
                      dtype: str = "q8") -> list[dict]:
    """Chromium WASM caption time (decoding included, as in the demo: web-demo/decode.js) and the page's peak
    memory for each of PHOTO_SIZES, with `threads` threads; `vs_224` is each caption's time over the 224 px one."""
    rows = []
    for name, path in write_photos(folder).items():
        log.info("Chromium WASM %s, %s photo", dtype, name)
        rows.append({"photo": name, "file_mb": path.stat().st_size / 1e6,
                     **bench_chromium(export_dir, dtype, path, tokens, repeats, threads)})
    base = rows[0]["total_ms"]
    for row in rows:
        row["vs_224"] = row["total_ms"] / base
    return rows
