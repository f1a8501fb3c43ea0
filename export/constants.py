"""File names, tensor names and dtype suffixes of the exported repo layouts, exactly as transformers.js reads them.

transformers.js 4.x (`src/utils/dtypes.js`, `src/models.js`) picks `onnx/<graph><suffix>.onnx` by dtype and binds
inputs and outputs by name; a wrong name or suffix is a model that silently does not load. Every other module
takes these names from here. This module knows nothing about torch or onnx.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

from distilvit.transformers_js import pinned_version

ONNX_DIR = "onnx"
EXPORT_CONFIG = "export_config.json"
# the stock package the layouts are tested against: the pin in distilvit/runtimes/js/package.json, its one home
TRANSFORMERS_JS_VERSION = pinned_version()
ONNX_OPSET = 18


class Layout(str, Enum):
    """`pipeline`: vision-encoder-decoder, works with `pipeline('image-to-text')`. `llava`: AutoModelForImageTextToText."""

    PIPELINE = "pipeline"
    LLAVA = "llava"


# Graph file stems per layout, in the order they are exported.
GRAPHS = {
    Layout.PIPELINE: ("encoder_model", "decoder_model_merged"),
    Layout.LLAVA: ("vision_encoder", "embed_tokens", "decoder_model_merged"),
}

# transformers.js dtype -> file suffix (src/utils/dtypes.js DEFAULT_DTYPE_SUFFIX_MAPPING).
DTYPE_SUFFIX = {
    "fp32": "",
    "fp16": "_fp16",
    "q8": "_quantized",
    "int8": "_int8",
    "uint8": "_uint8",
    "q4": "_q4",
    "q4f16": "_q4f16",
    "bnb4": "_bnb4",
}

# Tensor names.
PIXEL_VALUES = "pixel_values"
ENCODER_OUTPUT = "last_hidden_state"  # pipeline encoder
ENCODER_HIDDEN_STATES = "encoder_hidden_states"  # pipeline decoder input
IMAGE_FEATURES = "image_features"  # llava vision encoder
INPUT_IDS = "input_ids"
INPUTS_EMBEDS = "inputs_embeds"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"

# Dynamic dimension names. transformers.js fills only `batch_size` when it builds an empty cache.
BATCH = "batch_size"
DECODER_LENGTH = "decoder_sequence_length"
ENCODER_LENGTH = "encoder_sequence_length"
PAST_LENGTH = "past_sequence_length"
TOTAL_LENGTH = "total_sequence_length"


def past_names(layer: int) -> tuple[str, str]:
    return f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"


def present_names(layer: int) -> tuple[str, str]:
    return f"present.{layer}.key", f"present.{layer}.value"


def onnx_file(graph: str, dtype: str) -> str:
    return f"{ONNX_DIR}/{graph}{DTYPE_SUFFIX[dtype]}.onnx"


# The dtype a page gets when it names none: the first of these the export has that the ship gate lets through (q8:
# an 8-bit download that computes as fp32 does; int8 and uint8 are faster on WebAssembly's int8 kernels but quantize
# activations; q4 is slow there and is for WebGPU). Always written explicitly, so it names files that exist.
BROWSER_PREFERENCE = ("q8", "int8", "uint8", "fp16", "q4f16", "q4", "bnb4", "fp32")


def read_export_config(folder: Path) -> dict:
    """The export_config.json of the export in `folder`: the one check that a folder is a distilvit-web export, made
    by every command that takes one (`serve`, `site`, `upload`, `verify parity`). UserError naming the folder when
    the file is missing or a link (`upload` must never follow one out of the folder), or naming the file when it is
    not a JSON object."""
    from distilvit.errors import UserError

    path = Path(folder) / EXPORT_CONFIG
    if not path.is_file() or path.is_symlink():
        raise UserError(f"{folder} is not a distilvit-web export ({EXPORT_CONFIG} missing); "
                        "make one with `distilvit-web export`")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        info = f"{type(err).__name__}: {err}"
    if not isinstance(info, dict):
        raise UserError(f"{path} is damaged ({info if isinstance(info, str) else 'not a JSON object'}); export the "
                        "model again (`distilvit-web export MODEL --output FOLDER --overwrite`)")
    return info


def configured_dtype(export_dir: Path) -> str | dict[str, str]:
    """What an export's config.json makes transformers.js load by default: one dtype, or a per-graph dict."""
    config = json.loads((Path(export_dir) / "config.json").read_text())
    dtype = config.get("transformers.js_config", {}).get("dtype", "q8")  # transformers.js' browser default
    if isinstance(dtype, dict) and len(set(dtype.values())) == 1:
        return next(iter(dtype.values()))
    return dtype
