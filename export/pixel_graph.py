"""Put `distilvit.pixels.model_pixels` in front of an exported image encoder, as ONNX nodes.

The encoder is exported from PyTorch on normalised [B, 3, S, S] pixels and validated there; this module then
renames that input and feeds it from a new `pixel_values` input [B, C, H, W] (float 0..255, C = 1..4, any size)
through: the colour channels (Gather: [0, 1, 2], or [0, 0, 0] for gray), alpha over white when C is even
(C = 2 or 4), the integer area reduction of a long axis (Slice to the centred whole blocks, Reshape, ReduceMean:
`distilvit.pixels.reduction`), an antialiased bicubic resize to S x S as two MatMuls whose weights are built from
the reduced size (what torch's `interpolate(bicubic, antialias=True)` computes, within 5e-5 of 255), and
x * 1/(255 std) - mean/std. Every node is named `pixels/...`: fp16 conversion keeps them float32
(quantize.modes). `validate_pixels` checks the finished graph against `model_pixels` + the stock model on raw
images of every channel count and on up- and downscales. This module knows nothing about layouts or dtypes.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from distilvit.export import constants as C
from distilvit.pixels import REDUCE_GAP
from distilvit.quantize.modes import FLOAT32_NODE_PREFIX

PREFIX = FLOAT32_NODE_PREFIX  # "pixels/": conversions leave these nodes float32
NORMALISED = PREFIX + "normalised"


def _const(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), PREFIX + name)


def prepend_pixels(model: onnx.ModelProto, size: int, mean: list[float], std: list[float]) -> onnx.ModelProto:
    """`model` (input `pixel_values` [B, 3, size, size], normalised) with the raw-pixel preparation in front."""
    graph = model.graph
    old = next(i for i in graph.input if i.name == C.PIXEL_VALUES)
    for node in graph.node:
        node.input[:] = [NORMALISED if name == C.PIXEL_VALUES else name for name in node.input]
    graph.input.remove(old)
    raw = helper.make_tensor_value_info(C.PIXEL_VALUES, TensorProto.FLOAT,
                                        [C.BATCH, "num_channels", "height", "width"])
    graph.input.insert(0, raw)
    scale = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float32).reshape(1, 3, 1, 1)
    shift = np.array([-m / s for m, s in zip(mean, std)], dtype=np.float32).reshape(1, 3, 1, 1)
    graph.initializer.extend([
        _const("zero", [0]), _const("one", [1]), _const("two", [2]), _const("three", [3]), _const("four", [4]),
        _const("one_f", [1.0], np.float32), _const("inv255", [1.0 / 255.0], np.float32),
        _const("zero_s", 0), _const("one_s", 1),
        _const("half", 0.5, np.float32), _const("unit", 1.0, np.float32), _const("zero_f", 0.0, np.float32),
        _const("out_size", float(size), np.float32), _const("out_range", np.arange(size, dtype=np.float32).reshape(size, 1), np.float32),
        *_cubic_constants(),
        _const("gap_size", [REDUCE_GAP * size]), _const("crop_axes", [2, 3]), _const("block_axes", [3, 5]),
        _const("white", [255.0], np.float32), _const("scale", scale, np.float32), _const("shift", shift, np.float32),
    ])
    nodes = [*_composite_nodes(), *_reduction_nodes(), *_resize_nodes(size)]
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)
    onnx.checker.check_model(model)
    return model


def _composite_nodes() -> list[onnx.NodeProto]:
    """The input's shape, its colour channels (gray repeated), and alpha over white: `composited` [B, 3, H, W]."""
    p = lambda n: PREFIX + n  # noqa: E731
    return [
        helper.make_node("Shape", [C.PIXEL_VALUES], [p("shape")], name=p("Shape")),
        helper.make_node("Slice", [p("shape"), p("one"), p("two")], [p("channels")], name=p("Channels")),  # [C]
        helper.make_node("Slice", [p("shape"), p("zero"), p("one")], [p("batch")], name=p("Batch")),  # [B]
        # colour channel indices: [0, k, 2k] with k = 1 when C >= 3
        helper.make_node("Greater", [p("channels"), p("two")], [p("is_colour")], name=p("IsColour")),
        helper.make_node("Cast", [p("is_colour")], [p("k")], to=TensorProto.INT64, name=p("K")),
        helper.make_node("Add", [p("k"), p("k")], [p("two_k")], name=p("TwoK")),
        helper.make_node("Concat", [p("zero"), p("k"), p("two_k")], [p("colour_index")], axis=0, name=p("ColourIndex")),
        helper.make_node("Gather", [C.PIXEL_VALUES, p("colour_index")], [p("colour")], axis=1, name=p("Colour")),
        # alpha: the last channel / 255 when C is even, else 1
        helper.make_node("Mod", [p("channels"), p("two")], [p("odd")], name=p("Odd")),
        helper.make_node("Sub", [p("one"), p("odd")], [p("even")], name=p("Even")),
        helper.make_node("Cast", [p("even")], [p("has_alpha")], to=TensorProto.FLOAT, name=p("HasAlpha")),
        helper.make_node("Sub", [p("channels"), p("one")], [p("last")], name=p("Last")),
        helper.make_node("Gather", [C.PIXEL_VALUES, p("last")], [p("alpha_raw")], axis=1, name=p("AlphaRaw")),
        helper.make_node("Mul", [p("alpha_raw"), p("inv255")], [p("alpha_unit")], name=p("AlphaUnit")),
        helper.make_node("Mul", [p("alpha_unit"), p("has_alpha")], [p("alpha_part")], name=p("AlphaPart")),
        helper.make_node("Sub", [p("one_f"), p("has_alpha")], [p("opaque_part")], name=p("OpaquePart")),
        helper.make_node("Add", [p("alpha_part"), p("opaque_part")], [p("alpha")], name=p("Alpha")),
        # colour * alpha + white * (1 - alpha)
        helper.make_node("Mul", [p("colour"), p("alpha")], [p("over")], name=p("Over")),
        helper.make_node("Sub", [p("one_f"), p("alpha")], [p("clear")], name=p("Clear")),
        helper.make_node("Mul", [p("white"), p("clear")], [p("background")], name=p("Background")),
        helper.make_node("Add", [p("over"), p("background")], [p("composited")], name=p("Composite")),
    ]


