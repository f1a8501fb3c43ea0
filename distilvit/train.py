"""`distilvit-web train`: data -> base captioner -> LoRA -> HF Trainer -> adapter -> merged model -> exact match.

Run folder layout (`--output-dir`):

    train_config.json     every setting, base models, library versions
    caption_vocab.json    the token ids of the training captions: all the model may generate (distilvit/caption_vocab.py)
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
is created. This module knows nothing about the CLI, ONNX or browsers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import ProgressCallback

from distilvit import caption_vocab
from distilvit import device as devices
from distilvit import curves, lora
from distilvit.atomic import check_creatable, owner_alive, put_back, set_aside
from distilvit.caption import Captioner, load_captioner
from distilvit.collate import CaptionCollator
from distilvit.config import CONFIG_FILE, RESULT_NEUTRAL, TrainConfig
from distilvit.data import load_caption_splits
from distilvit.errors import UserError
from distilvit.evaluate import caption_split, score_split
from distilvit.merge import ADAPTER_DIR, BASE_DIR, CHECKPOINTS_DIR, MERGED_DIR, build_base, save_merged
from distilvit.metrics import all_scores
from distilvit.model import check_decoder, check_encoder, num_image_tokens
from distilvit.provenance import stamp
from distilvit.tiny import build_tiny_models

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
METRICS_FILE = "metrics.json"


@dataclass
class TrainResult:
    run_dir: Path
    merged_dir: Path
    exact_match: float | None
    skipped: bool = False  # the run was already finished


class CaptionTrainer(Trainer):
    """HF Trainer with one learning rate per parameter group and generation-based evaluation.

    `evaluate` captions the validation rows (sharded over processes, gathered) and returns `eval_<metric>`
    for BLEU-4, ROUGE-L, CIDEr-D and exact match, which the Trainer's best-checkpoint and early-stopping
    machinery then uses like any other metric.
    """

    def __init__(self, *args, run_config: TrainConfig, processor=None, eval_rows=None, **kwargs):
        self.run_config = run_config
        self.caption_processor = processor
        self.eval_rows = eval_rows
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = lora.optimizer(model or self.model, self.run_config)
        return self.optimizer

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        from accelerate.utils import gather_object

        rank, world = self.args.process_index, self.args.world_size
        shard = self.eval_rows.select(range(rank, len(self.eval_rows), world))
        captioner = Captioner(self.model, self.caption_processor)
        was_training = self.model.training
        self.model.eval()
        with self.accelerator.autocast():
            predictions, references = caption_split(captioner, shard)
        self.model.train(was_training)
        pairs = gather_object(list(zip(predictions, references))) if world > 1 else list(zip(predictions, references))
        scores = all_scores([p for p, _ in pairs], [r for _, r in pairs])
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in scores.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class Curves(TrainerCallback):
    """RUN/training_curves.png redrawn at every evaluation and at the end (main process only)."""

    def __init__(self, out: Path, metric: str):
        self.path, self.metric = out / curves.CURVES_FILE, metric

    def on_evaluate(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            curves.plot_curves(state.log_history, self.path, self.metric)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            curves.plot_curves(state.log_history, self.path, self.metric)


class ReadableProgress(ProgressCallback):
    """transformers' progress bar, with each log entry as one line of numbers (curves.log_line), not a dict of
    strings."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(curves.log_line(state.global_step, state.max_steps, logs))


