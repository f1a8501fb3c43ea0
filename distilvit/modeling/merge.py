"""Merge a run's LoRA adapter (and fully trained modules) into a standalone `LlavaForConditionalGeneration`.

The merged folder loads with nothing but transformers (`AutoModelForImageTextToText` + `AutoProcessor`) and
holds `distilvit_model.json`: the run's settings, the base models and the versions that made it. It is written
under a temporary name and renamed when complete. This module knows nothing about training loops or export.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from peft import PeftModel
from transformers import LlavaForConditionalGeneration, LlavaProcessor, set_seed
from transformers.trainer_utils import get_last_checkpoint

from distilvit.atomic import atomic_dir, check_replaceable
from distilvit.config import TrainConfig
from distilvit.errors import UserError
from distilvit.modeling import caption_vocab
from distilvit.modeling.model import build_captioner
from distilvit.provenance import stamp

log = logging.getLogger(__name__)

BASE_DIR = "base"
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
MODEL_INFO = "distilvit_model.json"


def base_sources(config: TrainConfig, run_dir: Path) -> tuple[str, str]:
    """Encoder and decoder sources of a run: the preset's hub ids/folders, or the tiny models saved in the run."""
    if config.builds_tiny_models:
        return str(Path(run_dir) / BASE_DIR / "encoder"), str(Path(run_dir) / BASE_DIR / "decoder")
    return config.encoder_model, config.decoder_model


def build_base(config: TrainConfig, run_dir: Path) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """The untrained captioner a run starts from (projector init seeded by the run's seed), with the run's caption
    vocabulary (caption_vocab.json) in its config when the run has one."""
    set_seed(config.seed)
    encoder, decoder = base_sources(config, run_dir)
    model, processor = build_captioner(encoder, decoder)
    model.generation_config.max_new_tokens = config.max_length + 1  # caption tokens + EOS
    ids = caption_vocab.load(run_dir)  # written by train before the model is built; absent: the full vocabulary
    if ids:
        try:
            caption_vocab.check(ids, model.config.text_config.vocab_size, model.generation_config)
        except ValueError as err:
            raise UserError(f"{Path(run_dir) / caption_vocab.FILE}: {err}; it is not the file train wrote for this "
                            f"run's decoder: restore it (merged/config.json holds the same ids as "
                            f"'{caption_vocab.CONFIG_KEY}')") from err
        caption_vocab.apply(model, ids)
    return model, processor


def save_merged(peft_model: PeftModel, processor: LlavaProcessor, config: TrainConfig, target: Path,
                source: str, overwrite: bool = False) -> Path:
    """Merge `peft_model` in place and save it with its processor as `target` (atomically)."""
    merged = peft_model.merge_and_unload()
    if not isinstance(merged, LlavaForConditionalGeneration):
        raise RuntimeError(f"merge gave a {type(merged).__name__}, expected LlavaForConditionalGeneration")
    merged.eval()
    with atomic_dir(target, overwrite=overwrite, marker=MODEL_INFO, what="merged model") as tmp:
        merged.to(torch.float32).save_pretrained(tmp)
        processor.save_pretrained(tmp)
        info = {"source": source, "train_config": config.to_json(), **stamp()}
        (tmp / MODEL_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log.info("merged model written to %s", target)
    return target


def merge_run(run_dir: Path, checkpoint: Path | None = None, output: Path | None = None, overwrite: bool = False) -> Path:
    """Merge a run's final adapter (or `checkpoint`, or its last checkpoint) into `output` (default run/merged)."""
    run_dir = Path(run_dir)
    config = TrainConfig.load(run_dir)
    if checkpoint is None:
        if (run_dir / ADAPTER_DIR / "adapter_config.json").is_file():
            checkpoint = run_dir / ADAPTER_DIR
        else:
            last = get_last_checkpoint(str(run_dir / CHECKPOINTS_DIR)) if (run_dir / CHECKPOINTS_DIR).is_dir() else None
            if last is None:
                raise UserError(f"{run_dir} has no adapter/ and no checkpoint to merge; train it first")
            checkpoint = Path(last)
    if not (Path(checkpoint) / "adapter_config.json").is_file():
        raise UserError(f"{checkpoint} holds no LoRA adapter (adapter_config.json missing)")
    output = Path(output) if output else run_dir / MERGED_DIR
    check_replaceable(output, overwrite, MODEL_INFO, "merged model")  # before the model is built
    model, processor = build_base(config, run_dir)
    peft_model = PeftModel.from_pretrained(model, str(checkpoint))
    return save_merged(peft_model, processor, config, output, source=str(checkpoint), overwrite=overwrite)