def _reduction_nodes() -> list[onnx.NodeProto]:
    """A long axis averaged over whole blocks (distilvit.pixels.reduction): `reduced` [B, 3, h, w]."""
    p = lambda n: PREFIX + n  # noqa: E731
    return [
        # a long axis averaged over whole f-blocks first (distilvit.pixels.reduction), so the resize reads at most
        # (6S - 1) x (6S - 1) pixels whatever the photo's size: crop the centred whole blocks, reshape, mean
        helper.make_node("Slice", [p("shape"), p("two"), p("three")], [p("height")], name=p("Height")),
        helper.make_node("Slice", [p("shape"), p("three"), p("four")], [p("width")], name=p("Width")),
        *_axis_reduction("rows", p("height")),
        *_axis_reduction("cols", p("width")),
        helper.make_node("Concat", [p("rows/start"), p("cols/start")], [p("crop_starts")], axis=0, name=p("CropStarts")),
        helper.make_node("Concat", [p("rows/end"), p("cols/end")], [p("crop_ends")], axis=0, name=p("CropEnds")),
        helper.make_node("Slice", [p("composited"), p("crop_starts"), p("crop_ends"), p("crop_axes")], [p("cropped")],
                         name=p("Crop")),
        helper.make_node("Concat", [p("zero"), p("three"), p("rows/reduced"), p("rows/factor"), p("cols/reduced"),
                                    p("cols/factor")], [p("blocks_shape")], axis=0, name=p("BlocksShape")),
        helper.make_node("Reshape", [p("cropped"), p("blocks_shape")], [p("blocks")], name=p("Blocks")),  # [B, 3, h, fh, w, fw]
        helper.make_node("ReduceMean", [p("blocks"), p("block_axes")], [p("reduced")], keepdims=0, name=p("Reduce")),
    ]


