"""Two-process DDP on CPU with Gloo (`torchrun --nproc_per_node=2`) averages gradients: after one optimizer
step the trained weights equal those of one process that saw the combined batch."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

COMMON = ["train", "--preset", "tiny", "--dataset", "synthetic", "--max-steps", "1", "--warmup-ratio", "0",
          "--eval-steps", "0", "--eval-sample", "4", "--device", "cpu", "--effective-batch-size", "8"]


def run(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def test_two_processes_average_gradients(tmp_path):
    two, one = tmp_path / "ddp", tmp_path / "single"
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "distilvit.cli",
         *COMMON, "--per-device-train-batch-size", "4", "--output-dir", str(two)])
    run([sys.executable, "-m", "distilvit.cli", *COMMON, "--per-device-train-batch-size", "8", "--output-dir", str(one)])

    import json

    plan = json.loads((two / "train_config.json").read_text())["run_info"]["plan"]
    assert (plan["world_size"], plan["backend"], plan["effective_batch"]) == (2, "gloo", 8)
    # both start from the same weights: the tiny base models are built from the same seed
    assert load_file(two / "base/encoder/model.safetensors").keys() == load_file(one / "base/encoder/model.safetensors").keys()
    a = load_file(two / "adapter/adapter_model.safetensors")
    b = load_file(one / "adapter/adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    moved = 0
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)
        moved += int("lora_B" in key and a[key].abs().sum() > 0)
    assert moved > 0, "the step changed no LoRA weights: the comparison would be vacuous"
