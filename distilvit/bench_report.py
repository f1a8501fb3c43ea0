"""docs/benchmarks.md and its plot from a `distilvit-web bench` report. Knows nothing about how it was measured."""

from __future__ import annotations

from pathlib import Path


def _ms(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def markdown(report: dict, plot_name: str | None) -> str:
    m, floor = report["machine"], report["floor"]
    base = next(r for r in report["results"] if r["runtime"] == "PyTorch eager")
    lines = [
        "# Benchmarks: caption latency against the machine's floor", "",
        "Written by `distilvit-web bench` (SigLIP-base/16 + SmolLM-135M shapes, random weights built from configs, "
        f"one 224 px image, exactly {report['tokens']} generated tokens, median of {report['repeats']} after a "
        f"warm-up). Machine: {report['platform']}, {m['threads']} torch threads; measured memory bandwidth "
        f"{m['memory_bandwidth_gbs']:.1f} GB/s (large copy, read + write), fp32 matmul {m['matmul_gflops']:.0f} GFLOP/s; "
        f"{report['created']}.", "",
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
    lines += ["", "The floor on this machine (a stage cannot be faster than this):", "",
              "| stage | floor | from |", "|---|---|---|",
              f"| vision encoder | {floor['encoder_ms']:.1f} ms | {report['flops']['encoder'] / 1e9:.1f} GFLOP / measured matmul FLOP/s |",
              f"| prefill | {floor['prefill_ms']:.1f} ms | {report['flops']['prefill'] / 1e9:.1f} GFLOP / measured matmul FLOP/s |"]
    for dtype, ms in floor["per_token_ms"].items():
        lines.append(f"| per token, {dtype} | {ms:.1f} ms | decoder file bytes / measured bandwidth |")
    lines += ["", "How far each stage sits above its floor:", "", "| runtime | dtype | encoder | prefill | per token |",
              "|---|---|---|---|---|"]
    for r in report["results"]:
        token_floor = floor["per_token_ms"].get(r["dtype"])
        ratio = lambda x, f: "-" if x is None or not f else f"{x / f:.1f}x"
        lines.append(f"| {r['runtime']} | {r['dtype']} | {ratio(r.get('encoder_ms'), floor['encoder_ms'])} | "
                     f"{ratio(r.get('prefill_ms'), floor['prefill_ms'])} | {ratio(r.get('per_token_ms'), token_floor)} |")
    lines += ["", "| dtype | encoder_model MB | decoder_model_merged MB |", "|---|---|---|"]
    for dtype, sizes in report["sizes_bytes"].items():
        lines.append(f"| {dtype} | {sizes['encoder_model'] / 1e6:.1f} | {sizes['decoder_model_merged'] / 1e6:.1f} |")
    if plot_name:
        lines += ["", f"![caption latency by runtime and stage]({plot_name})"]
    return "\n".join(lines) + "\n"


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
    q8_floor = floor["encoder_ms"] + floor["prefill_ms"] + floor["per_token_ms"].get("q8", 0) * (report["tokens"] - 1)
    ax.axhline(q8_floor, color="black", linestyle="--", linewidth=1, label="q8 floor on this machine")
    ax.set_ylabel("ms per caption")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
