"""The peer for `distilvit-web bench`: ViT-base/16 + GPT-2, the architecture of nlpconnect/vit-gpt2-image-captioning
(whose ONNX copy Xenova/vit-gpt2-image-captioning is stock transformers.js' default image-to-text model), with
random weights, exported in the layout transformers.js loads for it.

Shapes: transformers' `ViTConfig()` and `GPT2Config()` defaults are ViT-base/16 at 224 px (768 wide, 12 layers,
197 tokens with the class token) and GPT-2 small (768 wide, 12 layers, 12 heads, 50,257 tokens, 1,024 positions),
the two halves of that model; the decoder adds cross-attention to the image tokens in every layer.

How it runs in transformers.js (as in the Hub's export): `encoder_model` maps pixel_values [B,3,224,224] to
last_hidden_state [B,197,768]; `decoder_model_merged` takes input_ids, encoder_hidden_states and the self-attention
past `past_key_values.{i}.key/value` [B,12,P,64] and returns logits and the presents. The cross-attention keys and
values are computed again from encoder_hidden_states at every step, which is that architecture's per-token cost:
transformers.js (4.3.1, getNormalizedConfig) gives a vision-encoder-decoder with a GPT-2 decoder a self-attention
cache only. Preprocessing is transformers.js' own (ViTImageProcessor: resize to 224,
normalise with 0.5/0.5); q8 is quantized as transformers.js' conversion script does it (a graph with a Conv, the
encoder, all uint8; the decoder int8). Both graphs are exported as ours are (slimmed, the tied head stored once and
quantized), so the comparison is between architectures, not export tools; the Hub's own files may be slower. The tokenizer is the byte-level stand-in of `distilvit.modeling.realsize` with GPT-2's
vocabulary size: captions are timed, not read.

This module is for timing only; it knows nothing about training or our own export layouts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from transformers import (GenerationConfig, GPT2Config, ViTConfig, ViTImageProcessor, VisionEncoderDecoderConfig,
                          VisionEncoderDecoderModel)

from distilvit.export import constants as C
from distilvit.export.onnx_export import GraphSpec, export_graph, save_onnx
from distilvit.quantize.modes import DType, convert

log = logging.getLogger(__name__)
NAME = "ViT-base/16 + GPT-2"
GRAPHS = ("encoder_model", "decoder_model_merged")
DTYPES = {"fp32": {}, "q8": {"encoder_model": DType.UINT8, "decoder_model_merged": DType.INT8}}


def build_peer(seed: int = 0, encoder: ViTConfig | None = None, decoder: GPT2Config | None = None) -> VisionEncoderDecoderModel:
    """The peer with random weights; default configs are the real shapes (module docstring)."""
    decoder = decoder or GPT2Config()
    decoder.add_cross_attention, decoder.is_decoder = True, True
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder or ViTConfig(), decoder)
    eos = decoder.eos_token_id
    if not 0 <= eos < decoder.vocab_size:
        raise ValueError(f"the decoder's eos_token_id {eos} is outside its {decoder.vocab_size}-token vocabulary")
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = eos
    torch.manual_seed(seed)
    return VisionEncoderDecoderModel(config).eval()


class PeerEncoder(nn.Module):
    def __init__(self, model: VisionEncoderDecoderModel):
        super().__init__()
        self.vit = model.encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=pixel_values).last_hidden_state  # [B, 197, D]


def _linear(x: torch.Tensor, conv1d) -> torch.Tensor:
    """GPT-2's Conv1D (weight [in, out]) as MatMul + Add, the form dynamic quantization turns into int8."""
    return x @ conv1d.weight + conv1d.bias


