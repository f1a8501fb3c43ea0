"""The captioner builder: a stock LLaVA with the projector wiring of docs/architecture.md, checked inputs, and two
paths that agree."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipModel,
)

from distilvit.errors import UserError
from distilvit.modeling.model import build_captioner, load_tokenizer
from distilvit.modeling.prompt import IMAGE_TOKEN, PROCESSOR_KWARGS, prompt_ids, prompt_text


def test_build_follows_the_design(tiny_bases):
    enc, dec = tiny_bases
    model, processor = build_captioner(enc, dec)
    assert isinstance(model, LlavaForConditionalGeneration)
    cfg = model.config
    assert (cfg.vision_feature_layer, cfg.vision_feature_select_strategy) == (-1, "full")
    assert cfg.image_seq_length == (64 // 8) ** 2
    assert cfg.image_token_index == processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer)
    assert cfg.image_token_index in model.generation_config.suppress_tokens
    proj = model.model.multi_modal_projector
    assert proj.linear_1.bias is not None and proj.linear_1.in_features == cfg.vision_config.hidden_size


def test_processor_prompt_equals_our_prompt(tiny_bases):
    """`LlavaProcessor(text="<image>" + BOS)` gives the same ids as the training/generation prompt."""
    model, processor = build_captioner(*tiny_bases)
    image = Image.new("RGB", (40, 30), "red")
    batch = processor(images=[image], text=[prompt_text(processor.tokenizer)], return_tensors="pt", **PROCESSOR_KWARGS)
    assert torch.equal(batch["input_ids"], prompt_ids(processor.tokenizer, 1, model.config.image_seq_length))


def test_build_is_deterministic_but_for_the_projector(tiny_bases):
    torch.manual_seed(0)
    a, _ = build_captioner(*tiny_bases)
    torch.manual_seed(0)
    b, _ = build_captioner(*tiny_bases)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_kv_cache_and_full_recompute_agree(tiny_bases):
    torch.manual_seed(0)
    model, processor = build_captioner(*tiny_bases)
    model.eval()
    pixels = torch.randn(2, 3, 64, 64)
    ids = prompt_ids(processor.tokenizer, 2, model.config.image_seq_length)
    kwargs = dict(input_ids=ids, pixel_values=pixels, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    with torch.no_grad():
        cached = model.generate(**kwargs, use_cache=True, output_scores=True, return_dict_in_generate=True)
        full = model.generate(**kwargs, use_cache=False, output_scores=True, return_dict_in_generate=True)
    assert torch.equal(cached.sequences, full.sequences)
    for s1, s2 in zip(cached.scores, full.scores):
        torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-4)


def test_full_siglip_checkpoint_works_as_encoder(tmp_path, tiny_bases):
    """google/siglip-* checkpoints hold text and vision towers; only the vision tower is used."""
    siglip = SiglipModel(SiglipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=50),
    ))
    siglip.save_pretrained(tmp_path / "siglip")
    (tmp_path / "siglip" / "preprocessor_config.json").write_text(
        '{"image_processor_type": "SiglipImageProcessor", "size": {"height": 32, "width": 32}}')
    model, _ = build_captioner(str(tmp_path / "siglip"), tiny_bases[1])
    assert model.config.image_seq_length == 16
    torch.testing.assert_close(model.model.vision_tower.embeddings.patch_embedding.weight,
                               siglip.vision_model.embeddings.patch_embedding.weight)


def test_non_llama_decoder_is_refused_with_its_type(tmp_path, tiny_bases):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UserError, match=r"'gpt2'.*Llama-family"):
        build_captioner(tiny_bases[0], str(tmp_path / "gpt2"))


def test_decoder_as_encoder_is_refused(tiny_bases):
    with pytest.raises(UserError, match=r"--encoder-model .* 'llama' model.*SigLIP"):
        build_captioner(tiny_bases[1], tiny_bases[1])


def test_missing_model_folder_is_a_user_error(tmp_path, tiny_bases):
    with pytest.raises(UserError, match="decoder model config from .*nope"):
        build_captioner(tiny_bases[0], str(tmp_path / "nope"))
    with pytest.raises(UserError, match="encoder model config from .*nope"):
        build_captioner(str(tmp_path / "nope"), tiny_bases[1])


def test_the_real_siglip_config_is_read_as_its_vision_tower_without_warnings():
    """google/siglip-base-patch16-224's own config.json (distilvit/modeling/hub_configs): the vision config train uses is the
    one SiglipConfig holds, and reading it prints nothing (its text half, which draws transformers' warning about
    BOS/EOS ids outside the vocabulary, is never built). In a subprocess: transformers warns once per process."""
    from distilvit.modeling.realsize import ENCODER_ID, config_folder

    folder = str(config_folder(ENCODER_ID))
    script = ("import json, sys; from distilvit.modeling.model import check_encoder; "
              "print(json.dumps(check_encoder(sys.argv[1]).to_dict(), sort_keys=True))")
    result = subprocess.run([sys.executable, "-c", script, folder], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    assert json.loads(result.stdout) == json.loads(json.dumps(SiglipConfig.from_pretrained(folder).vision_config.to_dict()))


def test_tokenizer_without_bos_and_pad_is_handled(tmp_path):
    backend = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "</s>": 1, "a": 2, "cat": 3}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")
    folder = tmp_path / "dec"
    LlamaForCausalLM(LlamaConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
    tok.save_pretrained(folder)
    loaded = load_tokenizer(str(folder))
    assert loaded.bos_token_id == loaded.eos_token_id == 1
    assert loaded.pad_token_id == 1
    assert loaded.convert_tokens_to_ids(IMAGE_TOKEN) == 4


def test_a_decoder_stored_in_bfloat16_is_built_in_float32(tiny_bases, tmp_path):
    """SmolLM's checkpoint is stored in bfloat16. The captioner must still be float32 throughout (the training
    plan picks the precision): LlavaForConditionalGeneration takes each part's dtype from its config, and a
    bfloat16 language model trained on the CPU through torch's bf16 GEMM, 60x slower than fp32 on AVX2 (issue 26).
    The saved model reloads in float32 too."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    enc, dec = tiny_bases
    stored = tmp_path / "decoder-bf16"
    AutoModelForCausalLM.from_pretrained(dec).to(torch.bfloat16).save_pretrained(stored)
    AutoTokenizer.from_pretrained(dec).save_pretrained(stored)
    assert json.loads((stored / "config.json").read_text())["dtype"] == "bfloat16"
    model, processor = build_captioner(enc, str(stored))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    model.save_pretrained(tmp_path / "merged")
    processor.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    assert {p.dtype for p in reloaded.parameters()} == {torch.float32}
