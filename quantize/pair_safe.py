"""Full-range int8 weights whose integer products cannot saturate on any CPU: each weight's rows (its input channels
k) put in an order where no pair the x86 u8 x s8 kernel adds in 16 bits (k = 2j, 2j + 1; quantize/kernel_paths.py)
holds two large same-signed weights, and the activations put in the same order in front of their quantization.

An integer sum does not depend on the order of its terms, so on exact kernels (VNNI, WebAssembly, ARM) the reordered
graph computes bit for bit what the plain one does, and on x86 without VNNI it now computes the same. A pair can
saturate only when both weights have one sign and |w[2j]| + |w[2j+1]| > 128 (kernel_paths.SAFE_PAIR_SUM); trained
weights have few such pairs (a real SmolLM2 decoder: 364 among 53 million), so each is mended by swapping one row
with a row of another pair that is small where it is large, and only the channels that moved are gathered (a Gather
and a ScatterElements over a copy: 501 channels of the real decoder's 92 groups; a Gather of every channel cost 25% of
a caption in onnxruntime). MatMulIntegers that read one activation share its order (their weights are matched
together). Uniform random weights (a freshly initialised vision tower) often cannot be mended: `unpairable` names
those groups, for the caller to quantize another way (modes.py: 7 bits).

What this does not know: how the weights were quantized (it reads the int8 graph only), or kernels that add other
neighbours than (2j, 2j + 1); MLAS's packing interleaves rows k0..k3 of B and multiply-adds them in pairs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from distilvit.quantize.kernel_paths import SAFE_PAIR_SUM, initializers, pair_reach, reach

BLOCK = 256  # candidate partners checked at once


def _groups(model: onnx.ModelProto) -> list[tuple[str, list[onnx.NodeProto], np.ndarray]]:
    """(activation input, the MatMulIntegers with a constant int8 weight that read it, their weights side by side as
    int32 [K, sum of N])."""
    weights = initializers(model)
    groups: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and len(node.input) > 1 and node.input[1] in weights \
                and weights[node.input[1]].data_type == TensorProto.INT8:
            groups.setdefault(node.input[0], []).append(node)
    return [(activation, nodes, np.concatenate([numpy_helper.to_array(weights[n.input[1]]).astype(np.int32)
                                                for n in nodes], 1))
            for activation, nodes in groups.items()]


def _clashes(w: np.ndarray, row: int, rows: np.ndarray) -> np.ndarray:
    """For each of `rows`: whether it and `row` can saturate as a pair (`pair_reach` past SAFE_PAIR_SUM in a
    column)."""
    return (pair_reach(w[rows], w[row]) > SAFE_PAIR_SUM).any(1)


def pairing(w: np.ndarray) -> np.ndarray | None:
    """An order of w's rows (int [K, N]) in which no pair (2j, 2j + 1) can saturate, moving as few rows as it can,
    or None. Each unsafe pair (a, b) swaps b for a row c of another pair (d, c) such that (a, c) and (d, b) are both
    safe, trying the rows with the smallest weights first; then a for c, likewise."""
    k = w.shape[0]
    if k % 2:  # an odd K's last row pairs with the kernel's zero padding: a zero row stands for it here
        w = np.concatenate([w, np.zeros((1, w.shape[1]), w.dtype)])
    order = np.arange(w.shape[0])
    by_size = np.argsort(np.abs(w).max(1), kind="stable")  # rows, smallest weights first
    by_size = by_size[by_size < k]  # the padding row stays where the kernel puts it
    for j in np.flatnonzero(reach(w).max(1) > SAFE_PAIR_SUM):
        if not _clashes(w, order[2 * j], order[2 * j + 1:2 * j + 2])[0]:
            continue  # an earlier swap made it safe
        if not _swap(w, order, by_size, 2 * j, 2 * j + 1) and not _swap(w, order, by_size, 2 * j + 1, 2 * j):
            return None
    return order[:k]


def _swap(w: np.ndarray, order: np.ndarray, by_size: np.ndarray, keep: int, move: int) -> bool:
    """Swap the row at position `move` for one at another pair's position p, so that both pairs become safe."""
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    for start in range(0, len(by_size), BLOCK):
        rows = by_size[start:start + BLOCK]
        positions = where[rows]
        rows = rows[(positions // 2 != keep // 2)]
        rows = rows[~_clashes(w, order[keep], rows)]
        for row in rows:
            p = where[row]
            if not _clashes(w, order[p ^ 1], np.array([order[move]]))[0]:
                order[p], order[move] = order[move], order[p]
                return True
    return False


def _orders(model: onnx.ModelProto) -> list[tuple[str, list[onnx.NodeProto], np.ndarray | None]]:
    """(activation, its group, the order that makes it safe or None when none does) for every group that can
    saturate as it is."""
    return [(activation, nodes, pairing(w)) for activation, nodes, w in _groups(model)
            if (reach(w) > SAFE_PAIR_SUM).any()]


def unpairable(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMulIntegers (all that read one activation) whose int8 weights no order makes safe."""
    return [n.name for _, nodes, order in _orders(model) if order is None for n in nodes]


def _moves(source: str, prefix: str, result: str) -> list[onnx.NodeProto]:
    """`result` = `source` with the channels at `prefix/moved` taken from `prefix/from`: a Gather of the few moved
    channels scattered over a copy (a Gather of every channel on the last axis cost onnxruntime 9 ns an element,
    25% of a caption, 2026-12-07)."""
    return [helper.make_node("Gather", [source, prefix + "/from"], [prefix + "/taken"], name=prefix + "/take", axis=-1),
            helper.make_node("Shape", [prefix + "/taken"], [prefix + "/taken_shape"], name=prefix + "/shape"),
            helper.make_node("Expand", [prefix + "/moved", prefix + "/taken_shape"], [prefix + "/at"],
                             name=prefix + "/expand"),
            helper.make_node("ScatterElements", [source, prefix + "/at", prefix + "/taken"], [result],
                             name=prefix + "/put", axis=-1)]


def reorder(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every pairable group mended (`mend`); unpairable groups left as they are."""
    return mend(model)[0]


def mend(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """(`model` with every pairable group's weight rows reordered and its moved channels put in that order (`_moves`:
    on the float input of its DynamicQuantizeLinear when only the group reads that quantization, so onnxruntime
    still fuses quantization and product; on the quantized activations otherwise), the names of the MatMulIntegers
    no order makes safe, left as they are). Groups that are already safe are left as they are."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    weights = initializers(model)
    nodes_in_order = list(graph.node)  # one wrapper per node, compared by position below
    position = {n.name: i for i, n in enumerate(nodes_in_order)}
    if len(position) != len(nodes_in_order):
        raise ValueError("reorder needs unique node names (onnxruntime's quantizer writes them)")
    producers = {o: n for n in nodes_in_order for o in n.output}
    readers: dict[str, set] = {}
    for i, n in enumerate(nodes_in_order):
        for name in n.input:
            readers.setdefault(name, set()).add(i)
    before: dict[int, list] = {}  # position -> the nodes that reorder the activations, inserted in front of it
    unmended = []
    for activation, nodes, order in _orders(model):
        if order is None:
            unmended += [n.name for n in nodes]
            continue
        prefix = f"pair_safe/{activation}"
        members = [nodes_in_order[position[n.name]] for n in nodes]
        for n in members:  # a new initializer each: a weight another node also reads keeps its own order there
            name = n.input[1] + "/pair_safe"
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(weights[n.input[1]])[order], name))
            n.input[1] = name
        moved = np.flatnonzero(order != np.arange(len(order)))
        graph.initializer.extend([numpy_helper.from_array(moved.astype(np.int64), prefix + "/moved"),
                                  numpy_helper.from_array(order[moved].astype(np.int64), prefix + "/from")])
        quantize = producers.get(activation)
        if quantize is not None and quantize.op_type == "DynamicQuantizeLinear" \
                and readers[activation] == {position[n.name] for n in nodes}:
            source, at, result = quantize.input[0], position[quantize.name], prefix + "/input"
            quantize.input[0] = result
        else:
            source, at, result = activation, min(position[n.name] for n in nodes), prefix + "/quantized"
            for n in members:
                n.input[0] = result
        before[at] = _moves(source, prefix, result)
    if before:
        ordered = []
        for i, n in enumerate(nodes_in_order):
            ordered += before.get(i, [])
            ordered.append(n)
        ordered = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
        del graph.node[:]
        graph.node.extend(ordered)
        read = {name for n in graph.node for name in n.input}
        kept = [i for i in graph.initializer if i.name in read]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return model, unmended

