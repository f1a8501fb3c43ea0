"""`distilvit-web bench`: caption latency of the real-size architecture in every runtime, against the machine's floor.

The model is the real preset's shape (SigLIP-base/16 + SmolLM-135M) with random weights, built from configs and
exported here (nothing downloaded). One 224 px image, exactly `tokens` generated tokens (EOS ignored):
  PyTorch eager fp32   the baseline a user has without this toolkit (`generate`-equivalent loop with a KV cache)
  onnxruntime          fp32, fp16, q8, q4 graphs of the pipeline layout (`export/ort_generate.time_caption`)
  transformers.js      q8 and q4 in Node (`js/bench.mjs`)
  Chromium WASM        q8, q4 and vision=q8,decoder=q4 in real Chromium on WebAssembly with 1 thread and with every
                       core (`web-demo/bench.html` through distilvit.browser_runtime); WebGPU is left out: this
                       machine's adapter is software, so its times mean nothing (its correctness: verify parity)
split into vision encoder, prefill and per-token decode where the runtime allows, with the resident memory each
runtime adds while loading and running the model (each in a fresh process).
The floor, measured on the same machine with the threads the runtimes use: per token >= decoder bytes / memory
bandwidth (a multi-threaded copy); encoder and prefill >= their FLOPs / the GEMM rate of the dtype's arithmetic:
the int8 GEMM rate (onnxruntime MatMulInteger, the kernel q8/int8/uint8 graphs run) for those dtypes, the fp32
GEMM rate for the rest (fp16 and 4-bit weights are computed in fp32 on a CPU). A stage measured below its floor
means the floor is wrong, and the report says so. This module measures and reports; it knows nothing about training.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from distilvit.export import constants as C
from distilvit.pixels import PixelPreparer
from distilvit.quantize.modes import Q8_RECIPE

log = logging.getLogger(__name__)


class PeakMemory:
    """Peak resident memory of this process (or another pid) while the block runs, in MiB above the start.

    Where Linux lets us reset the kernel's high-water mark (writing 5 to /proc/PID/clear_refs), the peak is that mark
    (VmHWM) read at exit: exact, whatever the scheduler does. Elsewhere, and in addition, a thread samples the resident
    size every 5 ms and once more at exit, so memory still held at exit is always counted; a short spike between two
    samples is missed there. A PeakMemory nested inside another resets the mark, so the outer one then counts the
    time before the inner one from its samples only.
    """

    def __init__(self, pid: int | None = None, kernel_mark: bool = True):
        self.process = psutil.Process(pid or os.getpid())
        self._use_kernel_mark = kernel_mark
        self.peak = 0
        self._stop = threading.Event()
        self._proc = Path(f"/proc/{self.process.pid}")

    def __enter__(self):
        self._kernel_mark = self._use_kernel_mark and self._reset_kernel_mark()
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self.samples = 0  # taken by the thread so far
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _reset_kernel_mark(self) -> bool:
        try:
            (self._proc / "clear_refs").write_text("5")
            return self._read_kernel_mark() is not None
        except OSError:  # not Linux, or not allowed for this pid: samples only
            return False

    def _read_kernel_mark(self) -> int | None:
        try:
            for line in (self._proc / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.samples += 1
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        if self._kernel_mark:
            self.peak = max(self.peak, self._read_kernel_mark() or 0)

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


# dtypes that run MatMulInteger (dynamic quantization); every other dtype computes in float (q8 too when its recipe is
# weight-only: MatMulNBits dequantizes the 8-bit weights and multiplies in fp32)
INT8_DTYPES = ("int8", "uint8") + (("q8",) if Q8_RECIPE.startswith("dynamic") else ())
def gemm_shape() -> tuple[int, int, int]:
    """M, K, N of the real vision encoder's MLP up-projection (patches x hidden x intermediate: 196 x 768 x 3072),
    the bulk of the encoder's and the prefill's arithmetic, from the real config files (distilvit.realsize)."""
    from distilvit.realsize import vision_config

    v = vision_config()
    return (v.image_size // v.patch_size) ** 2, v.hidden_size, v.intermediate_size


def _ort_gemm_rate(dtype: str, repeats: int, threads: int) -> float:
    """onnxruntime's rate (G multiply-adds x 2 per second) on `gemm_shape()`, with constant weights as in an exported
    graph: dtype "int8" runs a uint8 x int8 MatMulInteger (the arithmetic of a q8 graph), "fp32" a float MatMul."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = gemm_shape()
    rng = np.random.default_rng(0)
    if dtype == "int8":
        op, a_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
        b, a = rng.integers(-127, 127, (k, n), dtype=np.int8), rng.integers(0, 255, (m, k), dtype=np.uint8)
    elif dtype == "fp32":
        op, a_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
        b, a = rng.standard_normal((k, n), dtype=np.float32), rng.standard_normal((m, k), dtype=np.float32)
    else:
        raise ValueError(f"no GEMM rate for dtype {dtype!r}; measured: int8, fp32")
    graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["Y"])], f"{dtype}-gemm",
                              [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, {"A": a})
    best = min(_timed(lambda: session.run(None, {"A": a})) for _ in range(max(repeats, 3) * 4))
    return 2 * m * k * n / best / 1e9


