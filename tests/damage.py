"""Planted damage for the parity checks: one weight of one graph of an export changed on purpose, in place.

Each PART names a piece of the model and the graph that holds it in each layout (pipeline: encoder_model holds the
vision tower and the projector, decoder_model_merged the token table, the layers and the head; llava: the same
with the token table in embed_tokens). The weight is found from the graph's structure in the fp32 file (MatMul
weights in node order, the Gather table), never from names the exporter happens to choose, and changed in the
file of the dtype asked for: float weights directly, q8's 8-bit weights (quantize/stored_int8.py:
`<weight>/stored_int8/q`) in their int8 form.
  vision      the vision tower's first MatMul weight, negated
  projector   the image graph's last MatMul weight (the projector's output layer), negated
  embeddings  the token table: BOS's row swapped with the row of `other_token`
  layers      the decoder's largest MatMul weight (a layer's MLP), negated
  head        the output head (the decoder's last MatMul weight), scaled by 1.1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

PARTS = ("vision", "projector", "embeddings", "layers", "head")
IMAGE_GRAPH = {"pipeline": "encoder_model", "llava": "vision_encoder"}


def graph_of(part: str, layout: str) -> str:
    if part in ("vision", "projector"):
        return IMAGE_GRAPH[layout]
    if part == "embeddings" and layout == "llava":
        return "embed_tokens"
    return "decoder_model_merged"


def _file(export: Path, graph: str, dtype: str) -> Path:
    suffix = {"fp32": "", "q8": "_quantized", "fp16": "_fp16"}[dtype]
    return Path(export) / "onnx" / f"{graph}{suffix}.onnx"


def _weight_name(model: onnx.ModelProto, part: str) -> str:
    """The initializer the part's damage goes to, from the fp32 graph's structure."""
    inits = {t.name: t for t in model.graph.initializer}
    matmuls = [n.input[1] for n in model.graph.node
               if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]
    gathers = [n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits
               and len(inits[n.input[0]].dims) == 2]
    if part == "vision":
        return matmuls[0]
    if part in ("projector", "head"):
        return matmuls[-1]
    if part == "layers":
        return max(matmuls[:-1], key=lambda name: int(np.prod(inits[name].dims)))
    if part == "embeddings":
        return gathers[0]
    raise ValueError(part)


def plant(export: Path, layout: str, dtype: str, part: str, bos: int, other_token: int) -> str:
    """Damage `part` in the `dtype` file of its graph; return what was done (for assertion messages)."""
    graph = graph_of(part, layout)
    name = _weight_name(onnx.load(str(_file(export, graph, "fp32")), load_external_data=False), part)
    path = _file(export, graph, dtype)
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    target = inits.get(name) or inits.get(f"{name}/stored_int8/q")
    if target is None:
        raise LookupError(f"{path.name} holds neither {name} nor its 8-bit form")
    values = numpy_helper.to_array(target).copy()
    if part == "embeddings":  # rows of the table: q8 stores [rows, blocks, 32], float [rows, width]
        values[[bos, other_token]] = values[[other_token, bos]]
        if target.name != name:  # the scales of the swapped rows go with them
            scale = inits[f"{name}/stored_int8/scale"]
            scales = numpy_helper.to_array(scale).copy()
            scales[[bos, other_token]] = scales[[other_token, bos]]
            scale.CopyFrom(numpy_helper.from_array(scales, scale.name))
    elif part == "head":
        if values.dtype == np.int8:  # scale the block scales: the int8 values are already full range
            scale = inits[f"{name}/stored_int8/scale"]
            scale.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(scale) * 1.1).astype(
                numpy_helper.to_array(scale).dtype), scale.name))
        else:
            values = (values * 1.1).astype(values.dtype)
    elif values.dtype == np.int8:
        values = np.clip(-values.astype(np.int16), -127, 127).astype(np.int8)
    else:
        values = -values
    target.CopyFrom(numpy_helper.from_array(values, target.name))
    onnx.save(model, str(path))
    return f"{part}: {target.name} {list(values.shape)} in {path.name}"
