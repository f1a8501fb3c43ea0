"""The real pretrained SmolLM2-135M decoder (tests/real_weights.py) through the commands a user types: `train` a few
steps from a Hugging Face cache with nothing special for its chat-token BOS/EOS, `export` fp32, then the same images
captioned identically by PyTorch (`caption`), stock transformers `generate`, onnxruntime and stock transformers.js in
Node and in Chromium. Real weights bring what random ones hide: small logit margins, activation outliers, a 49k BPE
vocabulary. `.ci/run` downloads the weights; elsewhere these tests skip and say how to get them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import photos
import real_weights
from conftest import CAPTIONS

CHROMIUM = os.environ.get("DISTILVIT_WEB_CHROMIUM", "/usr/bin/chromium")
CLI = [sys.executable, "-m", "distilvit.cli"]
pytestmark = pytest.mark.skipif(real_weights.missing_reason() is not None, reason=str(real_weights.missing_reason()))
needs_node = pytest.mark.skipif(shutil.which("npm") is None, reason="transformers.js needs node and npm, which are not installed")
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)")


def run_cli(args: list, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, f"{args[:2]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> dict:
    """A run trained from the cached real decoder with a small SigLIP (the tiny encoder), and its fp32 export."""
    from distilvit.data.synthetic import draw_scene
    from distilvit.modeling.tiny import build_tiny_models

    root = tmp_path_factory.mktemp("real-weights")
    hf_home = root / "hf-home"
    real_weights.write_real_decoder_repo(hf_home)
    encoder, _ = build_tiny_models(root / "bases", CAPTIONS, seed=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    run, export = root / "run", root / "export"
    # 24 steps at 20x the preset's learning rates: ~100 s here, and the shapes get captions ("a red triangle");
    # at the preset's rates 8 steps gave "a a a a ..." for every image, whose parity would say little.
    trained = run_cli(["train", "--decoder-model", real_weights.REPO_ID, "--encoder-model", encoder, "--dataset",
                       "synthetic", "--synthetic-size", 256, "--max-steps", 24, "--effective-batch-size", 8,
                       "--per-device-train-batch-size", 8, "--projection-lr", "1e-2", "--lora-lr", "1e-3",
                       "--eval-steps", 0, "--eval-sample", 4, "--test-sample", 4, "--output-dir", run], env)
    run_cli(["export", run, "--output", export, "--agreement-images", 0], env)
    images = root / "images"
    images.mkdir()
    for path in photos.sample_files():
        shutil.copy(path, images / path.name)
    import random

    rng = random.Random(7)
    for i in range(2):
        draw_scene(rng, 64)[0].save(images / f"shapes-{i}.png")
    return {"run": run, "export": export, "images": images, "env": env, "train_log": trained.stdout + trained.stderr,
            "encoder": encoder}


def _images(folder: Path) -> list[Image.Image]:
    from distilvit.modeling.caption import open_image

    return [open_image(p) for p in sorted(folder.iterdir())]


def test_the_real_decoders_chat_specials_need_nothing_special(real_run):
    """SmolLM2's tokenizer adds no BOS and its BOS/EOS are chat tokens (pad = EOS): the merged model's prompt still
    ends in that BOS and generation stops at that EOS."""
    from distilvit.modeling.caption import load_captioner
    from distilvit.modeling.prompt import prompt_ids

    captioner = load_captioner(real_run["run"])
    tokenizer = captioner.processor.tokenizer
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tokenizer("a cat").input_ids == [81, 2644]  # no BOS added
    ids = prompt_ids(tokenizer, 1, captioner.model.config.image_seq_length)[0].tolist()
    assert ids[-1] == tokenizer.bos_token_id == 1
    merged = json.loads((real_run["run"] / "merged" / "generation_config.json").read_text())
    assert merged["eos_token_id"] in (2, [2])


def test_a_closed_caption_vocabulary_is_named_at_training(real_run):
    """The synthetic shapes' captions use a handful of SmolLM2's 49,152 tokens: train says the model can only say
    those words (the tiny preset's word-level decoder, built from its captions, gets no such warning)."""
    from distilvit.modeling import caption_vocab

    tokens = len(caption_vocab.load(real_run["run"]))
    assert tokens < 40
    assert f"only {tokens} of the decoder's 49153 tokens" in real_run["train_log"]
    assert caption_vocab.small_warning(tokens, 64) is None  # a decoder whose whole vocabulary is the captions'
    assert caption_vocab.small_warning(caption_vocab.SMALL, 49153) is None


def test_pytorch_and_stock_transformers_generate_the_same_captions(real_run):
    """`caption` and plain `AutoModelForImageTextToText.generate` on the merged folder, given the same pixels, write
    the same text; the captions are words, not an immediate end of sequence (else the parity below means little)."""
    from transformers import AutoModelForImageTextToText

    from distilvit.modeling.caption import load_captioner
    from distilvit.modeling.prompt import prompt_ids

    images = _images(real_run["images"])
    merged = real_run["run"] / "merged"
    captioner = load_captioner(merged)
    want = captioner.caption(images)
    # mostly words, not an immediate end of sequence, and not one caption whatever the image. 24 steps do not make
    # every caption distinct or every one a word: which images share a caption, or get an empty one, moves with
    # library versions and with the tiny encoder and generator (the 128-wide encoder and the widened shapes, 2026-12-06:
    # one of four photographs captioned ""). An empty caption is still compared below, as any other.
    assert sum(map(bool, want)) > len(want) / 2 and len(set(filter(None, want))) > 1, want
    model = AutoModelForImageTextToText.from_pretrained(merged).eval()
    input_ids = prompt_ids(captioner.processor.tokenizer, len(images), model.config.image_seq_length)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                             pixel_values=captioner.pixels(images), do_sample=False)
    got = captioner.processor.tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)
    assert [g.strip() for g in got] == want


