"""`distilvit-web train --gpus N`: start the same command as N processes through torchrun.

This is torch.distributed's own launcher (`python -m torch.distributed.run`), run with the command line the
user typed minus `--gpus`, so `--gpus N`, `torchrun --nproc_per_node=N -m distilvit.cli train ...` and
`accelerate launch -m distilvit.cli train ...` all end in the same entry point. It knows nothing about training.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys


def strip_gpus(argv: list[str]) -> list[str]:
    """`argv` without `--gpus N` / `--gpus=N`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--gpus":
            skip = True
            continue
        if arg.startswith("--gpus="):
            continue
        out.append(arg)
    return out


def torchrun_command(processes: int, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "distilvit.cli", *strip_gpus(argv)]


def launch_env(system: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if (system or platform.system()) == "Windows":
        # torch's TCPStore on Windows is built without libuv (2024-2026, torch 2.4-2.13: "use_libuv was
        # requested but PyTorch was build without libuv support"); ask for the old store.
        env.setdefault("USE_LIBUV", "0")
    return env


def relaunch_with_torchrun(processes: int, argv: list[str]) -> int:
    """Run the command as `processes` torchrun workers; return torchrun's exit status."""
    command = torchrun_command(processes, argv)
    print("launching:", " ".join(command), file=sys.stderr, flush=True)
    return subprocess.call(command, env=launch_env())
