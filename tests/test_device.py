"""Automatic device, precision, backend and batch choices, with the machine patched (no GPU needed)."""

from __future__ import annotations

import os

import pytest

from distilvit.errors import UserError
from distilvit.training import device
from distilvit.training.device import Machine, ddp_backend, plan
from distilvit.training.launch import launch_env, strip_gpus, torchrun_command

LINUX_2x4090 = Machine(cuda_devices=2, cuda_bf16=True, mps=False, system="Linux", cuda_name="NVIDIA GeForce RTX 4090")
WINDOWS_2x4090 = Machine(cuda_devices=2, cuda_bf16=True, mps=False, system="Windows", cuda_name="NVIDIA GeForce RTX 4090")
T4 = Machine(cuda_devices=1, cuda_bf16=False, mps=False, system="Linux", cuda_name="Tesla T4")
MAC = Machine(cuda_devices=0, cuda_bf16=False, mps=True, system="Darwin")
CPU = Machine(cuda_devices=0, cuda_bf16=False, mps=False, system="Linux")


def test_two_gpus_on_linux_use_nccl_bf16_and_keep_the_effective_batch():
    p = plan(LINUX_2x4090, processes=2)
    assert (p.device, p.precision, p.backend) == ("cuda", "bf16", "nccl")
    assert (p.per_device_batch, p.gradient_accumulation, p.effective_batch) == (16, 2, 64)


def test_windows_uses_gloo():
    p = plan(WINDOWS_2x4090, processes=2)
    assert p.backend == "gloo"
    assert ddp_backend("Windows", "cuda") == "gloo"
    assert ddp_backend("Linux", "cpu") == "gloo"
    assert ddp_backend("Linux", "cuda") == "nccl"


def test_single_process_has_no_backend():
    assert plan(LINUX_2x4090).backend is None


@pytest.mark.parametrize("machine, expected", [
    (T4, ("cuda", "fp16", 8, 8)),
    (MAC, ("mps", "fp32", 4, 16)),
    (CPU, ("cpu", "fp32", 8, 8)),
])
def test_one_device_defaults(machine, expected):
    p = plan(machine)
    assert (p.device, p.precision, p.per_device_batch, p.gradient_accumulation) == expected
    assert p.effective_batch == 64


def test_explicit_settings_win():
    p = plan(LINUX_2x4090, device="cpu", precision="fp32", per_device_batch=3, gradient_accumulation=5)
    assert (p.device, p.precision, p.per_device_batch, p.gradient_accumulation, p.effective_batch) == ("cpu", "fp32", 3, 5, 15)
    assert plan(CPU, per_device_batch=32, effective_batch=32).gradient_accumulation == 1


@pytest.mark.parametrize("machine, kwargs, message", [
    (CPU, {"device": "cuda"}, "no CUDA GPU"),
    (CPU, {"device": "mps"}, "MPS is not available"),
    (T4, {"precision": "bf16"}, "Tesla T4 has no bf16"),
    (CPU, {"precision": "fp16"}, "needs a GPU"),
    (CPU, {"device": "tpu"}, "not one of"),
    (T4, {"processes": 2}, "only 1 CUDA GPU"),
])
def test_impossible_requests_are_refused(machine, kwargs, message):
    with pytest.raises(UserError, match=message):
        plan(machine, **kwargs)


def test_gpus_flag_becomes_a_torchrun_command():
    argv = ["train", "--gpus", "2", "--preset", "tiny", "--gpus=3", "--output-dir", "runs/x"]
    assert strip_gpus(argv) == ["train", "--preset", "tiny", "--output-dir", "runs/x"]
    command = torchrun_command(2, argv)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert command[6:] == ["distilvit.cli", "train", "--preset", "tiny", "--output-dir", "runs/x"]
    assert launch_env("Windows")["USE_LIBUV"] == "0"
    assert launch_env("Linux").get("USE_LIBUV") == os.environ.get("USE_LIBUV")


def test_one_process_on_two_gpus_trains_on_one_and_records_it(tmp_path):
    """Without --gpus/torchrun a 2-GPU machine must not become nn.DataParallel (twice the recorded batch)."""
    from transformers import TrainingArguments

    from distilvit.training.trainer import one_gpu_per_process

    p = plan(LINUX_2x4090)
    assert (p.world_size, p.visible_gpus, p.idle_gpus) == (1, 2, 1)
    assert (p.per_device_batch, p.gradient_accumulation, p.effective_batch) == (8, 8, 64)
    assert p.to_json()["visible_gpus"] == 2  # what train_config.json records
    assert plan(LINUX_2x4090, processes=2).idle_gpus == 0
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=p.per_device_batch, use_cpu=True,
                             report_to=[])
    _ = args.device
    args._n_gpu = 2  # what transformers' device set-up sets outside torchrun on a machine with 2 visible GPUs
    assert args.train_batch_size == 16  # the Trainer would wrap in nn.DataParallel and double the batch
    one_gpu_per_process(args)
    assert args.n_gpu == 1 and args.train_batch_size == p.per_device_batch


def test_inference_device_follows_the_machine():
    assert device.inference_device("auto", LINUX_2x4090) == "cuda"
    assert device.inference_device("auto", MAC) == "mps"
    assert device.inference_device("auto", CPU) == "cpu"
    assert device.inference_device("cpu", LINUX_2x4090) == "cpu"
    with pytest.raises(UserError, match="no CUDA GPU"):
        device.inference_device("cuda", CPU)
    with pytest.raises(UserError, match="is not one of"):
        device.inference_device("tpu", CPU)
