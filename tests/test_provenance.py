"""What every output records about the machine: the CPU's instruction sets, and the kernels torch actually ran (which
ATEN_CPU_CAPABILITY can lower below what the CPU has: how docs/training.md checks the AVX2 path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = ("import json, torch\nfrom distilvit.provenance import cpu\nfrom distilvit.verify.report import cpu_line\n"
         "info = cpu()\nprint(json.dumps({'cpu': info, 'line': cpu_line({'cpu': info}),\n"
         "    'torch': torch.backends.cpu.get_cpu_capability()}))")


def probe(**env) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_reports_name_the_kernels_torch_dispatches_to():
    plain = probe()
    assert plain["cpu"]["torch_kernels"] == plain["torch"] and plain["cpu"]["int8_kernel_path"]
    assert f"torch kernels: {plain['torch']}" in plain["line"]


def test_a_forced_lower_kernel_path_is_what_the_report_says():
    plain = probe()
    if "avx2" not in plain["cpu"]["isa"]:
        pytest.skip("not an x86 CPU with AVX2: there is no AVX2 kernel path to force torch onto")
    forced = probe(ATEN_CPU_CAPABILITY="avx2")
    assert forced["cpu"]["torch_kernels"] == "AVX2" and forced["cpu"]["isa"] == plain["cpu"]["isa"]
    assert "torch kernels: AVX2" in forced["line"]


def test_no_torch_no_torch_kernels():
    """Stages that never load torch (serve, site) do not import it to stamp their output."""
    result = subprocess.run([sys.executable, "-c", "import json, sys\nfrom distilvit.provenance import stamp\n"
                             "s = stamp()\nprint(json.dumps(['torch' in sys.modules, 'torch_kernels' in s['cpu']]))"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [False, False]
