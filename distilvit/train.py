"""`distilvit-web train`: data -> base captioner -> LoRA -> HF Trainer -> adapter -> merged model -> exact match.

Run folder layout (`--output-dir`):

    train_config.json     every setting, base models, library versions
    base/                 tiny preset only: the encoder and decoder (+ tokenizer) it built
    checkpoints/          Trainer checkpoints (adapter + projector [+ head], optimizer, RNG); `--resume` uses the last
    adapter/              the final adapter (peft `save_pretrained`)
    merged/               LoRA merged: a stock LlavaForConditionalGeneration + LlavaProcessor
    train_log.json        the Trainer's log history
    eval.json             exact-match rate on the held-out test split

Everything the user can get wrong (data, model ids, settings, output folder) is checked before the run folder
is created. This module knows nothing about the CLI, ONNX or browsers.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from distilvit import lora
from distilvit.caption import exact_match_rate, load_captioner
from distilvit.collate import CaptionCollator
from distilvit.config import CONFIG_FILE, TrainConfig
from distilvit.data import load_caption_splits
from distilvit.errors import UserError
from distilvit.merge import ADAPTER_DIR, BASE_DIR, CHECKPOINTS_DIR, MERGED_DIR, build_base, save_merged
from distilvit.model import check_decoder, check_encoder, num_image_tokens
from distilvit.provenance import stamp
from distilvit.tiny import build_tiny_models

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"


@dataclass
class TrainResult:
    run_dir: Path
    merged_dir: Path
    exact_match: float | None
    skipped: bool = False  # the run was already finished


class CaptionTrainer(Trainer):
    """HF Trainer with one learning rate per parameter group (LoRA, projector, head, vision)."""

    def __init__(self, *args, run_config: TrainConfig, **kwargs):
        self.run_config = run_config
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = lora.optimizer(model or self.model, self.run_config)
        return self.optimizer


def run_state(run_dir: Path) -> str:
    """'new' (absent or empty), 'finished' (merged/ written), 'partial' (a run without merged/), or 'other'."""
    run_dir = Path(run_dir)
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not (run_dir / CONFIG_FILE).is_file():
        return "other"
    return "finished" if (run_dir / MERGED_DIR / "config.json").is_file() else "partial"


def check_output_dir(config: TrainConfig, resume: bool, overwrite: bool) -> str:
    """Decide what to do with the output folder: 'fresh', 'resume' or 'done'; refuse what would lose work."""
    out = Path(config.output_dir)
    state = run_state(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out} is a file; choose a folder")
    if state == "other":
        raise UserError(f"--output-dir {out} is not empty and holds no training run; choose an empty or new folder")
    if overwrite:
        if resume:
            raise UserError("--resume and --overwrite contradict each other; pass one")
        return "fresh"
    if state == "new":
        if resume:
            raise UserError(f"nothing to resume: {out} holds no training run")
        return "fresh"
    saved = TrainConfig.load(out)
    if saved != config:
        diff = {k: (v, getattr(config, k)) for k, v in saved.to_json().items() if getattr(config, k) != v}
        raise UserError(f"{out} holds a run with other settings (saved vs now: {diff}); "
                        f"use another --output-dir, or --overwrite to replace it")
    if state == "finished":
        return "done"
    if not resume:
        raise UserError(f"{out} holds an unfinished run; pass --resume to continue it or --overwrite to start over")
    return "resume"


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    out = Path(config.output_dir)
    action = check_output_dir(config, resume, overwrite)
    if action == "done":
        log.info("%s already holds a finished run (merged/); nothing to do", out)
        score = json.loads((out / EVAL_FILE).read_text())["exact_match"] if (out / EVAL_FILE).is_file() else None
        return TrainResult(out, out / MERGED_DIR, score, skipped=True)

    # Check everything a user can get wrong before writing anything.
    if not config.builds_tiny_models:
        check_encoder(config.encoder_model)
        check_decoder(config.decoder_model)
    splits = load_caption_splits(list(config.datasets), sample=config.sample, seed=config.seed,
                                 num_proc=config.num_proc, synthetic_sizes=config.synthetic_sizes)

    if action == "fresh" and out.exists():
        shutil.rmtree(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _train_in(out, config, splits, resume=(action == "resume"))
    except BaseException:
        # A run that never reached a checkpoint has nothing worth keeping.
        if created and not (out / CHECKPOINTS_DIR).is_dir():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train_in(out: Path, config: TrainConfig, splits, resume: bool) -> TrainResult:
    set_seed(config.seed)
    if config.builds_tiny_models and not (out / BASE_DIR / "decoder" / "config.json").is_file():
        captions = [c for caps in splits["train"]["captions"] for c in caps]
        build_tiny_models(out / BASE_DIR, captions, seed=config.seed)
    model, processor = build_base(config, out)
    peft_model = lora.apply_lora(model, config)
    counts = lora.trainable_counts(peft_model)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("trainable parameters: %s of %d (%.2f%%)", counts, total, 100 * sum(counts.values()) / total)
    config.save(out, extra={"trainable_parameters": counts, "total_parameters": total,
                            "dataset_sizes": {k: len(v) for k, v in splits.items()}, **stamp()})

    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS_DIR),
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    collator = CaptionCollator(processor, num_image_tokens(model.config.vision_config), config.max_length, seed=config.seed)
    trainer = CaptionTrainer(model=peft_model, args=args, train_dataset=splits["train"], data_collator=collator,
                             run_config=config)
    last = get_last_checkpoint(str(out / CHECKPOINTS_DIR)) if resume and (out / CHECKPOINTS_DIR).is_dir() else None
    if resume:
        log.info("resuming from %s", last or "the start (no checkpoint was saved yet)")
    trainer.train(resume_from_checkpoint=last)
    (out / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=2) + "\n")

    if trainer.is_world_process_zero():
        peft_model.save_pretrained(out / ADAPTER_DIR)
        save_merged(peft_model, processor, config, out / MERGED_DIR, source=str(out / ADAPTER_DIR), overwrite=True)
        score = evaluate_exact_match(out / MERGED_DIR, splits["test"], config.eval_sample)
        return TrainResult(out, out / MERGED_DIR, score)
    return TrainResult(out, out / MERGED_DIR, None)


def evaluate_exact_match(model_dir: Path, test_split, limit: int) -> float:
    """Caption up to `limit` test images with the merged model; write and return the exact-match rate."""
    rows = test_split.select(range(min(limit, len(test_split))))
    captioner = load_captioner(model_dir)
    predictions = captioner.caption([r["image"] for r in rows])
    references = [list(r["captions"]) for r in rows]
    score = exact_match_rate(predictions, references)
    examples = [{"prediction": p, "references": r} for p, r in zip(predictions[:10], references[:10])]
    result = {"exact_match": score, "num_images": len(rows), "split": "test", "examples": examples}
    (Path(model_dir).parent / EVAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
    log.info("exact-match on %d held-out test images: %.3f", len(rows), score)
    return score
