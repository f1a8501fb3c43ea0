"""The HF Trainer as `train` uses it: one learning rate per parameter group, evaluation by captioning the validation
rows, the callbacks (curves, readable progress lines, throughput, checkpoints every --save-steps) and the
TrainingArguments a run's settings and device plan make.

It knows nothing about the run folder's policy or how the model was built: it is handed a model, data and a plan.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from distilvit.config import TrainConfig
from distilvit.metrics import all_scores
from distilvit.modeling.caption import Captioner
from distilvit.modeling.merge import CHECKPOINTS_DIR
from distilvit.training import curves, lora
from distilvit.training import device as devices
from distilvit.training.evaluate import caption_split


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


def training_arguments(out: Path, config: TrainConfig, run_plan: devices.TrainPlan) -> TrainingArguments:
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
