"""`distilvit-web export`: merged model -> validated, slimmed ONNX graphs -> dtypes -> a transformers.js repo layout.

Steps, all inside a temporary folder renamed to the output at the end (a failure leaves nothing behind):
  1. resolve the model (a merged folder, or a training run: its merged/, merging the adapter first if needed)
     and check it is a distilvit-web captioner;
  2. export each graph of the layout in fp32, validate it against PyTorch, slim it with onnxslim, validate again;
  3. convert every requested dtype (and any per-graph mix), check each loads and gives finite outputs, and
     measure its greedy-caption agreement with fp32 on the run's validation images (export/agreement.py): one
     below the gate is written but never made the default;
  4. write config/tokenizer/processor files, `export_config.json` (source, layout, modes, versions, sizes,
     validation) and a model card.
This module knows the order of things; the graphs, dtypes and files are other modules' business.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from transformers import LlavaForConditionalGeneration

from distilvit.atomic import atomic_dir, check_replaceable
from distilvit.errors import UserError
from distilvit.export import agreement
from distilvit.export import constants as C
from distilvit.export.card import training_summary, write_card
from distilvit.export.constants import BROWSER_PREFERENCE
from distilvit.export.layout import default_dtypes, write_layout
from distilvit.export.onnx_export import export_graph, graph_specs, save_onnx
from distilvit.export.pixel_graph import prepend_pixels
from distilvit.export.validate import ValidationError, summary, validate_graph, validate_pixels
from distilvit.limits import MIN_DEFAULT_AGREEMENT
from distilvit.modeling import caption_vocab
from distilvit.modeling.caption import load_model_files, resolve_model_dir
from distilvit.pixels import PixelPreparer
from distilvit.provenance import stamp
from distilvit.quantize.modes import DType, convert

log = logging.getLogger(__name__)

GRAPH_ALIASES = {"vision": 0, "encoder": 0, "vision_encoder": 0, "encoder_model": 0, "embed": 1, "embed_tokens": 1,
                 "decoder": -1, "decoder_model_merged": -1}


@dataclass
class QuantizePlan:
    """Which dtype files to write: `dtypes` for every graph, plus an optional per-graph `mix`."""

    dtypes: list[str]
    mix: dict[str, str] = field(default_factory=dict)


def parse_quantize(spec: str | None, layout: C.Layout) -> QuantizePlan:
    """`fp16,q8`, `all`, or a per-graph mix `vision=q8,decoder=q4`; fp32 is always exported (the reference)."""
    graphs = C.GRAPHS[layout]
    known = [d.value for d in DType]
    dtypes, mix = ["fp32"], {}
    for item in [s.strip() for s in (spec or "").split(",") if s.strip()]:
        if item == "all":
            dtypes += [d for d in known if d not in dtypes]
        elif "=" in item:
            graph, dtype = (x.strip() for x in item.split("=", 1))
            if graph not in GRAPH_ALIASES or (GRAPH_ALIASES[graph] == 1 and layout == C.Layout.PIPELINE):
                raise UserError(f"--quantize {item!r}: unknown graph {graph!r}; the {layout.value} layout has "
                                f"{', '.join(graphs)} (or vision=, decoder=)")
            if dtype not in known:
                raise UserError(f"--quantize {item!r}: unknown dtype {dtype!r}; choose from {', '.join(known)}")
            mix[graphs[GRAPH_ALIASES[graph]]] = dtype
        elif item in known:
            if item not in dtypes:
                dtypes.append(item)
        else:
            raise UserError(f"--quantize: unknown dtype {item!r}; choose from {', '.join(known)}, all, or graph=dtype")
    if mix:
        for g in graphs:
            mix.setdefault(g, "fp32")
    return QuantizePlan(dtypes, mix)


# Rotary embeddings whose frequencies change with the sequence length at run time: the graph would carry the
# frequencies of the traced length only. Every other rope type of transformers' Llama (default, linear, llama3,
# yarn, ...) has fixed frequencies, computed by the model's own rotary module (export/llama_stack.py).
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def unsupported_settings(text_config: dict) -> list[str]:
    """The decoder settings (of config.json's text_config) this exporter refuses, each named with its value."""
    problems = []
    rope = text_config.get("rope_parameters") or text_config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type in LENGTH_DEPENDENT_ROPE:
        problems.append(f"rope_type {rope_type!r} (rope_scaling/rope_parameters): its frequencies depend on the "
                        "sequence length at run time")
    if (text_config.get("pretraining_tp") or 1) > 1:
        problems.append(f"pretraining_tp {text_config['pretraining_tp']} (> 1)")
    return problems


def load_model(path: Path) -> LlavaForConditionalGeneration:
    config = json.loads((path / "config.json").read_text())
    kind = config.get("model_type")
    text = (config.get("text_config") or {}).get("model_type")
    vision = (config.get("vision_config") or {}).get("model_type")
    if kind != "llava" or text != "llama" or vision not in ("siglip_vision_model", "siglip"):
        raise UserError(f"{path} holds a {kind!r} model (text {text!r}, vision {vision!r}); export needs a distilvit-web "
                        f"captioner: a llava model with a SigLIP vision tower and a llama decoder")
    refused = unsupported_settings(config.get("text_config") or {})
    if refused:
        raise UserError(f"{path}: the decoder has settings the export cannot reproduce: {'; '.join(refused)}. "
                        "Nothing was written; train with a decoder without them (docs/export.md lists what is supported)")
    if not (path / "tokenizer.json").is_file() or not (path / "processor_config.json").is_file():
        raise UserError(f"{path} lacks tokenizer.json or processor_config.json; re-save it with `distilvit-web merge`")
    model = load_model_files(path).eval()
    try:
        caption_vocab.check_model(model)
    except ValueError as err:
        raise UserError(f"{path}/config.json: {err}. Train again, or delete caption_vocab from config.json to "
                        "export the full vocabulary") from None
    return model


DECODER_GRAPH = ("export/llama_stack.py: q/k/v and gate/up fused MatMuls, rotary embedding once on queries and keys, "
                 "query heads grouped per key/value head, one additive mask; last-position logits, over the caption "
                 "vocabulary when the model has one")


def exporter_digest() -> str:
    """sha256 over the exporter's own source files (export/ and quantize/): equal digests, same export code."""
    import hashlib

    from distilvit import quantize

    digest = hashlib.sha256()
    for folder in (Path(__file__).parent, Path(quantize.__file__).parent):
        for path in sorted(folder.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _slim(path: Path, symbolic_shapes: bool) -> None:
    """Shrink the graph at `path` with onnxslim, in place (the caller validates it again).

    `symbolic_shapes=False` for decoders: onnxslim's symbolic shape inference takes every dim to be at least 1
    and folded the prefix decoder's empty-past switch `N * (1 - 1 // (past + 1))` to N, so the image prefix was
    never prepended (validation: "present.0.key: shape [3, 3, 1, 64] != PyTorch [3, 3, 197, 64]", onnxslim
    0.1.98, 2026-11-25). Without it onnxslim still runs its other passes.
    """
    import onnxslim

    model = onnxslim.slim(onnx.load_model(str(path)), no_shape_infer=not symbolic_shapes)
    # onnxslim writes its own symbolic shapes for intermediate values; for the prefix decoder they claim the
    # narrowed embeddings have the new tokens' length, and onnxruntime then reuses a buffer of the wrong size
    # ("Shape mismatch attempting to re-use buffer. {1,1,128} != {1,65,128}", onnxslim 0.1.98, onnxruntime
    # 1.32, 2026-11-25). Dropping the hints lets onnxruntime infer shapes itself.
    del model.graph.value_info[:]
    save_onnx(model, path)


def _dtype_label(config: dict[str, str]) -> str:
    values = set(config.values())
    return next(iter(values)) if len(values) == 1 else ", ".join(f"{g}={d}" for g, d in config.items())


def export_model(model_dir: Path, output: Path, layout: str = "pipeline", quantize: str | None = None,
                 overwrite: bool = False, slim: bool = True, agreement_images: int | str | Path = 16,
                 max_new_tokens: int | None = None) -> dict:
    """Export `model_dir` to `output`; return the export_config.json content. `agreement_images`: a number of the
    run's validation images or a folder of images (export/agreement.py), 0 to skip the ship gate."""
    try:
        layout = C.Layout(layout)
    except ValueError:
        raise UserError(f"--layout {layout!r}: choose pipeline or llava") from None
    plan = parse_quantize(quantize, layout)
    output = Path(output)
    check_replaceable(output, overwrite, C.EXPORT_CONFIG, "export")  # before minutes of work
    agreement_spec = agreement.parse_spec(agreement_images)
    source = resolve_model_dir(model_dir, merge_if_needed=True)
    model = load_model(source)
    measured = [d for d in plan.dtypes if d != "fp32"] + ([plan.mix] if plan.mix else [])
    # before minutes of export, so a bad folder fails now; an fp32-only export has nothing to measure
    agreement_set = agreement.load_images(agreement_spec, source) if measured else None
    max_new = max_new_tokens or json.loads((source / "generation_config.json").read_text()).get("max_new_tokens") or 30
    started = time.perf_counter()
    graphs = C.GRAPHS[layout]
    pixels = PixelPreparer.from_model_dir(source)
    with atomic_dir(output, overwrite=overwrite, marker=C.EXPORT_CONFIG, what="export") as tmp:
        validation, timings, slimmed = _export_graphs(model, layout, tmp, source, pixels, slim)
        quantize_timings, cpu_dependent, integer = _quantize_graphs(tmp, graphs, plan)
        timings.update(quantize_timings)
        rounding = _check_rounding(tmp, graphs, plan.dtypes)
        external = {Path(C.onnx_file(g, d)).name for g in graphs for d in C.DTYPE_SUFFIX
                    if (tmp / (C.onnx_file(g, d) + "_data")).exists()}
        dtype_config = default_dtypes(list(graphs), plan.dtypes, plan.mix)  # always files that exist
        write_layout(source, tmp, model.config, layout, dtype_config, external, max_new)
        sizes = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted((tmp / C.ONNX_DIR).iterdir())}
        gated, agreements, warnings = _ship_gate(tmp, plan, graphs, measured, agreement_set, dtype_config)
        if gated != dtype_config:
            dtype_config = gated
            write_layout(source, tmp, model.config, layout, dtype_config, external, max_new)
        info = {
            "source_model": str(source.resolve()),
            "trained_on": training_summary(source),
            "layout": layout.value,
            "dtypes": plan.dtypes,
            "per_graph_dtypes": plan.mix or None,
            "graphs": list(graphs),
            "decoder_graph": DECODER_GRAPH,
            "caption_vocab": _vocab_summary(model),
            "exporter_digest": exporter_digest(),
            "slimmed": slimmed,
            "onnx_opset": C.ONNX_OPSET,
            "transformers_js": C.TRANSFORMERS_JS_VERSION,
            "sizes_bytes": sizes,
            "validation": validation,
            "caption_agreement_with_fp32": agreements,
            "cpu_dependent_dtypes": cpu_dependent,
            "integer_kernel_dtypes": integer,
            "weights_within_rounding": rounding,
            "default_dtype": {"dtype": dtype_config, "gate": f">= {MIN_DEFAULT_AGREEMENT} of fp32's captions",
                              "checked": bool(agreements) or not measured, "warnings": warnings},
            "seconds": {**timings, "total": round(time.perf_counter() - started, 1)},
            "max_new_tokens": max_new,
            "pixels": pixels.settings(),
            **stamp(),
        }
        (tmp / C.EXPORT_CONFIG).write_text(json.dumps(info, indent=2) + "\n")
        write_card(tmp, source, info)
    log.info("export written to %s in %.0f s", output, time.perf_counter() - started)
    return info


def _ship_gate(tmp: Path, plan, graphs, measured: list, agreement_set, dtype_config):
    """Each quantized dtype's captions against fp32's on `agreement_set` (none: unmeasured, said), and the default
    dtype the gate allows: (default, agreements, warnings), each warning logged."""
    agreements = agreement.measure(tmp, measured, agreement_set) if agreement_set else {}
    gated, warnings = agreement.gate(BROWSER_PREFERENCE, plan.dtypes, plan.mix, list(graphs), agreements)
    for warning in warnings:
        log.warning("%s", warning)
    if gated != dtype_config:
        log.warning("default dtype: %s instead of %s (the ship gate, export/agreement.py)",
                    _dtype_label(gated), _dtype_label(dtype_config))
    elif measured and not agreement_set:
        log.warning("caption agreement not measured (--agreement-images 0): the default dtype %s is unchecked",
                    _dtype_label(dtype_config))
    return gated, agreements, warnings


def _export_graphs(model, layout: C.Layout, tmp: Path, source: Path, pixels: PixelPreparer, slim: bool):
    """Every fp32 graph of `layout` into `tmp`, each validated against `model` (again after onnxslim, and with the
    pixel preparation in front of the image encoder); returns (validation summary, seconds, how each was slimmed)
    per graph. A graph that fails validation is a UserError and nothing is written."""
    validation, timings, slimmed = {}, {}, {}
    for spec in graph_specs(model, layout):
        t0 = time.perf_counter()
        path = tmp / C.onnx_file(spec.name, "fp32")
        export_graph(spec, path)
        try:
            checks = validate_graph(spec, model, path)
            if slim:
                symbolic = not any(n.startswith("past_key_values.") for n in spec.input_names)
                _slim(path, symbolic_shapes=symbolic)
                slimmed[spec.name] = "onnxslim" if symbolic else "onnxslim without symbolic shape inference"
                checks = validate_graph(spec, model, path)
            if spec.input_names == [C.PIXEL_VALUES]:  # the image encoder: raw pixels in, as transformers.js gives
                save_onnx(prepend_pixels(onnx.load_model(str(path)), pixels.size, pixels.mean, pixels.std), path)
                checks += validate_pixels(model, path, pixels)
        except ValidationError as err:
            raise UserError(f"export of {source} failed validation against PyTorch; nothing was written.\n{err}") from err
        validation[spec.name] = summary(checks)
        timings[spec.name] = round(time.perf_counter() - t0, 1)
    return validation, timings, slimmed


def _quantize_graphs(tmp: Path, graphs: tuple[str, ...], plan) -> tuple[dict[str, float], dict[str, int]]:
    """Every dtype file of the plan from the fp32 graphs in `tmp`, then the per-graph mix's (which reuses those files
    or adds its own); returns the seconds each took, dtype -> how many of its integer GEMMs can saturate on x86
    without VNNI (quantize/kernel_paths.py) for the dtypes whose captions therefore depend on the CPU's int8 kernels
    (the others compute the same everywhere), and dtype -> how many integer GEMMs it has at all (dtypes that compute
    in float, q8 among them, have none)."""
    from distilvit.quantize.kernel_paths import INTEGER_GEMMS, saturating_gemms

    timings, cpu_dependent, integer = {}, {}, {}
    wanted = {(g, d) for g in graphs for d in plan.dtypes if d != "fp32"} | \
        {(g, d) for g, d in plan.mix.items() if d != "fp32"}
    for graph, dtype in sorted(wanted):
        t0 = time.perf_counter()
        converted = convert(onnx.load_model(str(tmp / C.onnx_file(graph, "fp32"))), DType(dtype))
        saturating = len(saturating_gemms(converted))  # before saving, which may move its weights to a data file
        products = sum(n.op_type in INTEGER_GEMMS for n in converted.graph.node)
        save_onnx(converted, tmp / C.onnx_file(graph, dtype))
        timings[f"{graph}{C.DTYPE_SUFFIX[dtype]}"] = round(time.perf_counter() - t0, 1)
        if saturating:
            cpu_dependent[dtype] = cpu_dependent.get(dtype, 0) + saturating
        if products:
            integer[dtype] = integer.get(dtype, 0) + products
    return timings, cpu_dependent, integer


def _check_rounding(tmp: Path, graphs: tuple[str, ...], dtypes: list[str]) -> dict[str, int]:
    """Every weight of each q8 and fp16 file is the fp32 file's, rounded (quantize/rounding.py); returns dtype ->
    weights checked. A weight that is not is a quantizer bug: RuntimeError naming it (nothing is written)."""
    from distilvit.quantize.rounding import CHECKED_DTYPES, compare_files

    checked = {}
    for dtype in (d for d in dtypes if d in CHECKED_DTYPES):
        result = compare_files({g: (tmp / C.onnx_file(g, "fp32"), tmp / C.onnx_file(g, dtype)) for g in graphs}, dtype)
        if result["off"]:
            named = ", ".join(f"{o['graph']} {o['weight']} ({o['values_off']} values)" for o in result["off"][:5])
            raise RuntimeError(f"the {dtype} files' weights are not the fp32 weights rounded: {named}. This is a bug "
                               "in distilvit-web's quantizer; nothing was written. Please report it with the command.")
        checked[dtype] = result["checked"]
    return checked


def _vocab_summary(model) -> dict | None:
    vocab = caption_vocab.of(model.config)
    return {"tokens": len(vocab), "of": model.config.text_config.vocab_size} if vocab else None
