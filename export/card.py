"""The export's README.md: a Hugging Face model card (YAML front matter, usage in JavaScript and Python, sizes).

It reads what the export wrote (`export_config.json` content) and the merged model's `distilvit_model.json`;
it knows nothing about how the graphs were made.
"""

from __future__ import annotations

import json
from pathlib import Path

from distilvit.export import constants as C
from distilvit.export.agreement import describe
from distilvit.export.constants import configured_dtype
from distilvit.limits import MIN_DEFAULT_AGREEMENT, MIN_DEFAULT_CIDER_RATIO
from distilvit.modeling.prompt import JS_CALL, JS_PROMPT


# What a model's training data means to someone choosing an image for it (the demo shows it, the card says it).
DATASET_WORDS = {
    "synthetic": "synthetic drawings of coloured circles, squares and triangles: it captions such shapes, not photographs",
    "flickr30k": "Flickr30k photographs of everyday scenes",
    "flickr": "Flickr30k photographs of everyday scenes",
    "coco": "COCO photographs of everyday scenes",
}


def training_summary(source: Path) -> dict | None:
    """{datasets, preset, text} of the merged model in `source` (its distilvit_model.json), or None without one."""
    info_file = source / "distilvit_model.json"
    if not info_file.is_file():
        return None
    train = json.loads(info_file.read_text()).get("train_config", {})
    datasets = list(train.get("datasets") or [])
    return {"datasets": datasets, "preset": train.get("preset"),
            "text": "; ".join(DATASET_WORDS.get(d, f"the dataset {d}") for d in datasets)}


def _base_models(source: Path) -> list[str]:
    info_file = source / "distilvit_model.json"
    if not info_file.is_file():
        return []
    train = json.loads(info_file.read_text()).get("train_config", {})
    return [m for m in (train.get("encoder_model"), train.get("decoder_model")) if m and "/" in m and not Path(m).exists()]


def _sizes_table(info: dict) -> str:
    rows = ["| dtype | files | total MB |", "|---|---|---|"]
    for dtype, suffix in C.DTYPE_SUFFIX.items():
        files = [f for f in info["sizes_bytes"] if f.endswith(f"{suffix}.onnx") and
                 any(f == C.onnx_file(g, dtype) for g in info["graphs"])]
        if len(files) == len(info["graphs"]):
            total = sum(info["sizes_bytes"][f] + info["sizes_bytes"].get(f + "_data", 0) for f in files)
            rows.append(f"| {dtype} | {', '.join(Path(f).name for f in files)} | {total / 1e6:.1f} |")
    return "\n".join(rows)


def _dtype_option(dtype) -> str:
    """The options argument naming the default dtype, or nothing when config.json holds a per-graph mix."""
    return f", {{ dtype: '{dtype}' }}" if isinstance(dtype, str) else ""


def _js_snippet(layout: str, dtype) -> str:
    note = "" if isinstance(dtype, str) else \
        "\n// dtype: the per-graph mix in config.json (transformers.js_config.dtype): " + json.dumps(dtype)
    if layout == "pipeline":
        return f"""```js
import {{ pipeline }} from '@huggingface/transformers';
{note}
const captioner = await pipeline('image-to-text', 'ORG/NAME'{_dtype_option(dtype)});
const [{{ generated_text }}] = await captioner('photo.jpg');
```"""
    return f"""```js
import {{ AutoProcessor, AutoModelForImageTextToText, RawImage }} from '@huggingface/transformers';
{note}
const processor = await AutoProcessor.from_pretrained('ORG/NAME');
const model = await AutoModelForImageTextToText.from_pretrained('ORG/NAME'{_dtype_option(dtype)});
const image = await RawImage.read('photo.jpg');
const prompt = {JS_PROMPT};  // [IMG] x N, BOS: tokenized without special tokens
const inputs = await {JS_CALL};
const output = await model.generate({{ ...inputs, max_new_tokens: 30 }});
const caption = processor.batch_decode(output.slice(null, [inputs.input_ids.dims[1], null]), {{ skip_special_tokens: true }});
```"""


def _python_snippet(dtype) -> str:
    dtype_arg = repr(dtype) if isinstance(dtype, str) else json.dumps(dtype)
    return f"""```python
# distilvit-web is not on PyPI: pip install -e . in its source checkout (and torch==2.13.0)
from huggingface_hub import snapshot_download
from distilvit.export.ort_generate import OrtCaptioner

folder = snapshot_download("ORG/NAME")
print(OrtCaptioner(folder, {dtype_arg}).caption_files(["photo.jpg"]))
```"""


