"""Planted damage for the parity checks: one weight of one graph of an export changed on purpose, in place.

Each PART names a piece of the model and the graph that holds it in each layout (pipeline: encoder_model holds the
vision tower and the projector, decoder_model_merged the token table, the layers and the head; llava: the same
with the token table in embed_tokens). The weight is found from the graph's structure in the fp32 file (MatMul
weights in node order, the Gather table), never from names the exporter happens to choose, and changed in the
file of the dtype asked for: float weights directly, q8's 8-bit weights (quantize/stored_int8.py:
`<weight>/stored_int8/q`) in their int8 form.
  vision      the vision tower's first MatMul weight, negated
  projector   the image graph's last MatMul weight (the projector's output layer), negated
  embeddings  the token table: BOS's entry swapped with `other_token`'s (a row of an untied table; with a caption
              vocabulary and a tied head, the table is the head's matrix, read by column at the token's position in
              the vocabulary: the source model's config.json `caption_vocab`)
  layers      the decoder's largest MatMul weight (a layer's MLP), negated
  head        the output head (the decoder's last MatMul weight), scaled by 1.1
"""

from __future__ import annotations

import json
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


def _token_table(model: onnx.ModelProto) -> tuple[str, int, bool]:
    """(initializer, the axis tokens are gathered along, whether indexed by token id) of the token table."""
    inits = {t.name for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return node.input[0], axis, node.input[1] == "input_ids"


def _positions(export: Path, ids: list[int], by_id: bool) -> list[int]:
    """Where tokens sit in a table indexed by caption-vocabulary position (their ids when indexed by id)."""
    if by_id:
        return ids
    source = json.loads((Path(export) / "export_config.json").read_text())["source_model"]
    vocab = json.loads((Path(source) / "config.json").read_text())["caption_vocab"]
    return [vocab.index(i) for i in ids]


def _swap(values: np.ndarray, axis: int, a: int, b: int) -> np.ndarray:
    out = np.moveaxis(values.copy(), axis, 0)
    out[[a, b]] = out[[b, a]]
    return np.moveaxis(out, 0, axis)


def _weight_name(model: onnx.ModelProto, part: str) -> str:
    """The initializer the part's damage goes to, from the fp32 graph's structure."""
    inits = {t.name: t for t in model.graph.initializer}
    matmuls = [n.input[1] for n in model.graph.node
               if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]
    if part == "vision":
        return matmuls[0]
    if part in ("projector", "head"):
        return matmuls[-1]
    if part == "layers":
        return max(matmuls[:-1], key=lambda name: int(np.prod(inits[name].dims)))
    if part == "embeddings":
        return _token_table(model)[0]
    raise ValueError(part)


def plant(export: Path, layout: str, dtype: str, part: str, bos: int, other_token: int) -> str:
    """Damage `part` in the `dtype` file of its graph; return what was done (for assertion messages)."""
    graph = graph_of(part, layout)
    structure = onnx.load(str(_file(export, graph, "fp32")), load_external_data=False)
    name = _weight_name(structure, part)
    path = _file(export, graph, dtype)
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    target = inits.get(name) or inits.get(f"{name}/stored_int8/q")
    if target is None:
        raise LookupError(f"{path.name} holds neither {name} nor its 8-bit form")
    values = numpy_helper.to_array(target).copy()
    if part == "embeddings":
        _, axis, by_id = _token_table(structure)
        a, b = _positions(export, [bos, other_token], by_id)
        # q8 stores a table read by row as [rows, blocks, 32] and a matrix read by column as [blocks, 32, columns]
        stored_axis = axis if target.name == name else (0 if axis == 0 else -1)
        values = _swap(values, stored_axis, a, b)
        if target.name != name:  # the scales of the swapped entries go with them
            scale = inits[f"{name}/stored_int8/scale"]
            scale.CopyFrom(numpy_helper.from_array(_swap(numpy_helper.to_array(scale), stored_axis, a, b), scale.name))
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
    path.unlink()  # a new file: a copy made with hard links (copytree(copy_function=os.link)) keeps the original intact
    onnx.save(model, str(path))
    return f"{part}: {target.name} {list(values.shape)} in {path.name}"
