"""Automatic device, precision, backend and batch choices, with the machine patched (no GPU needed)."""

from __future__ import annotations

import os

import pytest

from distilvit import device
from distilvit.device import Machine, ddp_backend, plan
from distilvit.errors import UserError
from distilvit.launch import launch_env, strip_gpus, torchrun_command

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


def test_detect_reads_this_machine():
    m = device.detect()
    assert m.system in {"Linux", "Windows", "Darwin"}
    assert m.cuda_devices >= 0


def test_gpus_flag_becomes_a_torchrun_command():
    argv = ["train", "--gpus", "2", "--preset", "tiny", "--gpus=3", "--output-dir", "runs/x"]
    assert strip_gpus(argv) == ["train", "--preset", "tiny", "--output-dir", "runs/x"]
    command = torchrun_command(2, argv)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert command[6:] == ["distilvit.cli", "train", "--preset", "tiny", "--output-dir", "runs/x"]
    assert launch_env("Windows")["USE_LIBUV"] == "0"
    assert launch_env("Linux").get("USE_LIBUV") == os.environ.get("USE_LIBUV")
