"""quantize/stored_int8.py (what q8 is): weights stored in 8-bit blocks, turned back into float32 by constant nodes that
onnxruntime folds when the session loads.

Each property is checked against a second path: the converted graph in onnxruntime against the fp32 graph run with
the dequantized weights put in by numpy (the same numbers, so nothing else changed), and the session's optimized
graph (what it computes after loading) against the file (the dequantizing nodes are gone: folded, not run per call)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from distilvit.quantize import Q8_RECIPE, modes
from distilvit.quantize.stored_int8 import SUFFIX, dequantize, quantize_blocks, to_stored_int8


def small_graph() -> onnx.ModelProto:
    """A token lookup, a Conv, two MatMuls (one with outlier weights, as trained ones have) and a small bias that
    must stay float32; plus a `pixels/` MatMul no conversion may touch."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(40, 64)).astype(np.float32)
    conv = (0.1 * rng.normal(size=(64, 3, 4, 4))).astype(np.float32)
    w1 = (0.05 * rng.normal(size=(64, 96))).astype(np.float32)
    w1[7, :5] = 3.0  # outliers: a per-tensor scale would flatten the other weights of their column's block only
    w2 = (0.05 * rng.normal(size=(96, 64))).astype(np.float32)
    bias = rng.normal(size=(64,)).astype(np.float32)
    pix = rng.normal(size=(64, 64)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["img", "pix"], ["img2"], name="pixels/mm"),
        helper.make_node("Conv", ["img4", "conv"], ["c"], name="patch", strides=[4, 4]),
        helper.make_node("Reshape", ["img2", "img_shape"], ["img4"], name="to_image"),
        helper.make_node("Gather", ["table", "ids"], ["x"], name="lookup"),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y0"], name="down"),
        helper.make_node("Add", ["y0", "bias"], ["y"], name="bias_add"),
    ]
    graph = helper.make_graph(
        [nodes[0], nodes[2], nodes[1], *nodes[3:]], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 64]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 64, 2, 16])],
        [numpy_helper.from_array(a, n) for a, n in
         ((table, "table"), (conv, "conv"), (w1, "w1"), (w2, "w2"), (bias, "bias"), (pix, "pix"),
          (np.array([1, 3, 8, 64], np.int64), "img_shape"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


FEEDS = {"ids": np.array([[1, 5, 9, 2, 39]], np.int64),
         "img": np.random.default_rng(1).normal(size=(1, 3, 8, 64)).astype(np.float32)}


def run(model: onnx.ModelProto, optimized: str | None = None) -> list[np.ndarray]:
    options = ort.SessionOptions()
    if optimized:
        options.optimized_model_filepath = optimized
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, FEEDS)


def stored_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """name of each replaced weight -> the float32 the folded nodes make of it (numpy)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for name in {n[: -len(SUFFIX + "/q")] for n in inits if n.endswith(SUFFIX + "/q")}:
        base = name + SUFFIX
        out[name] = dequantize(inits[base + "/q"], inits[base + "/scale"], tuple(inits[base + "/shape"]))
    return out


def test_the_graph_computes_the_fp32_graph_with_the_rounded_weights():
    """onnxruntime on the converted file == onnxruntime on the fp32 graph whose weights numpy replaced with the
    dequantized ones; the rounding is within half a step of each block's scale; pixels/ and small tensors untouched."""
    model = small_graph()
    converted = to_stored_int8(model, 32)
    onnx.checker.check_model(converted)
    weights = stored_weights(converted)
    assert set(weights) == {"table", "conv", "w1", "w2"}  # not the 64-value bias, not the pixels/ weight
    reference = onnx.ModelProto.FromString(model.SerializeToString())
    originals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for init in reference.graph.initializer:
        if init.name in weights:
            init.CopyFrom(numpy_helper.from_array(weights[init.name], init.name))
            step = np.abs(originals[init.name]).max() / 127
            assert np.abs(weights[init.name] - originals[init.name]).max() <= step / 2 + 1e-6
            assert not np.array_equal(weights[init.name], originals[init.name])  # it was rounded
    for got, want in zip(run(converted), run(reference)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    for got, want in zip(run(converted), run(model)):  # and close to fp32, not equal: 8-bit weights
        assert 0 < np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_onnxruntime_folds_the_dequantization_when_the_session_loads(tmp_path):
    """What the session runs holds none of the dequantizing nodes and none of the int8 tensors: they were evaluated
    once at load. (A DequantizeLinear in their place is kept by onnxruntime's constant folding, to be run on every
    call: the planted form below shows the check can tell.)"""
    converted = to_stored_int8(small_graph(), 32)
    optimized = tmp_path / "optimized.onnx"
    run(converted, str(optimized))
    after = onnx.load_model(str(optimized))
    assert not [n.name for n in after.graph.node if SUFFIX in n.name]
    assert not [i.name for i in after.graph.initializer if i.data_type == TensorProto.INT8]

    planted = onnx.ModelProto.FromString(converted.SerializeToString())
    planted.graph.initializer.append(numpy_helper.from_array(np.array(0.01, np.float32), "one_scale"))
    for node in planted.graph.node:  # the multiplication as a DequantizeLinear of the int8 blocks: not folded
        if node.name.endswith("/mul"):
            base = node.name[: -len("/mul")]
            node.CopyFrom(helper.make_node("DequantizeLinear", [base + "/q", "one_scale"], [node.output[0]],
                                           name=base + "/dequantize"))
    onnx.checker.check_model(planted)
    run(planted, str(tmp_path / "planted.onnx"))
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load_model(str(tmp_path / "planted.onnx")).graph.node)


def test_blocks_follow_the_reduced_axis_and_fall_back_to_one_per_channel():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(96, 10)).astype(np.float32)
    q, scale, block = quantize_blocks(w, 0, 32)
    assert (q.shape, scale.shape, block, q.dtype, scale.dtype) == ((3, 32, 10), (3, 1, 10), 32, np.int8, np.float16)
    assert np.abs(q).max() == 127  # each block uses its full range
    _, scale, block = quantize_blocks(w, 0, 40)  # 40 does not divide 96: one scale per column
    assert (scale.shape, block) == ((1, 1, 10), 96)
    table = rng.normal(size=(7, 64)).astype(np.float32)
    q, scale, _ = quantize_blocks(table, 1, 32)
    assert (q.shape, scale.shape) == ((7, 2, 32), (7, 2, 1))
    tiny = np.full((32, 2), 1e-7, np.float32)  # a scale float16 cannot hold: kept float32
    assert quantize_blocks(tiny, 0, 32)[1].dtype == np.float32
    np.testing.assert_allclose(dequantize(*quantize_blocks(tiny, 0, 32)[:2], tiny.shape), tiny, rtol=1e-2)


def test_q8_is_stored_int8_and_leaves_the_callers_model_alone():
    model = small_graph()
    before = model.SerializeToString()
    q8 = modes.to_q8(model)
    assert Q8_RECIPE == "stored-int8" and modes.RECIPES[Q8_RECIPE] is modes.to_stored_int8
    assert model.SerializeToString() == before
    assert q8.SerializeToString() == to_stored_int8(model, 32).SerializeToString()
    assert not {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"} & {n.op_type for n in q8.graph.node}
    stored = sum(i.ByteSize() for i in q8.graph.initializer if SUFFIX in i.name)
    replaced = sum(i.ByteSize() for i in model.graph.initializer if i.name in {"table", "conv", "w1", "w2"})
    assert stored < 0.3 * replaced  # 1 byte a weight + a 2-byte scale per 32: (1 + 2 / 32) / 4 of float32
