"""Replicas of the Hub repositories the default commands read, in their real shape, written into a Hugging Face
cache (`$HF_HOME/hub/<type>s--<org>--<name>/{blobs,refs/main,snapshots/<rev>}`) so that the real code paths
(`snapshot_download`, `from_pretrained`) find them with `HF_HUB_OFFLINE=1`. Facts: the repositories' file listings on huggingface.co.

- google/siglip-base-patch16-224 and HuggingFaceTB/SmolLM-135M: the real config files byte for byte, random weights
  of the real size and dtype (SiglipModel float32 with both towers; SmolLM bfloat16, tied head stored once), the
  SmolLM stand-in tokenizer (distilvit.modeling.realsize). SigLIP's own tokenizer files are left out: nothing reads them.
- Mozilla/flickr30k-transformed-captions-gpt4o: README.md with the real dataset_info/configs YAML (plus the
  `objects` column, INFERRED from the 2024-07-31 re-upload) and three parquet shards data/test-0000k-of-00003.parquet,
  one split `test`, columns image (JPEG bytes) / alt_text (str) / sentids / split (Karpathy) / img_id / filename /
  original_alt_text / objects, the example JPEGs at the root.
- Mozilla/coco-gpt4o: the 39-byte README, dataset_dict.json, split folders of save_to_disk shards with
  dataset_info.json and state.json; train has one shard with `alt_text` a string and `image_id` int64 and one with
  `alt_text` a list of strings and `image_id` int32 (the disagreement that breaks `load_dataset`); PNG images.
- google/siglip2-base-patch32-256 (the smollm-135m-fast preset's encoder): config.json and preprocessor_config.json
  INFERRED from the mirrored files of its sibling google/siglip2-base-patch16-512 (model_type "siglip", a sparse
  vision_config naming image_size; text_config vocab 256000; SiglipImageProcessor, mean/std 0.5, resample 2), with
  this model's 256 px and 32 px patches; random weights of the vision tower only (what `SiglipVisionModel` reads:
  the same `vision_model.*` names as the full checkpoint, whose 256k-token text tower nothing here loads).
Images are crops of real photographs (scikit-learn's sample JPEGs), in several sizes and modes. The numbers of
rows are small; everything else is the real layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import datasets
from PIL import Image

REVISIONS = {  # real commits where known (huggingface.co); datasets: their short hashes, padded
    "google/siglip-base-patch16-224": "78005bda866f09e7de6e72746ec272d03d9793d1",
    "HuggingFaceTB/SmolLM-135M": "08113aee5325d8b522b49ed5fbad3f24cc27eeb2",
    "Mozilla/flickr30k-transformed-captions-gpt4o": "e5c7768" + "0" * 33,
    "Mozilla/coco-gpt4o": "70f916d" + "0" * 33,
}
FLICKR_README = """---
dataset_info:
  features:
  - name: image
    dtype: image
  - name: alt_text
    dtype: string
  - name: sentids
    list: string
  - name: split
    dtype: string
  - name: img_id
    dtype: string
  - name: filename
    dtype: string
  - name: original_alt_text
    sequence: string
  - name: objects
    list: string
  splits:
  - name: test
    num_bytes: {num_bytes}
    num_examples: {num_examples}
  download_size: {num_bytes}
  dataset_size: {num_bytes}
configs:
- config_name: default
  data_files:
  - split: test
    path: data/test-*
---
"""
COCO_README = "---\nlicense: apache-2.0\n---\n\nTest"  # the text DATASETS.md quotes (33 bytes; it says 39 B)
THINGS = ["dog", "person", "bicycle", "flower", "temple", "tree", "car", "bench", "cat", "boat", "kite", "roof"]
PLACES = ["in a park", "on a street", "near a lake", "in a garden", "on a beach", "in front of a building"]


def photographs() -> list[Image.Image]:
    """The real photographs shipped in scikit-learn's wheel (china.jpg 640x427, flower.jpg 640x427)."""
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(array) for array in load_sample_images().images]


