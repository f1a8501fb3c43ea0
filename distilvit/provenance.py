"""What every stage writes beside its output so a result can be traced: library versions, time, host facts.

This module knows nothing about the stages themselves.
"""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path
from datetime import datetime, timezone
from importlib import metadata

LIBRARIES = ("distilvit-web", "torch", "transformers", "peft", "datasets", "accelerate", "tokenizers", "pillow",
             "onnx", "onnxruntime", "onnxslim")


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


# Instruction sets that decide which kernels the runtimes run: onnxruntime's int8 GEMMs (q8/int8/uint8 and
# MatMulNBits' int8 paths) use VNNI dot products where the CPU has them and u8s8 multiply-adds, which can saturate,
# where it has only AVX2; torch's bf16 GEMMs are fast only with AVX512-BF16 / AMX.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "i8mm", "bf16")


def cpu() -> dict:
    """The CPU's model name, the ISA_FLAGS it has, the int8 kernel path that implies (Linux reads /proc/cpuinfo;
    elsewhere only what `platform` says: flags empty, kernel path unknown), and, once torch is loaded, the kernels
    torch dispatches to (`torch_kernels`: AVX512, AVX2, ...)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    names = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = set()
    for line in re.findall(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M):
        flags.update(line.split())
    have = [f for f in ISA_FLAGS if f in flags]
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        path = "x86 VNNI (int8 dot products)"
    elif "avx512bw" in flags:
        path = "x86 AVX-512 without VNNI (u8s8 multiply-adds, may saturate)"
    elif "avx2" in flags:
        path = "x86 AVX2 without VNNI (u8s8 multiply-adds, may saturate)"
    elif "asimddp" in flags:
        path = "ARM dot product"
    else:
        path = "unknown"
    found = {"model": names[0].strip() if names else platform.processor() or platform.machine(), "isa": have,
             "int8_kernel_path": path}
    torch = sys.modules.get("torch")  # read when a stage has loaded it; never imported for this
    if torch is not None:
        # the kernels torch dispatches to: the CPU's best, or lower where ATEN_CPU_CAPABILITY says so (docs/training.md
        # forces AVX2 on an AVX-512 machine this way), so a report says which path its figures took
        found["torch_kernels"] = torch.backends.cpu.get_cpu_capability()
    return found


def stamp() -> dict:
    """Versions, UTC time, platform and CPU (its instruction sets), for a `*_config.json` or `*_info.json`."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu(),
        "versions": versions(),
    }