class PeerDecoder(nn.Module):
    """GPT-2 with cross-attention over flat past tensors: the same arithmetic as `GPT2LMHeadModel` (eval, no
    dropout), last-position logits only."""

    def __init__(self, model: VisionEncoderDecoderModel):
        super().__init__()
        self.gpt2 = model.decoder.transformer
        self.heads = model.config.decoder.n_head
        # GPT-2 ties its head to the token embeddings: stored once, transposed [D, V], read by the lookup (a Gather
        # on axis 1) and the head (a MatMul with a constant B, so q8 makes it int8), as our decoder does it
        # (export/graphs.py). With the head as `x @ wte.T` the quantizer saw a non-constant B and left the head
        # float, dequantizing 38.6 M weights every step.
        if model.decoder.lm_head.weight.data_ptr() != self.gpt2.wte.weight.data_ptr():
            raise ValueError("the peer's decoder must tie its head to its token embeddings, as GPT-2 does")
        self.head_t = nn.Parameter(model.decoder.lm_head.weight.detach().t().contiguous(), requires_grad=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, hd]
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def _attend(self, q, k, v, mask, attn) -> torch.Tensor:
        scores = (q @ k.transpose(-1, -2)) * attn.scaling
        if mask is not None:
            scores = scores + mask
        out = torch.softmax(scores, dim=-1) @ v  # [B, H, T, hd]
        return _linear(out.transpose(1, 2).flatten(2), attn.c_proj)

    def forward(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor, *past: torch.Tensor):
        t, p = input_ids.shape[1], past[0].shape[2]
        positions = torch.arange(t, device=input_ids.device) + p
        embeds = torch.index_select(self.head_t, 1, input_ids.reshape(-1)).t().reshape(*input_ids.shape, -1)  # [B, T, D]
        h = embeds + self.gpt2.wpe(positions).unsqueeze(0)
        # additive causal mask [T, P + T]: position i sees the past and new positions <= i
        keys = torch.arange(p + t, device=input_ids.device)
        mask = torch.where(keys.unsqueeze(0) <= positions.unsqueeze(1), 0.0, torch.finfo(h.dtype).min)
        presents = []
        for i, block in enumerate(self.gpt2.h):
            q, k, v = _linear(block.ln_1(h), block.attn.c_attn).split(h.shape[-1], dim=-1)
            k = torch.cat([past[2 * i], self._split(k)], dim=2)
            v = torch.cat([past[2 * i + 1], self._split(v)], dim=2)
            presents += [k, v]
            h = h + self._attend(self._split(q), k, v, mask, block.attn)
            cross = block.crossattention
            ck, cv = _linear(encoder_hidden_states, cross.c_attn).split(h.shape[-1], dim=-1)
            h = h + self._attend(self._split(_linear(block.ln_cross_attn(h), cross.q_attn)), self._split(ck),
                                 self._split(cv), None, cross)
            x = block.ln_2(h)
            h = h + _linear(block.mlp.act(_linear(x, block.mlp.c_fc)), block.mlp.c_proj)
        logits = self.gpt2.ln_f(h[:, -1:, :]) @ self.head_t  # [B, 1, V]
        return (logits, *presents)