def photo_tiles(n: int, seed: int, image_format: str) -> list[bytes]:
    """`n` encoded crops of the photographs: sizes 12..120 px, modes RGB and L (JPEG) or also RGBA and P (PNG)."""
    rng = random.Random(seed)
    photos = photographs()
    modes = ["RGB", "RGB", "L"] + (["RGBA", "P"] if image_format == "PNG" else [])
    out = []
    for _ in range(n):
        photo = rng.choice(photos)
        w, h = rng.randint(24, 300), rng.randint(24, 300)
        x, y = rng.randint(0, photo.width - w), rng.randint(0, photo.height - h)
        tile = photo.crop((x, y, x + w, y + h)).resize((rng.randint(12, 120), rng.randint(12, 120)))
        mode = rng.choice(modes)
        tile = tile.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else tile.convert(mode)
        if mode == "RGBA":
            tile.putalpha(rng.randint(60, 255))
        buf = io.BytesIO()
        tile.save(buf, format=image_format, **({"quality": 90} if image_format == "JPEG" else {}))
        out.append(buf.getvalue())
    return out


def caption(rng: random.Random) -> str:
    return f"A {rng.choice(THINGS)} {rng.choice(PLACES)}."


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_repo(hf_home: Path, repo_type: str, repo_id: str, source: Path) -> Path:
    """Move the files of folder `source` into the cache as repo `repo_id` (blobs + snapshot symlinks, refs/main);
    return the snapshot folder."""
    revision = REVISIONS.get(repo_id) or hashlib.sha1(repo_id.encode()).hexdigest()
    root = Path(hf_home) / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / revision
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
        rel = path.relative_to(source)
        blob = root / "blobs" / _file_hash(path)
        shutil.move(str(path), blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def write_model_repos(hf_home: Path, seed: int = 0) -> None:
    """google/siglip-base-patch16-224 and HuggingFaceTB/SmolLM-135M, as the preset reads them."""
    from distilvit.modeling.realsize import DECODER_ID, ENCODER_ID, write_decoder_repo, write_encoder_repo

    with tempfile.TemporaryDirectory(dir=hf_home) as tmp:
        cache_repo(hf_home, "model", ENCODER_ID, write_encoder_repo(Path(tmp) / "encoder", seed))
        cache_repo(hf_home, "model", DECODER_ID, write_decoder_repo(Path(tmp) / "decoder", seed))


SIGLIP2_B32 = "google/siglip2-base-patch32-256"


def write_siglip2_b32_repo(hf_home: Path, seed: int = 0) -> Path:
    """google/siglip2-base-patch32-256 in the cache (module docstring: inferred files, vision weights only)."""
    import torch
    from transformers import SiglipConfig, SiglipVisionModel

    config = {"initializer_factor": 1.0, "model_type": "siglip",
              "text_config": {"model_type": "siglip_text_model", "vocab_size": 256000},
              "vision_config": {"image_size": 256, "patch_size": 32, "model_type": "siglip_vision_model"}}
    processor = {"do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
                 "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor",
                 "image_std": [0.5, 0.5, 0.5], "processor_class": "SiglipProcessor", "resample": 2,
                 "rescale_factor": 1 / 255, "size": {"height": 256, "width": 256}}
    with tempfile.TemporaryDirectory(dir=hf_home) as tmp:
        folder = Path(tmp) / "siglip2"
        torch.manual_seed(seed)
        SiglipVisionModel(SiglipConfig.from_dict(config).vision_config).save_pretrained(folder)
        (folder / "config.json").write_text(json.dumps(config, indent=2))  # the repo's, not the vision model's
        (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
        return cache_repo(hf_home, "model", SIGLIP2_B32, folder)


def flickr_rows(n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    karpathy = ["train"] * (n - 2 * (n // 6)) + ["val"] * (n // 6) + ["test"] * (n // 6)
    rng.shuffle(karpathy)  # the shards mix the Karpathy splits
    images = photo_tiles(n, seed, "JPEG")
    names = [f"{1000092795 + 7919 * i}.jpg" for i in range(n)]
    return {
        "image": [{"bytes": b, "path": name} for b, name in zip(images, names)],
        "alt_text": [caption(rng) for _ in range(n)],
        "sentids": [[str(5 * i + k) for k in range(5)] for i in range(n)],
        "split": karpathy,
        "img_id": [str(i) for i in range(n)],
        "filename": names,
        "original_alt_text": [[caption(rng).lower() for _ in range(5)] for _ in range(n)],
        "objects": [sorted({rng.choice(THINGS) for _ in range(rng.randint(1, 3))}) for _ in range(n)],
    }


FLICKR_FEATURES = datasets.Features({
    "image": datasets.Image(), "alt_text": datasets.Value("string"), "sentids": datasets.List(datasets.Value("string")),
    "split": datasets.Value("string"), "img_id": datasets.Value("string"), "filename": datasets.Value("string"),
    "original_alt_text": datasets.List(datasets.Value("string")), "objects": datasets.List(datasets.Value("string")),
})


def write_flickr_repo(target: Path, n: int = 36, seed: int = 0) -> Path:
    """The files of Mozilla/flickr30k-transformed-captions-gpt4o in folder `target` (as `hf download` writes)."""
    target = Path(target)
    (target / "data").mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_dict(flickr_rows(n, seed), features=FLICKR_FEATURES)
    shards = 3
    for k in range(shards):
        ds.shard(shards, k, contiguous=True).to_parquet(str(target / "data" / f"test-{k:05d}-of-{shards:05d}.parquet"))
    size = sum(p.stat().st_size for p in (target / "data").iterdir())
    (target / "README.md").write_text(FLICKR_README.format(num_bytes=size, num_examples=n))
    (target / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    for i, tile in enumerate(photo_tiles(2, seed + 99, "JPEG"), start=1):
        (target / f"example{i}.jpg").write_bytes(tile)
    return target


def coco_shard(n: int, seed: int, split: str, alt_text_list: bool, id_dtype: str) -> datasets.Dataset:
    rng = random.Random(seed)
    ids = [rng.randint(1, 581_000) for _ in range(n)]
    folder = {"train": "train2017", "validation": "val2017", "test": "test2017"}[split]
    alt = [[caption(rng)] if alt_text_list else caption(rng) for _ in range(n)]
    features = datasets.Features({
        "image_id": datasets.Value(id_dtype), "image_path": datasets.Value("string"),
        "coco_url": datasets.Value("string"), "image": datasets.Image(),
        "alt_text": datasets.List(datasets.Value("string")) if alt_text_list else datasets.Value("string"),
        "objects": datasets.List(datasets.Value("string")),
    })
    return datasets.Dataset.from_dict({
        "image_id": ids, "image_path": [f"{folder}/{i:012d}.jpg" for i in ids],
        "coco_url": [f"http://images.cocodataset.org/{folder}/{i:012d}.jpg" for i in ids],
        "image": [{"bytes": b, "path": None} for b in photo_tiles(n, seed, "PNG")],
        "alt_text": alt, "objects": [[rng.choice(THINGS)] for _ in range(n)],
    }, features=features)


# split -> shards (rows, alt_text as a list?, image_id dtype)
COCO_SHARDS = {
    "train": [(14, False, "int64"), (14, True, "int32")],
    "test": [(5, True, "int64")],
    "validation": [(6, False, "int64")],
}


def write_coco_repo(target: Path, seed: int = 0) -> Path:
    """The files of Mozilla/coco-gpt4o in folder `target`: a save_to_disk DatasetDict whose shards disagree."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    (target / "README.md").write_text(COCO_README)
    (target / "dataset_dict.json").write_text(json.dumps({"splits": list(COCO_SHARDS)}))
    for s, (split, shards) in enumerate(COCO_SHARDS.items()):
        folder = target / split
        names = []
        for k, (rows, as_list, id_dtype) in enumerate(shards):
            with tempfile.TemporaryDirectory() as tmp:
                coco_shard(rows, seed + 10 * s + k, split, as_list, id_dtype).save_to_disk(tmp)
                if k == 0:
                    folder.mkdir()
                    shutil.copyfile(Path(tmp) / "dataset_info.json", folder / "dataset_info.json")
                    state = json.loads((Path(tmp) / "state.json").read_text())
                name = f"data-{k:05d}-of-{len(shards):05d}.arrow"
                shutil.copyfile(Path(tmp) / "data-00000-of-00001.arrow", folder / name)
                names.append(name)
        state.update(_data_files=[{"filename": n} for n in names], _split=split)
        (folder / "state.json").write_text(json.dumps(state, indent=2))
    return target


def write_dataset_repos(hf_home: Path, seed: int = 0) -> dict[str, Path]:
    """Both dataset repos in the cache; returns their snapshot folders by repo id."""
    out = {}
    for repo_id, writer in (("Mozilla/flickr30k-transformed-captions-gpt4o", write_flickr_repo),
                            ("Mozilla/coco-gpt4o", write_coco_repo)):
        with tempfile.TemporaryDirectory(dir=hf_home) as tmp:
            out[repo_id] = cache_repo(hf_home, "dataset", repo_id, writer(Path(tmp) / "repo", seed=seed))
    return out
