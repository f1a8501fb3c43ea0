"""Whether a quantized graph's integer products depend on the CPU's int8 kernels, and a model of the one kernel path
that changes them, so its effect can be measured on any machine.

Dynamic quantization multiplies uint8 activations (quantized at run time) by constant weights in MatMulInteger /
ConvInteger nodes. onnxruntime picks the kernel by the CPU (MLAS, at run time, by cpuid; nothing selects it):
- x86 with VNNI (vpdpbusd), WebAssembly SIMD (the onnxruntime-web build transformers.js loads widens to 16 bits and
  uses i32x4.dot_i16x8_s; it has no relaxed-SIMD dot products), ARM dot products, and every u8 x u8 kernel: exact
  32-bit sums;
- x86 without VNNI (AVX2, AVX-512 without VNNI) for u8 x s8: vpmaddubsw, which adds the products of adjacent pairs
  of k (a[2j] * w[2j] + a[2j+1] * w[2j+1]) into a signed 16-bit lane and saturates at -32768 / 32767 before the
  32-bit sum (onnxruntime's quantization guide: "may suffer from saturation"; x86_64/QgemmU8S8KernelAvx2.S).

A pair can leave 16 bits only when w[2j] and w[2j+1] have one sign and |w[2j]| + |w[2j+1]| > 128 (255 * 128 =
32640; `reach`). 7-bit weights (-64..64, reduce_range), uint8 weights (u8 x u8 kernels) and q8's reordered int8
weights (quantize/pair_safe.py) never have such a pair, so their captions are the same on every CPU; plain full-range
int8 weights can (`saturating_gemms` names those nodes). `emulate_u8s8_without_vnni` rewrites a graph so that
onnxruntime computes those nodes as the AVX2 kernel does (only the pairs that can saturate are computed twice): what
a graph captions on such a CPU, measured on this one.

What this module does not know: kernels other than MLAS's (an onnxruntime-web built with relaxed SIMD would
saturate like AVX2 on full-range int8 weights, which is why q8 avoids them); the order MLAS packs k in beyond
pairs of adjacent k (its packing routines interleave rows k0..k3 of the weight and multiply-add them in pairs, which
is what the emulation and `reach` assume); subgraphs (only a graph's top level is read; the exported graphs have no
If or Loop bodies).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INT16_MAX = 32767
U8_MAX = 255
# the largest reach (|w[2j]| + |w[2j+1]| of one sign) whose u8 x s8 pair cannot leave 16 bits: 255 * 128 = 32640
SAFE_PAIR_SUM = INT16_MAX // U8_MAX
INTEGER_GEMMS = ("MatMulInteger", "ConvInteger")


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in model.graph.initializer}


def pair_reach(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far weights a and b, multiplied by two u8 activations and added, can push a 16-bit sum, in units of the
    largest activation (255): |a| + |b| when both have one sign, the larger of the two when they differ (a u8
    activation is never negative, so opposite signs cannot add up). Elementwise, int32."""
    a, b = a.astype(np.int32), b.astype(np.int32)
    return np.maximum(np.maximum(a, 0) + np.maximum(b, 0), np.maximum(-a, 0) + np.maximum(-b, 0))


def reach(weight: np.ndarray) -> np.ndarray:
    """`pair_reach` of each pair (k = 2j, 2j + 1) of a weight. Reduced axis: the first of a MatMul's [K, N] weight; a
    Conv's [out, in, kh, kw] reduces over in x kh x kw. int32 [ceil(K / 2), N]."""
    w = weight.astype(np.int32)
    if w.ndim == 4:
        w = w.reshape(w.shape[0], -1).T
    if w.shape[0] % 2:
        w = np.concatenate([w, np.zeros((1,) + w.shape[1:], np.int32)])
    return pair_reach(w[0::2], w[1::2])


def worst_pair(model: onnx.ModelProto) -> dict[str, int]:
    """node name -> the largest `reach` of its constant int8 weight's pairs, for every integer GEMM with one (uint8
    weights run on u8 x u8 kernels, which never saturate, and are not listed)."""
    weights = initializers(model)
    found = {}
    for node in model.graph.node:
        if node.op_type in INTEGER_GEMMS and len(node.input) > 1 and node.input[1] in weights:
            tensor = weights[node.input[1]]
            if tensor.data_type == TensorProto.INT8:
                found[node.name] = int(reach(numpy_helper.to_array(tensor)).max())
    return found


def saturating_gemms(model: onnx.ModelProto) -> list[str]:
    """The integer GEMMs whose u8 x s8 products can saturate on x86 without VNNI: empty when the graph's captions do
    not depend on the CPU's int8 kernels."""
    return sorted(name for name, worst in worst_pair(model).items() if worst > SAFE_PAIR_SUM)


