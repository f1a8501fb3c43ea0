"""8-bit weights in the file, float32 arithmetic in the session: each large weight of a MatMul, Gather or Conv stored
as int8 in blocks with one scale per block, and turned back into float32 by constant nodes (Cast, Mul, Reshape) that
onnxruntime folds once when the session loads (its constant folding evaluates any node whose inputs are all
initializers; DequantizeLinear is the one op it leaves unfolded by default, to keep QDQ groups for its int8 kernels,
which is why it is not used here).

So the download is an int8 model's (plus the scales) and the session computes as the fp32 graph does, with weights
rounded to 8 bits: no activation is ever quantized, so no run-time scale is stretched by a real decoder's
activation outliers, and nothing depends on the CPU's int8 kernels (every product is a float one). The cost is the
fp32 graph's speed and its memory once loaded (the weights live as float32 in the session).

Blocks run along the axis a weight is reduced over: a MatMul's B [K, N] in blocks of `block` rows of one column, a
token table [V, H] in blocks along H of one row, a Conv's weight [O, ...] along one output channel's inputs. A
reduced axis `block` does not divide gets one scale per channel. Scales are float16 where every one is a normal
float16 (else float32), and weights are rounded with the scale that is stored, so what the session computes is
exactly dequantize(stored).

What this module does not know: which graph is which, and whether a runtime other than onnxruntime folds the
constants (onnxruntime-web and onnxruntime-node, which transformers.js runs, are onnxruntime).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT16_SMALLEST_NORMAL = 6.104e-05
FLOAT16_MAX = 65504.0
MIN_ELEMENTS = 1024  # smaller weights (norms, biases, tiny layers) stay float32: nothing to save
SUFFIX = "/stored_int8"  # names of the initializers and nodes this adds (the original name + this)


def _block_axes(model: onnx.ModelProto, skip_prefix: str) -> dict[str, int]:
    """initializer name -> the axis its blocks run along, for the float weights of MatMul (B), Gather (data) and
    Conv (W) that are worth storing in 8 bits. A weight read by nodes that reduce it along different axes is left
    alone (no such weight in the exported graphs: a tied head is its own initializer there)."""
    inits = {i.name: i for i in model.graph.initializer}
    axes: dict[str, set[int]] = {}
    for node in model.graph.node:
        if node.name.startswith(skip_prefix):
            continue
        if node.op_type == "MatMul" and len(node.input) > 1:
            name, axis = node.input[1], 0
        elif node.op_type == "Gather":
            name, axis = node.input[0], 1
        elif node.op_type == "Conv" and len(node.input) > 1:
            name, axis = node.input[1], 1
        else:
            continue
        init = inits.get(name)
        if init is None or init.data_type != TensorProto.FLOAT or len(init.dims) < 2:
            continue
        if node.op_type == "MatMul" and len(init.dims) != 2:  # a batched B reduces along its second-last axis
            continue
        if int(np.prod(init.dims)) < MIN_ELEMENTS:
            continue
        if node.op_type == "Gather" and any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        axes.setdefault(name, set()).add(axis)
    return {name: next(iter(a)) for name, a in axes.items() if len(a) == 1}


def quantize_blocks(weight: np.ndarray, axis: int, block: int) -> tuple[np.ndarray, np.ndarray, int]:
    """`weight` in symmetric int8 blocks of `block` along `axis` (flattened from `axis` on for a Conv): returns
    (int8 [..., L/b, b, ...], scales [..., L/b, 1, ...] as stored, the block used). Rounded with the stored scale."""
    shape = weight.shape
    if axis == 0:  # a MatMul's B [K, N] -> [K/b, b, N]
        length = shape[0]
        b = block if 0 < block < length and length % block == 0 else length
        grouped, reduce_axis = weight.reshape(length // b, b, *shape[1:]), 1
    else:  # a table's rows or a Conv's output channels, flattened: [R, L] -> [R, L/b, b]
        flat = weight.reshape(shape[0], -1)
        length = flat.shape[1]
        b = block if 0 < block < length and length % block == 0 else length
        grouped, reduce_axis = flat.reshape(shape[0], length // b, b), 2
    peak = np.abs(grouped).max(axis=reduce_axis, keepdims=True).astype(np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    if scale.min() >= FLOAT16_SMALLEST_NORMAL and scale.max() <= FLOAT16_MAX:
        scale = scale.astype(np.float16)
    q = np.clip(np.rint(grouped / scale.astype(np.float32)), -127, 127).astype(np.int8)
    return q, scale, b


def dequantize(q: np.ndarray, scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """What the folded nodes compute: float32(q) * float32(scale), reshaped to the weight's shape."""
    return (q.astype(np.float32) * scale.astype(np.float32)).reshape(shape)


def to_stored_int8(model: onnx.ModelProto, block: int = 32, skip_prefix: str = "pixels/") -> onnx.ModelProto:
    """`model` with its large MatMul/Gather/Conv weights stored in 8-bit blocks (module docstring); nodes named with
    `skip_prefix` (the pixel preparation in front of an image encoder) are left alone. Returns a new model."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never mutate the caller's model
    graph = model.graph
    axes = _block_axes(model, skip_prefix)
    if not axes:
        return model
    kept, added_inits, added_nodes = [], [], []
    for init in graph.initializer:
        if init.name not in axes:
            kept.append(init)
            continue
        weight = numpy_helper.to_array(init)
        q, scale, _ = quantize_blocks(weight, axes[init.name], block)
        base = init.name + SUFFIX
        added_inits += [numpy_helper.from_array(q, base + "/q"), numpy_helper.from_array(scale, base + "/scale"),
                        numpy_helper.from_array(np.array(weight.shape, dtype=np.int64), base + "/shape")]
        added_nodes += [
            helper.make_node("Cast", [base + "/q"], [base + "/q_f32"], to=TensorProto.FLOAT, name=base + "/cast_q"),
            helper.make_node("Cast", [base + "/scale"], [base + "/scale_f32"], to=TensorProto.FLOAT,
                             name=base + "/cast_scale"),
            helper.make_node("Mul", [base + "/q_f32", base + "/scale_f32"], [base + "/blocks"], name=base + "/mul"),
            helper.make_node("Reshape", [base + "/blocks", base + "/shape"], [init.name], name=base + "/reshape"),
        ]
    del graph.initializer[:]
    graph.initializer.extend(kept + added_inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(added_nodes + nodes)  # constants first: the graph stays topologically sorted
    return model
