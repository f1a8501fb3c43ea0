"""The floor `bench` measures every runtime against: this machine's memory bandwidth and GEMM rates (measured with the
threads the runtimes use), the model's FLOPs per stage, and from both the least time each stage can take.

Per token >= decoder bytes the session reads / memory bandwidth (a multi-threaded copy; q8's weights are float32 once
loaded, so it reads fp32's bytes); encoder and prefill >= their FLOPs / the GEMM rate of the dtype's arithmetic: the
int8 GEMM rate (onnxruntime MatMulInteger, the kernel int8/uint8 graphs run) for those dtypes, the fp32 GEMM rate for
the rest (q8 computes in float32; fp16 and 4-bit weights are computed in fp32 on a CPU). It knows
the architecture only through a model config; it runs no model.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from distilvit.quantize.modes import Q8_RECIPE


# dtypes that run MatMulInteger (dynamic quantization); every other dtype computes in float (q8 too when its recipe is
# weight-only: stored-int8 turns its 8-bit weights into float32 when the session loads)
INT8_DTYPES = ("int8", "uint8") + (("q8",) if Q8_RECIPE.startswith("dynamic") else ())
# dtypes whose session holds float32 weights whatever the file stores: a decoded token reads fp32's bytes
FLOAT32_IN_MEMORY = ("fp32",) + (("q8",) if Q8_RECIPE.startswith("stored") else ())


def gemm_shape() -> tuple[int, int, int]:
    """M, K, N of the real vision encoder's MLP up-projection (patches x hidden x intermediate: 196 x 768 x 3072),
    the bulk of the encoder's and the prefill's arithmetic, from the real config files (distilvit.modeling.realsize)."""
    from distilvit.modeling.realsize import vision_config

    v = vision_config()
    return (v.image_size // v.patch_size) ** 2, v.hidden_size, v.intermediate_size


def _ort_gemm_rate(dtype: str, repeats: int, threads: int) -> float:
    """onnxruntime's rate (G multiply-adds x 2 per second) on `gemm_shape()`, with constant weights as in an exported
    graph: dtype "int8" runs a uint8 x int8 MatMulInteger (the arithmetic of a q8 graph), "fp32" a float MatMul."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = gemm_shape()
    rng = np.random.default_rng(0)
    if dtype == "int8":
        op, a_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
        b, a = rng.integers(-127, 127, (k, n), dtype=np.int8), rng.integers(0, 255, (m, k), dtype=np.uint8)
    elif dtype == "fp32":
        op, a_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
        b, a = rng.standard_normal((k, n), dtype=np.float32), rng.standard_normal((m, k), dtype=np.float32)
    else:
        raise ValueError(f"no GEMM rate for dtype {dtype!r}; measured: int8, fp32")
    graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["Y"])], f"{dtype}-gemm",
                              [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, {"A": a})
    best = min(_timed(lambda: session.run(None, {"A": a})) for _ in range(max(repeats, 3) * 4))
    return 2 * m * k * n / best / 1e9


def measure_floor(repeats: int = 5) -> dict:
    """This machine's rates with the threads the runtimes use (one per core, onnxruntime's default). Each is the
    best of the ways measured, since a floor must not sit above what some runtime reaches: memory bandwidth (GB/s;
    a large copy counted read + write, and a large sum, read only: what streaming weights does), fp32 matmul
    GFLOP/s (torch 1024^3 and onnxruntime's MatMul on `gemm_shape()`) and int8 GEMM GOP/s (onnxruntime)."""
    threads = os.cpu_count() or 1
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB
        dst = torch.empty_like(src)
        dst.copy_(src)
        copy = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
        src.sum()
        read = min(_timed(lambda: src.sum()) for _ in range(repeats))
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        torch.mm(a, b)
        mm = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    finally:
        torch.set_num_threads(previous)
    nbytes = src.numel() * 4
    bandwidth = {"copy_read_write": 2 * nbytes / copy / 1e9, "sum_read": nbytes / read / 1e9}
    matmul = {"torch_mm_1024": 2 * 1024**3 / mm / 1e9, "onnxruntime_matmul": _ort_gemm_rate("fp32", repeats, threads)}
    return {"memory_bandwidth_gbs": max(bandwidth.values()), "memory_bandwidth_by": bandwidth,
            "matmul_gflops": max(matmul.values()), "matmul_gflops_by": matmul,
            "int8_gemm_gops": _ort_gemm_rate("int8", repeats, threads), "int8_gemm_shape": list(gemm_shape()),
            "threads": threads}


def stage_floors(flops: dict, machine: dict, per_token_ms: dict[str, float]) -> dict:
    """Floors in ms per stage and dtype: encoder and prefill from the dtype's GEMM rate, per token from bytes."""
    def rate(dtype: str) -> float:
        return (machine["int8_gemm_gops"] if dtype in INT8_DTYPES else machine["matmul_gflops"]) * 1e9

    dtypes = sorted(set(per_token_ms) | {"fp32"})
    return {"encoder_ms": {d: flops["encoder"] / rate(d) * 1e3 for d in dtypes},
            "prefill_ms": {d: flops["prefill"] / rate(d) * 1e3 for d in dtypes},
            "per_token_ms": dict(per_token_ms)}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def model_flops(config) -> dict:
    """Multiply-add FLOPs of the vision encoder and of the prefill (prefix + BOS, last-position logits)."""
    v, t = config.vision_config, config.text_config
    n = config.image_seq_length
    vision_linear = v.num_hidden_layers * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size)
    vision = 2 * n * vision_linear + v.num_hidden_layers * 4 * n * n * v.hidden_size
    projector = 2 * n * (v.hidden_size * t.hidden_size + t.hidden_size**2)
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    kv = t.num_key_value_heads * head_dim
    layer = 2 * t.hidden_size**2 + 2 * t.hidden_size * kv + 3 * t.hidden_size * t.intermediate_size
    p = n + 1
    prefill = 2 * p * t.num_hidden_layers * layer + t.num_hidden_layers * 4 * p * p * t.hidden_size + 2 * t.hidden_size * t.vocab_size
    return {"encoder": vision + projector, "prefill": prefill}