def _resize_nodes(size: int) -> list[onnx.NodeProto]:
    """The antialiased bicubic resize to `size` as two MatMuls, then the normalisation: NORMALISED."""
    p = lambda n: PREFIX + n  # noqa: E731
    return [
        # antialiased bicubic resize as two MatMuls with weights built from the reduced size: rows [S, h], cols [S, w]
        *_axis_weights("rows", p("rows/reduced"), size),
        *_axis_weights("cols", p("cols/reduced"), size),
        helper.make_node("MatMul", [p("rows/weights"), p("reduced")], [p("rows_resized")], name=p("ResizeRows")),
        helper.make_node("Transpose", [p("cols/weights")], [p("cols/weights_t")], perm=[1, 0], name=p("ColsT")),
        helper.make_node("MatMul", [p("rows_resized"), p("cols/weights_t")], [p("resized")], name=p("ResizeCols")),
        helper.make_node("Mul", [p("resized"), p("scale")], [p("scaled")], name=p("Scale")),
        helper.make_node("Add", [p("scaled"), p("shift")], [NORMALISED], name=p("Normalise")),
    ]


CUBIC_A = -0.5  # Keys' a of torch's antialiased bicubic (and PIL's); plain torch bicubic uses -0.75


def _cubic_constants() -> list[onnx.TensorProto]:
    a = CUBIC_A
    return [_const(name, value, np.float32) for name, value in
            (("a_plus_2", a + 2), ("a_plus_3", a + 3), ("a", a), ("five", 5.0), ("eight", 8.0), ("four_f", 4.0),
             ("two_f", 2.0))]


def _axis_reduction(axis: str, length: str) -> list[onnx.NodeProto]:
    """Nodes computing `<axis>/factor`, `/reduced`, `/start` and `/end` ([1] int64) of an input axis of `length`:
    distilvit.pixels.reduction's f = max(1, n // 3S), n // f, and the centred [start, end) of the whole blocks."""
    q = lambda n: f"{PREFIX}{axis}/{n}"  # noqa: E731
    p = lambda n: PREFIX + n  # noqa: E731
    mk = helper.make_node
    return [
        mk("Div", [length, p("gap_size")], [q("blocks_of_gap")], name=q("BlocksOfGap")),
        mk("Max", [q("blocks_of_gap"), p("one")], [q("factor")], name=q("Factor")),
        mk("Div", [length, q("factor")], [q("reduced")], name=q("Reduced")),
        mk("Mul", [q("reduced"), q("factor")], [q("kept")], name=q("Kept")),
        mk("Sub", [length, q("kept")], [q("left_over")], name=q("LeftOver")),
        mk("Div", [q("left_over"), p("two")], [q("start")], name=q("Start")),
        mk("Add", [q("start"), q("kept")], [q("end")], name=q("End")),
    ]


