"""The bench's peer (ViT + GPT-2, distilvit/bench/peer.py) on tiny shapes: its graphs against transformers' own forward,
the files transformers.js loads, and stock transformers.js timing a caption with it in Node."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from transformers import GPT2Config, ViTConfig

from distilvit.bench import peer
from distilvit.export import constants as C


def tiny_peer():
    return peer.build_peer(encoder=ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, image_size=32, patch_size=8),
                           decoder=GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=400, n_positions=64,
                                              bos_token_id=399, eos_token_id=399))


@pytest.fixture(scope="module")
def peer_export(tmp_path_factory):
    model = tiny_peer()
    return model, peer.write_peer(tmp_path_factory.mktemp("peer") / "export", model)


def test_real_shapes_are_the_defaults():
    """build_peer() without configs uses transformers' defaults: ViT-base/16-224 and GPT-2 small."""
    vit, gpt2 = ViTConfig(), GPT2Config()
    assert (vit.hidden_size, vit.num_hidden_layers, vit.image_size, vit.patch_size) == (768, 12, 224, 16)
    assert (gpt2.n_embd, gpt2.n_layer, gpt2.n_head, gpt2.vocab_size) == (768, 12, 12, 50257)


def test_graphs_match_transformers_and_fail_when_they_do_not(peer_export):
    model, export_dir = peer_export
    assert peer.check_graphs(model, export_dir) < 1e-4
    changed = copy.deepcopy(model)  # the cross-attention's queries changed: the image path is compared too
    with torch.no_grad():
        q = changed.decoder.transformer.h[1].crossattention.q_attn.weight
        q.add_(torch.randn(q.shape, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="differ from transformers"):
        peer.check_graphs(changed, export_dir)


def test_layout_is_what_transformers_js_loads(peer_export):
    model, export_dir = peer_export
    config = json.loads((export_dir / "config.json").read_text())
    assert config["model_type"] == "vision-encoder-decoder" and config["decoder"]["model_type"] == "gpt2"
    for graph in peer.GRAPHS:
        for dtype in peer.DTYPES:
            assert (export_dir / C.onnx_file(graph, dtype)).is_file()
    decoder = onnx.load_model(str(export_dir / C.onnx_file("decoder_model_merged", "fp32")), load_external_data=False)
    names = [i.name for i in decoder.graph.input]
    assert names[:2] == [C.INPUT_IDS, C.ENCODER_HIDDEN_STATES] and names[2:4] == list(C.past_names(0))
    # q8 as transformers.js' conversion script makes it: the encoder (it has a Conv) all uint8, the decoder int8
    encoder_q8 = onnx.load_model(str(export_dir / C.onnx_file("encoder_model", "q8")))
    decoder_q8 = onnx.load_model(str(export_dir / C.onnx_file("decoder_model_merged", "q8")))
    int_types = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8"}
    assert {int_types[t.data_type] for t in encoder_q8.graph.initializer if t.data_type in int_types} == {"uint8"}
    assert "int8" in {int_types[t.data_type] for t in decoder_q8.graph.initializer if t.data_type in int_types}
    info = json.loads((export_dir / C.EXPORT_CONFIG).read_text())
    assert info["peer"] == peer.NAME and info["max_abs_diff_vs_transformers"] < 1e-4


def test_stock_transformers_js_captions_with_it(peer_export, tmp_path):
    from distilvit.bench.runners import bench_transformers_js

    _, export_dir = peer_export
    image = tmp_path / "image.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8")).save(image)
    row = bench_transformers_js(export_dir, "q8", image, tokens=3, repeats=1)
    assert row["total_ms"] >= row["first_token_ms"] > 0


def test_cross_attention_cost_counts_the_key_value_weights(peer_export):
    """The per-token cost the bench names: every layer's cross-attention key/value projection over the image tokens."""
    model, export_dir = peer_export
    config = json.loads((export_dir / "config.json").read_text())
    weights = sum(block.crossattention.c_attn.weight.numel() for block in model.decoder.transformer.h)
    assert peer.image_tokens(config) == (32 // 8) ** 2 + 1
    assert peer.cross_kv_flops(config) == 2 * peer.image_tokens(config) * weights
