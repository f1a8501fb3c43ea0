"""The commands a user types, run on exact replicas of the Hub repositories in a temporary Hugging Face cache
(`HF_HOME`, `HF_HUB_OFFLINE=1`), with nothing patched: `distilvit-web train` with its defaults (smollm-135m on
flickr30k) and on coco, each to a merged/ that `distilvit-web caption` uses; a downloaded copy of a repository
given as `--dataset DIR`; the failures a user meets here. The replicas: tests/hub_replicas.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

import hub_replicas
from distilvit.data import load_caption_splits
from distilvit.errors import UserError
from distilvit.modeling.realsize import CONFIG_ROOT, build_tokenizer

FLICKR = "Mozilla/flickr30k-transformed-captions-gpt4o"
COCO = "Mozilla/coco-gpt4o"
HUB_FACTS = Path(__file__).resolve().parents[2] / "shared" / "hub-facts"
CLI = [sys.executable, "-m", "distilvit.cli"]


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    """A Hugging Face cache holding the two model repos and the two dataset repos."""
    home = tmp_path_factory.mktemp("hf-home")
    hub_replicas.write_model_repos(home)
    hub_replicas.write_dataset_repos(home)
    return home


def user_env(hf_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return {**env, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_cli(args: list[str], env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, capture_output=True, text=True, env=env, timeout=timeout)


def snapshot(hf_home: Path, repo_id: str) -> Path:
    return hf_home / "hub" / f"datasets--{repo_id.replace('/', '--')}" / "snapshots" / hub_replicas.REVISIONS[repo_id]


# --- the replicas have the real shape ------------------------------------------------------------------------

@pytest.mark.skipif(not HUB_FACTS.is_dir(), reason=f"shared/hub-facts is not beside this checkout ({HUB_FACTS})")
def test_the_coco_replicas_readme_is_the_recorded_one(hf_home):
    """The replica's README (no configs, no dataset_info: why load_dataset cannot read the repository) is the file
    shared/hub-facts/DATASETS.md records for Mozilla/coco-gpt4o, as the replica cache holds it. The record gives the
    file as 39 bytes but quotes 33 (what the replica writes): its exact bytes are unknown here, its text is not."""
    import ast
    import re

    record = re.search(r'^\s+README\.md\s+(\d+) B: ("[^"]*")', (HUB_FACTS / "DATASETS.md").read_text(), re.M)
    assert record, "DATASETS.md no longer records coco-gpt4o's README"
    size, text = int(record.group(1)), ast.literal_eval(record.group(2))
    written = (snapshot(hf_home, COCO) / "README.md").read_bytes()
    assert written == text.encode()
    assert size - len(written) in (0, 6), "the record changed: compare the replica with it again"


@pytest.mark.skipif(not HUB_FACTS.is_dir(), reason=f"shared/hub-facts is not beside this checkout ({HUB_FACTS})")
def test_packaged_configs_are_the_hub_files_byte_for_byte():
    copies = sorted(p.relative_to(CONFIG_ROOT) for p in CONFIG_ROOT.rglob("*.json"))
    assert len(copies) == 5
    for rel in copies:
        assert (CONFIG_ROOT / rel).read_bytes() == (HUB_FACTS / rel).read_bytes(), rel


def test_smollm_stand_in_tokenizer_behaves_like_smollm():
    tok = build_tokenizer()
    assert len(tok) == 49152
    specials = json.loads((CONFIG_ROOT / "HuggingFaceTB--SmolLM-135M/special_tokens_map.json").read_text())
    assert [tok.convert_tokens_to_ids(t) for t in specials["additional_special_tokens"]] == list(range(17))
    assert tok.bos_token_id == tok.eos_token_id == tok.unk_token_id == 0 and tok.pad_token is None
    ids = tok("Hello, world!")["input_ids"]
    assert ids[0] != 0 and 0 not in ids  # no BOS added on encode, as SmolLM's tokenizer
    assert tok.decode(ids) == "Hello, world!"
    assert tok("<|im_start|>user\nHi<|im_end|>")["input_ids"][0] == 1 and tok("<|im_start|>user\nHi<|im_end|>")["input_ids"][-1] == 2


def test_replicas_reproduce_what_load_dataset_does_with_the_real_repos(hf_home):
    """flickr30k loads with one split, `test`; coco's disagreeing shards make load_dataset fail with the cast error
    recorded for the real repository (shared/hub-facts/DATASETS.md)."""
    flickr = datasets.load_dataset(str(snapshot(hf_home, FLICKR)))
    assert list(flickr) == ["test"] and flickr["test"].features["alt_text"] == datasets.Value("string")
    assert set(flickr["test"]["split"]) == {"train", "val", "test"}
    with pytest.raises(Exception) as info:
        datasets.load_dataset(str(snapshot(hf_home, COCO)))
    assert "Couldn't cast" in repr(info.value) or "Couldn't cast" in repr(info.value.__cause__)


# --- loading: splits, schema, caching, local copies ----------------------------------------------------------

def _captions(dd) -> dict[str, list]:
    return {s: list(dd[s]["captions"]) for s in ("train", "validation", "test")}


def test_flickr_splits_follow_the_karpathy_column_and_coco_shards_are_normalised(hf_home):
    flickr = load_caption_splits(["flickr30k"], cache_dir=str(hf_home / "datasets"), hub_cache=str(hf_home / "hub"))
    rows = datasets.load_dataset(str(snapshot(hf_home, FLICKR)))["test"]
    by_split = {"train": "train", "validation": "val", "test": "test"}
    for split, karpathy in by_split.items():
        assert sorted(c[0] for c in flickr[split]["captions"]) == sorted(
            a for a, s in zip(rows["alt_text"], rows["split"]) if s == karpathy)
    coco = load_caption_splits(["coco"], cache_dir=str(hf_home / "datasets"), hub_cache=str(hf_home / "hub"))
    assert [len(coco[s]) for s in ("train", "validation", "test")] == [28, 6, 5]
    assert coco["train"].features == flickr["train"].features
    assert all(isinstance(c, list) and len(c) == 1 for c in coco["train"]["captions"])  # str and list alt_text alike
    assert {coco["train"][i]["image"].mode for i in range(len(coco["train"]))} >= {"RGB", "L"}


def test_a_downloaded_copy_as_dataset_dir_equals_the_hub_id(hf_home, tmp_path):
    for preset, repo_id in (("flickr30k", FLICKR), ("coco", COCO)):
        local = tmp_path / preset
        shutil.copytree(snapshot(hf_home, repo_id), local, symlinks=False)
        (local / ".cache" / "huggingface" / "download").mkdir(parents=True)  # what `hf download --local-dir` adds
        (local / ".cache" / "huggingface" / "download" / "README.md.metadata").write_text("x\n")
        hub = load_caption_splits([preset], cache_dir=str(tmp_path / "cache"), hub_cache=str(hf_home / "hub"))
        copy = load_caption_splits([str(local)], cache_dir=str(tmp_path / "cache"))
        assert _captions(copy) == _captions(hub), preset


def test_second_load_reuses_the_checked_rows(hf_home, tmp_path, caplog):
    import logging
    import time

    cache = str(tmp_path / "cache")
    caplog.set_level(logging.INFO, logger="distilvit.data")
    first = load_caption_splits(["coco"], cache_dir=cache, hub_cache=str(hf_home / "hub"))
    assert not any("checked before" in r.getMessage() for r in caplog.records)
    caplog.clear()
    start = time.perf_counter()
    second = load_caption_splits(["coco"], cache_dir=cache, hub_cache=str(hf_home / "hub"))
    print(f"second load of the coco replica: {time.perf_counter() - start:.2f} s")
    reused = [r.getMessage() for r in caplog.records if "checked before" in r.getMessage()]
    assert len(reused) == 4, reused  # every shard of every split came from the cache
    assert _captions(first) == _captions(second)


# --- the commands a user types -------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset_args, sizes", [
    ([], {"train": 24, "validation": 6, "test": 6}),
    # `--dataset DIR` on a copy as `hf download --local-dir` writes it (test_a_downloaded_copy_as_dataset_dir_equals_the_hub_id
    # shows its rows equal the Hub's): the same training path as the id, so one training covers both
    (["--dataset", "LOCAL_COPY_OF_COCO", "--effective-batch-size", "8"], {"train": 28, "validation": 6, "test": 5}),
], ids=["defaults-flickr30k", "coco-as-dataset-dir"])
def test_default_train_command_runs_offline_on_the_replicas(hf_home, tmp_path, dataset_args, sizes):
    env = user_env(hf_home)
    if "LOCAL_COPY_OF_COCO" in dataset_args:
        local = tmp_path / "coco-gpt4o"
        shutil.copytree(snapshot(hf_home, COCO), local)
        (local / ".cache" / "huggingface").mkdir(parents=True)
        dataset_args = [str(local) if a == "LOCAL_COPY_OF_COCO" else a for a in dataset_args]
    run = tmp_path / "run"
    # two steps, and two images captioned per evaluation and at the end (the real-size model generates slowly on a CPU)
    result = run_cli(["train", "--output-dir", str(run), "--max-steps", "2", "--eval-sample", "2", "--test-sample", "2",
                      *dataset_args], env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["preset"] == "smollm-135m" and saved["encoder_model"] == "google/siglip-base-patch16-224"
    assert saved["decoder_model"] == "HuggingFaceTB/SmolLM-135M"
    assert saved["run_info"]["dataset_sizes"] == sizes
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2
    if "--effective-batch-size" in dataset_args:
        return  # the data-path case: captioning the result is the default case's check
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(hub_replicas.photo_tiles(1, 5, "JPEG")[0])
    captioned = run_cli(["caption", str(run / "merged"), str(photo)], env)
    assert captioned.returncode == 0, captioned.stderr[-3000:]
    from distilvit.modeling.caption import NO_CAPTION, load_captioner, open_image

    expected = load_captioner(run / "merged").caption([open_image(photo)])[0]
    assert captioned.stdout.rstrip("\n").split("\t", 1) == [str(photo), expected or NO_CAPTION]


# --- failures a user meets -----------------------------------------------------------------------------------

def test_fast_preset_builds_a_64_token_captioner_from_the_cache(hf_home):
    """`--preset smollm-135m-fast` resolves SigLIP 2 B/32-256 from the cache like the default's encoder and gives a
    LLaVA with 64 image tokens whose pixels are prepared at 256 px."""
    hub_replicas.write_siglip2_b32_repo(hf_home)
    script = ("import json\n"
              "from distilvit.config import TrainConfig\n"
              "from distilvit.modeling.model import build_captioner\n"
              "from distilvit.pixels import PixelPreparer\n"
              "cfg = TrainConfig.from_preset('smollm-135m-fast', 'unused')\n"
              "model, processor = build_captioner(cfg.encoder_model, cfg.decoder_model)\n"
              "pixels = PixelPreparer.from_processor(processor.image_processor, model.config.vision_config.image_size)\n"
              "print(json.dumps({'encoder': cfg.encoder_model, 'tokens': model.config.image_seq_length,\n"
              "                  'size': pixels.size, 'hidden': model.config.vision_config.hidden_size}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=user_env(hf_home), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    built = json.loads(result.stdout.strip().splitlines()[-1])
    assert built == {"encoder": hub_replicas.SIGLIP2_B32, "tokens": 64, "size": 256, "hidden": 768}


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


def test_hub_id_not_cached_while_offline_is_one_clear_error(hf_home, tmp_path):
    result = run_cli(["train", "--output-dir", str(tmp_path / "run"), "--max-steps", "1",
                      "--dataset", "someone/not-cached"], user_env(hf_home))
    line = _one_error_line(result)
    assert "someone/not-cached" in line and "hf download" in line and "HF_HUB_OFFLINE" in line
    assert not (tmp_path / "run").exists()


def _cache_dataset_repo(hf_home: Path, repo_id: str, folder: Path) -> None:
    hub_replicas.cache_repo(hf_home, "dataset", repo_id, folder)


def test_repository_without_images_or_captions_and_all_unreadable(hf_home, tmp_path):
    no_images = tmp_path / "no-images"
    no_images.mkdir()
    datasets.Dataset.from_dict({"alt_text": ["a", "b", "c"]}).to_parquet(str(no_images / "train.parquet"))
    _cache_dataset_repo(hf_home, "someone/no-images", no_images)
    line = _one_error_line(run_cli(["train", "--output-dir", str(tmp_path / "r1"), "--max-steps", "1",
                                    "--dataset", "someone/no-images"], user_env(hf_home)))
    assert "someone/no-images" in line and "no image column" in line and "alt_text" in line

    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    datasets.Dataset.from_dict(
        {"image": [{"bytes": b"not an image %d" % i, "path": None} for i in range(6)], "alt_text": list("abcdef")},
        features=datasets.Features({"image": datasets.Image(), "alt_text": datasets.Value("string")}),
    ).to_parquet(str(unreadable / "train.parquet"))
    _cache_dataset_repo(hf_home, "someone/unreadable", unreadable)
    line = _one_error_line(run_cli(["train", "--output-dir", str(tmp_path / "r2"), "--max-steps", "1",
                                    "--dataset", "someone/unreadable"], user_env(hf_home)))
    assert "someone/unreadable" in line and "all 6 images are unreadable" in line
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_partial_save_to_disk_copy_names_the_missing_shard(tmp_path):
    copy = hub_replicas.write_coco_repo(tmp_path / "coco")
    (copy / "train" / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(UserError, match="data-00001-of-00002.arrow") as info:
        load_caption_splits([str(copy)], cache_dir=str(tmp_path / "cache"))
    assert "download it again" in str(info.value)


def test_only_the_split_files_are_fetched(hf_home, tmp_path):
    """What `snapshot_download` is asked for after the layout files: the README's default config data files (not
    flickr's example JPEGs), the split folders of a save_to_disk repo, everything when nothing says."""
    from distilvit.data.hub import data_patterns

    assert data_patterns(snapshot(hf_home, FLICKR)) == ["data/test-*"]
    assert data_patterns(snapshot(hf_home, COCO)) == ["train/*", "test/*", "validation/*"]
    (tmp_path / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n    train: a/*.parquet\n"
                                        "    test: [b/1.parquet, b/2.parquet]\n---\n")
    assert data_patterns(tmp_path) == ["a/*.parquet", "b/1.parquet", "b/2.parquet"]
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    assert data_patterns(tmp_path) is None
