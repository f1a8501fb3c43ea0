"""docs/benchmarks.md and its plot from a `distilvit-web bench` report. Knows nothing about how it was measured."""

from __future__ import annotations

from pathlib import Path

from distilvit.verify.report import cpu_line


def _ms(x) -> str:
    return "-" if x is None else f"{x:.1f}"


_WAYS = {"copy_read_write": "copy (read + write)", "sum_read": "sum (read only)", "torch_mm_1024": "torch 1024^3",
         "onnxruntime_matmul": "onnxruntime MatMul"}


def _ways(by: dict) -> str:
    """' (way a 12, way b 34)' for the rates a machine figure is the best of; '' for reports older than that."""
    return f" ({', '.join(f'{_WAYS.get(k, k)} {v:.0f}' for k, v in by.items())})" if by else ""


def _machine(m: dict) -> str:
    shape = "x".join(map(str, m.get("int8_gemm_shape", [])))
    return (f"memory bandwidth {m['memory_bandwidth_gbs']:.1f} GB/s{_ways(m.get('memory_bandwidth_by', {}))}, "
            f"fp32 matmul {m['matmul_gflops']:.0f} GFLOP/s{_ways(m.get('matmul_gflops_by', {}))}, "
            f"int8 GEMM {m.get('int8_gemm_gops', float('nan')):.0f} GOP/s (onnxruntime MatMulInteger); "
            f"onnxruntime's GEMMs on {shape}")


def markdown(report: dict, plot_name: str | None) -> str:
    m = report["machine"]
    base = next(r for r in report["results"] if r["runtime"] == "PyTorch eager")
    lines = [
        "# Benchmarks: caption latency against the machine's floor", "",
        "Written by `distilvit-web bench` (SigLIP-base/16 + SmolLM-135M shapes, random weights built from configs, "
        f"{_vocab(report)}, "
        f"one 224 px image, exactly {report['tokens']} generated tokens, median of {report['repeats']} after a "
        f"warm-up). Machine: {report['platform']}, {cpu_line(report)}measured with {m['threads']} threads (the runtimes' default), each "
        f"rate the best of the ways measured: {_machine(m)}; {report['created']}.", "",
        "| runtime | dtype | encoder ms | prefill ms | first token ms | per token ms | caption ms | x PyTorch | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(f"| {r['runtime']} | {r['dtype']} | {_ms(r.get('encoder_ms'))} | {_ms(r.get('prefill_ms'))} | "
                     f"{_ms(r.get('first_token_ms') or (r.get('encoder_ms', 0) + r.get('prefill_ms', 0)))} | "
                     f"{_ms(r.get('per_token_ms'))} | {_ms(r['total_ms'])} | {r['total_ms'] / base['total_ms']:.2f} | "
                     f"{_ms(r.get('peak_mib'))} |")
    ratios = [f"{r['runtime']} {r['dtype']} / PyTorch fp32 = **{r['total_ms'] / base['total_ms']:.2f}**"
              for r in report["results"] if r["dtype"] == "q8"]
    lines += ["", "Caption time ratios: " + "; ".join(ratios) + ". Peak MiB is the resident memory each runtime adds "
              "while loading and running the model, each in a fresh process. transformers.js reports the first token "
              "(JavaScript preprocessing + encoder + prefill) as one figure."]
    browser = [r for r in report["results"] if r["runtime"].startswith("Chromium")]
    if browser:
        lines += ["", "In the browser: stock transformers.js in Chromium on WebAssembly (`web-demo/bench.html`, the page "
                  "served from 127.0.0.1 with cross-origin isolation; files loaded without the browser cache):", "",
                  "| dtype | threads | model load s | first caption ms | caption ms (median) | first token ms | per token ms |",
                  "|---|---|---|---|---|---|---|"]
        for r in browser:
            lines.append(f"| {r['dtype']} | {r['threads']} | {r['load_ms'] / 1000:.1f} | {_ms(r['first_caption_ms'])} | "
                         f"{_ms(r['total_ms'])} | {_ms(r['first_token_ms'])} | {_ms(r['per_token_ms'])} |")
    lines += variants_section(report)
    lines += photo_sizes_section(report)
    lines += floor_section(report)
    lines += ["", "| dtype | encoder_model MB | decoder_model_merged MB |", "|---|---|---|"]
    for dtype, sizes in report["sizes_bytes"].items():
        lines.append(f"| {dtype} | {sizes['encoder_model'] / 1e6:.1f} | {sizes['decoder_model_merged'] / 1e6:.1f} |")
    if plot_name:
        lines += ["", f"![caption latency by runtime and stage]({plot_name})"]
    return "\n".join(lines) + "\n"