@needs_node
@needs_chromium
def test_fp32_captions_identical_in_onnxruntime_and_transformers_js_in_node_and_chromium(real_run, tmp_path):
    """`verify parity` once for the three runtimes (PyTorch's captions are made once): every caption identical,
    both from PyTorch's pixels (model parity) and from each runtime's own decoding of the files (end to end)."""
    report = tmp_path / "parity.json"
    run_cli(["verify", "parity", real_run["export"], "--images", real_run["images"], "--dtype", "fp32",
             "--runtime", "onnxruntime,transformers.js,chromium-wasm", "--report", report], real_run["env"])
    rows = {e["runtime"]: e for e in json.loads(report.read_text())["results"]}
    assert set(rows) == {"onnxruntime", "transformers.js", "chromium-wasm"}
    for runtime, entry in rows.items():
        assert entry["passed"], (runtime, entry["checks"])
        assert entry["model"]["exact_match"] == 1.0 and entry["end_to_end"]["exact_match"] == 1.0, runtime


# The CI bound on the real decoder's prose (docs/quantization.md has the measured figures, 1,536 tokens): q8 keeps
# 97.5% of fp32's next tokens and its perplexity within 1%; the bound leaves room for library versions. Plain dynamic
# int8 (q8 before 2026-12-08) kept 68% at x1.31 on the same file: swapping it back fails here.
PROSE_MIN_TOP1 = 0.95
PROSE_MAX_PERPLEXITY_CHANGE = 0.02


@pytest.fixture(scope="module")
def full_vocab_export(real_run, tmp_path_factory) -> Path:
    """The real decoder still as pretrained (2 steps, every token of its vocabulary kept), exported with q8."""
    root = tmp_path_factory.mktemp("full-vocab")
    run, export = root / "run", root / "export"
    run_cli(["train", "--decoder-model", real_weights.REPO_ID, "--encoder-model", real_run["encoder"],
             "--dataset", "synthetic",
             "--synthetic-size", 64, "--max-steps", 2, "--effective-batch-size", 4, "--per-device-train-batch-size", 4,
             "--full-vocab", "--eval-steps", 0, "--eval-sample", 4, "--test-sample", 4, "--output-dir", run],
            real_run["env"])
    run_cli(["export", run, "--output", export, "--quantize", "q8", "--agreement-images", 0], real_run["env"])
    return export