def _emulation_nodes(node: onnx.NodeProto, weight: np.ndarray, prefix: str) -> tuple[list, list]:
    """Nodes that add to MatMulInteger(a, w, ...)'s exact result what x86's u8 x s8 multiply-add kernel loses: for
    each pair of adjacent k whose 16-bit sum can saturate (|w[2j]| + |w[2j+1]| > SAFE_PAIR_SUM; a real decoder has a
    few hundred among millions), clip(pair) - pair, scattered onto its output column. Only those pairs are
    computed, so memory stays at [..., M, risky pairs]. Returns (nodes, initializers); nodes empty when no pair can
    saturate. The zero points need no change: the kernel saturates raw products and corrects for them exactly."""
    w = weight.astype(np.int32)
    if w.shape[0] % 2:  # an odd K: its last product pairs with nothing (a lone u8 x s8 product fits in 16 bits)
        w = np.concatenate([w, np.zeros((1, w.shape[1]), np.int32)])
    pair_rows, columns = np.nonzero(reach(weight) > SAFE_PAIR_SUM)
    if not len(pair_rows):
        return [], []
    inits = [numpy_helper.from_array((2 * pair_rows).astype(np.int64), prefix + "k_even"),
             numpy_helper.from_array((2 * pair_rows + 1).astype(np.int64), prefix + "k_odd"),
             numpy_helper.from_array(w[2 * pair_rows, columns], prefix + "w_even"),
             numpy_helper.from_array(w[2 * pair_rows + 1, columns], prefix + "w_odd"),
             numpy_helper.from_array(columns.astype(np.int64), prefix + "columns"),
             numpy_helper.from_array(np.array(-INT16_MAX - 1, np.int32), prefix + "lo"),
             numpy_helper.from_array(np.array(INT16_MAX, np.int32), prefix + "hi")]
    exact, out = prefix + "exact", node.output[0]

    def n(op, ins, outs, **kw):
        return helper.make_node(op, ins, outs, name=prefix + outs[0].rsplit("/", 1)[-1], **kw)

    kept = onnx.NodeProto()
    kept.CopyFrom(node)
    kept.output[0] = exact
    nodes = [
        kept,
        n("Cast", [node.input[0]], [prefix + "a32"], to=TensorProto.INT32),
        n("Gather", [prefix + "a32", prefix + "k_even"], [prefix + "a_even"], axis=-1),  # [..., M, risky]
        n("Gather", [prefix + "a32", prefix + "k_odd"], [prefix + "a_odd"], axis=-1),
        n("Mul", [prefix + "a_even", prefix + "w_even"], [prefix + "p_even"]),
        n("Mul", [prefix + "a_odd", prefix + "w_odd"], [prefix + "p_odd"]),
        n("Add", [prefix + "p_even", prefix + "p_odd"], [prefix + "pair"]),
        n("Max", [prefix + "pair", prefix + "lo"], [prefix + "pair_lo"]),
        n("Min", [prefix + "pair_lo", prefix + "hi"], [prefix + "pair_sat"]),
        n("Sub", [prefix + "pair_sat", prefix + "pair"], [prefix + "lost"]),
        n("Shape", [prefix + "lost"], [prefix + "lost_shape"]),
        n("Expand", [prefix + "columns", prefix + "lost_shape"], [prefix + "lost_columns"]),
        n("Shape", [exact], [prefix + "out_shape"]),
        n("ConstantOfShape", [prefix + "out_shape"], [prefix + "zeros"],
          value=numpy_helper.from_array(np.array([0], np.int32))),
        n("ScatterElements", [prefix + "zeros", prefix + "lost_columns", prefix + "lost"], [prefix + "correction"],
          axis=-1, reduction="add"),
        n("Add", [exact, prefix + "correction"], [out]),
    ]
    return nodes, inits


def emulate_u8s8_without_vnni(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose MatMulIntegers with a constant int8 weight compute as onnxruntime's u8 x s8 kernels do
    on x86 without VNNI (saturating pairs); every other node unchanged. Run it with onnxruntime on any CPU to see what
    such a CPU captions. ConvInteger is left as it is (onnxruntime has no int8 ConvInteger: Conv weights are uint8)."""
    if not any(o.domain in ("", "ai.onnx") and o.version >= 16 for o in model.opset_import):
        raise ValueError("the emulation needs opset 16 or later (ScatterElements with reduction)")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    weights = initializers(model)
    graph = model.graph
    new_nodes, new_inits = [], []
    for i, node in enumerate(graph.node):
        tensor = weights.get(node.input[1]) if node.op_type == "MatMulInteger" and len(node.input) > 1 else None
        if tensor is None or tensor.data_type != TensorProto.INT8:
            new_nodes.append(node)
            continue
        zero = node.input[3] if len(node.input) > 3 and node.input[3] else None
        if zero is not None and np.any(numpy_helper.to_array(weights[zero])):
            raise ValueError(f"{node.name}: an int8 weight with a non-zero zero point is not what onnxruntime's "
                             "dynamic quantization writes; the emulation assumes symmetric weights")
        nodes, inits = _emulation_nodes(node, numpy_helper.to_array(tensor), f"u8s8_emulated_{i}/")
        new_nodes += nodes or [node]
        new_inits += inits
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    return model
