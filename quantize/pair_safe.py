"""Full-range int8 weights whose integer products cannot saturate on any CPU: each weight's rows (its input channels
k) put in an order where no pair the x86 u8 x s8 kernel adds in 16 bits (k = 2j, 2j + 1; quantize/kernel_paths.py)
holds two large same-signed weights, and the activations gathered in the same order in front of the quantization.

An integer sum does not depend on the order of its terms, so on exact kernels (VNNI, WebAssembly, ARM) the reordered
graph computes bit for bit what the plain one does, and on x86 without VNNI it now computes the same. A pair can
saturate only when both weights have one sign and |w[2j]| + |w[2j+1]| > 128 (kernel_paths.SAFE_PAIR_SUM), so rows
holding a weight over 64 are paired with rows that are small where they are large. MatMulIntegers that read one
activation share its order (their weights are matched together). Trained weights pair easily (a real SmolLM2
decoder: all 120 groups, 2026-12-07); uniform random ones often cannot (a freshly initialised vision tower): those
groups are returned by `unpairable`, for the caller to quantize another way.

What this does not know: how the weights were quantized (it reads the int8 graph only), or kernels that add other
neighbours than (2j, 2j + 1); MLAS's packing interleaves rows k0..k3 of B and multiply-adds them in pairs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from distilvit.quantize.kernel_paths import SAFE_PAIR_SUM, reach

HALF = SAFE_PAIR_SUM // 2  # a row whose weights are all within +-64 is safe beside any other such row
BLOCK = 256  # candidate partners checked at once


def _groups(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Activation input -> the MatMulIntegers with a constant int8 weight that read it."""
    weights = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and len(node.input) > 1 and node.input[1] in weights \
                and weights[node.input[1]].data_type == TensorProto.INT8:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def _risky(w: np.ndarray) -> bool:
    return bool((reach(w) > SAFE_PAIR_SUM).any())


def pairing(w: np.ndarray) -> np.ndarray | None:
    """An order of w's rows (int32 [K, N]) in which no pair (2j, 2j + 1) can saturate, or None. Greedy: the row with
    the largest weight first, beside the smallest row it is compatible with (no column where both have one sign and
    add past 128)."""
    k = w.shape[0]
    size = np.abs(w).max(1)
    by_size = np.argsort(-size, kind="stable")
    smallest_first = by_size[::-1]
    free = np.ones(k, bool)
    order: list[int] = []
    for row in by_size:
        if not free[row]:
            continue
        free[row] = False
        if size[row] <= HALF:  # every row left is as small: any order is safe
            order += [row] + [r for r in by_size if free[r]]
            break
        candidates = smallest_first[free[smallest_first]]
        partner = None
        for start in range(0, len(candidates), BLOCK):
            block = candidates[start:start + BLOCK]
            clash = (np.sign(w[block]) == np.sign(w[row])) & (np.abs(w[block]) + np.abs(w[row]) > SAFE_PAIR_SUM)
            fits = np.flatnonzero(~clash.any(1))
            if len(fits):
                partner = block[fits[0]]
                break
        if partner is None:
            if k % 2 and not free.any():  # an odd K's last row pairs with the kernel's zero padding
                order.append(row)
                continue
            return None
        free[partner] = False
        order += [row, partner]
    return np.array(order, np.int64)


def unpairable(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMulIntegers (all that read one activation) whose int8 weights no order makes safe."""
    weights = {i.name: i for i in model.graph.initializer}
    found = []
    for nodes in _groups(model).values():
        w = np.concatenate([numpy_helper.to_array(weights[n.input[1]]).astype(np.int32) for n in nodes], 1)
        if _risky(w) and pairing(w) is None:
            found += [n.name for n in nodes]
    return found


def reorder(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every pairable group's weight rows reordered and a Gather putting its activations in that order
    (on the float input of its DynamicQuantizeLinear when only the group reads that quantization, so onnxruntime
    still fuses quantization and product; on the quantized activations otherwise). Groups that are already safe are
    left as they are; unpairable groups too (see `unpairable`)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    nodes_in_order = list(graph.node)  # one wrapper per node, compared by position below
    position = {n.name: i for i, n in enumerate(nodes_in_order)}
    if len(position) != len(nodes_in_order):
        raise ValueError("reorder needs unique node names (onnxruntime's quantizer writes them)")
    producers = {o: n for n in nodes_in_order for o in n.output}
    readers: dict[str, set] = {}
    for i, n in enumerate(nodes_in_order):
        for name in n.input:
            readers.setdefault(name, set()).add(i)
    before: dict[int, onnx.NodeProto] = {}  # position -> the Gather to insert in front of it
    for activation, nodes in _groups(model).items():
        w = np.concatenate([numpy_helper.to_array(weights[n.input[1]]).astype(np.int32) for n in nodes], 1)
        if not _risky(w):
            continue
        order = pairing(w)
        if order is None:
            continue
        prefix = f"pair_safe/{activation}"
        graph.initializer.append(numpy_helper.from_array(order, prefix + "/order"))
        members = [nodes_in_order[position[n.name]] for n in nodes]
        for n in members:  # a new initializer each: a weight another node also reads keeps its own order there
            name = n.input[1] + "/pair_safe"
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(weights[n.input[1]])[order], name))
            n.input[1] = name
        quantize = producers.get(activation)
        if quantize is not None and quantize.op_type == "DynamicQuantizeLinear" \
                and readers[activation] == {position[n.name] for n in nodes}:
            before[position[quantize.name]] = helper.make_node(
                "Gather", [quantize.input[0], prefix + "/order"], [prefix + "/input"], name=prefix + "/gather", axis=-1)
            quantize.input[0] = prefix + "/input"
        else:
            before[min(position[n.name] for n in nodes)] = helper.make_node(
                "Gather", [activation, prefix + "/order"], [prefix + "/quantized"], name=prefix + "/gather", axis=-1)
            for n in members:
                n.input[0] = prefix + "/quantized"
    if before:
        ordered = []
        for i, n in enumerate(nodes_in_order):
            if i in before:
                ordered.append(before[i])
            ordered.append(n)
        ordered = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
        del graph.node[:]
        graph.node.extend(ordered)
        read = {name for n in graph.node for name in n.input}
        kept = [i for i in graph.initializer if i.name in read]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return model
