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
          references: list[list[str]] | None, fp32_cider: float | None = None) -> dict:
    """A candidate's captions against fp32's; `fp32_cider`: fp32's CIDEr-D against `references` when already scored
    (one set of images, many candidates)."""
    from distilvit.metrics import caption_scores

    same = sum(a == b for a, b in zip(tokens, fp32_tokens))
    cider = caption_scores(captions, references)["cider"] if references else None
    if references and fp32_cider is None:
        fp32_cider = caption_scores(fp32_captions, references)["cider"]
    return {"agreement": same / len(tokens), "equal": same, "images": len(tokens), "cider_vs_references": cider,
            "cider_ratio": cider / fp32_cider if cider is not None and fp32_cider else None,
            "cider_vs_fp32": caption_scores(captions, [[c] for c in fp32_captions])["cider"]}


def has_full_vocab(model_dir: Path) -> bool:
    """Whether a run or merged folder generates from its decoder's whole vocabulary (no caption vocabulary)."""
    from transformers import AutoConfig

    from distilvit.modeling import caption_vocab
    from distilvit.modeling.caption import resolve_model_dir

    return not caption_vocab.of(AutoConfig.from_pretrained(resolve_model_dir(model_dir, merge_if_needed=True)))


def _fp32_export(source: Path, fp32_dir: Path) -> None:
    """`source` exported in fp32 to `fp32_dir`, unless the folder already holds this exporter's export of it."""
    from distilvit.bench.variants import needs_export
    from distilvit.export.exporter import export_model

    if needs_export(fp32_dir) or \
            json.loads((fp32_dir / C.EXPORT_CONFIG).read_text())["source_model"] != str(source.resolve()):
        export_model(source, fp32_dir, agreement_images=0, overwrite=True)


def prose_source(prose_model: Path) -> Path:
    """The merged folder of `prose_model`; a UserError when it has a caption vocabulary (checked before any work)."""
    from distilvit.errors import UserError
    from distilvit.modeling.caption import resolve_model_dir

    source = resolve_model_dir(prose_model, merge_if_needed=True)
    if not has_full_vocab(source):
        raise UserError(f"--prose-model {prose_model}: it generates only its captions' tokens (a caption vocabulary), "
                        "so prose cannot be scored on it; train a few steps with --full-vocab for this")
    return source


def prose_fidelity(source: Path, workdir: Path, names: list[str], windows: int,
                   window: int) -> tuple[dict, dict[str, dict]]:
    """Text fidelity (distilvit/bench/text_fidelity.py) of every candidate but fp32 on `source` (a merged folder
    without a caption vocabulary, `prose_source`), each against fp32's reading: (what was read and by which model,
    name -> TextFidelity as a dict)."""
    from distilvit.bench import text_fidelity

    fp32_dir = workdir / "prose-fp32"
    _fp32_export(source, fp32_dir)
    text = text_fidelity.prose(fp32_dir / "tokenizer.json", windows, window)
    log.info("prose: %d windows of %d tokens of %s, read by fp32", windows, window, text.source)
    reference = text_fidelity.read(fp32_dir, "fp32", text)
    read = {"source": text.source, "model": str(source.resolve()), "windows": windows, "window": window}
    results = {}
    for name in names:
        if name == "fp32":
            continue
        folder = workdir / "prose-candidates" / name
        build_candidate(fp32_dir, folder, name)
        results[name] = text_fidelity.compare(text_fidelity.read(folder, SLOT, text), reference).as_dict()
        log.info("prose, %s: top-1 %.1f%% of fp32's, perplexity x%.3f", name, 100 * results[name]["top1_agreement"],
                 results[name]["perplexity_ratio"])
        shutil.rmtree(folder)  # a real decoder's candidate is hundreds of MB: one on disk at a time
    return read, results


