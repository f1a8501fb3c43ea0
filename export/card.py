"""The export's README.md: a Hugging Face model card (YAML front matter, usage in JavaScript and Python, sizes).

It reads what the export wrote (`export_config.json` content) and the merged model's `distilvit_model.json`;
it knows nothing about how the graphs were made.
"""

from __future__ import annotations

import json
from pathlib import Path

from distilvit.export import constants as C


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


def write_card(folder: Path, source: Path, info: dict) -> None:
    bases = _base_models(source)
    front = ["---", "library_name: transformers.js", "pipeline_tag: image-to-text", "tags:", "  - image-captioning",
             "  - alt-text", "  - onnx"]
    if bases:
        front += ["base_model:"] + [f"  - {b}" for b in bases]
    front.append("---")
    if info["layout"] == "pipeline":
        js = """```js
import { pipeline } from '@huggingface/transformers';

const captioner = await pipeline('image-to-text', 'ORG/NAME', { dtype: 'q8' });
const [{ generated_text }] = await captioner('photo.jpg');
```"""
    else:
        js = """```js
import { AutoProcessor, AutoModelForImageTextToText, RawImage } from '@huggingface/transformers';

const processor = await AutoProcessor.from_pretrained('ORG/NAME');
const model = await AutoModelForImageTextToText.from_pretrained('ORG/NAME', { dtype: 'q8' });
const image = await RawImage.read('photo.jpg');
const inputs = await processor(image, '<image>' + processor.tokenizer.bos_token);
const output = await model.generate({ ...inputs, max_new_tokens: 30 });
const caption = processor.batch_decode(output.slice(null, [inputs.input_ids.dims[1], null]), { skip_special_tokens: true });
```"""
    agreement = "\n".join(f"- {d}: {a['caption_match_with_fp32']:.2f} of {a['images']} captions equal to fp32"
                          for d, a in info.get("caption_agreement_with_fp32", {}).items())
    text = "\n".join(front) + f"""

# Image captioner for the browser

A prefix-conditioning captioner (SigLIP vision encoder -> projector -> Llama-family decoder) exported by
distilvit-web for stock [transformers.js](https://huggingface.co/docs/transformers.js)
({C.TRANSFORMERS_JS_VERSION}), `{info['layout']}` layout. Everything runs on the device; no image leaves it.

## Usage in JavaScript

{js}

## Usage in Python (onnxruntime)

```python
from distilvit.export.ort_generate import OrtCaptioner
```

Or use the PyTorch model this was exported from with `transformers` (`AutoModelForImageTextToText`).

## Files

{_sizes_table(info)}

Every graph was validated against PyTorch before writing (max abs differences in `export_config.json`).
Greedy-caption agreement of the quantized graphs with fp32 (onnxruntime, held-out synthetic images):

{agreement or '- (no quantized dtypes exported)'}
"""
    (folder / "README.md").write_text(text)