def floor_section(report: dict) -> list[str]:
    """The floor per stage and dtype, and how far each runtime's stages sit above it."""
    floor = report["floor"]
    lines = ["", "The floor on this machine (a stage cannot be faster than this; q8/int8/uint8 compute with int8 GEMMs, "
              "every other dtype in fp32):", "", "| stage | dtype | floor | from |", "|---|---|---|---|"]
    for stage, label in (("encoder_ms", "vision encoder"), ("prefill_ms", "prefill")):
        gflop = report["flops"][stage.removesuffix("_ms")] / 1e9
        for dtype, ms in floor[stage].items():
            source = "int8 GEMM GOP/s" if dtype in ("q8", "int8", "uint8") else "fp32 matmul FLOP/s"
            lines.append(f"| {label} | {dtype} | {ms:.1f} ms | {gflop:.1f} GFLOP / measured {source} |")
    for dtype, ms in floor["per_token_ms"].items():
        lines.append(f"| per token | {dtype} | {ms:.1f} ms | decoder bytes read per token / measured bandwidth |")
    lines += ["", "How far each stage sits above its floor (below 1.0x would mean the floor is wrong, and is marked):", "",
              "| runtime | dtype | encoder | prefill | per token |", "|---|---|---|---|---|"]

    def ratio(value, stage: str, dtype: str) -> str:
        limit = floor[stage].get(dtype, floor[stage].get("fp32")) if isinstance(floor[stage], dict) else floor[stage]
        if value is None or not limit:
            return "-"
        return f"{value / limit:.1f}x" + (" (below the floor: the floor is wrong)" if value < limit else "")

    for r in report["results"]:
        lines.append(f"| {r['runtime']} | {r['dtype']} | {ratio(r.get('encoder_ms'), 'encoder_ms', r['dtype'])} | "
                     f"{ratio(r.get('prefill_ms'), 'prefill_ms', r['dtype'])} | "
                     f"{ratio(r.get('per_token_ms'), 'per_token_ms', r['dtype'])} |")
    return lines


def _vocab(report: dict) -> str:
    tokens = report.get("caption_vocab_tokens")
    return (f"a caption vocabulary of {tokens:,} tokens (an assumed size; train logs a model's own)" if tokens
            else "the full vocabulary in the output head")


def photo_sizes_section(report: dict) -> list[str]:
    """Caption time and page memory by photo size (`report["photo_sizes"]`), in Chromium WebAssembly."""
    rows = report.get("photo_sizes") or []
    if not rows:
        return []
    lines = ["", "## Photo sizes in the page", "",
             f"q8 in Chromium WebAssembly with {rows[0]['threads']} threads, the image decoded as the demo does "
             "(web-demo/decode.js: the browser's decoder, then the block reduction of a photo of 6S pixels or more a "
             "side); caption = decode + preprocessing + encoder + every token. Peak memory: the page's renderer "
             "processes above what they held before the model loaded (model included); the difference from the 224 px "
             "row is how far the photo raised the page's peak. Targets: a 12 MP photo within 1.25x of the 224 px caption time, "
             "its page memory within 250 MB of the 224 px one.", "",
             "| photo | file MB | first token | caption | vs 224 px | page peak MiB | vs 224 px |", "|---|---|---|---|---|---|---|"]
    base = rows[0].get("page_peak_mib")
    for r in rows:
        peak = r.get("page_peak_mib")
        lines.append(f"| {r['photo']} | {r['file_mb']:.1f} | {_ms(r['first_token_ms'])} | {_ms(r['total_ms'])} | "
                     f"{r['vs_224']:.2f}x | {'-' if peak is None else f'{peak:.0f}'} | "
                     f"{'-' if peak is None or base is None else f'{peak - base:+.0f}'} |")
    return lines


