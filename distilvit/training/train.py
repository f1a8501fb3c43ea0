"""`distilvit-web train`: data -> base captioner -> LoRA -> HF Trainer -> adapter -> merged model -> exact match.

Run folder layout (`--output-dir`):

    train_config.json     every setting, base models, library versions
    caption_vocab.json    the token ids of the training captions: all the model may generate (distilvit/modeling/caption_vocab.py)
    base/                 tiny preset only: the encoder and decoder (+ tokenizer) it built
    checkpoints/          Trainer checkpoints (adapter + projector [+ head], optimizer, RNG) every --save-steps and at
                          every evaluation; `--resume` uses the newest complete one (an incomplete one is skipped
                          with its reason)
    adapter/              the final adapter (peft `save_pretrained`)
    merged/               LoRA merged: a stock LlavaForConditionalGeneration + LlavaProcessor
    train_log.json        the Trainer's log history
    metrics.json          device plan, throughput (samples/s, tokens/s, peak GPU memory), every evaluation,
                          the best checkpoint, and the test split's BLEU-4 / ROUGE-L / CIDEr-D / exact match
    eval.json             the test split's scores with example captions

Everything the user can get wrong (data, model ids, settings, output folder) is checked before the run folder
is created. This module runs the job in order; the run folder's policy is `run_folder`, resuming `checkpoints`, the
Trainer and its callbacks `trainer`, the process group `distributed`. It knows nothing about the CLI, ONNX or
browsers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from transformers import EarlyStoppingCallback, set_seed
from transformers.trainer_callback import ProgressCallback

from distilvit.atomic import put_back, set_aside
from distilvit.config import TrainConfig
from distilvit.data import load_caption_splits
from distilvit.errors import UserError
from distilvit.modeling import caption_vocab
from distilvit.modeling.caption import load_captioner
from distilvit.modeling.merge import ADAPTER_DIR, BASE_DIR, CHECKPOINTS_DIR, MERGED_DIR, build_base, save_merged
from distilvit.modeling.model import check_decoder, check_encoder, num_image_tokens
from distilvit.modeling.tiny import build_tiny_models
from distilvit.provenance import stamp
from distilvit.training import device as devices
from distilvit.training import lora
from distilvit.training.checkpoints import newest_complete_checkpoint
from distilvit.training.collate import CaptionCollator
from distilvit.training.distributed import process_group
from distilvit.training.evaluate import score_split
from distilvit.training.run_folder import check_output_dir, has_checkpoint, recover_replaced
from distilvit.training.trainer import (CaptionTrainer, Curves, ReadableProgress, SaveEverySteps, Throughput,
                                       training_arguments)

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
METRICS_FILE = "metrics.json"


@dataclass
class TrainResult:
    run_dir: Path
    merged_dir: Path
    exact_match: float | None
    skipped: bool = False  # the run was already finished


def check_reporters(report_to) -> None:
    """A UserError naming the package to install for each `--report-to` integration that is not installed."""
    import importlib.util

    needs = {"tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
             "wandb": (("wandb",), "pip install wandb, then wandb login (or WANDB_MODE=offline)")}
    for name in report_to:
        modules, how = needs[name]
        if not any(importlib.util.find_spec(m) for m in modules):
            raise UserError(f"--report-to {name} needs the {modules[0]} package, which is not installed: {how}")


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False, machine: devices.Machine | None = None) -> TrainResult:
    """Run (or resume, or skip) a training run. Under torchrun/accelerate every process calls this."""
    out = Path(config.output_dir)
    run_plan = _device_plan(config, machine)
    state = process_group(run_plan)
    main = state is None or state.is_main_process
    if main:
        recover_replaced(out)
    action = check_output_dir(config, resume, overwrite)
    if action == "done":
        if main:
            log.info("%s already holds a finished run (merged/); nothing to do", out)
        score = json.loads((out / EVAL_FILE).read_text())["exact_match"] if (out / EVAL_FILE).is_file() else None
        return TrainResult(out, out / MERGED_DIR, score, skipped=True)

    # Check everything a user can get wrong before writing anything.
    check_reporters(config.report_to)
    if config.report_to and "TENSORBOARD_LOGGING_DIR" not in os.environ:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "tensorboard")  # beside the curves, not under checkpoints/
    if not config.builds_tiny_models:
        check_encoder(config.encoder_model)
        check_decoder(config.decoder_model)
    with state.main_process_first() if state is not None else nullcontext():
        splits = load_caption_splits(list(config.datasets), sample=config.sample, sample_splits=("train",),
                                     seed=config.seed, num_proc=config.num_proc,
                                     synthetic_sizes=config.synthetic_sizes)
    if state is not None:
        state.wait_for_everyone()  # every process has checked the folder before the main one changes it

    created = not out.exists() or action == "fresh"
    previous = None  # the run --overwrite replaces, kept aside until the new one is worth more
    if main:
        try:
            if action == "fresh" and out.exists():
                previous = set_aside(out)
                log.info("the previous run in %s is kept in %s until this one writes its first checkpoint", out,
                         previous.name)
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot write the training run {out}: {err.strerror or err}; "
                            "choose a folder you can write to") from err
    try:
        result = _train_in(out, config, splits, run_plan, state, resume=(action == "resume"))
    except BaseException:
        # A run that never reached a checkpoint has nothing worth keeping; the run it was to replace comes back.
        if main and created and not has_checkpoint(out):
            if previous is not None:
                put_back(previous, out)
                log.warning("the new run stopped before its first checkpoint: the previous run is back in %s", out)
            else:
                shutil.rmtree(out, ignore_errors=True)
        elif previous is not None:
            shutil.rmtree(previous, ignore_errors=True)  # the new run can be resumed: it replaces the old
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return result


def _device_plan(config: TrainConfig, machine: devices.Machine | None, processes: int | None = None):
    """The device plan of `config` on `machine` (detected when None) for `processes` (default: this launch's)."""
    return devices.plan(machine or devices.detect(), device=config.device, precision=config.precision,
                        per_device_batch=config.per_device_train_batch_size,
                        gradient_accumulation=config.gradient_accumulation_steps,
                        effective_batch=config.effective_batch_size, processes=processes or devices.world_size(),
                        dataloader_workers=config.dataloader_workers)


def planned(config: TrainConfig, resume: bool = False, overwrite: bool = False,
            machine: devices.Machine | None = None, processes: int | None = None) -> dict:
    """What `train` would do with `config` on this machine, without loading data or models or writing anything
    (`train --print-settings`): {"action": "fresh" | "resume" | "done", "settings": every setting, "plan": device,
    precision, batch sizes and `processes` (default: this launch's) resolved}. The same refusals as `train` (run
    folder, settings that differ from a saved run, a device or precision the machine lacks, a missing --report-to
    package)."""
    action = check_output_dir(config, resume, overwrite)
    check_reporters(config.report_to)
    return {"action": action, "settings": config.to_json(), "plan": _device_plan(config, machine, processes).to_json()}


def _train_in(out: Path, config: TrainConfig, splits, run_plan: devices.TrainPlan, state, resume: bool) -> TrainResult:
    main = state is None or state.is_main_process
    set_seed(config.seed)
    peft_model, processor, vision = _build_model(out, config, splits, run_plan, state)
    trainer, throughput = _make_trainer(out, config, splits, run_plan, peft_model, processor, vision)
    last, skipped = newest_complete_checkpoint(out / CHECKPOINTS_DIR) if resume else (None, [])
    if resume and main:
        for folder, problem in skipped:
            log.warning("skipping %s: %s (written when the run was stopped?)", folder, problem)
        log.info("resuming from %s", last or "the start (no complete checkpoint was saved yet)")
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if not main:
        return TrainResult(out, out / MERGED_DIR, None)
    return _finish(out, config, splits, run_plan, trainer, throughput, peft_model, processor)


def _build_model(out: Path, config: TrainConfig, splits, run_plan: devices.TrainPlan, state):
    """The base captioner (the tiny preset's models built first), its caption vocabulary, LoRA, and its vision
    config; the main process records the settings, plan and parameter counts in train_config.json."""
    main = state is None or state.is_main_process
    if main and config.builds_tiny_models and not (out / BASE_DIR / "decoder" / "config.json").is_file():
        captions = [c for caps in splits["train"]["captions"] for c in caps]
        build_tiny_models(out / BASE_DIR, captions, seed=config.seed)
    if state is not None:
        state.wait_for_everyone()
    model, processor = build_base(config, out)
    if config.caption_vocab and caption_vocab.of(model.config) is None:  # a new run (a resumed one has the file)
        _apply_caption_vocab(out, config, splits, model, processor, main)
    if config.gradient_checkpointing:
        model.model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = lora.apply_lora(model, config)
    counts = lora.trainable_counts(peft_model)
    total = sum(p.numel() for p in peft_model.parameters())
    if main:
        log.info("training on %s: %s, %d process(es), batch %d x %d accumulation = %d", run_plan.machine,
                 run_plan.precision, run_plan.world_size, run_plan.per_device_batch, run_plan.gradient_accumulation,
                 run_plan.effective_batch)
        if run_plan.idle_gpus:
            log.warning("%d GPUs are visible; this single process trains on cuda:0 only (batch %d). To train on all "
                        "of them with DDP: `distilvit-web train --gpus %d ...` (or torchrun --nproc_per_node=%d)",
                        run_plan.visible_gpus, run_plan.effective_batch, run_plan.visible_gpus, run_plan.visible_gpus)
        log.info("trainable parameters: %s of %d (%.2f%%)", counts, total, 100 * sum(counts.values()) / total)
        config.save(out, extra={"plan": run_plan.to_json(), "trainable_parameters": counts, "total_parameters": total,
                                "dataset_sizes": {k: len(v) for k, v in splits.items()}, **stamp()})
    return peft_model, processor, model.config.vision_config


def _apply_caption_vocab(out: Path, config: TrainConfig, splits, model, processor, main: bool) -> None:
    """Restrict `model`'s output to the tokens of the training captions (every rank alike); the main process writes
    caption_vocab.json and warns when the vocabulary is a closed word list."""
    captions = [c for caps in splits["train"]["captions"] for c in caps]
    ids = caption_vocab.from_captions(processor.tokenizer, captions, config.max_length)
    caption_vocab.apply(model, ids)
    if main:
        caption_vocab.save(out, ids, model.config.text_config.vocab_size, len(captions))
        log.info("caption vocabulary: %d of the decoder's %d tokens (from %d training captions; --full-vocab "
                 "keeps them all)", len(ids), model.config.text_config.vocab_size, len(captions))
        small = caption_vocab.small_warning(len(ids), model.config.text_config.vocab_size)
        if small:
            log.warning(small)


def _make_trainer(out: Path, config: TrainConfig, splits, run_plan: devices.TrainPlan, peft_model, processor, vision):
    """The CaptionTrainer of this run with its callbacks, and its Throughput callback (read after training)."""
    validation = splits["validation"].select(range(min(config.eval_sample, len(splits["validation"]))))
    collator = CaptionCollator(processor, num_image_tokens(vision), config.max_length, vision.image_size,
                               seed=config.seed)
    throughput = Throughput()
    callbacks = [throughput, Curves(out, config.eval_metric)]
    if config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = CaptionTrainer(model=peft_model, args=training_arguments(out, config, run_plan),
                             train_dataset=splits["train"], eval_dataset=validation, data_collator=collator,
                             run_config=config, processor=processor, eval_rows=validation, callbacks=callbacks)
    if config.save_steps > 0 and config.eval_steps > 0 and config.save_steps != config.eval_steps:
        trainer.add_callback(SaveEverySteps(config.save_steps))
    if trainer.pop_callback(ProgressCallback) is not None:  # shown when transformers shows progress bars
        trainer.add_callback(ReadableProgress())
    return trainer, throughput


def _finish(out: Path, config: TrainConfig, splits, run_plan: devices.TrainPlan, trainer, throughput, peft_model,
            processor) -> TrainResult:
    """Main process, after training: the log, adapter/, merged/ (from the best checkpoint when evaluating), the test
    split scored, metrics.json and eval.json."""
    (out / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=2) + "\n")
    peft_model.save_pretrained(out / ADAPTER_DIR)
    save_merged(peft_model, processor, config, out / MERGED_DIR, source=trainer.state.best_model_checkpoint
                or str(out / ADAPTER_DIR), overwrite=True)
    # scored on the training device (cuda:LOCAL_RANK, mps or cpu), where the model just trained
    test_rows = _first(splits["test"], config.test_sample)
    test_metrics, examples = score_split(load_captioner(out / MERGED_DIR, device=str(trainer.args.device)), test_rows)
    evaluations = [e for e in trainer.state.log_history if f"eval_{config.eval_metric}" in e]
    metrics = {
        "plan": run_plan.to_json(),
        "throughput": throughput.figures,
        "evaluations": evaluations,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": {config.eval_metric: trainer.state.best_metric} if evaluations else None,
        "stopped_early": bool(config.early_stopping_patience) and trainer.state.global_step < trainer.state.max_steps,
        "global_step": trainer.state.global_step,
        "test": test_metrics,
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    result = {"exact_match": test_metrics["exact_match"], "metrics": test_metrics, "num_images": len(test_rows),
              "split": "test", "examples": examples}
    (out / EVAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
    log.info("test split (%d images): exact match %.3f, CIDEr-D %.3f, BLEU-4 %.3f, ROUGE-L %.3f", result["num_images"],
             test_metrics["exact_match"], test_metrics["cider"], test_metrics["bleu4"], test_metrics["rougeL"])
    return TrainResult(out, out / MERGED_DIR, test_metrics["exact_match"])


def _first(rows, limit: int | None):
    """The first `limit` rows (None: all of them)."""
    return rows if limit is None else rows.select(range(min(limit, len(rows))))
