"""quantize/kernel_paths.py: which quantized graphs compute the same on every CPU, and the emulation of the one int8
kernel path that does not (x86 without VNNI: u8 x s8 products added in pairs and saturated to 16 bits).

The emulation is compared with two things it must not be confused with: numpy's exact integer product (which
onnxruntime on this machine computes, and which it must differ from where a pair saturates) and numpy's model of the
saturating kernel (which it must equal)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from distilvit.quantize import modes, pair_safe
from distilvit.quantize.kernel_paths import (SAFE_PAIR_SUM, emulate_u8s8_without_vnni, reach, saturating_gemms,
                                             worst_pair)


def matmul_integer(weight: np.ndarray, a_zero: int, batch: tuple = (2, 3)) -> onnx.ModelProto:
    k, n = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w", "a_zero"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [*batch, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [*batch, n])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array(a_zero, np.uint8), "a_zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, **feeds) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def saturating_reference(a: np.ndarray, w: np.ndarray, a_zero: int) -> np.ndarray:
    """The AVX2 u8s8 kernel in numpy: raw u8 x s8 products of k = 2j and 2j + 1 added and clipped to int16, summed
    in int32, then the activations' zero point taken off with the weight's column sums."""
    a, w = a.astype(np.int64), w.astype(np.int64)
    if w.shape[0] % 2:
        a = np.concatenate([a, np.zeros(a.shape[:-1] + (1,), np.int64)], -1)
        w = np.concatenate([w, np.zeros((1, w.shape[1]), np.int64)])
    pairs = a[..., 0::2, None] * w[0::2] + a[..., 1::2, None] * w[1::2]
    return np.clip(pairs, -32768, 32767).sum(-2) - a_zero * w.sum(0)


@pytest.mark.parametrize("k", [8, 9])  # an odd K pads its last product with nothing
def test_the_emulation_saturates_pairs_as_the_avx2_kernel_does(k):
    rng = np.random.default_rng(k)
    w = rng.integers(-128, 128, (k, 5)).astype(np.int8)
    w[:2, 0], w[:2, 1] = 127, -128  # two pairs past 16 bits when their activations are 255
    a = rng.integers(0, 256, (2, 3, k)).astype(np.uint8)
    a[..., :2] = 255
    model = matmul_integer(w, a_zero=100)
    exact = run(model, a=a)
    emulated = emulate_u8s8_without_vnni(model)
    onnx.checker.check_model(emulated)
    got = run(emulated, a=a)
    assert np.array_equal(exact, a.astype(np.int64) @ w.astype(np.int64) - 100 * w.astype(np.int64).sum(0))
    assert np.array_equal(got, saturating_reference(a, w, 100))
    assert not np.array_equal(got, exact)  # the planted pairs saturate: the emulation is not the exact product
    assert saturating_gemms(model) == ["mm"] and worst_pair(model) == {"mm": 256}  # -128, -128


def test_seven_bit_weights_never_saturate_and_are_not_flagged():
    rng = np.random.default_rng(0)
    w = rng.integers(-64, 65, (16, 4)).astype(np.int8)
    w[:2] = 64  # the worst pairs 7-bit weights can make: 255 * 128 = 32640 fits in 16 bits
    a = np.full((1, 2, 16), 255, np.uint8)
    model = matmul_integer(w, a_zero=0, batch=(1, 2))
    assert worst_pair(model) == {"mm": SAFE_PAIR_SUM} and saturating_gemms(model) == []
    assert np.array_equal(run(emulate_u8s8_without_vnni(model), a=a), run(model, a=a))


def small_decoder_like() -> onnx.ModelProto:
    """A float graph with a token lookup and two MatMuls whose weights are small but for a few large, same-signed
    neighbours in k (as trained weights have outliers), and whose activations are large where those are, for the
    recipes to quantize."""
    rng = np.random.default_rng(3)
    table = rng.normal(size=(32, 16)).astype(np.float32)
    table[:, 4:6] = 2.0
    w1 = (0.2 * rng.normal(size=(16, 24))).astype(np.float32)
    w1[4:6, :3] = 6.0
    w2 = (0.2 * rng.normal(size=(24, 16))).astype(np.float32)
    w2[10:12, 5] = 6.0
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["x"], name="lookup"),
         helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="down")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 16])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w1, "w1"),
         numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_pair_safe_int8_computes_the_same_on_every_int8_kernel_path_and_int8_does_not():
    """The recipes on one graph: pair-safe int8's integer GEMMs cannot saturate (none flagged, the emulated no-VNNI
    graph gives bit-identical outputs) and, its rows only reordered, it computes bit for bit what plain dynamic int8
    computes on this CPU's exact kernels; the int8 dtype's full-range weights can saturate (flagged; emulated outputs
    differ). q8 (stored-int8) has no integer product at all."""
    model = small_decoder_like()
    ids = {"ids": np.array([[1, 2, 3, 4, 5]], np.int64)}
    assert saturating_gemms(modes.to_q8(model)) == []
    assert not {"MatMulInteger", "ConvInteger"} & {n.op_type for n in modes.to_q8(model).graph.node}
    q8 = modes.to_dynamic_int8_pair_safe(model)
    plain = modes.to_dynamic_int8(model)
    assert saturating_gemms(plain) and "Gather" in {n.op_type for n in q8.graph.node if n.name.startswith("pair_safe/")}
    assert saturating_gemms(q8) == []
    assert {n.op_type for n in q8.graph.node} >= {"MatMulInteger", "DynamicQuantizeLinear"}
    assert np.array_equal(run(q8, **ids), run(plain, **ids))
    assert np.array_equal(run(emulate_u8s8_without_vnni(q8), **ids), run(q8, **ids))

    int8 = modes.to_int8(model)
    flagged = saturating_gemms(int8)
    integer_products = {n.name for n in int8.graph.node if n.op_type == "MatMulInteger"}
    assert flagged and set(flagged) <= integer_products
    assert not np.array_equal(run(emulate_u8s8_without_vnni(int8), **ids), run(int8, **ids))


def test_a_weight_no_order_makes_safe_gets_7_bit_weights_in_pair_safe_int8():
    """Rows that all hold large same-signed weights (here: every weight positive, as a freshly initialised layer can
    be) cannot be paired safely: pair-safe int8 quantizes that MatMul to 7 bits (-64..64: no pair can reach past 16
    bits, and it stays on the int8 kernels) and keeps full-range int8 for the rest; nothing in it can saturate."""
    model = small_decoder_like()
    w1 = next(i for i in model.graph.initializer if i.name == "w1")
    w1.CopyFrom(numpy_helper.from_array(np.random.default_rng(1).uniform(0.9, 1.0, (16, 24)).astype(np.float32), "w1"))
    plain = modes.to_dynamic_int8(model)
    assert pair_safe.unpairable(plain) == ["up_quant"]
    q8 = modes.to_dynamic_int8_pair_safe(model)
    weights = {i.name: numpy_helper.to_array(i) for i in q8.graph.initializer}
    by_name = {n.name: n for n in q8.graph.node}
    up, down = weights[by_name["up_quant"].input[1]], weights[by_name["down_quant"].input[1]]
    assert up.dtype == np.int8 and np.abs(up.astype(int)).max() == 64
    assert down.dtype == np.int8 and np.abs(down.astype(int)).max() == 127
    assert saturating_gemms(q8) == []


def test_pairing_puts_large_rows_beside_rows_small_where_they_are_large():
    w = np.zeros((6, 2), np.int32)
    w[0], w[1] = [127, 0], [100, 0]  # the kernel's first pair would reach 227 in column 0
    w[2], w[3] = [0, 120], [0, 90]
    w[4], w[5] = [3, 2], [-5, 1]
    order = pair_safe.pairing(w)
    assert sorted(order) == list(range(6))
    assert reach(w[order]).max() <= SAFE_PAIR_SUM < reach(w).max()
    assert pair_safe.pairing(np.full((4, 3), 100, np.int32)) is None  # every pair reaches 200


def test_reordering_on_the_quantized_side_when_another_node_reads_the_quantization():
    """When the quantized activations are also read by a node outside the group, the channels are reordered after the
    quantization (uint8), not before it: the other reader sees them as they were, and the group's product is
    unchanged on exact kernels and safe on saturating ones."""
    rng = np.random.default_rng(5)
    w = rng.integers(-20, 21, (8, 4)).astype(np.int8)
    w[2:4, 1] = 100  # one pair reaching 200
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["a", "scale", "zero"], name="quantize"),
         helper.make_node("MatMulInteger", ["a", "w", "zero"], ["y"], name="mm"),
         helper.make_node("Identity", ["a"], ["seen"], name="other")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 4]),
         helper.make_tensor_value_info("seen", TensorProto.UINT8, [2, 8])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.abs(rng.normal(size=(2, 8))).astype(np.float32) * 3
    safe = pair_safe.reorder(model)
    assert saturating_gemms(model) == ["mm"] and saturating_gemms(safe) == []
    assert any(n.op_type == "ScatterElements" and n.output[0].endswith("/quantized") for n in safe.graph.node)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (model, safe)]
    (y, seen), (y_safe, seen_safe) = (s.run(None, {"x": x}) for s in sessions)
    assert np.array_equal(y, y_safe) and np.array_equal(seen, seen_safe)