def measure_floor(repeats: int = 5) -> dict:
    """This machine's rates with the threads the runtimes use (one per core, onnxruntime's default). Each is the
    best of the ways measured, since a floor must not sit above what some runtime reaches: memory bandwidth (GB/s;
    a large copy counted read + write, and a large sum, read only: what streaming weights does), fp32 matmul
    GFLOP/s (torch 1024^3 and onnxruntime's MatMul on `gemm_shape()`) and int8 GEMM GOP/s (onnxruntime)."""
    threads = os.cpu_count() or 1
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB
        dst = torch.empty_like(src)
        dst.copy_(src)
        copy = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
        src.sum()
        read = min(_timed(lambda: src.sum()) for _ in range(repeats))
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        torch.mm(a, b)
        mm = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    finally:
        torch.set_num_threads(previous)
    nbytes = src.numel() * 4
    bandwidth = {"copy_read_write": 2 * nbytes / copy / 1e9, "sum_read": nbytes / read / 1e9}
    matmul = {"torch_mm_1024": 2 * 1024**3 / mm / 1e9, "onnxruntime_matmul": _ort_gemm_rate("fp32", repeats, threads)}
    return {"memory_bandwidth_gbs": max(bandwidth.values()), "memory_bandwidth_by": bandwidth,
            "matmul_gflops": max(matmul.values()), "matmul_gflops_by": matmul,
            "int8_gemm_gops": _ort_gemm_rate("int8", repeats, threads), "int8_gemm_shape": list(gemm_shape()),
            "threads": threads}


def stage_floors(flops: dict, machine: dict, per_token_ms: dict[str, float]) -> dict:
    """Floors in ms per stage and dtype: encoder and prefill from the dtype's GEMM rate, per token from bytes."""
    def rate(dtype: str) -> float:
        return (machine["int8_gemm_gops"] if dtype in INT8_DTYPES else machine["matmul_gflops"]) * 1e9

    dtypes = sorted(set(per_token_ms) | {"fp32"})
    return {"encoder_ms": {d: flops["encoder"] / rate(d) * 1e3 for d in dtypes},
            "prefill_ms": {d: flops["prefill"] / rate(d) * 1e3 for d in dtypes},
            "per_token_ms": dict(per_token_ms)}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def model_flops(config) -> dict:
    """Multiply-add FLOPs of the vision encoder and of the prefill (prefix + BOS, last-position logits)."""
    v, t = config.vision_config, config.text_config
    n = config.image_seq_length
    vision_linear = v.num_hidden_layers * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size)
    vision = 2 * n * vision_linear + v.num_hidden_layers * 4 * n * n * v.hidden_size
    projector = 2 * n * (v.hidden_size * t.hidden_size + t.hidden_size**2)
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    kv = t.num_key_value_heads * head_dim
    layer = 2 * t.hidden_size**2 + 2 * t.hidden_size * kv + 3 * t.hidden_size * t.intermediate_size
    p = n + 1
    prefill = 2 * p * t.num_hidden_layers * layer + t.num_hidden_layers * 4 * p * p * t.hidden_size + 2 * t.hidden_size * t.vocab_size
    return {"encoder": vision + projector, "prefill": prefill}


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
    from distilvit.prompt import prefix_ids

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
    from distilvit import node_runtime

    out = node_runtime.run_script("bench.mjs", {"model_dir": str(Path(export_dir).resolve()), "dtype": dtype,
                                                "image": str(Path(image).resolve()), "tokens": tokens, "repeats": repeats})
    return {**median_run(out["caption_ms"], out["first_token_ms"], tokens), "peak_mib": out["peak_mib"]}


