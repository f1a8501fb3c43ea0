"""Export the graph wrappers to ONNX files with `torch.onnx.export(dynamo=True)`, then name their dynamic dims.

Each graph is traced with a general example (batch 2, 2 new tokens, past length 3) so no dimension is
specialised to 1 or 0; the dims of the graph inputs and outputs are then renamed to the names transformers.js
knows (`batch_size`, `past_sequence_length`, ...). kv-heads and head_dim stay static integers, as transformers.js
requires. Graphs over 2 GB are written with external data (`<file>.onnx_data`). This module knows nothing about
layouts, quantization or validation.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from transformers import LlavaForConditionalGeneration

from distilvit.export import constants as C
from distilvit.export.graphs import EmbedsDecoder, ImagePrefixEncoder, PrefixDecoder, TokenEmbedder, empty_past

log = logging.getLogger(__name__)
TWO_GB = 2 * 1024**3  # protobuf's limit for one .onnx file
EXTERNAL_DATA_ENV = "DISTILVIT_WEB_EXTERNAL_DATA_BYTES"


def external_data_threshold() -> int:
    """Graphs whose weights reach this many bytes are saved with external data: 2 GB, or the value of
    DISTILVIT_WEB_EXTERNAL_DATA_BYTES (set low, the tests run the >2 GB path on tiny models)."""
    return int(os.environ.get(EXTERNAL_DATA_ENV) or TWO_GB)


@dataclass
class GraphSpec:
    """One graph to export: module, example inputs, names, and the dim names of every input/output."""

    name: str
    module: torch.nn.Module
    example: tuple
    input_names: list[str]
    output_names: list[str]
    dims: dict[str, dict[int, str]]  # tensor name -> {axis: dim name}


def _past_io(num_layers: int) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    past, present, dims = [], [], {}
    for i in range(num_layers):
        for p in C.past_names(i):
            past.append(p)
            dims[p] = {0: C.BATCH, 2: C.PAST_LENGTH}
        for p in C.present_names(i):
            present.append(p)
            dims[p] = {0: C.BATCH, 2: C.TOTAL_LENGTH}
    return past, present, dims


def graph_specs(model: LlavaForConditionalGeneration, layout: C.Layout) -> list[GraphSpec]:
    cfg = model.config
    n_image, d_text = cfg.image_seq_length, cfg.text_config.hidden_size
    size = cfg.vision_config.image_size
    layers = cfg.text_config.num_hidden_layers
    g = torch.Generator().manual_seed(0)
    vocab = cfg.text_config.vocab_size
    pixel = torch.randn(2, 3, size, size, generator=g)
    ids = torch.randint(0, vocab, (2, 2), generator=g)
    past = tuple(empty_past(model, 2, 3, g))
    past_names, present_names, kv_dims = _past_io(layers)
    logits_dims = {0: C.BATCH}
    if layout == C.Layout.PIPELINE:
        return [
            GraphSpec("encoder_model", ImagePrefixEncoder(model), (pixel,), [C.PIXEL_VALUES], [C.ENCODER_OUTPUT],
                      {C.PIXEL_VALUES: {0: C.BATCH}, C.ENCODER_OUTPUT: {0: C.BATCH}}),
            GraphSpec("decoder_model_merged", PrefixDecoder(model),
                      (ids, torch.randn(2, n_image, d_text, generator=g), *past),
                      [C.INPUT_IDS, C.ENCODER_HIDDEN_STATES, *past_names], [C.LOGITS, *present_names],
                      {C.INPUT_IDS: {0: C.BATCH, 1: C.DECODER_LENGTH}, C.ENCODER_HIDDEN_STATES: {0: C.BATCH, 1: C.ENCODER_LENGTH},
                       C.LOGITS: logits_dims, **kv_dims}),
        ]
    return [
        GraphSpec("vision_encoder", ImagePrefixEncoder(model), (pixel,), [C.PIXEL_VALUES], [C.IMAGE_FEATURES],
                  {C.PIXEL_VALUES: {0: C.BATCH}, C.IMAGE_FEATURES: {0: C.BATCH}}),
        GraphSpec("embed_tokens", TokenEmbedder(model), (ids,), [C.INPUT_IDS], [C.INPUTS_EMBEDS],
                  {C.INPUT_IDS: {0: C.BATCH, 1: C.DECODER_LENGTH}, C.INPUTS_EMBEDS: {0: C.BATCH, 1: C.DECODER_LENGTH}}),
        GraphSpec("decoder_model_merged", EmbedsDecoder(model),
                  (torch.randn(2, 2, d_text, generator=g), torch.ones(2, 5, dtype=torch.long),
                   torch.tensor([[3, 4], [3, 4]]), *past),
                  [C.INPUTS_EMBEDS, C.ATTENTION_MASK, C.POSITION_IDS, *past_names], [C.LOGITS, *present_names],
                  {C.INPUTS_EMBEDS: {0: C.BATCH, 1: C.DECODER_LENGTH}, C.ATTENTION_MASK: {0: C.BATCH, 1: C.TOTAL_LENGTH},
                   C.POSITION_IDS: {0: C.BATCH, 1: C.DECODER_LENGTH}, C.LOGITS: logits_dims, **kv_dims}),
    ]


def _dynamic_shapes(spec: GraphSpec):
    """torch.export dynamic shapes mirroring `forward`'s signature (variadic past as one tuple)."""
    dyn = torch.export.Dim.DYNAMIC
    shapes = [{axis: dyn for axis in spec.dims.get(name, {})} or None for name in spec.input_names]
    fixed = len(spec.input_names) - sum(1 for n in spec.input_names if n.startswith("past_key_values."))
    head, past = shapes[:fixed], shapes[fixed:]
    return (*head, tuple(past)) if past else tuple(head)


def name_dims(model: onnx.ModelProto, dims: dict[str, dict[int, str]]) -> None:
    """Give the graph's inputs and outputs our dim names (in place).

    The exporter names dynamic dims `s0`, `s1`, ... and writes intermediate shapes (value_info) as expressions of
    them. Those hints are dropped: with the inputs renamed they no longer match, and onnxruntime's memory planner
    then reused buffers of different sizes ("Shape mismatch attempting to re-use buffer. {1,1,128} != {1,65,128}",
    onnxruntime 1.32, torch 2.13, 2026-11-25). onnxruntime infers the shapes itself.
    """
    del model.graph.value_info[:]
    for value in list(model.graph.input) + list(model.graph.output):
        for axis, name in dims.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            dim.ClearField("dim_value")
            dim.dim_param = name


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Save `model` (its tensors in memory) to `path`, its weights in `<name>.onnx_data` beside it when they reach
    `external_data_threshold()`. An older `<name>.onnx_data` is removed first: onnx appends to an existing data
    file, which would ship the stale weights too (onnx 1.23)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + "_data")
    data.unlink(missing_ok=True)
    if sum(t.ByteSize() for t in model.graph.initializer) >= external_data_threshold():
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def export_graph(spec: GraphSpec, path: Path) -> Path:
    """Export one graph to `path` (fp32) with named dims."""
    log.info("exporting %s", spec.name)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter; errors still raise
        program = torch.onnx.export(spec.module.eval(), spec.example, dynamo=True, input_names=spec.input_names,
                                    output_names=spec.output_names, dynamic_shapes=_dynamic_shapes(spec),
                                    opset_version=C.ONNX_OPSET, verbose=False)
    proto = program.model_proto
    name_dims(proto, spec.dims)
    save_onnx(proto, path)
    return path
