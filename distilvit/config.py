"""The training run's configuration: one dataclass, the presets it starts from, and its JSON round trip.

A run's config is written to `<output_dir>/train_config.json` (with library versions and the base models that
were used) and read back with `TrainConfig(**json)`. Presets only provide defaults: `TrainConfig.from_preset`
applies explicit overrides on top. No function mutates a config it was given (`dataclasses.replace` instead).
This module knows nothing about torch or models.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from distilvit.errors import UserError

CONFIG_FILE = "train_config.json"
DEFAULT_PRESET = "smollm-135m"
# Settings that change how a run is computed, not what it computes: a run resumed or reused may be given other
# values (where its files are, how many processes check images or load batches).
RESULT_NEUTRAL = frozenset({"output_dir", "num_proc", "dataloader_workers", "report_to"})
REPORTERS = ("tensorboard", "wandb")  # the Trainer's integrations `--report-to` may name (optional dependencies)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. `encoder_model`/`decoder_model` None means: build the tiny models."""

    preset: str
    output_dir: str
    encoder_model: str | None
    decoder_model: str | None
    datasets: tuple[str, ...]
    sample: int | None = None
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int | None = None  # None: chosen per device (distilvit.training.device)
    gradient_accumulation_steps: int | None = None  # None: keeps effective_batch_size
    effective_batch_size: int = 64
    device: str = "auto"  # auto | cuda | mps | cpu
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False  # on the language model
    dataloader_workers: int | None = None  # None: 0 on CPU, up to 8 on a GPU
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    projection_lr: float = 1e-3
    lora_lr: float = 5e-5
    train_lm_head: bool = False
    head_lr: float = 1e-3
    vision_unfreeze_layers: int = 0
    vision_lr: float = 1e-5
    max_length: int = 30  # caption tokens, EOS not counted
    caption_vocab: bool = True  # generate only the tokens of the training captions (distilvit/modeling/caption_vocab.py)
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # adamw | sgd (plain SGD, no momentum: its step is lr * gradient, for checks)
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    seed: int = 0
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 50
    eval_steps: int = 500  # caption the validation split every N steps (0: never); checkpoints follow it
    eval_metric: str = "cider"  # cider | bleu4 | rougeL | exact_match: picks the best checkpoint
    early_stopping_patience: int = 0  # stop after N evaluations without improvement (0: never)
    eval_sample: int = 200  # validation images per evaluation
    test_sample: int | None = None  # test images scored at the end (None: the whole test split)
    num_proc: int | None = None  # processes checking the images once per dataset version (None: up to 8)
    report_to: tuple[str, ...] = ()  # REPORTERS the Trainer also logs to; RUN/training_curves.png is always drawn
    synthetic_sizes: dict = field(default_factory=lambda: {"train_size": 8000, "validation_size": 200, "test_size": 200})

    def __post_init__(self):
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        object.__setattr__(self, "report_to", tuple(r for r in self.report_to if r != "none"))
        problems = []
        if not self.datasets:
            problems.append("at least one --dataset is needed")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "lora_r", "max_length", "save_steps",
                     "effective_batch_size", "eval_sample", "test_sample", "num_proc"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            problems.append(f"need --max-steps > 0 or --num-train-epochs > 0, got {self.max_steps} and {self.num_train_epochs}")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.vision_unfreeze_layers < 0:
            problems.append(f"vision_unfreeze_layers must be >= 0, got {self.vision_unfreeze_layers}")
        if self.sample is not None and self.sample < 1:
            problems.append(f"sample must be >= 1, got {self.sample}")
        if self.optimizer not in ("adamw", "sgd"):
            problems.append(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.max_grad_norm < 0:
            problems.append(f"max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm}")
        if self.eval_metric not in ("cider", "bleu4", "rougeL", "exact_match"):
            problems.append(f"eval_metric must be cider, bleu4, rougeL or exact_match, got {self.eval_metric!r}")
        if self.early_stopping_patience and self.eval_steps <= 0:
            problems.append("early stopping needs evaluations: set --eval-steps > 0")
        if self.eval_steps < 0 or self.early_stopping_patience < 0:
            problems.append("eval_steps and early_stopping_patience must be >= 0")
        unknown = [r for r in self.report_to if r not in REPORTERS]
        if unknown:
            problems.append(f"report_to must name {', '.join(REPORTERS)} or none, got {', '.join(unknown)}")
        if problems:
            raise UserError("invalid training settings: " + "; ".join(problems))

    @property
    def builds_tiny_models(self) -> bool:
        return self.encoder_model is None or self.decoder_model is None

    @classmethod
    def from_preset(cls, preset: str, output_dir: str, **overrides) -> "TrainConfig":
        """The preset's settings with every override that is not None applied."""
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown TrainConfig fields {sorted(unknown)}")
        values = dict(PRESETS[preset])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(preset=preset, output_dir=str(output_dir), **values)

    def to_json(self) -> dict:
        return asdict(self)

    def save(self, folder: Path, extra: dict | None = None) -> None:
        """Write `train_config.json`: the settings, plus `extra` (versions, resolved models) under `run_info`."""
        data = self.to_json()
        if extra:
            data["run_info"] = extra
        (Path(folder) / CONFIG_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "TrainConfig":
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise UserError(f"{folder} is not a training run: {CONFIG_FILE} is missing")
        data = json.loads(path.read_text())
        data.pop("run_info", None)
        return cls(**data)


# Defaults per preset. `smollm-135m` is the recipe that trains the real model (docs/training.md); `tiny` has no
# pretrained language prior, so it also trains its (untied) output head with larger learning rates: measured on
# the synthetic shapes, LoRA + projector alone capped exact-match near 0.37, with the head >= 0.8. 4000 steps on
# 16k images, keeping the checkpoint with the best validation exact match, gave 0.935-0.97 over 3 seeds where
# 3000 steps on 8k gave 0.785-0.97 (docs/training.md).
PRESETS: dict[str, dict] = {
    "smollm-135m": dict(
        encoder_model="google/siglip-base-patch16-224",
        decoder_model="HuggingFaceTB/SmolLM-135M",
        datasets=("flickr30k",),
        num_train_epochs=3.0,
        effective_batch_size=64,
        lora_r=16,
        lora_alpha=16,
        lora_dropout=0.1,
        projection_lr=1e-3,
        lora_lr=5e-5,
        train_lm_head=False,
        max_length=30,
        weight_decay=0.0,
    ),
    "tiny": dict(
        encoder_model=None,
        decoder_model=None,
        datasets=("synthetic",),
        synthetic_sizes={"train_size": 16000, "validation_size": 200, "test_size": 200},
        max_steps=4000,
        per_device_train_batch_size=32,
        effective_batch_size=32,
        lora_r=16,
        lora_alpha=16,
        lora_dropout=0.0,
        projection_lr=1e-3,
        lora_lr=2e-3,
        train_lm_head=True,
        head_lr=1e-3,
        max_length=12,
        save_steps=500,
        eval_steps=500,
        eval_metric="exact_match",
        logging_steps=100,
    ),
}
# smollm-135m with SigLIP 2 B/32 at 256 px (a fixed-resolution SigLIP 2, loaded by the SigLIP classes): 64 image
# tokens instead of 196. In Chromium WebAssembly on 2 cores a 20-token q8 caption took 0.46-0.6x the default's
# time over several runs, timed in turns with it (docs/benchmarks.md, docs/browser.md). Its caption quality against the default's is not
# measured yet (no Hub, no GPU on the machines this was built on).
PRESETS["smollm-135m-fast"] = {**PRESETS["smollm-135m"], "encoder_model": "google/siglip2-base-patch32-256"}


def run_settings(output_dir: str | Path, preset: str | None, given: dict, overwrite: bool = False) -> TrainConfig:
    """The settings `train` runs with. A new folder (or --overwrite): the preset (default smollm-135m) with the
    flags `given` (None: not given). A folder that holds a run: the run's saved settings, so `train --output-dir RUN
    --resume` alone continues it; flags given again must agree with them, except RESULT_NEUTRAL ones, which apply.
    A disagreement is a UserError naming exactly the settings that differ (saved vs given)."""
    given = {k: v for k, v in given.items() if v is not None}
    if overwrite or not (Path(output_dir) / CONFIG_FILE).is_file():
        return TrainConfig.from_preset(preset or DEFAULT_PRESET, str(output_dir), **given)
    saved = TrainConfig.load(Path(output_dir))
    if preset is not None:
        given["preset"] = preset
    differ = {}
    for name, value in given.items():
        value = tuple(value) if isinstance(value, list) else value
        if name not in RESULT_NEUTRAL and value != getattr(saved, name):
            differ[name] = (getattr(saved, name), value)
    if differ:
        listed = "; ".join(f"{name}: saved {old!r}, given {new!r}" for name, (old, new) in differ.items())
        raise UserError(f"{output_dir} holds a run trained with other settings ({listed}). Leave those flags out to "
                        f"continue it with its own settings (train --output-dir {output_dir} --resume), or choose "
                        f"another --output-dir for a run with them")
    return dataclasses.replace(saved, output_dir=str(output_dir), **{k: v for k, v in given.items() if k in RESULT_NEUTRAL})