MIX = {"encoder_model": "q8", "decoder_model_merged": "q4"}  # vision=q8,decoder=q4: the smallest fast-encoder mix


def bench_chromium(export_dir: Path, dtype, image: Path, tokens: int, repeats: int, threads: int) -> dict:
    """Stock transformers.js in Chromium WebAssembly with `threads` threads (distilvit.browser_runtime)."""
    from distilvit.browser_runtime import run_bench as run_in_chromium

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

    from distilvit.synthetic import make_synthetic_splits

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


def decoder_bytes(export_dir: Path, dtype: str) -> int:
    path = Path(export_dir) / C.onnx_file("decoder_model_merged", dtype)
    return path.stat().st_size


def needs_export(export_dir: Path, key: str = "exporter_digest", digest: str | None = None) -> bool:
    """True when `export_dir` holds no finished export, or one made by different code: its export_config.json's
    `key` differs from `digest` (default: this checkout's exporter_digest). A benchmark must time what the code
    makes now."""
    if digest is None:
        from distilvit.export.exporter import exporter_digest

        digest = exporter_digest()
    config = Path(export_dir) / C.EXPORT_CONFIG
    if not config.is_file():
        return True
    if json.loads(config.read_text()).get(key) != digest:
        log.info("%s was exported by other code: exporting again", export_dir)
        return True
    return False


def prepare_realsize(merged: Path, export_dir: Path, quantize: str, vision: dict | None = None,
                     caption_vocab_tokens: int | None = None) -> None:
    """Build the real-size model in `merged` and export it to `export_dir`, each reused when already there (the
    merged model when its caption vocabulary has `caption_vocab_tokens` tokens, default
    `realsize.CAPTION_VOCAB_TOKENS`, 0 for the full vocabulary; the export when this exporter code made it)."""
    import shutil

    from distilvit import caption_vocab
    from distilvit.export.exporter import export_model
    from distilvit.realsize import CAPTION_VOCAB_TOKENS, save_realsize_merged

    tokens = CAPTION_VOCAB_TOKENS if caption_vocab_tokens is None else caption_vocab_tokens
    config = merged / "config.json"
    if config.is_file() and len(caption_vocab.of(json.loads(config.read_text())) or []) != tokens:
        log.info("%s has another caption vocabulary than %d tokens: building it again", merged, tokens)
        shutil.rmtree(merged)
        shutil.rmtree(export_dir, ignore_errors=True)
    if not config.is_file():
        log.info("building the real-size architecture with random weights in %s", merged)
        save_realsize_merged(merged, vision=vision, caption_vocab_tokens=tokens or None)
    if needs_export(export_dir):
        log.info("exporting it (fp32, %s) to %s", quantize, export_dir)
        export_model(merged, export_dir, quantize=quantize, agreement_images=0, overwrite=True)


