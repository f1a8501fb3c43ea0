"""The caption vocabulary (distilvit/modeling/caption_vocab.py): train records it, the merged model carries it, and PyTorch,
the exported graphs in onnxruntime and stock transformers.js all choose among exactly those ids.

The restriction is made to bite: a 6-step tiny run, whose merged config is given a vocabulary without the ids its
unrestricted captions use most, so the restricted captions differ from the unrestricted ones, and every runtime
must give the restricted ones."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from distilvit.data.synthetic import make_synthetic_splits
from distilvit.errors import UserError
from distilvit.export.exporter import export_model
from distilvit.export.ort_generate import OrtCaptioner
from distilvit.modeling import caption_vocab
from distilvit.modeling.caption import load_captioner
from distilvit.pixels import decode_rgba, raw_tensor


def _images(count: int):
    return [r["image"] for r in make_synthetic_splits(seed=3, train_size=1, validation_size=1, test_size=count)["test"]]


def test_train_records_the_training_captions_tokens_and_the_merged_model_carries_them(short_run):
    saved = json.loads((short_run / caption_vocab.FILE).read_text())
    ids = saved["token_ids"]
    merged = json.loads((short_run / "merged" / "config.json").read_text())
    assert merged[caption_vocab.CONFIG_KEY] == ids
    assert saved["tokens"] == len(ids) and saved["of_vocab_size"] == merged["text_config"]["vocab_size"]
    captioner = load_captioner(short_run / "merged")
    tok = captioner.processor.tokenizer
    rows = make_synthetic_splits(seed=0, **json.loads((short_run / "train_config.json").read_text())["synthetic_sizes"])
    used = {i for r in rows["train"] for c in r["captions"] for i in tok(c, add_special_tokens=False)["input_ids"]}
    assert used | {tok.eos_token_id, tok.bos_token_id} == set(ids)  # every caption token, EOS and BOS, nothing else
    assert merged["image_token_index"] not in ids


def test_full_vocab_run_has_none(tmp_path):
    from conftest import short_config
    from distilvit.training.train import train

    out = tmp_path / "full"
    train(short_config(out, max_steps=1, eval_steps=0, caption_vocab=False))
    assert not (out / caption_vocab.FILE).exists()
    assert caption_vocab.CONFIG_KEY not in json.loads((out / "merged" / "config.json").read_text())


@pytest.fixture(scope="module")
def restricted(short_run, tmp_path_factory):
    """(restricted merged folder, its ids, unrestricted captions' tokens, images): the short run's merged model
    without the 3 ids its own captions use most."""
    root = tmp_path_factory.mktemp("vocab")
    images = _images(6)
    full = load_captioner(short_run / "merged")
    setattr(full.model.config, caption_vocab.CONFIG_KEY, None)
    full.model.generation_config.suppress_tokens = None  # the whole vocabulary
    free = full.generate_ids(images, 8)
    common = [i for i, _ in Counter(i for row in free for i in row).most_common(3)]
    ids = [i for i in json.loads((short_run / caption_vocab.FILE).read_text())["token_ids"] if i not in common]
    merged = root / "merged"
    shutil.copytree(short_run / "merged", merged)
    model = full.model
    caption_vocab.apply(model, ids)  # what merge does with a run's vocabulary: config and generation config
    model.config.to_json_file(merged / "config.json")
    model.generation_config.save_pretrained(merged)
    return merged, ids, free, images


def test_the_merged_generation_config_suppresses_every_other_id(short_run):
    merged = short_run / "merged"
    ids = json.loads((merged / "config.json").read_text())[caption_vocab.CONFIG_KEY]
    generation = json.loads((merged / "generation_config.json").read_text())
    vocab_size = json.loads((merged / "config.json").read_text())["text_config"]["vocab_size"]
    assert sorted(generation["suppress_tokens"] + ids) == list(range(vocab_size))


def test_stock_transformers_generate_chooses_among_the_same_ids(restricted):
    """Plain `AutoModelForImageTextToText.generate` (README's example, the card's), given the same pixels, generates
    what `caption` does: the merged generation config suppresses every id outside the vocabulary. Without that list
    it generates the unrestricted captions (the check can fail)."""
    from transformers import AutoModelForImageTextToText

    from distilvit.modeling.prompt import prompt_ids

    merged, ids, free, images = restricted
    captioner = load_captioner(merged)
    want = captioner.generate_ids(images, 8)
    model = AutoModelForImageTextToText.from_pretrained(merged).eval()
    input_ids = prompt_ids(captioner.processor.tokenizer, len(images), model.config.image_seq_length)
    eos = captioner.processor.tokenizer.eos_token_id

    def stock(**overrides):
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 pixel_values=captioner.pixels(images), max_new_tokens=8, do_sample=False, **overrides)
        rows = out[:, input_ids.shape[1]:].tolist()
        return [row[: row.index(eos)] if eos in row else row for row in rows]

    assert stock() == want
    assert stock(suppress_tokens=None) == free != want


def test_pytorch_generates_only_caption_vocab_ids(restricted):
    merged, ids, free, images = restricted
    tokens = load_captioner(merged).generate_ids(images, 8)
    assert all(i in ids for row in tokens for i in row)
    assert tokens != free  # the restriction changed the captions: the runtimes below are compared where it bites


@pytest.mark.parametrize("layout", ["pipeline", "llava"])
def test_exported_graphs_choose_among_the_same_ids_in_onnxruntime_and_transformers_js(restricted, short_run,
                                                                                       tmp_path, layout):
    from distilvit.verify.parity import verify_parity

    merged, ids, _, images = restricted
    export = tmp_path / "restricted"
    info = export_model(merged, export, layout=layout, agreement_images=0)  # fp32: the graph's arithmetic is the point
    assert info["caption_vocab"] == {"tokens": len(ids), "of": json.loads((merged / "config.json").read_text())["text_config"]["vocab_size"]}
    assert f"generates only the {len(ids)} tokens" in (export / "README.md").read_text()
    assert caption_vocab.CONFIG_KEY not in json.loads((export / "config.json").read_text())  # the graph applies it
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for n, image in enumerate(images):
        image.save(folder / f"{n}.png")
        paths.append(folder / f"{n}.png")
    report = verify_parity(export, paths, model_dir=merged, dtypes=["fp32"], runtimes=["onnxruntime", "transformers.js"],
                           max_new_tokens=8)
    for row in report["results"]:
        assert row["model"]["exact_match"] == 1.0, (row["runtime"], row["model"]["first_divergence"])
    graphs = next(r for r in report["results"] if r["runtime"] == "onnxruntime")["graphs"]
    assert graphs["decoder_model_merged"]["first_step_logits"]["max_abs_diff"] < 1e-3  # masked ids compared too

    # the graph's first-step logits against the stock model's unmasked ones: equal on the kept ids, exactly
    # MASKED_LOGIT on all others
    from distilvit.modeling.prompt import prompt_ids

    captioner = load_captioner(merged)
    with torch.no_grad():
        ids_in = prompt_ids(captioner.processor.tokenizer, len(images), captioner.num_image_tokens)
        stock = captioner.model(input_ids=ids_in, pixel_values=captioner.pixels(images),
                                attention_mask=torch.ones_like(ids_in)).logits[:, -1, :].numpy()
    raw = np.concatenate([raw_tensor(decode_rgba(p)).numpy() for p in paths])  # [B, 4, H, W]
    graph = OrtCaptioner(export, "fp32").generate(raw, 1).first_logits
    keep = np.zeros(stock.shape[-1], dtype=bool)
    keep[ids] = True
    np.testing.assert_allclose(graph[:, keep], stock[:, keep], atol=1e-3)
    assert (graph[:, ~keep] == caption_vocab.MASKED_LOGIT).all() and (stock[:, ~keep] > -100).all()


def test_index_map_and_mask():
    ids = [0, 3, 5]
    assert caption_vocab.index_map(ids, 7).tolist() == [0, 3, 3, 1, 3, 2, 3]
    logits = torch.arange(7, dtype=torch.float32)[None]
    assert caption_vocab.mask_logits(logits, ids).tolist() == [[0, -1e4, -1e4, 3, -1e4, 5, -1e4]]
    assert caption_vocab.mask_logits(logits, None) is logits
    from transformers import GenerationConfig

    gen = GenerationConfig(bos_token_id=1, eos_token_id=0)
    with pytest.raises(ValueError, match=r"lacks EOS \(0\)"):
        caption_vocab.check([1, 2], 7, gen)
    with pytest.raises(ValueError, match=r"lacks BOS \(1\)"):
        caption_vocab.check([0, 2], 7, gen)
    with pytest.raises(ValueError, match="sorted unique"):
        caption_vocab.check([2, 1], 7, gen)
    with pytest.raises(ValueError, match="sorted unique"):
        caption_vocab.check([0, 1, 7], 7, gen)
    caption_vocab.check([0, 1, 2], 7, gen)
    # a list-valued EOS (Llama 3 and several chat models): one of the ids it stops at is enough
    caption_vocab.check([1, 2, 5], 7, GenerationConfig(bos_token_id=1, eos_token_id=[5, 6]))
    with pytest.raises(ValueError, match=r"lacks EOS \(\[5, 6\]\)"):
        caption_vocab.check([1, 2], 7, GenerationConfig(bos_token_id=1, eos_token_id=[5, 6]))


def test_export_refuses_a_vocabulary_without_eos(short_run, tmp_path):
    merged = tmp_path / "merged"
    shutil.copytree(short_run / "merged", merged)
    config = json.loads((merged / "config.json").read_text())
    eos = json.loads((merged / "generation_config.json").read_text())["eos_token_id"]
    config[caption_vocab.CONFIG_KEY] = [i for i in config[caption_vocab.CONFIG_KEY] if i != eos]
    (merged / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"config.json: caption_vocab lacks EOS.*delete caption_vocab"):
        export_model(merged, tmp_path / "out", agreement_images=0)
    assert not (tmp_path / "out").exists()
    # the same rule in every stage that reads a caption vocabulary: captioning with the model ...
    from distilvit.modeling.caption import load_captioner

    with pytest.raises(UserError, match=r"config.json: caption_vocab lacks EOS"):
        load_captioner(merged)
    # ... and merging a run whose caption_vocab.json lacks it
    from distilvit.modeling.merge import merge_run

    run = tmp_path / "run"
    shutil.copytree(short_run, run, ignore=shutil.ignore_patterns("merged"))
    saved = json.loads((run / caption_vocab.FILE).read_text())
    saved["token_ids"] = [i for i in saved["token_ids"] if i != eos]
    (run / caption_vocab.FILE).write_text(json.dumps(saved))
    with pytest.raises(UserError, match=r"caption_vocab.json: caption_vocab lacks EOS"):
        merge_run(run)
    assert not (run / "merged").exists()



@pytest.mark.parametrize("text", [b'{"tokens": 3}', b'{"token_ids": ["a"]}', b'{"token_ids": []}', b"\xff\xfe"])
def test_a_damaged_vocabulary_file_is_a_user_error(tmp_path, text):
    (tmp_path / caption_vocab.FILE).write_bytes(text)
    with pytest.raises(UserError, match="is not a caption vocabulary written by train"):
        caption_vocab.load(tmp_path)


def test_merge_refuses_a_truncated_vocabulary_file_and_writes_nothing(short_run, tmp_path):
    from test_cli import assert_user_error, run_cli

    run = tmp_path / "run"
    shutil.copytree(short_run, run, ignore=shutil.ignore_patterns("merged"))
    (run / caption_vocab.FILE).write_text('{"token_ids": [1, 2')  # as an interrupted hand edit leaves it
    assert_user_error(run_cli("merge", str(run)), f"{run / caption_vocab.FILE} is not a caption vocabulary", "--resume")
    assert not (run / "merged").exists()


def test_merge_refuses_ids_outside_the_decoders_vocabulary(short_run, tmp_path):
    from distilvit.modeling.merge import merge_run

    run = tmp_path / "run"
    shutil.copytree(short_run, run, ignore=shutil.ignore_patterns("merged"))
    saved = json.loads((run / caption_vocab.FILE).read_text())
    saved["token_ids"].append(saved["of_vocab_size"] + 5)  # an id the decoder does not have
    (run / caption_vocab.FILE).write_text(json.dumps(saved))
    with pytest.raises(UserError, match=r"caption_vocab.json: caption_vocab must hold sorted unique ids in \[0, \d+\)"):
        merge_run(run)
    assert not (run / "merged").exists()