def test_q8_reads_real_prose_as_the_fp32_graph_does(full_vocab_export):
    """The exported q8 decoder, run as generation runs it (image prefix + BOS in one call, then one token per call
    with the KV cache), teacher forced on 1,536 tokens of scikit-learn's dataset descriptions: its next-token argmax
    is fp32's and its perplexity fp32's, within the bounds above. Not vacuous: fp32 itself reads the prose as a
    language model does (a perplexity a random decoder is far from), and q8 is not the fp32 file."""
    from distilvit.bench import text_fidelity

    text = text_fidelity.prose(full_vocab_export / "tokenizer.json", 12, 128)
    fp32 = text_fidelity.read(full_vocab_export, "fp32", text, continuation=0, prefill=False)
    q8 = text_fidelity.read(full_vocab_export, "q8", text, continuation=0, prefill=False)
    result = text_fidelity.compare(q8, fp32)
    assert result.fp32_perplexity < 100, result  # 26.6 measured; a random 49k-token decoder is in the tens of thousands
    assert not np.array_equal(q8.nll, fp32.nll)  # 8-bit weights: close, not identical
    assert result.tokens == 1536 and result.continuations == 0  # none read: none counted as equal
    assert result.top1_agreement >= PROSE_MIN_TOP1, result
    assert abs(result.perplexity_ratio - 1) <= PROSE_MAX_PERPLEXITY_CHANGE, result


@needs_node
def test_parity_holds_the_real_decoder_to_its_logits_and_weights(real_run, full_vocab_export, tmp_path):
    """On the real decoder (fp32 logits up to ~20), the sound export passes `verify parity` on its teacher-forced
    logits in onnxruntime and transformers.js (fp32 within the tolerance, q8 within its KL bound, q8's weights fp32's
    rounded); one MLP matrix negated (fp32) or its 8-bit form negated (q8) fails it, naming the decoder. Two images
    (a photograph and a drawn scene) keep the three runs short; fp32's sound parity on all of them is the test above."""
    from damage import plant

    images = tmp_path / "images"
    images.mkdir()
    for name in ("china.jpg", "shapes-0.png"):
        shutil.copy(real_run["images"] / name, images / name)

    def verify(export: Path, runtimes: str, name: str, dtype: str = "all") -> tuple[subprocess.CompletedProcess, dict]:
        report = tmp_path / f"{name}.json"
        result = subprocess.run(CLI + ["verify", "parity", str(export), "--images", str(images), "--dtype", dtype,
                                       "--runtime", runtimes, "--report", str(report)],
                                capture_output=True, text=True, env=real_run["env"], timeout=1200)
        assert report.is_file(), result.stdout[-2000:] + result.stderr[-3000:]
        return result, json.loads(report.read_text())

    result, data = verify(full_vocab_export, "onnxruntime,transformers.js", "sound")
    assert result.returncode == 0, result.stdout[-3000:]
    for entry in data["results"]:
        assert entry["logits"]["steps"] > len(data["images"]) and not entry["logits"]["missing"]
        assert {"logits"} <= set(entry["verdict_from"]), entry
    generation = json.loads((full_vocab_export / "generation_config.json").read_text())
    for dtype in ("fp32", "q8"):
        damaged = tmp_path / f"damaged-{dtype}"
        shutil.copytree(full_vocab_export, damaged, copy_function=os.link)  # plant() writes a new file, not the link
        what = plant(damaged, "pipeline", dtype, "layers", generation["bos_token_id"], 0)
        result, data = verify(damaged, "onnxruntime", f"damaged-{dtype}", dtype)
        (entry,) = data["results"]
        assert result.returncode == 1 and not entry["passed"], what
        assert entry["suspect_graph"] == "decoder_model_merged", (what, entry["checks"])
