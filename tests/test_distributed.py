"""Two-process DDP on CPU with Gloo (`torchrun --nproc_per_node=2`) averages gradients over the global batch:
after one plain-SGD step (its update is lr x gradient, unclipped) the LoRA weights equal those of one process that
saw the combined batch. With AdamW the first step is about lr x sign(gradient) whatever the gradient's scale, so
summed instead of averaged gradients would pass unseen; with SGD they give twice the update and fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

COMMON = ["train", "--preset", "tiny", "--dataset", "synthetic", "--max-steps", "1", "--warmup-ratio", "0",
          "--eval-steps", "0", "--eval-sample", "4", "--test-sample", "4", "--device", "cpu", "--effective-batch-size", "8",
          "--optimizer", "sgd", "--max-grad-norm", "0", "--lora-lr", "1.0"]


def run(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def test_two_processes_average_gradients(tmp_path):
    two, one = tmp_path / "ddp", tmp_path / "single"
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "distilvit.cli",
         *COMMON, "--per-device-train-batch-size", "4", "--output-dir", str(two)])
    run([sys.executable, "-m", "distilvit.cli", *COMMON, "--per-device-train-batch-size", "8", "--output-dir", str(one)])

    plan = json.loads((two / "train_config.json").read_text())["run_info"]["plan"]
    assert (plan["world_size"], plan["backend"], plan["effective_batch"]) == (2, "gloo", 8)
    # both start from the same weights: the tiny base models are built from the same seed
    for part in ("encoder", "decoder"):
        base_two, base_one = (load_file(run / f"base/{part}/model.safetensors") for run in (two, one))
        assert base_two.keys() == base_one.keys() and base_one, part
        for key in base_one:
            assert torch.equal(base_two[key], base_one[key]), f"base {part} {key} differs between the two runs"
    a = load_file(two / "adapter/adapter_model.safetensors")
    b = load_file(one / "adapter/adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    # LoRA B starts at zero, so after one SGD step it IS -lr x gradient: compare it relative to its own size
    updates = [key for key in a if "lora_B" in key]
    assert updates
    for key in updates:
        scale = b[key].abs().max()
        assert scale > 1e-4, f"{key}: the step barely moved it ({scale}); the comparison would be vacuous"
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4 * scale.item(),
                                   msg=lambda m, key=key: f"{key}: {m}")
    for key in a:  # everything else (LoRA A is untouched in step 1 since B was 0)
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)