def _axis_weights(axis: str, length: str, size: int) -> list[onnx.NodeProto]:
    """Nodes computing `<axis>/weights` [size, n] for an input axis of `length` ([1] int64) n: row i holds the
    normalised antialiased-cubic weights of output i, as torch's `_upsample_bicubic2d_aa` computes them:
    centre c = (i + 0.5) * n / size, support scale s = max(n / size, 1), x = (j + 0.5 - c) / s for every input j,
    weight = Keys(a=-0.5)(x) (0 for |x| >= 2), each row divided by its sum (taps outside the image do not count)."""
    q = lambda n: f"{PREFIX}{axis}/{n}"  # noqa: E731
    p = lambda n: PREFIX + n  # noqa: E731
    mk = helper.make_node
    return [
        mk("Squeeze", [length], [q("n")], name=q("NScalar")),
        mk("Range", [p("zero_s"), q("n"), p("one_s")], [q("j_i")], name=q("J")),
        mk("Cast", [q("j_i")], [q("j")], to=TensorProto.FLOAT, name=q("JFloat")),
        mk("Cast", [q("n")], [q("n_f")], to=TensorProto.FLOAT, name=q("NFloat")),
        mk("Div", [q("n_f"), p("out_size")], [q("scale")], name=q("Scale")),
        mk("Max", [q("scale"), p("unit")], [q("support")], name=q("Support")),
        mk("Add", [p("out_range"), p("half")], [q("i_half")], name=q("IHalf")),
        mk("Mul", [q("i_half"), q("scale")], [q("centre")], name=q("Centre")),  # [size, 1]
        mk("Add", [q("j"), p("half")], [q("j_half")], name=q("JHalf")),  # [n]
        mk("Sub", [q("j_half"), q("centre")], [q("offset")], name=q("Offset")),  # [size, n]
        mk("Div", [q("offset"), q("support")], [q("x")], name=q("X")),
        mk("Abs", [q("x")], [q("ax")], name=q("Ax")),
        # |x| < 1: ((a + 2)|x| - (a + 3)) x^2 + 1
        mk("Mul", [q("ax"), p("a_plus_2")], [q("n1")], name=q("N1")),
        mk("Sub", [q("n1"), p("a_plus_3")], [q("n2")], name=q("N2")),
        mk("Mul", [q("ax"), q("ax")], [q("ax2")], name=q("Ax2")),
        mk("Mul", [q("n2"), q("ax2")], [q("n3")], name=q("N3")),
        mk("Add", [q("n3"), p("unit")], [q("near")], name=q("Near")),
        # 1 <= |x| < 2: (((|x| - 5)|x| + 8)|x| - 4) a
        mk("Sub", [q("ax"), p("five")], [q("f1")], name=q("F1")),
        mk("Mul", [q("f1"), q("ax")], [q("f2")], name=q("F2")),
        mk("Add", [q("f2"), p("eight")], [q("f3")], name=q("F3")),
        mk("Mul", [q("f3"), q("ax")], [q("f4")], name=q("F4")),
        mk("Sub", [q("f4"), p("four_f")], [q("f5")], name=q("F5")),
        mk("Mul", [q("f5"), p("a")], [q("far")], name=q("Far")),
        mk("Less", [q("ax"), p("unit")], [q("is_near")], name=q("IsNear")),
        mk("Less", [q("ax"), p("two_f")], [q("in_support")], name=q("InSupport")),
        mk("Where", [q("in_support"), q("far"), p("zero_f")], [q("outer")], name=q("Outer")),
        mk("Where", [q("is_near"), q("near"), q("outer")], [q("w")], name=q("W")),
        mk("ReduceSum", [q("w"), p("one")], [q("total")], keepdims=1, name=q("Total")),
        mk("Div", [q("w"), q("total")], [q("weights")], name=q("Weights")),
    ]


def raw_cases(size: int, generator: torch.Generator) -> list[tuple[str, torch.Tensor]]:
    """Raw images for validation: every channel count, a downscale, an upscale, non-square, batch 1 and 2, and a
    photo-sized image both of whose axes are area-reduced first (factors 4 and 2, with pixels left over)."""
    def image(batch, channels, height, width):
        return torch.randint(0, 256, (batch, channels, height, width), generator=generator).float()

    return [
        ("RGBA 1x4x37x53 (upscale)", image(1, 4, 37, 53)),
        (f"RGB 2x3x{3 * size + 5}x{size + 3} (downscale)", image(2, 3, 3 * size + 5, size + 3)),
        ("gray 1x1x40x40", image(1, 1, 40, 40)),
        ("gray+alpha 1x2x50x31", image(1, 2, 50, 31)),
        (f"RGB 1x3x{size}x{size}", image(1, 3, size, size)),
        (f"RGBA 1x4x{13 * size + 7}x{6 * size + 1} (area-reduced)", image(1, 4, 13 * size + 7, 6 * size + 1)),
    ]