def _vocab_line(info: dict) -> str:
    vocab = info.get("caption_vocab")
    if not vocab:
        return ""
    return (f"\nIt generates only the {vocab['tokens']:,} tokens (of {vocab['of']:,}) its training captions use: the decoder "
            "computes its output head for those alone and scores every other token -1e4.\n")


def _trained_line(info: dict) -> str:
    trained = info.get("trained_on")
    return f"\nTrained on {trained['text']}.\n" if trained and trained.get("text") else ""


def _cpu_line(info: dict) -> str:
    """Which dtypes' captions depend on the CPU, and the int8 kernels the agreement above was measured on."""
    dependent = info.get("cpu_dependent_dtypes") or {}
    integer = info.get("integer_kernel_dtypes")
    if integer is None:  # an export_config.json of before 2026-12-08: the dtypes that had integer kernels then
        integer = {d: 1 for d in info.get("dtypes", []) if d in ("q8", "int8", "uint8")}
    quantized = [d for d in info.get("dtypes", []) if d in integer]
    floats = [d for d in info.get("dtypes", []) if d in ("q8", "int8", "uint8") and d not in integer]
    if not quantized and not dependent:
        return ("\n\n" + ", ".join(floats) + ": 8-bit weights turned into float32 when the model loads; float "
                "arithmetic, the same on every CPU.") if floats else ""
    path = (info.get("cpu") or {}).get("int8_kernel_path", "unknown")
    line = f"\n\nMeasured on int8 kernels: {path}. "
    if dependent:
        line += (", ".join(f"{d} ({n} integer matrix products)" for d, n in dependent.items()) +
                 ": full-range int8 weights, whose products can saturate on x86 CPUs without VNNI (AVX2), so captions "
                 "there may differ from these. ")
    exact = [d for d in quantized if d not in dependent]
    if exact:
        line += ", ".join(exact) + ": the same integer arithmetic on every CPU and in the browser. "
    if floats:
        line += ", ".join(floats) + ": 8-bit weights turned into float32 when the model loads; float arithmetic."
    return line.rstrip()


def write_card(folder: Path, source: Path, info: dict) -> None:
    bases = _base_models(source)
    front = ["---", "library_name: transformers.js", "pipeline_tag: image-to-text", "tags:", "  - image-captioning",
             "  - alt-text", "  - onnx"]
    if bases:
        front += ["base_model:"] + [f"  - {b}" for b in bases]
    front.append("---")
    dtype = configured_dtype(folder)  # read config.json once for both snippets
    js = _js_snippet(info["layout"], dtype)
    python = _python_snippet(dtype)
    measured = info.get("caption_agreement_with_fp32", {})
    agreement = "\n".join(f"- {d}: {describe(a)}" for d, a in measured.items())
    images = next(iter(measured.values()), {}).get("source", "held-out images")
    gate = info.get("default_dtype") or {}
    if measured:
        agreement += (f"\n\nA dtype keeping less than {MIN_DEFAULT_AGREEMENT:.0%} of fp32's captions, or less than "
                      f"{MIN_DEFAULT_CIDER_RATIO:.0%} of its CIDEr-D where the images have reference captions, is "
                      "never the default above (`export --agreement-images`)."
                      + "".join(f"\n- {w}" for w in gate.get("warnings", [])))
    elif info.get("dtypes", ["fp32"]) != ["fp32"]:
        agreement = "- not measured (`--agreement-images 0`): the default dtype was not checked against fp32"
    agreement += _cpu_line(info)
    text = "\n".join(front) + f"""

# Image captioner for the browser

A prefix-conditioning captioner (SigLIP vision encoder -> projector -> Llama-family decoder) exported by
distilvit-web for stock [transformers.js](https://huggingface.co/docs/transformers.js)
({C.TRANSFORMERS_JS_VERSION}), `{info['layout']}` layout. Everything runs on the device; no image leaves it.
{_trained_line(info)}{_vocab_line(info)}
## Usage in JavaScript

{js}

## Usage in Python (onnxruntime)

{python}

Or use the PyTorch model this was exported from with `transformers` (`AutoModelForImageTextToText`).

## Files

{_sizes_table(info)}

Every graph was validated against PyTorch before writing (max abs differences in `export_config.json`).
Greedy-caption agreement of the quantized graphs with fp32 (onnxruntime, {images}):

{agreement or '- (no quantized dtypes exported)'}
"""
    (folder / "README.md").write_text(text)
