"""One function per transformers.js dtype: fp32 ONNX graph in, converted graph out.

    fp16   onnxruntime.transformers' float16 converter, graph inputs/outputs kept float32 (transformers.js
           feeds f32 pixel values, and image features must reach the decoder in its embeddings' dtype)
    q8     RECIPES[Q8_RECIPE]: stored-int8: MatMul/Gather/Conv weights stored as int8 in blocks of 32 with a float16
           scale each, turned back into float32 by constant nodes onnxruntime folds when the session loads
           (quantize/stored_int8.py): an int8 model's download, fp32's arithmetic. No activation is quantized, so a
           real decoder's activation outliers cost nothing and the captions are the same on every CPU (no integer
           products). Until 2026-12-08 q8 was dynamic-int8-pair-safe, which rewrote most of a real decoder's
           captions (docs/quantization.md)
    int8   dynamic quantization, int8 weights (Conv left in float: no int8 ConvInteger kernel): the dynamic-int8
           recipe without the uint8 Conv pass, nor the reordering: on x86 without VNNI its captions differ
    uint8  dynamic quantization, uint8 weights
    q4     4-bit MatMulNBits (block 32, symmetric) for MatMul weights, int8 token lookups; the rest float32
    q4f16  q4, then fp16 for the rest
    bnb4   4-bit bitsandbytes-style (MatMulBnb4, nf4, block 64) for MatMul weights, int8 token lookups

fp16 conversion with onnxconverter-common produced graphs onnxruntime refused (RMSNorm Cast nodes,
measured 2026-11, onnxruntime 1.32), hence onnxruntime's own converter. This module knows nothing about layouts or
which graph is which; `export/` decides where each result goes.
"""

from __future__ import annotations

import logging
import tempfile
from enum import Enum
from pathlib import Path

import onnx

from distilvit.quantize import Q8_RECIPE

log = logging.getLogger(__name__)
FLOAT32_NODE_PREFIX = "pixels/"  # nodes no conversion touches (export/pixel_graph.py names its nodes so)


class DType(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    Q8 = "q8"
    INT8 = "int8"
    UINT8 = "uint8"
    Q4 = "q4"
    Q4F16 = "q4f16"
    BNB4 = "bnb4"


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def _dynamic(model: onnx.ModelProto, weight_type, op_types: list[str], per_channel: bool = False,
             exclude: list[str] | None = None, reduce_range: bool = False,
             only: list[str] | None = None) -> onnx.ModelProto:
    from onnxruntime.quantization import quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        # always through external data: a graph over 2 GB cannot be one protobuf file. Saving so points `model`'s
        # tensors at the temporary file; they are read back into it before the file goes, so the caller's model is
        # whole again (a recipe quantizes one model more than once)
        onnx.save_model(model, str(src), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="in.onnx_data", size_threshold=1024)
        try:
            quantize_dynamic(src, dst, op_types_to_quantize=op_types, weight_type=weight_type,
                             per_channel=per_channel, reduce_range=reduce_range, use_external_data_format=True,
                             nodes_to_exclude=exclude or [], nodes_to_quantize=only or [],
                             extra_options={"MatMulConstBOnly": True, "EnableSubgraph": True})
            return onnx.load_model(str(dst))
        finally:
            onnx.load_external_data_for_model(model, tmp)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # DequantizeLinear (the int8 token lookup of q4f16) stays float32: at opset 18 its scale must be float32
    # ("Type 'tensor(float16)' of input parameter (head_t_scale) of operator (DequantizeLinear) ... is invalid",
    # onnxruntime 1.32, 2026-11-25).
    # The pixel preparation in front of an image encoder (nodes named `pixels/...`) stays float32 too: it works on
    # 0..255 values at full image size, where fp16 steps are 0.125, and its antialiased Resize has no fp16 kernel.
    keep = [n.name for n in model.graph.node if n.name.startswith(FLOAT32_NODE_PREFIX)]
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                         op_block_list=list(DEFAULT_OP_BLOCK_LIST) + ["DequantizeLinear"],
                                         node_block_list=keep)
    return _cast_kept_outputs(converted) if keep else converted