def graph_specs(model: VisionEncoderDecoderModel) -> list[GraphSpec]:
    enc, dec = model.config.encoder, model.config.decoder
    g = torch.Generator().manual_seed(0)
    tokens = (enc.image_size // enc.patch_size) ** 2 + 1
    head_dim = dec.n_embd // dec.n_head
    past = tuple(torch.randn(2, dec.n_head, 3, head_dim, generator=g) for _ in range(2 * dec.n_layer))
    past_names = [n for i in range(dec.n_layer) for n in C.past_names(i)]
    present_names = [n for i in range(dec.n_layer) for n in C.present_names(i)]
    kv_dims = {**{n: {0: C.BATCH, 2: C.PAST_LENGTH} for n in past_names},
               **{n: {0: C.BATCH, 2: C.TOTAL_LENGTH} for n in present_names}}
    pixels = torch.randn(2, enc.num_channels, enc.image_size, enc.image_size, generator=g)
    return [
        GraphSpec("encoder_model", PeerEncoder(model), (pixels,), [C.PIXEL_VALUES], [C.ENCODER_OUTPUT],
                  {C.PIXEL_VALUES: {0: C.BATCH}, C.ENCODER_OUTPUT: {0: C.BATCH}}),
        GraphSpec("decoder_model_merged", PeerDecoder(model),
                  (torch.randint(0, dec.vocab_size, (2, 2), generator=g), torch.randn(2, tokens, enc.hidden_size, generator=g), *past),
                  [C.INPUT_IDS, C.ENCODER_HIDDEN_STATES, *past_names], [C.LOGITS, *present_names],
                  {C.INPUT_IDS: {0: C.BATCH, 1: C.DECODER_LENGTH}, C.ENCODER_HIDDEN_STATES: {0: C.BATCH, 1: C.ENCODER_LENGTH},
                   C.LOGITS: {0: C.BATCH}, **kv_dims}),
    ]


def reference_logits(model: VisionEncoderDecoderModel, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """transformers' own forward (no cache): last-position logits [B, 1, V]."""
    with torch.no_grad():
        out = model(pixel_values=pixel_values, decoder_input_ids=input_ids, use_cache=False)
    return out.logits[:, -1:, :]


def check_graphs(model: VisionEncoderDecoderModel, export_dir: Path, tolerance: float = 1e-3) -> float:
    """Greedy-free check of the exported fp32 graphs against transformers' forward: logits after a 3-token prefill
    and after one more token with the past. Returns the largest difference; raises ValueError past `tolerance`."""
    import onnxruntime as ort

    enc_cfg, dec_cfg = model.config.encoder, model.config.decoder
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(1, 3, enc_cfg.image_size, enc_cfg.image_size, generator=g) * 2 - 1
    ids = torch.randint(0, dec_cfg.vocab_size, (1, 4), generator=g)
    encoder = ort.InferenceSession(str(export_dir / C.onnx_file("encoder_model", "fp32")), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(export_dir / C.onnx_file("decoder_model_merged", "fp32")), providers=["CPUExecutionProvider"])
    hidden = encoder.run(None, {C.PIXEL_VALUES: pixels.numpy()})[0]
    head_dim = dec_cfg.n_embd // dec_cfg.n_head
    empty = np.zeros((1, dec_cfg.n_head, 0, head_dim), np.float32)
    feeds = {C.INPUT_IDS: ids[:, :3].numpy(), C.ENCODER_HIDDEN_STATES: hidden,
             **{n: empty for i in range(dec_cfg.n_layer) for n in C.past_names(i)}}
    first = decoder.run(None, feeds)
    feeds = {C.INPUT_IDS: ids[:, 3:].numpy(), C.ENCODER_HIDDEN_STATES: hidden,
             **{n: first[1 + k] for k, n in enumerate(n for i in range(dec_cfg.n_layer) for n in C.past_names(i))}}
    second = decoder.run(None, feeds)
    worst = max(float(np.abs(first[0] - reference_logits(model, pixels, ids[:, :3]).numpy()).max()),
                float(np.abs(second[0] - reference_logits(model, pixels, ids).numpy()).max()))
    if not worst <= tolerance:
        raise ValueError(f"the peer's ONNX graphs differ from transformers' forward by {worst:.2e} (> {tolerance})")
    return worst


def write_peer(export_dir: Path, model: VisionEncoderDecoderModel | None = None, slim: bool = True) -> Path:
    """Export the peer (fp32 and q8) to `export_dir` in the layout transformers.js loads; returns `export_dir`."""
    from distilvit.export.exporter import _slim
    from distilvit.provenance import stamp
    from distilvit.modeling.realsize import build_tokenizer

    model = model or build_peer()
    export_dir = Path(export_dir)
    (export_dir / C.ONNX_DIR).mkdir(parents=True, exist_ok=True)
    for spec in graph_specs(model):
        path = export_dir / C.onnx_file(spec.name, "fp32")
        export_graph(spec, path)
        if slim:
            _slim(path, symbolic_shapes=spec.name == "encoder_model")
    worst = check_graphs(model, export_dir)
    log.info("peer graphs match transformers' forward within %.1e", worst)
    for dtype, per_graph in DTYPES.items():
        for graph, mode in per_graph.items():
            save_onnx(convert(onnx.load_model(str(export_dir / C.onnx_file(graph, "fp32"))), mode),
                      export_dir / C.onnx_file(graph, dtype))
    model.config.save_pretrained(export_dir)
    eos = model.config.decoder.eos_token_id
    GenerationConfig(decoder_start_token_id=eos, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                     max_new_tokens=30).save_pretrained(export_dir)
    enc = model.config.encoder
    ViTImageProcessor(size={"height": enc.image_size, "width": enc.image_size}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(export_dir)
    build_tokenizer(model.config.decoder.vocab_size).save_pretrained(export_dir)
    sizes = {p.relative_to(export_dir).as_posix(): p.stat().st_size for p in sorted((export_dir / C.ONNX_DIR).iterdir())}
    info = {"peer": NAME, "layout": C.Layout.PIPELINE.value, "graphs": list(GRAPHS), "dtypes": list(DTYPES),
            "quantization": {d: {g: m.value for g, m in per.items()} for d, per in DTYPES.items()},
            "max_abs_diff_vs_transformers": worst, "sizes_bytes": sizes, "transformers_js": C.TRANSFORMERS_JS_VERSION,
            "peer_digest": source_digest(), **stamp()}
    (export_dir / C.EXPORT_CONFIG).write_text(json.dumps(info, indent=2) + "\n")
    return export_dir


def source_digest() -> str:
    """sha256 of this module: an export it made is reused by the bench only while this code is unchanged."""
    import hashlib

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def cross_kv_flops(config: dict) -> int:
    """FLOPs per generated token of recomputing every layer's cross-attention keys and values from the image tokens
    (the peer's per-token cost that ours does not have), from the export's config.json."""
    dec = config["decoder"]
    return 2 * dec["n_layer"] * image_tokens(config) * dec["n_embd"] * 2 * dec["n_embd"]


def image_tokens(config: dict) -> int:
    """Tokens the decoder attends to per image (patches + class token), from the export's config.json."""
    enc = config["encoder"]
    return (enc["image_size"] // enc["patch_size"]) ** 2 + 1

