"""`distilvit-web bench` pieces on the tiny model (the full real-size run takes minutes: docs/benchmarks.md):
the floor measurements, FLOP counts against a direct count, each runtime's timing, and the report."""

from __future__ import annotations

import json
import mmap
import os
import sys
import time

import pytest
import torch
from transformers import AutoModelForImageTextToText

from distilvit.bench import report as bench_report
from distilvit.bench.floor import measure_floor, model_flops, stage_floors
from distilvit.bench.runners import bench_onnxruntime, bench_pytorch, median_run
from distilvit.bench.variants import interleaved_chromium, needs_export
from distilvit.export import constants as C
from distilvit.export.exporter import export_model, exporter_digest
from distilvit.pixels import PixelPreparer
from distilvit.runtimes.memory import PeakMemory


def test_floor_is_measured():
    floor = measure_floor(repeats=2)
    assert floor["memory_bandwidth_gbs"] > 0.1 and floor["matmul_gflops"] > 0.1 and floor["int8_gemm_gops"] > 0.1
    assert floor["threads"] == (os.cpu_count() or 1)  # the threads onnxruntime uses by default
    # a floor is the best of the ways measured (a runtime beating one way must not sit "below the floor")
    assert set(floor["matmul_gflops_by"]) == {"torch_mm_1024", "onnxruntime_matmul"}
    assert floor["matmul_gflops"] == max(floor["matmul_gflops_by"].values())
    assert set(floor["memory_bandwidth_by"]) == {"copy_read_write", "sum_read"}
    assert floor["memory_bandwidth_gbs"] == max(floor["memory_bandwidth_by"].values())
    floors = stage_floors({"encoder": 2e9, "prefill": 4e9}, floor, {"int8": 1.0, "q8": 1.0, "fp32": 4.0})
    # the int8-kernel dtypes' stages are bounded by the int8 GEMM rate, the rest by fp32's (q8 computes in float32
    # once loaded): the same FLOPs, each its own rate
    assert floors["encoder_ms"]["int8"] == pytest.approx(2e9 / (floor["int8_gemm_gops"] * 1e9) * 1e3)
    assert floors["encoder_ms"]["fp32"] == pytest.approx(2e9 / (floor["matmul_gflops"] * 1e9) * 1e3)
    assert floors["encoder_ms"]["q8"] == floors["encoder_ms"]["fp32"]
    assert floors["prefill_ms"]["int8"] / floors["encoder_ms"]["int8"] == pytest.approx(2.0)


def test_flops_match_a_count_of_the_linear_layers(short_run):
    model = AutoModelForImageTextToText.from_pretrained(short_run / "merged")
    cfg = model.config
    n = cfg.image_seq_length
    vision_linear = sum(m.weight.numel() for m in model.model.vision_tower.encoder.modules() if isinstance(m, torch.nn.Linear))
    projector = sum(m.weight.numel() for m in model.model.multi_modal_projector.modules() if isinstance(m, torch.nn.Linear))
    attention = cfg.vision_config.num_hidden_layers * 4 * n * n * cfg.vision_config.hidden_size
    assert model_flops(cfg)["encoder"] == 2 * n * (vision_linear + projector) + attention