def _cast_kept_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Cast to float16 where a kept-float32 node's float output feeds a converted node. The converter casts the
    inputs of kept nodes but not their outputs ("Type parameter (T) of Optype (Conv) bound to different types
    (tensor(float) and tensor(float16))", onnxruntime 1.32 float16 converter, 2026-12-01)."""
    from onnx import TensorProto, helper

    graph = model.graph
    kept = [n for n in graph.node if n.name.startswith(FLOAT32_NODE_PREFIX)]
    float_outputs = {out for n in kept if n.op_type not in ("Shape", "Slice", "Greater", "Mod", "Squeeze", "Range")
                     and not (n.op_type == "Cast" and n.attribute[0].i != TensorProto.FLOAT)
                     for out in n.output}
    casts = {}
    for node in graph.node:
        if node.name.startswith(FLOAT32_NODE_PREFIX):
            continue
        for i, name in enumerate(node.input):
            if name in float_outputs:
                if name not in casts:
                    casts[name] = helper.make_node("Cast", [name], [name + "_fp16"], to=TensorProto.FLOAT16,
                                                   name=name.replace("/", "_") + "_to_fp16")
                node.input[i] = name + "_fp16"
    if casts:
        last_kept = max(i for i, n in enumerate(graph.node) if n.name.startswith(FLOAT32_NODE_PREFIX))
        for offset, cast in enumerate(casts.values()):
            graph.node.insert(last_kept + 1 + offset, cast)
    return model


def to_dynamic_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Dynamic quantization (q8 until 2026-12-07): int8 MatMul/Gather weights, activations quantized to uint8 at
    run time (MatMulInteger); a Conv's weights (the patch embedding) uint8 in a pass of their own (onnxruntime has
    no ConvInteger kernel for int8 weights). transformers.js' conversion script makes a whole graph uint8 when it
    has a Conv; the vision encoder then ran 3x slower (uint8 x uint8 GEMMs miss the int8 dot-product kernels: 128
    ms vs 40 ms, SigLIP-base, onnxruntime 1.32, 2-core AVX512-VNNI CPU, 2026-11-25). Its captions depend on the
    CPU's int8 kernels (u8s8 saturation without VNNI) and on the activations' range: a real decoder's outliers
    stretch the one per-tensor activation scale (docs/export.md)."""
    from onnxruntime.quantization import QuantType

    if "Conv" in _ops(model):
        model = _dynamic(model, QuantType.QUInt8, ["Conv"])
    return _dynamic(model, QuantType.QInt8, ["MatMul", "Gather"])


def to_dynamic_int8_per_channel(model: onnx.ModelProto) -> onnx.ModelProto:
    """dynamic-int8 with one weight scale per output channel instead of per tensor (activations as before)."""
    from onnxruntime.quantization import QuantType

    if "Conv" in _ops(model):
        model = _dynamic(model, QuantType.QUInt8, ["Conv"])
    return _dynamic(model, QuantType.QInt8, ["MatMul", "Gather"], per_channel=True)


def to_dynamic_int8_7bit(model: onnx.ModelProto) -> onnx.ModelProto:
    """dynamic-int8 with 7-bit weights (-64..64, onnxruntime's reduce_range): u8 x s7 pairs fit in 16 bits, so the
    integer products are exact on every int8 kernel path (VNNI, AVX2 multiply-adds, WebAssembly, ARM), at one bit of
    weight precision."""
    from onnxruntime.quantization import QuantType

    if "Conv" in _ops(model):
        model = _dynamic(model, QuantType.QUInt8, ["Conv"])
    return _dynamic(model, QuantType.QInt8, ["MatMul", "Gather"], reduce_range=True)


def to_dynamic_uint8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Dynamic quantization with uint8 weights everywhere (MatMul, Gather, Conv; asymmetric, one scale and zero point
    per tensor): u8 x u8 kernels widen to 16 bits before multiplying, so the integer products are exact on every
    int8 kernel path; what transformers.js' own conversion makes of a graph with a Conv."""
    from onnxruntime.quantization import QuantType

    return _dynamic(model, QuantType.QUInt8, ["MatMul", "Gather", "Conv"])


def to_dynamic_int8_pair_safe(model: onnx.ModelProto) -> onnx.ModelProto:
    """dynamic-int8 whose integer products cannot saturate on any CPU: each weight's rows reordered so that no pair
    of adjacent k holds two large same-signed weights, the activations gathered to match (quantize/pair_safe.py);
    on exact kernels bit for bit dynamic-int8's outputs, so its captions are the same on every CPU. MatMuls no order
    makes safe (uniform random weights, as in a freshly initialised tower) get 7-bit weights: they cannot saturate
    either and stay on the int8 kernels (uint8 weights would run u8 x u8 kernels, 2x slower on VNNI: 128 vs 65 ms for
    the real-size random SigLIP, 2026-12-07)."""
    from onnxruntime.quantization import QuantType

    from distilvit.quantize import pair_safe
    from distilvit.quantize.kernel_paths import saturating_gemms

    safe, unmended = pair_safe.mend(to_dynamic_int8(model))
    if unmended:
        log.info("  %d MatMul(s) no order makes safe in full-range int8: 7-bit weights for them", len(unmended))
        if "Conv" in _ops(model):
            model = _dynamic(model, QuantType.QUInt8, ["Conv"])
        model = _dynamic(model, QuantType.QInt8, ["MatMul"], only=[n.removesuffix("_quant") for n in unmended],
                         reduce_range=True)
        safe, _ = pair_safe.mend(_dynamic(model, QuantType.QInt8, ["MatMul", "Gather"]))
    left = saturating_gemms(safe)
    if left:  # mend orders every group it does not name: this is a bug, not a property of the model
        raise RuntimeError(f"pair-safe int8 left {len(left)} integer products that can saturate: {left[:3]}")
    return safe


def wide_input_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls whose constant weight has the graph's widest input dimension: in a Llama-family decoder the MLP
    down projections (input = intermediate size), whose inputs carry a real model's activation outliers."""
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    matmuls = [(n.name, weights[n.input[1]]) for n in model.graph.node
               if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in weights and len(weights[n.input[1]]) == 2]
    if not matmuls:
        return []
    widest = max(dims[0] for _, dims in matmuls)
    hidden = min(dims[0] for _, dims in matmuls)
    return [name for name, dims in matmuls if dims[0] == widest] if widest > hidden else []


def to_dynamic_int8_float_down_proj(model: onnx.ModelProto) -> onnx.ModelProto:
    """dynamic-int8 with the MLP down projections (wide_input_matmuls) left in float: mixed precision of the
    MatMuls most sensitive to activation outliers."""
    from onnxruntime.quantization import QuantType

    if "Conv" in _ops(model):
        model = _dynamic(model, QuantType.QUInt8, ["Conv"])
    return _dynamic(model, QuantType.QInt8, ["MatMul", "Gather"], exclude=wide_input_matmuls(model))


def _weight_only(model: onnx.ModelProto, bits: int, block_size: int) -> onnx.ModelProto:
    """MatMul weights to `bits`-bit MatMulNBits blocks (symmetric, one scale per `block_size` inputs), computed
    in float: accuracy level unset (0), so no kernel quantizes the activations. Token lookups int8."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    keep = [n.name for n in model.graph.node if n.name.startswith(FLOAT32_NODE_PREFIX)]
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True,
                                     nodes_to_exclude=keep)
    quantizer.process()
    return _gathers_to_int8(quantizer.model.model)


def to_weight_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """8-bit weights in blocks of 32, float activations (MatMulNBits bits=8); Conv float, token lookups int8.
    Nothing is quantized at run time, so captions do not depend on the CPU's int8 kernels."""
    return _weight_only(model, 8, 32)


def to_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType

    return _dynamic(model, QuantType.QInt8, ["MatMul", "Gather"])


def to_uint8(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType

    return _dynamic(model, QuantType.QUInt8, ["MatMul", "Gather", "Conv"])


def _gathers_to_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Token lookups (Gather on a weight) to int8: MatMulNBits covers only MatMul, and a float embedding would
    outweigh the whole 4-bit decoder (SmolLM's is 49152 x 576: 113 MB in f32, 28 MB in int8)."""
    from onnxruntime.quantization import QuantType

    if not any(n.op_type == "Gather" and n.input[0] in {i.name for i in model.graph.initializer} for n in model.graph.node):
        return model
    return _dynamic(model, QuantType.QInt8, ["Gather"])


def to_q4(model: onnx.ModelProto) -> onnx.ModelProto:
    return _weight_only(model, 4, 32)


def to_q4f16(model: onnx.ModelProto) -> onnx.ModelProto:
    return to_fp16(to_q4(model))


def to_bnb4(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_bnb4_quantizer import MatMulBnb4Quantizer

    quantizer = MatMulBnb4Quantizer(model, MatMulBnb4Quantizer.NF4, 64)
    quantizer.process()
    return _gathers_to_int8(quantizer.model.model)


def to_weight_int8_b128(model: onnx.ModelProto) -> onnx.ModelProto:
    """weight-int8 with blocks of 128 (fewer scales: a smaller file, coarser rounding)."""
    return _weight_only(model, 8, 128)


def to_stored_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """8-bit weights in blocks of 32 with a float16 scale each, dequantized once when the session loads (constant
    nodes onnxruntime folds), so the graph computes in float32 with 8-bit-rounded weights: an int8 download at fp32's
    speed and memory, nothing quantized at run time (quantize/stored_int8.py)."""
    from distilvit.quantize.stored_int8 import to_stored_int8 as convert_blocks

    return convert_blocks(model, 32, skip_prefix=FLOAT32_NODE_PREFIX)


def to_stored_int8_b128(model: onnx.ModelProto) -> onnx.ModelProto:
    """stored-int8 with blocks of 128 (fewer scales: a smaller file, coarser rounding)."""
    from distilvit.quantize.stored_int8 import to_stored_int8 as convert_blocks

    return convert_blocks(model, 128, skip_prefix=FLOAT32_NODE_PREFIX)


def to_stored_int8_per_channel(model: onnx.ModelProto) -> onnx.ModelProto:
    """stored-int8 with one scale per output channel (the whole reduced axis in one block)."""
    from distilvit.quantize.stored_int8 import to_stored_int8 as convert_blocks

    return convert_blocks(model, 0, skip_prefix=FLOAT32_NODE_PREFIX)


# Candidate recipes for 8-bit weights, measured against each other on a real decoder by `distilvit-web bench
# quality` (distilvit/bench/quality.py, docs/quantization.md). What `q8` means is Q8_RECIPE, one of them, chosen by
# that measurement.
RECIPES = {
    "stored-int8": to_stored_int8,
    "stored-int8-b128": to_stored_int8_b128,
    "stored-int8-per-channel": to_stored_int8_per_channel,
    "dynamic-int8": to_dynamic_int8,
    "dynamic-int8-per-channel": to_dynamic_int8_per_channel,
    "dynamic-int8-float-down-proj": to_dynamic_int8_float_down_proj,
    "dynamic-int8-7bit": to_dynamic_int8_7bit,
    "dynamic-int8-pair-safe": to_dynamic_int8_pair_safe,
    "dynamic-uint8": to_dynamic_uint8,
    "weight-int8": to_weight_int8,
    "weight-int8-b128": to_weight_int8_b128,
}


def to_q8(model: onnx.ModelProto) -> onnx.ModelProto:
    return RECIPES[Q8_RECIPE](model)


CONVERTERS = {
    DType.FP16: to_fp16,
    DType.Q8: to_q8,
    DType.INT8: to_int8,
    DType.UINT8: to_uint8,
    DType.Q4: to_q4,
    DType.Q4F16: to_q4f16,
    DType.BNB4: to_bnb4,
}


def convert(model: onnx.ModelProto, dtype: DType) -> onnx.ModelProto:
    """`model` (fp32) converted to `dtype`; fp32 returns it unchanged."""
    dtype = DType(dtype)
    if dtype == DType.FP32:
        return model
    log.info("converting to %s", dtype.value)
    return CONVERTERS[dtype](model)
