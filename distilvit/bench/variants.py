"""The models `bench` builds and times beside the default: the real-size architecture with random weights (built
from configs and exported, reused while this exporter code made it), its variants (64 image tokens, the full
vocabulary) and the peer architecture transformers.js runs today (`bench.peer`), timed in turns in Chromium."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from distilvit.bench.floor import model_flops
from distilvit.bench.runners import bench_chromium, bench_onnxruntime, bench_transformers_js, isolated
from distilvit.export import constants as C

log = logging.getLogger(__name__)


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

    from distilvit.modeling import caption_vocab
    from distilvit.export.exporter import export_model
    from distilvit.modeling.realsize import CAPTION_VOCAB_TOKENS, save_realsize_merged

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
    from distilvit.modeling.realsize import CAPTION_VOCAB_TOKENS, FEWER_TOKENS

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
    """The peer (distilvit/bench/peer.py: ViT-base/16 + GPT-2, transformers.js' default image-to-text architecture), q8,
    in stock transformers.js in Node and, when `browser`, in Chromium WebAssembly with each of `threads`."""
    import shutil

    from distilvit.bench import peer

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
                           f"distilvit/bench/peer.py, q8 files {size / 1e6:.0f} MB. Its decoder computes every layer's "
                           "cross-attention keys and values from the image tokens again at each step "
                           f"({peer.cross_kv_flops(config) / 1e9:.1f} GFLOP per generated token): transformers.js' "
                           "cache for this model holds self-attention only",
            "flops": None, "results": rows}