def interleaved_chromium(exports: dict[str, Path], image: Path, tokens: int, repeats: int, threads: int,
                         rounds: int = 3, timer=None) -> dict[str, dict]:
    """Chromium timings of several exports taken in turns (A, B, A, B, ...), each export's median round by caption
    time: on a shared machine the speed drifts over minutes, and exports timed one after another would carry it.
    `timer(export_dir, dtype, image, tokens, repeats, threads)` times one round (default: `bench_chromium`)."""
    timer = timer or bench_chromium
    runs: dict[str, list] = {name: [] for name in exports}
    for round_ in range(rounds):
        for name, export_dir in exports.items():
            log.info("Chromium round %d/%d: %s", round_ + 1, rounds, name)
            runs[name].append(timer(export_dir, "q8", image, tokens, repeats, threads))
    return {name: sorted(rows, key=lambda r: r["total_ms"])[(len(rows) - 1) // 2] for name, rows in runs.items()}


def _variant_models() -> dict[str, dict]:
    """The real-size variants timed beside ours: folder stem, vision-tower fields, caption vocabulary size, name and
    description (formatted with the variant's config)."""
    from distilvit.realsize import CAPTION_VOCAB_TOKENS, FEWER_TOKENS

    return {
        "fewer_tokens": {"stem": "realsize-64", "vision": FEWER_TOKENS, "vocab": CAPTION_VOCAB_TOKENS,
                         "name": "{tokens} image tokens",
                         "description": "our model with a {size} px vision tower in {patch} px patches (the shape of "
                                        "google/siglip2-base-patch32-256: `train --preset smollm-135m-fast`)"},
        "full_vocab": {"stem": "realsize-fullvocab", "vision": None, "vocab": 0, "name": "full vocabulary",
                       "description": "our model without a caption vocabulary (`train --full-vocab`): the output head "
                                      "computes all {vocab} tokens at every step"},
    }


def bench_variants(workdir: Path, names: list[str], pixels: np.ndarray, image: Path, tokens: int, repeats: int,
                   threads: int, browser: bool, default_export: Path) -> list[dict]:
    """The real-size variants `names` (of `_variant_models`), q8 in onnxruntime and, when `browser`, in Chromium
    WebAssembly with `threads` threads, all in turns with `default_export` (its rows are each variant's `paired`
    rows: ours, timed in the same minutes)."""
    from transformers import AutoConfig

    models, exports, variants = _variant_models(), {}, {}
    for name in names:
        spec = models[name]
        merged, export_dir = workdir / f"{spec['stem']}-merged", workdir / f"{spec['stem']}-export"
        prepare_realsize(merged, export_dir, "q8", vision=spec["vision"], caption_vocab_tokens=spec["vocab"])
        config = AutoConfig.from_pretrained(merged)
        v = config.vision_config
        fields = {"tokens": config.image_seq_length, "size": v.image_size, "patch": v.patch_size,
                  "vocab": f"{config.text_config.vocab_size:,}"}
        exports[name] = export_dir
        variants[name] = {
            "name": spec["name"].format(**fields), "image_tokens": config.image_seq_length,
            "description": spec["description"].format(**fields),
            "flops": model_flops(config), "paired": [],
            "results": [{"runtime": "onnxruntime", "dtype": "q8",
                         **isolated(bench_onnxruntime, export_dir, "q8", pixels, tokens, repeats)}]}
    if browser and exports:
        log.info("Chromium WASM q8, %d thread(s): ours, %s, in turns", threads, ", ".join(v["name"] for v in variants.values()))
        runtime = f"Chromium WASM, {threads} thread{'s' if threads > 1 else ''}"
        timed = interleaved_chromium({"ours": default_export, **exports}, image, tokens, repeats, threads)
        for name, variant in variants.items():
            variant["results"].append({"runtime": runtime, "dtype": "q8", **timed[name]})
            variant["paired"].append({"runtime": runtime, "dtype": "q8", **timed["ours"]})
            variant["description"] += "; in Chromium it and ours were timed in turns, 3 rounds each, the median round shown"
    return list(variants.values())


def bench_peer(workdir: Path, image: Path, tokens: int, repeats: int, threads: list[int], browser: bool) -> dict:
    """The peer (distilvit/peer.py: ViT-base/16 + GPT-2, transformers.js' default image-to-text architecture), q8,
    in stock transformers.js in Node and, when `browser`, in Chromium WebAssembly with each of `threads`."""
    import shutil

    from distilvit import peer

    export_dir = workdir / "peer-export"
    if needs_export(export_dir, "peer_digest", peer.source_digest()):
        log.info("building and exporting the peer (%s, random weights) to %s", peer.NAME, export_dir)
        shutil.rmtree(export_dir, ignore_errors=True)
        peer.write_peer(export_dir)
    log.info("peer: transformers.js q8")
    rows = [{"runtime": "transformers.js", "dtype": "q8", **bench_transformers_js(export_dir, "q8", image, tokens, repeats)}]
    for n in threads if browser else ():
        log.info("peer: Chromium WASM q8, %d thread(s)", n)
        rows.append({"runtime": f"Chromium WASM, {n} thread{'s' if n > 1 else ''}", "dtype": "q8",
                     **bench_chromium(export_dir, "q8", image, tokens, repeats, n)})
    size = sum((export_dir / C.onnx_file(g, "q8")).stat().st_size for g in peer.GRAPHS)
    config = json.loads((export_dir / "config.json").read_text())
    return {"name": peer.NAME, "image_tokens": peer.image_tokens(config),
            "description": "the architecture of nlpconnect/vit-gpt2-image-captioning (Xenova/vit-gpt2-image-captioning, "
                           "transformers.js' default image-to-text model), random weights, exported by "
                           f"distilvit/peer.py, q8 files {size / 1e6:.0f} MB. Its decoder computes every layer's "
                           "cross-attention keys and values from the image tokens again at each step "
                           f"({peer.cross_kv_flops(config) / 1e9:.1f} GFLOP per generated token): transformers.js' "
                           "cache for this model holds self-attention only",
            "flops": None, "results": rows}


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
        from distilvit.browser_runtime import find_chromium

        find_chromium()  # before minutes of other runtimes: a missing Chromium is one clear error now
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((224, 224, 3)) * 255).astype("uint8"))
    image_path = workdir / "bench-image.png"
    image.save(image_path)
    from transformers import AutoConfig

    from distilvit import caption_vocab
    from distilvit.pixels import decode_rgba, raw_tensor

    pixels = raw_tensor(decode_rgba(image_path)).numpy()  # [1, 4, 224, 224]: what the encoder graph takes
    floor = measure_floor()
    config = AutoConfig.from_pretrained(merged)
    flops = model_flops(config)
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
    threads = browser_threads or sorted({1, os.cpu_count() or 1})
    for dtype in browser_dtypes:
        for n in threads:
            log.info("Chromium WASM %s, %d thread(s)", dtype, n)
            label = "vision=q8,decoder=q4" if dtype == "mix" else dtype
            results.append({"runtime": f"Chromium WASM, {n} thread{'s' if n > 1 else ''}", "dtype": label,
                            **bench_chromium(export_dir, MIX if dtype == "mix" else dtype, image_path, tokens, repeats, n)})
    variants = []
    names = [n for n, on in (("fewer_tokens", fewer_tokens), ("full_vocab", full_vocab)) if on]
    if names:
        variants += bench_variants(workdir, names, pixels, image_path, tokens, repeats, max(threads),
                                   bool(browser_dtypes), export_dir)
    if peer:
        variants.append(bench_peer(workdir, image_path, tokens, repeats, threads, bool(browser_dtypes)))
    photos = bench_photo_sizes(export_dir, workdir / "photos", tokens, repeats, max(threads)) \
        if photo_sizes and browser_dtypes else []
    sizes = {}
    for dtype in ("fp32",) + tuple(ort_dtypes):
        sizes[dtype] = {g: (export_dir / C.onnx_file(g, dtype)).stat().st_size for g in C.GRAPHS[C.Layout.PIPELINE]}
    floors = stage_floors(flops, floor, {d: decoder_bytes(export_dir, d) / (floor["memory_bandwidth_gbs"] * 1e9) * 1e3
                                         for d in sizes})
    from distilvit.provenance import stamp

    return {"tokens": tokens, "repeats": repeats, "machine": floor, "flops": flops, "floor": floors,
            "image_tokens": config.image_seq_length, "image_size": config.vision_config.image_size,
            "caption_vocab_tokens": len(caption_vocab.of(config) or []),
            "patch_size": config.vision_config.patch_size,
            "sizes_bytes": sizes, "results": results, "variants": variants, "photo_sizes": photos, **stamp()}