def variants_section(report: dict) -> list[str]:
    """Each other architecture measured in the run (`report["variants"]`: a 64-token vision tower, the full
    vocabulary, the peer),
    row by row beside the default's row of the same runtime and dtype."""
    variants = report.get("variants") or []
    if not variants:
        return []
    lines = ["", "Other architectures, measured in the same run, each row beside ours (the default: "
             f"{report['image_tokens']} image tokens, {report['image_size']} px in {report['patch_size']} px patches, "
             f"{_vocab(report)}). "
             "Every prefix token costs in the vision encoder, in the prefill and, through the key/value cache each "
             "step carries, in every generated token:", ""]
    for v in variants:
        lines.append(f"- **{v['name']}**: {v['description']}")
    lines += ["", "| model | runtime | dtype | image tokens | encoder GFLOP | prefill GFLOP | first token ms | per token ms | caption ms | x ours |",
              "|---|---|---|---|---|---|---|---|---|---|"]

    def gflop(flops, key):
        return f"{flops[key] / 1e9:.1f}" if flops else "-"

    for v in variants:
        for row in v["results"]:
            # ours timed in turns with the variant when it was (its `paired` rows), else ours from the main table
            candidates = list(v.get("paired") or []) + report["results"]
            ours = next((r for r in candidates if r["runtime"] == row["runtime"] and r["dtype"] == row["dtype"]), None)
            pairs = ([("ours", ours, report["image_tokens"], report["flops"])] if ours else []) + \
                    [(v["name"], row, v["image_tokens"], v.get("flops"))]
            for name, r, tokens, flops in pairs:
                first = r.get("first_token_ms") or (r.get("encoder_ms", 0) + r.get("prefill_ms", 0))
                ratio = f"{r['total_ms'] / ours['total_ms']:.2f}" if ours else "-"
                lines.append(f"| {name} | {r['runtime']} | {r['dtype']} | {tokens} | {gflop(flops, 'encoder')} | "
                             f"{gflop(flops, 'prefill')} | {_ms(first)} | {_ms(r.get('per_token_ms'))} | "
                             f"{_ms(r['total_ms'])} | {ratio} |")
    return lines


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, encoder, prefill, decode = [], [], [], []
    for r in report["results"]:
        labels.append(f"{r['runtime']}\n{r['dtype']}")
        first = r.get("first_token_ms")
        encoder.append(r.get("encoder_ms") or 0.0)
        prefill.append(r.get("prefill_ms") if first is None else first)
        decode.append(r["per_token_ms"] * (report["tokens"] - 1))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(labels, encoder, label="vision encoder")
    ax.bar(labels, prefill, bottom=encoder, label="prefill (first token for transformers.js: all of it)")
    ax.bar(labels, decode, bottom=[a + b for a, b in zip(encoder, prefill)], label=f"{report['tokens'] - 1} decode steps")
    floor = report["floor"]
    q8_floor = (floor["encoder_ms"].get("q8", 0) + floor["prefill_ms"].get("q8", 0)
                + floor["per_token_ms"].get("q8", 0) * (report["tokens"] - 1))
    ax.axhline(q8_floor, color="black", linestyle="--", linewidth=1, label="q8 floor on this machine")
    ax.set_ylabel("ms per caption")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
