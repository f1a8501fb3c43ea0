"""`distilvit-web bench quality`: which quantization recipe keeps a trained model's captions, and what each costs in
the browser.

The model is exported once in fp32; each candidate (CANDIDATES: fp16, the 8-bit recipes of quantize/modes.RECIPES,
4-bit) converts its graphs into a folder of its own, where the candidate's files take the `q8` slot
(`*_quantized.onnx`), so onnxruntime and stock transformers.js load each the same way. Every candidate captions the
same images with onnxruntime (greedy) and is compared with fp32: captions equal (agreement), CIDEr-D against the
images' reference captions where they have them, and CIDEr-D against fp32's captions. With `browser`, each is timed
in Chromium WebAssembly (stock transformers.js, every core), in turns, so a shared machine's drift spreads evenly.

What it does not know: how the recipes fare on other models, or on a CPU with other int8 kernels: the report names
this CPU's instruction sets and int8 kernel path (distilvit.provenance.cpu); the dynamic recipes' captions depend on
them, the weight-only ones' do not (they compute in float).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from distilvit.export import constants as C

log = logging.getLogger(__name__)

SLOT = "q8"  # the dtype name every candidate's files are loaded under
NO_VNNI = "@no-vnni"  # a recipe's name + this: its graphs computed as on x86 without VNNI (emulated, never timed)


def candidates() -> dict[str, tuple]:
    """name -> (converter of one fp32 graph, what it is)."""
    from distilvit.quantize import modes

    out = {"fp32": (None, "the reference (its own files in the slot)"),
           "fp16": (modes.to_fp16, "float16 weights and activations (the `fp16` dtype)")}
    for name, fn in modes.RECIPES.items():
        out[name] = (fn, " ".join((fn.__doc__ or "").split()).split(". ")[0].rstrip(".") + ".")
    out["q4"] = (modes.to_q4, "4-bit MatMulNBits, block 32, float activations (the `q4` dtype)")
    for name, fn in modes.RECIPES.items():
        if name.startswith("dynamic-"):
            out[name + NO_VNNI] = (_on_no_vnni(fn), f"{name} as x86 CPUs without VNNI compute it (AVX2 u8 x s8 "
                                   "multiply-adds: pairs of products saturated to 16 bits), emulated in onnxruntime "
                                   "(quantize/kernel_paths.py); not timed")
    return out


def _on_no_vnni(recipe):
    from distilvit.quantize.kernel_paths import emulate_u8s8_without_vnni

    return lambda model: emulate_u8s8_without_vnni(recipe(model))


def _graphs(export_dir: Path) -> list[str]:
    return json.loads((export_dir / C.EXPORT_CONFIG).read_text())["graphs"]


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def build_candidate(fp32_dir: Path, folder: Path, name: str) -> dict[str, int]:
    """`folder`: fp32_dir's files (hard links: the demo server serves no symbolic links), plus the candidate's graphs
    as the `q8` files; returns their sizes."""
    converter = candidates()[name][0]
    import onnx

    from distilvit.export.onnx_export import save_onnx

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in fp32_dir.rglob("*"):
        if path.is_file():
            target = folder / path.relative_to(fp32_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            _link(path, target)
    sizes = {}
    for graph in _graphs(fp32_dir):
        source, target = fp32_dir / C.onnx_file(graph, "fp32"), folder / C.onnx_file(graph, SLOT)
        if converter is None:
            _link(source, target)
        else:
            log.info("  %s: converting %s", name, graph)
            save_onnx(converter(onnx.load_model(str(source))), target)
        sizes[graph] = sum(p.stat().st_size for p in target.parent.glob(target.name + "*"))
    return sizes


def score(tokens: list[list[int]], captions: list[str], fp32_tokens: list[list[int]], fp32_captions: list[str],
          references: list[list[str]] | None) -> dict:
    from distilvit.metrics import caption_scores

    same = sum(a == b for a, b in zip(tokens, fp32_tokens))
    return {"agreement": same / len(tokens), "equal": same, "images": len(tokens),
            "cider_vs_references": caption_scores(captions, references)["cider"] if references else None,
            "cider_vs_fp32": caption_scores(captions, [[c] for c in fp32_captions])["cider"]}


def run_bench_quality(model_dir: Path, workdir: Path, names: list[str], sample: int, images_dir: Path | None,
                      browser: bool, tokens: int, repeats: int, rounds: int) -> dict:
    """Build every candidate in `workdir`, caption `sample` of the run's validation images (and `images_dir`'s
    images) with each, and with `browser` time each in Chromium; return the report."""
    from transformers import AutoTokenizer

    from distilvit.bench.variants import interleaved_chromium, needs_export
    from distilvit.modeling.caption import resolve_model_dir
    from distilvit.errors import UserError
    from distilvit.export import agreement
    from distilvit.export.exporter import export_model
    from distilvit.export.ort_generate import OrtCaptioner
    from distilvit.provenance import stamp

    unknown = [n for n in names if n not in candidates()]
    if unknown:
        raise UserError(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(candidates())}")
    source = resolve_model_dir(model_dir, merge_if_needed=True)
    image_sets = {"validation": agreement.load_images(sample, source)}
    if images_dir is not None:
        image_sets["photographs"] = agreement.load_images(agreement.parse_spec(images_dir), source)
    fp32_dir = workdir / "fp32"
    if needs_export(fp32_dir) or \
            json.loads((fp32_dir / C.EXPORT_CONFIG).read_text())["source_model"] != str(source.resolve()):
        export_model(source, fp32_dir, agreement_images=0, overwrite=True)
    tokenizer = AutoTokenizer.from_pretrained(fp32_dir)
    folders = {name: workdir / "candidates" / name for name in dict.fromkeys(["fp32", *names])}
    sizes = {name: build_candidate(fp32_dir, folder, name) for name, folder in folders.items()}
    results = {name: {"what": candidates()[name][1], "sizes_bytes": sizes[name]} for name in names}
    examples = {}
    for set_name, images in image_sets.items():
        tokens_of = agreement.caption_each({n: OrtCaptioner(f, SLOT) for n, f in folders.items()}, images,
                                           finite=False)  # a candidate's broken logits show as its scores
        captions_of = {n: [c.strip() for c in tokenizer.batch_decode(t, skip_special_tokens=True)]
                       for n, t in tokens_of.items()}
        fp32_tokens, fp32_captions = tokens_of["fp32"], captions_of["fp32"]
        examples[set_name] = {"fp32": fp32_captions[:8]}
        for name in names:
            toks, caps = tokens_of[name], captions_of[name]
            results[name][set_name] = score(toks, caps, fp32_tokens, fp32_captions, images.references)
            examples[set_name][name] = caps[:8]
            log.info("%s on %s: %d/%d captions equal to fp32", name, images.source,
                     results[name][set_name]["equal"], len(toks))
    if browser:
        from PIL import Image

        image = workdir / "bench-image.png"
        first = image_sets["validation"].loaders[0]()[0]  # [4, H, W] 0..255
        Image.fromarray(first.transpose(1, 2, 0).astype(np.uint8), "RGBA").save(image)
        timed = interleaved_chromium({n: folders[n] for n in names if not n.endswith(NO_VNNI)}, image, tokens,
                                     repeats, os.cpu_count() or 1, rounds=rounds)
        for name, row in timed.items():
            results[name]["chromium_wasm"] = row
    return {"model": str(source.resolve()), "image_sets": {k: v.source for k, v in image_sets.items()},
            "recipes": names, "results": results, "examples": examples, "tokens": tokens, "repeats": repeats,
            "rounds": rounds, **stamp()}


def markdown(report: dict) -> str:
    from distilvit.verify.report import cpu_line

    sets = report["image_sets"]
    lines = ["# Quantization recipes: captions kept and browser time", "",
             f"Written by `distilvit-web bench quality` on `{report['model']}`, {report['created']}. "
             f"{cpu_line(report)}Images: " + "; ".join(f"{k}: {v}" for k, v in sets.items()) + ".", "",
             "Agreement: captions token for token equal to fp32's (onnxruntime, greedy). CIDEr-D against the "
             "references and against fp32's captions. Chromium: stock transformers.js, WebAssembly, every core, "
             f"{report['tokens']} tokens, the median of {report['rounds']} rounds taken in turns.", ""]
    header = ["recipe", "MB"] + [f"{s} agreement" for s in sets] + [f"{s} CIDEr-D refs / fp32" for s in sets] + \
        ["Chromium caption ms", "per token ms"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in report["recipes"]:
        r = report["results"][name]
        row = [name, f"{sum(r['sizes_bytes'].values()) / 1e6:.1f}"]
        row += [f"{r[s]['equal']}/{r[s]['images']} ({r[s]['agreement']:.0%})" for s in sets]
        row += [(f"{r[s]['cider_vs_references']:.2f}" if r[s]["cider_vs_references"] is not None else "-")
                + f" / {r[s]['cider_vs_fp32']:.2f}" for s in sets]
        web = r.get("chromium_wasm")
        row += [f"{web['total_ms']:.0f}" if web else "-", f"{web['per_token_ms']:.1f}" if web else "-"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Recipes:", ""] + [f"- `{n}`: {report['results'][n]['what']}" for n in report["recipes"]]
    for set_name, ex in report["examples"].items():
        lines += ["", f"First captions ({set_name}):", ""]
        for name, caps in ex.items():
            lines.append(f"- {name}: " + " | ".join(f'"{c}"' for c in caps[:4]))
    return "\n".join(lines) + "\n"
