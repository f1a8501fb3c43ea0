"""Which parameters train, and how: LoRA on the language model's attention, the projector (and optionally the
output head and the last vision layers) trained fully, everything else frozen; one AdamW with a learning rate
per group.

The LoRA regex names `language_model` so SigLIP's own q_proj/v_proj are never adapted. Fully trained modules
go in peft's `modules_to_save`, so adapter checkpoints carry them and `merge_and_unload` puts them back.
This module knows nothing about data or the Trainer.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlavaForConditionalGeneration

from distilvit.config import TrainConfig
from distilvit.errors import UserError

PROJECTOR = "multi_modal_projector"
LM_HEAD = "lm_head"


def lora_config(config: TrainConfig, model: LlavaForConditionalGeneration) -> LoraConfig:
    modules_to_save = [PROJECTOR]
    if config.train_lm_head:
        if model.config.tie_word_embeddings:
            raise UserError("--train-lm-head needs an untied output head, but this decoder ties lm_head to its "
                            "input embeddings; drop the flag or use an untied decoder")
        modules_to_save.append(LM_HEAD)
    n_layers = model.config.vision_config.num_hidden_layers
    if config.vision_unfreeze_layers > n_layers:
        raise UserError(f"--vision-unfreeze-layers {config.vision_unfreeze_layers} exceeds the encoder's {n_layers} layers")
    for i in range(n_layers - config.vision_unfreeze_layers, n_layers):
        modules_to_save.append(f"vision_tower.encoder.layers.{i}")
    targets = "|".join(config.lora_targets)
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=rf".*language_model.*\.({targets})",
        modules_to_save=modules_to_save,
        bias="none",
    )


def apply_lora(model: LlavaForConditionalGeneration, config: TrainConfig) -> PeftModel:
    """Freeze the base model and wrap it with LoRA + fully trained modules."""
    for p in model.parameters():
        p.requires_grad_(False)
    return get_peft_model(model, lora_config(config, model))


def group_of(name: str) -> str:
    """The optimizer group of a trainable parameter, from its name."""
    if "lora_" in name:
        return "lora"
    if PROJECTOR in name:
        return "projector"
    if LM_HEAD in name:
        return "lm_head"
    if "vision_tower" in name:
        return "vision"
    raise ValueError(f"trainable parameter {name!r} belongs to no optimizer group")


def trainable_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable parameter counts per group (a test checks only these groups train)."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            g = group_of(name)
            counts[g] = counts.get(g, 0) + p.numel()
    return counts


def optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """One parameter group per trainable group with its own learning rate: AdamW, or plain SGD (`optimizer="sgd"`,
    no momentum), whose step is lr * gradient and so shows the gradient's scale (the DDP test uses it)."""
    lrs = {"lora": config.lora_lr, "projector": config.projection_lr, "lm_head": config.head_lr, "vision": config.vision_lr}
    groups: dict[str, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(group_of(name), []).append(p)
    param_groups = [{"params": ps, "lr": lrs[g], "weight_decay": config.weight_decay, "name": g}
                    for g, ps in groups.items()]
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lora_lr, momentum=0.0)
    return torch.optim.AdamW(param_groups)