class Throughput(TrainerCallback):
    """Samples/s, tokens/s and peak GPU memory of the training loop (not counting evaluations)."""

    def __init__(self):
        self.figures: dict = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_end(self, args, state, control, **kwargs):
        history = {k: v for entry in state.log_history for k, v in entry.items() if k.startswith("train_")}
        runtime = history.get("train_runtime") or 0.0
        self.figures = {
            "train_runtime_s": runtime,
            "train_samples_per_second": history.get("train_samples_per_second"),
            "train_tokens_per_second": state.num_input_tokens_seen / runtime if runtime else None,
            "input_tokens_seen": state.num_input_tokens_seen,
            "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        }


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
    check_creatable(out, "training run")
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
    diff = {k: (v, getattr(config, k)) for k, v in saved.to_json().items()
            if k not in RESULT_NEUTRAL and getattr(config, k) != v}  # a moved run is the same run
    if diff:
        listed = "; ".join(f"{k}: saved {old!r}, given {new!r}" for k, (old, new) in diff.items())
        raise UserError(f"{out} holds a run trained with other settings ({listed}); continue it with its own settings "
                        f"(train --output-dir {out} --resume) or choose another --output-dir")
    if state == "finished":
        return "done"
    if not resume:
        raise UserError(f"{out} holds an unfinished run; pass --resume to continue it with its saved settings, or "
                        f"choose another --output-dir")
    return "resume"


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
    state = _distributed_state(run_plan)
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


def has_checkpoint(out: Path) -> bool:
    """Whether the run in `out` saved a checkpoint (the Trainer makes the checkpoints folder before its first)."""
    return any((out / CHECKPOINTS_DIR).glob("checkpoint-*"))


def recover_replaced(out: Path) -> None:
    """A run `train --overwrite` set aside (`.NAME.old-*`) whose replacement was killed: back in NAME when the
    replacement wrote no checkpoint (nothing of it is worth keeping), else removed (the replacement can be resumed).
    A folder another live process set aside is left alone."""
    for aside in sorted(out.parent.glob(f".{out.name}.old-*")):
        if not aside.is_dir() or owner_alive(aside) or not (aside / CONFIG_FILE).is_file():
            continue
        if has_checkpoint(out):
            shutil.rmtree(aside, ignore_errors=True)
            log.warning("removed %s: the run that replaced it in %s has checkpoints", aside, out)
        else:
            put_back(aside, out)
            log.warning("restored the previous run in %s from %s: the run started to replace it was stopped before "
                        "its first checkpoint", out, aside.name)


def _distributed_state(run_plan: devices.TrainPlan):
    """The process group of a torchrun / accelerate launch (initialised here with the plan's backend), else None."""
    if run_plan.world_size == 1:
        return None
    return _ProcessGroup(run_plan)


class _ProcessGroup:
    """Rank, barrier and main-first ordering on the torch.distributed group the Trainer then reuses.

    accelerate's PartialState was used first, but on a machine with a CUDA GPU its barrier passed
    `device_ids=[local_rank]` even for CPU processes on Gloo ("CUDA error: invalid device ordinal" on rank 1,
    accelerate 1.15, torch 2.11, H100 machine, 2026-11-25); this barrier names a device only for NCCL.
    """

    def __init__(self, run_plan: devices.TrainPlan):
        import torch.distributed as dist

        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.backend = run_plan.backend
        if self.backend == "nccl":
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend=self.backend)
        self.is_main_process = dist.get_rank() == 0

    def wait_for_everyone(self) -> None:
        import torch.distributed as dist

        dist.barrier(device_ids=[self.local_rank]) if self.backend == "nccl" else dist.barrier()

    @contextmanager
    def main_process_first(self):
        if not self.is_main_process:
            self.wait_for_everyone()
        yield
        if self.is_main_process:
            self.wait_for_everyone()


def one_gpu_per_process(args: TrainingArguments) -> TrainingArguments:
    """Keep a process to one GPU. Outside torchrun, transformers sets `n_gpu` to every visible GPU and the Trainer
    then wraps the model in nn.DataParallel, multiplying the batch the plan (and train_config.json) records
    (transformers 5.24, `TrainingArguments._setup_devices`, `Trainer._wrap_model`). Multi-GPU training is DDP only:
    `--gpus N` or torchrun."""
    _ = args.device  # sets up the devices (cached), which sets n_gpu; the override below is then final
    if args.n_gpu > 1:
        args._n_gpu = 1
    return args