def run_bench_quality(model_dir: Path, workdir: Path, names: list[str], sample: int, images_dir: Path | None,
                      browser: bool, tokens: int, repeats: int, rounds: int, prose_model: Path | None = None,
                      prose_windows: int = 12, prose_window: int = 128) -> dict:
    """Build every candidate in `workdir`, caption `sample` of the run's validation images (and `images_dir`'s
    images) with each, and with `browser` time each in Chromium; with `prose_model` (a `--full-vocab` run), read
    prose with each candidate of that model too (prose_fidelity); return the report."""
    from transformers import AutoTokenizer

    from distilvit.bench.variants import interleaved_chromium
    from distilvit.modeling.caption import resolve_model_dir
    from distilvit.errors import UserError
    from distilvit.export import agreement
    from distilvit.export.ort_generate import OrtCaptioner
    from distilvit.metrics import caption_scores
    from distilvit.provenance import stamp

    unknown = [n for n in names if n not in candidates()]
    if unknown:
        raise UserError(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(candidates())}")
    source = resolve_model_dir(model_dir, merge_if_needed=True)
    prose_model = prose_source(prose_model) if prose_model is not None else None
    image_sets = {"validation": agreement.load_images(sample, source)}
    if images_dir is not None:
        image_sets["photographs"] = agreement.load_images(agreement.parse_spec(images_dir), source)
    fp32_dir = workdir / "fp32"
    _fp32_export(source, fp32_dir)
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
        fp32_cider = caption_scores(fp32_captions, images.references)["cider"] if images.references else None
        examples[set_name] = {"fp32": fp32_captions[:8]}
        for name in names:
            toks, caps = tokens_of[name], captions_of[name]
            results[name][set_name] = score(toks, caps, fp32_tokens, fp32_captions, images.references, fp32_cider)
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
    prose = None
    if prose_model is not None:
        prose, read = prose_fidelity(prose_model, workdir, names, prose_windows, prose_window)
        for name in names:
            results[name]["prose"] = read.get(name)
    return {"prose": prose, "model": str(source.resolve()), "image_sets": {k: v.source for k, v in image_sets.items()},
            "recipes": names, "results": results, "examples": examples, "tokens": tokens, "repeats": repeats,
            "rounds": rounds, **stamp()}


def _cider_cell(scores: dict) -> str:
    refs = scores["cider_vs_references"]
    if refs is None:
        return f"- / {scores['cider_vs_fp32']:.2f}"
    ratio = scores.get("cider_ratio")
    return f"{refs:.2f}" + (f" ({ratio:.1%})" if ratio is not None else "") + f" / {scores['cider_vs_fp32']:.2f}"


def markdown(report: dict) -> str:
    from distilvit.verify.report import cpu_line

    sets = report["image_sets"]
    lines = ["# Quantization recipes: captions kept and browser time", "",
             f"Written by `distilvit-web bench quality` on `{report['model']}`, {report['created']}. "
             f"{cpu_line(report)}Images: " + "; ".join(f"{k}: {v}" for k, v in sets.items()) + ".", "",
             "Agreement: captions token for token equal to fp32's (onnxruntime, greedy). CIDEr-D against the "
             "references (in brackets: as a share of fp32's) and against fp32's captions. Chromium: stock "
             f"transformers.js, WebAssembly, every core, {report['tokens']} tokens, the median of {report['rounds']} "
             "rounds taken in turns; page peak: the page's renderer memory above what it held before the model "
             "loaded.", ""]
    prose = report.get("prose")
    if prose:
        lines += [f"Prose: {prose['windows']} windows of {prose['window']} tokens of {prose['source']}, read by "
                  f"`{prose['model']}` (a `--full-vocab` run: the pretrained decoder's own vocabulary) as generation "
                  "reads: top-1 = the next-token argmax equal to fp32's, token by token with the KV cache; perplexity "
                  "as a ratio to fp32's; prefill top-1 = single calls over the image prefix and many tokens (one "
                  "activation scale over all of them in a dynamic recipe); continuations = 32 greedy tokens equal to "
                  "fp32's, whole.", ""]
    header = ["recipe", "MB"] + [f"{s} agreement" for s in sets] + \
        [f"{s} CIDEr-D refs (x fp32) / vs fp32" for s in sets]
    if prose:
        header += ["prose top-1", "prose perplexity x fp32", "prefill top-1", "continuations equal"]
    header += ["Chromium caption ms", "per token ms", "page peak MiB"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in report["recipes"]:
        r = report["results"][name]
        row = [name, f"{sum(r['sizes_bytes'].values()) / 1e6:.1f}"]
        row += [f"{r[s]['equal']}/{r[s]['images']} ({r[s]['agreement']:.0%})" for s in sets]
        row += [_cider_cell(r[s]) for s in sets]
        if prose:
            p = r.get("prose")
            row += ([f"{p['top1_agreement']:.1%}", f"{p['perplexity_ratio']:.3f}", f"{p['prefill_top1_agreement']:.1%}",
                     f"{p['continuations_equal']}/{p['continuations']}"] if p else ["-"] * 4)
        web = r.get("chromium_wasm")
        peak = (web or {}).get("page_peak_mib")
        row += [f"{web['total_ms']:.0f}" if web else "-", f"{web['per_token_ms']:.1f}" if web else "-",
                f"{peak:.0f}" if peak else "-"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Recipes:", ""] + [f"- `{n}`: {report['results'][n]['what']}" for n in report["recipes"]]
    for set_name, ex in report["examples"].items():
        lines += ["", f"First captions ({set_name}):", ""]
        for name, caps in ex.items():
            lines.append(f"- {name}: " + " | ".join(f'"{c}"' for c in caps[:4]))
    return "\n".join(lines) + "\n"