def test_runtimes_report_stages_and_memory(short_run, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(short_run / "merged").eval()
    pixels = torch.randint(0, 256, (1, 4, 80, 96)).float()  # raw RGBA, as the encoder graph takes it
    torch_times = bench_pytorch(model, pixels, tokens=4, prepare=PixelPreparer.from_model_dir(short_run / "merged"))
    export_model(short_run, tmp_path / "export", agreement_images=0)
    ort_times = bench_onnxruntime(tmp_path / "export", "fp32", pixels.numpy(), tokens=4, repeats=2)
    for times in (torch_times, ort_times):
        assert times["total_ms"] >= times["encoder_ms"] + times["prefill_ms"] > 0
        assert times["peak_mib"] >= 0

    n = model.config.image_seq_length
    report = {"tokens": 4, "repeats": 2, "machine": measure_floor(2), "flops": model_flops(model.config),
              "floor": stage_floors(model_flops(model.config), measure_floor(2), {"fp32": 0.1}),
              "sizes_bytes": {"fp32": {"encoder_model": 1, "decoder_model_merged": 2}},
              "results": [{"runtime": "PyTorch eager", "dtype": "fp32", **torch_times},
                          {"runtime": "onnxruntime", "dtype": "fp32", **ort_times}],
              "platform": "test", "created": "now", "image_tokens": n, "image_size": 64, "patch_size": 8}
    text = bench_report.markdown(report, "plot.png")
    assert "| onnxruntime | fp32 |" in text and "x PyTorch" in text and "Other architectures" not in text
    assert "sum (read only)" in text and "onnxruntime MatMul" in text  # each floor rate names the ways it is the best of
    # another architecture's row is printed beside ours of the same runtime and dtype, with its ratio to ours
    halved = {**ort_times, "total_ms": ort_times["total_ms"] / 2}
    report["variants"] = [{"name": "fewer", "description": "a quarter of the tokens", "image_tokens": n // 4,
                           "flops": model_flops(model.config), "results": [{"runtime": "onnxruntime", "dtype": "fp32", **halved}]},
                          {"name": "peer", "description": "another model", "image_tokens": 7, "flops": None,
                           "results": [{"runtime": "Chromium WASM, 2 threads", "dtype": "q8", "total_ms": 9.0,
                                        "first_token_ms": 3.0, "per_token_ms": 2.0}]}]
    section = bench_report.markdown(report, None).split("Other architectures")[1].split("The floor")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith(f"| ours | onnxruntime | fp32 | {n} |") and rows[0].endswith("| 1.00 |")
    assert rows[1].startswith(f"| fewer | onnxruntime | fp32 | {n // 4} |") and rows[1].endswith("| 0.50 |")
    assert rows[2].startswith("| peer | Chromium WASM, 2 threads | q8 | 7 | - | - |") and rows[2].endswith("| - |")
    assert "**peer**: another model" in section
    # ours timed in turns with a variant (its `paired` row) is the row it is compared with
    report["variants"][0]["paired"] = [{"runtime": "onnxruntime", "dtype": "fp32", **{**ort_times, "total_ms": ort_times["total_ms"] / 4}}]
    section = bench_report.markdown(report, None).split("Other architectures")[1].split("The floor")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[1].startswith(f"| fewer | onnxruntime | fp32 | {n // 4} |") and rows[1].endswith("| 2.00 |")
    bench_report.plot(report, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_the_median_run_is_reported_whole():
    """Caption and first-token times come from the same run: the median caption and its own first token (the
    medians of each figure alone would pair caption 500 with first token 30, from another run)."""
    row = median_run([900.0, 300.0, 500.0], [30.0, 80.0, 20.0], tokens=5)
    assert (row["total_ms"], row["first_token_ms"]) == (500.0, 20.0)
    assert row["per_token_ms"] == pytest.approx((500.0 - 20.0) / 4)


def test_exports_are_timed_in_turns_and_each_median_round_kept():
    calls, times = [], iter([30.0, 10.0, 50.0, 20.0, 40.0, 15.0])

    def timer(export_dir, dtype, image, tokens, repeats, threads):
        calls.append(export_dir)
        return {"total_ms": next(times)}

    rows = interleaved_chromium({"a": "A", "b": "B"}, "image.png", 20, 3, 2, rounds=3, timer=timer)
    assert calls == ["A", "B", "A", "B", "A", "B"]
    assert rows == {"a": {"total_ms": 40.0}, "b": {"total_ms": 15.0}}


def test_fewer_tokens_shape_has_64_image_tokens():
    from distilvit.modeling.model import num_image_tokens
    from distilvit.modeling.realsize import FEWER_TOKENS, siglip_config

    assert num_image_tokens(siglip_config().vision_config) == 196
    vision = siglip_config(FEWER_TOKENS).vision_config
    assert num_image_tokens(vision) == 64 and vision.hidden_size == siglip_config().vision_config.hidden_size
    with pytest.raises(ValueError, match="no field"):
        siglip_config({"image_sizes": 256})


def _touch(mib: int) -> mmap.mmap:
    """`mib` MiB of fresh resident memory. An anonymous map, not a bytearray: malloc may hand a bytearray memory that
    an earlier test freed and that is still resident (CI: 0.008 MiB more for a 64 MiB bytearray after other tests)."""
    block = mmap.mmap(-1, mib * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    return block


@pytest.fixture
def sampler_starved():
    """The sampling thread gets no turn while the block runs, as can happen on a loaded machine: the main thread keeps
    the interpreter until it waits, and it waits only at the block's end."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    yield
    sys.setswitchinterval(before)


@pytest.mark.parametrize("kernel_mark", [True, False], ids=["kernel-mark", "samples-only"])
def test_peak_memory_counts_what_is_held_at_exit(kernel_mark, sampler_starved):
    with PeakMemory(kernel_mark=kernel_mark) as memory:
        while not memory.samples:  # the thread has sampled once and sleeps: it samples next after the block
            time.sleep(0.001)
        block = _touch(64)
    assert 60 < memory.mib < 64 + 32
    block.close()


def test_peak_memory_counts_a_spike_freed_before_exit(sampler_starved):
    with PeakMemory() as probe:
        pass
    if not probe._kernel_mark:
        pytest.skip("this OS does not let a process reset its resident high-water mark (/proc/self/clear_refs)")
    with PeakMemory() as memory:
        while not memory.samples:
            time.sleep(0.001)
        _touch(64).close()
    with PeakMemory() as held_nothing:
        pass
    assert memory.mib > 60 and held_nothing.mib < 16


def test_an_export_from_other_exporter_code_is_made_again(tmp_path):
    """The bench reuses its real-size export only when this checkout's exporter made it."""
    assert needs_export(tmp_path / "missing")
    (tmp_path / C.EXPORT_CONFIG).write_text(json.dumps({"exporter_digest": exporter_digest()}))
    assert not needs_export(tmp_path)
    (tmp_path / C.EXPORT_CONFIG).write_text(json.dumps({"exporter_digest": "0" * 64}))
    assert needs_export(tmp_path)
    (tmp_path / C.EXPORT_CONFIG).write_text(json.dumps({}))  # made before digests were recorded
    assert needs_export(tmp_path)