class SaveEverySteps(TrainerCallback):
    """Checkpoint every `save_steps` whatever the evaluation interval. The Trainer saves on its own only at
    evaluations when it keeps the best checkpoint (its save_steps must then be a multiple of eval_steps); this
    asks for the other saves. Best-checkpoint tracking is unchanged: it happens at evaluations."""

    def __init__(self, save_steps: int):
        self.save_steps = save_steps

    def on_step_end(self, args, state, control, **kwargs):
        if self.save_steps > 0 and state.global_step % self.save_steps == 0:
            control.should_save = True
        return control


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (a file missing, empty or unreadable), or None when it is complete."""
    import zipfile

    from safetensors import safe_open

    def weights(path):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                f.get_slice(key)  # header and offsets are checked; a truncated file fails here

    def archive(path):
        with zipfile.ZipFile(path) as z:  # torch.save's format: a file cut short has no central directory
            if z.testzip() is not None:
                raise ValueError("a member fails its CRC check")

    checks = {"trainer_state.json": lambda p: json.loads(p.read_text())["global_step"],
              "adapter_config.json": lambda p: json.loads(p.read_text()),
              "adapter_model.safetensors": weights, "optimizer.pt": archive, "scheduler.pt": archive}
    for name, check in checks.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            return f"{name} is missing or empty"
        try:
            check(path)
        except Exception as err:  # OSError, JSON, zip and safetensors' own errors alike: unusable
            return f"{name} is unreadable ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})"
    return None


def newest_complete_checkpoint(checkpoints: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint-N that is complete, and the newer ones skipped with the reason."""
    found = sorted((p for p in Path(checkpoints).glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                   key=lambda p: int(p.name[11:]), reverse=True) if Path(checkpoints).is_dir() else []
    skipped = []
    for folder in found:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append((folder, problem))
    return None, skipped


def _training_arguments(out: Path, config: TrainConfig, run_plan: devices.TrainPlan) -> TrainingArguments:
    evaluating = config.eval_steps > 0
    return one_gpu_per_process(TrainingArguments(
        output_dir=str(out / CHECKPOINTS_DIR),
        per_device_train_batch_size=run_plan.per_device_batch,
        gradient_accumulation_steps=run_plan.gradient_accumulation,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        # with evaluation, every evaluation has its checkpoint so the best one can be kept and merged
        save_steps=config.eval_steps if evaluating else config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=config.eval_steps if evaluating else None,
        metric_for_best_model=config.eval_metric if evaluating else None,
        greater_is_better=True,
        load_best_model_at_end=evaluating,
        seed=config.seed,
        data_seed=config.seed,
        bf16=run_plan.precision == "bf16",
        fp16=run_plan.precision == "fp16",
        use_cpu=run_plan.device == "cpu",
        ddp_backend=run_plan.backend,
        ddp_find_unused_parameters=False,  # frozen parameters never get gradients; all trainable ones do
        include_num_input_tokens_seen=True,
        remove_unused_columns=False,
        report_to=list(config.report_to) or "none",
        dataloader_num_workers=run_plan.dataloader_workers,
        dataloader_persistent_workers=run_plan.dataloader_workers > 0,
        dataloader_pin_memory=run_plan.device == "cuda",
        disable_tqdm=False,
        log_level="warning",
        log_level_replica="error",  # only rank 0 logs
    ))


def _train_in(out: Path, config: TrainConfig, splits, run_plan: devices.TrainPlan, state, resume: bool) -> TrainResult:
    main = state is None or state.is_main_process
    set_seed(config.seed)
    if main and config.builds_tiny_models and not (out / BASE_DIR / "decoder" / "config.json").is_file():
        captions = [c for caps in splits["train"]["captions"] for c in caps]
        build_tiny_models(out / BASE_DIR, captions, seed=config.seed)
    if state is not None:
        state.wait_for_everyone()
    model, processor = build_base(config, out)
    if config.caption_vocab and caption_vocab.of(model.config) is None:  # a new run (a resumed one has the file)
        captions = [c for caps in splits["train"]["captions"] for c in caps]
        ids = caption_vocab.from_captions(processor.tokenizer, captions, config.max_length)  # every rank alike
        caption_vocab.apply(model, ids)
        if main:
            caption_vocab.save(out, ids, model.config.text_config.vocab_size, len(captions))
            log.info("caption vocabulary: %d of the decoder's %d tokens (from %d training captions; --full-vocab "
                     "keeps them all)", len(ids), model.config.text_config.vocab_size, len(captions))
            small = caption_vocab.small_warning(len(ids), model.config.text_config.vocab_size)
            if small:
                log.warning(small)
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

    validation = splits["validation"].select(range(min(config.eval_sample, len(splits["validation"]))))
    collator = CaptionCollator(processor, num_image_tokens(model.config.vision_config), config.max_length,
                               model.config.vision_config.image_size, seed=config.seed)
    throughput = Throughput()
    callbacks = [throughput, Curves(out, config.eval_metric)]
    if config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = CaptionTrainer(model=peft_model, args=_training_arguments(out, config, run_plan),
                             train_dataset=splits["train"], eval_dataset=validation, data_collator=collator,
                             run_config=config, processor=processor, eval_rows=validation, callbacks=callbacks)
    if config.save_steps > 0 and config.eval_steps > 0 and config.save_steps != config.eval_steps:
        trainer.add_callback(SaveEverySteps(config.save_steps))
    if trainer.pop_callback(ProgressCallback) is not None:  # shown when transformers shows progress bars
        trainer.add_callback(ReadableProgress())
    last, skipped = newest_complete_checkpoint(out / CHECKPOINTS_DIR) if resume else (None, [])
    if resume and main:
        for folder, problem in skipped:
            log.warning("skipping %s: %s (written when the run was stopped?)", folder, problem)
        log.info("resuming from %s", last or "the start (no complete checkpoint was saved yet)")
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if not main:
        return TrainResult(out, out / MERGED_DIR, None)

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
