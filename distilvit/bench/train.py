"""`distilvit-web bench train`: training throughput of the real-size architecture (random weights, no download).

For each mode it times optimizer steps (forward, backward, AdamW step; the same work the Trainer does per
step, without data loading) on random 224 px images and 30-token captions:

    lora      our recipe: LoRA on the decoder's attention + the projector; vision tower and decoder frozen
    full-lm   the projector and the whole decoder trained; vision tower frozen
    full      every parameter trained (the vision tower too)

and reports the median step time, samples/s, tokens/s and peak GPU memory, plus the ratio lora / full.
Device and precision are chosen as `train` chooses them. This module knows nothing about data or the Trainer.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from distilvit.atomic import check_writable_file, write_file
from distilvit.config import TrainConfig
from distilvit.modeling.realsize import text_config, vision_config
from distilvit.provenance import stamp
from distilvit.training import device as devices
from distilvit.training import lora

log = logging.getLogger(__name__)
MODES = ("lora", "full-lm", "full")


def realsize_captioner() -> LlavaForConditionalGeneration:
    """SigLIP-base + SmolLM-135M as a LLaVA, random weights, `<image>` as token 49152."""
    text = text_config()
    text.vocab_size += 1  # the added <image> token
    vision = vision_config()
    return LlavaForConditionalGeneration(LlavaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=text.vocab_size - 1,
        image_seq_length=(vision.image_size // vision.patch_size) ** 2, projector_hidden_act="gelu",
        vision_feature_select_strategy="full", vision_feature_layer=-1, multimodal_projector_bias=True,
        tie_word_embeddings=True))


def _prepare(mode: str, config: TrainConfig, gradient_checkpointing: bool):
    model = realsize_captioner()
    if gradient_checkpointing:
        model.model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if mode == "lora":
        model = lora.apply_lora(model, config)
        optimizer = lora.optimizer(model, config)
    else:
        for name, p in model.named_parameters():
            p.requires_grad_(mode == "full" or "vision_tower" not in name)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    return model, optimizer


def _batch(model, batch_size: int, caption_tokens: int, device: str) -> dict[str, torch.Tensor]:
    cfg = model.config
    n = cfg.image_seq_length
    captions = torch.randint(1, cfg.image_token_index, (batch_size, caption_tokens))  # [B, T]
    input_ids = torch.cat([torch.full((batch_size, n), cfg.image_token_index), torch.zeros(batch_size, 1, dtype=torch.long),
                           captions], dim=1)  # [B, N + 1 + T]
    labels = input_ids.clone()
    labels[:, : n + 1] = -100
    size = cfg.vision_config.image_size
    return {"input_ids": input_ids.to(device), "labels": labels.to(device), "attention_mask": torch.ones_like(input_ids).to(device),
            "pixel_values": torch.randn(batch_size, 3, size, size).to(device)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def bench_mode(mode: str, run_plan: devices.TrainPlan, steps: int, warmup: int, caption_tokens: int,
               gradient_checkpointing: bool) -> dict:
    config = TrainConfig.from_preset("smollm-135m", "unused")
    model, optimizer = _prepare(mode, config, gradient_checkpointing)
    model.to(run_plan.device).train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batch = _batch(model, run_plan.per_device_batch, caption_tokens, run_plan.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run_plan.precision)
    autocast = torch.autocast(run_plan.device, dtype=dtype) if dtype else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(run_plan.device) if run_plan.precision == "fp16" else None
    if run_plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        _sync(run_plan.device)
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(run_plan.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        log.info("%s step %d/%d: %.3f s", mode, i + 1, warmup + steps, time.perf_counter() - start)
    step = statistics.median(times)
    tokens = batch["input_ids"].numel()
    result = {
        "mode": mode,
        "trainable_parameters": trainable,
        "median_step_s": step,
        "samples_per_second": run_plan.per_device_batch / step,
        "tokens_per_second": tokens / step,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if run_plan.device == "cuda" else None,
        "loss": float(loss.detach()),
    }
    del model, optimizer, batch
    gc.collect()
    if run_plan.device == "cuda":
        torch.cuda.empty_cache()
    return result


def bench_train(device: str = "auto", precision: str = "auto", batch_size: int | None = None, steps: int = 5,
                warmup: int = 2, modes: tuple[str, ...] = MODES, caption_tokens: int = 30,
                gradient_checkpointing: bool = False, output: Path | None = None) -> dict:
    if output:
        check_writable_file(output, "bench report")  # before the timed steps
    run_plan = devices.plan(devices.detect(), device=device, precision=precision, per_device_batch=batch_size)
    run_plan = replace(run_plan, gradient_accumulation=1, effective_batch=run_plan.per_device_batch)
    log.info("benchmarking on %s, %s, batch %d", run_plan.machine, run_plan.precision, run_plan.per_device_batch)
    results = [bench_mode(m, run_plan, steps, warmup, caption_tokens, gradient_checkpointing) for m in modes]
    by_mode = {r["mode"]: r for r in results}
    report = {
        "plan": run_plan.to_json(),
        "torch_threads": torch.get_num_threads(),
        "steps": steps,
        "warmup": warmup,
        "caption_tokens": caption_tokens,
        "gradient_checkpointing": gradient_checkpointing,
        "results": results,
        "lora_over_full": (by_mode["lora"]["samples_per_second"] / by_mode["full"]["samples_per_second"]
                           if {"lora", "full"} <= set(by_mode) else None),
        **stamp(),
    }
    if output:
        write_file(output, json.dumps(report, indent=2) + "\n", "bench report")
    return report
