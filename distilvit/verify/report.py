"""Render a parity report (from `distilvit.verify.parity.verify_parity`) as a terminal table, JSON and Markdown, and add
its summary to an export's model card. Knows nothing about how the figures were measured.
"""

from __future__ import annotations

import json
from pathlib import Path

from distilvit.atomic import write_file

CARD_START = "<!-- distilvit-web parity -->"
CARD_END = "<!-- /distilvit-web parity -->"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x, fmt="{:.3g}") -> str:
    return "-" if x is None else fmt.format(x)


def _pixels(p: dict | None) -> str:
    """'max/mean' of the runtime's own decoding against Python's, and how many images it could not read."""
    if not p:
        return "-"
    failed = sum(1 for r in p["images"] if "error" in r)
    text = "-" if p["max_abs_diff"] is None else f"{p['max_abs_diff']:.3g}/{p['mean_abs_diff']:.2g}"
    return text + (f", {failed} unread" if failed else "")


def _status(entry: dict) -> str:
    """'ok', or 'FAIL' with each missed target: 'model 90% < 100%', 'end-to-end ...', 'pixels: 2 images'."""
    missed = []
    for name, check in entry["checks"].items():
        if check["passed"]:
            continue
        if name == "pixels":
            missed.append(f"pixels of {len(check['missed'])} image(s) over {check['target']['max_abs_diff']:g}/"
                          f"{check['target']['mean_abs_diff']:g}")
        elif name == "logits":
            label = "logits max diff" if check["measure"] == "max_abs_diff" else "logits KL"
            missed.append(f"{label} {_num(check['value'])} > {check['target']:g}" if check["value"] is not None
                          else "no logits compared")
        elif name == "weights":
            missed.append(f"weights not fp32's rounded in {', '.join(check['missed'])}")
        else:
            label = "model" if name == "model_match" else "end-to-end"
            missed.append(f"{label} {_pct(check['value'])} < {_pct(check['target'])}")
    if not missed and not entry.get("verdict_from", ["captions"]):
        missed.append("nothing informative compared")
    return "ok" if not missed else "FAIL (" + "; ".join(missed) + ")"


def rows(report: dict) -> list[list[str]]:
    out = []
    for e in report["results"]:
        graphs = e.get("graphs") or {}
        feats = next((v["image_features"] for v in graphs.values() if "image_features" in v), None)
        logits = e.get("logits") or {}
        div = e["model"]["first_divergence"]
        out.append([
            e["runtime"], e["dtype"],
            _pct(e["model"]["exact_match"]), _pct(e["end_to_end"]["exact_match"] if e["end_to_end"] else None),
            _pct(e["model"]["token_agreement"]),
            "-" if div is None else f"{div['image']}@{div['position']}",
            _num(e["model"]["bleu4_vs_pytorch"], "{:.3f}"), _num(e["model"]["cider_vs_pytorch"], "{:.2f}"),
            _pixels(e.get("pixels")),
            _num(feats and feats["max_abs_diff"]), _num(logits.get("max_abs_diff")), _num(logits.get("kl_mean")),
            f"{sum(e['sizes_bytes'].values()) / 1e6:.1f}", f"{e['load_ms']:.0f}", _num(e["median_caption_ms"], "{:.0f}"),
            ", ".join(e.get("verdict_from") or []) or "-",
            _status(e) + (f", suspect {e['suspect_graph']}" if e.get("suspect_graph") else ""),
        ])
    return out


HEADER = ["runtime", "dtype", "match (model)", "match (end-to-end)", "tokens", "first divergence", "BLEU-4",
          "CIDEr-D", "pixels max/mean diff", "features max diff", "logits max diff", "logits KL", "MB", "load ms",
          "caption ms", "verdict from", "status"]


def table(report: dict) -> str:
    data = [HEADER] + rows(report)
    widths = [max(len(r[i]) for r in data) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in data)


def cpu_line(report: dict) -> str:
    """`CPU: model (ISA; int8 kernel path; torch kernels). ` from a report's stamp (empty for reports written before
    it; torch kernels only where the stage had loaded torch)."""
    cpu = report.get("cpu")
    if not cpu:
        return ""
    torch_kernels = f"; torch kernels: {cpu['torch_kernels']}" if cpu.get("torch_kernels") else ""
    return (f"CPU: {cpu['model']} ({', '.join(cpu['isa']) or 'flags unknown'}; int8 kernels: "
            f"{cpu['int8_kernel_path']}{torch_kernels}). ")


def markdown(report: dict) -> str:
    lines = [f"# Parity report: {report['export']}", "",
             f"Source model: `{report['model']}`; layout `{report['layout']}`; {len(report['images'])} images; "
             f"max {report['max_new_tokens']} new tokens. {cpu_line(report)}Overall: "
             f"**{'passed' if report['passed'] else 'FAILED'}**.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    informative = report.get("captions_informative") or {"informative": True}
    if not informative["informative"]:
        lines += ["", f"PyTorch's captions {informative['why']}: a runtime matching them says little, so caption "
                  "matches are not counted as evidence here; the teacher-forced logits (and the weights and pixels "
                  "where compared) carry the verdict."]
    dependent = report.get("cpu_dependent_dtypes") or {}
    if dependent:
        lines += ["", f"{', '.join(dependent)}: full-range int8 weights, whose integer products can saturate on x86 "
                  "CPUs without VNNI (AVX2): there, onnxruntime and transformers.js in Node (native kernels) may "
                  "caption differently from Chromium (WebAssembly, exact) and from this report. Every other dtype "
                  "computes the same on every CPU (docs/export.md, \"Dynamic int8 and the CPU's int8 kernels\")."]
    divergent = [e for e in report["results"] if e["model"]["first_divergence"]]
    if divergent:
        lines += ["", "## First divergences (model parity)", ""]
        for e in divergent:
            d = e["model"]["first_divergence"]
            lines.append(f"- {e['runtime']} {e['dtype']}: {e['model']['divergences']} caption(s) differ; first "
                         f"{d['image']} at token {d['position']}: PyTorch \"{d['pytorch']}\" vs \"{d['runtime']}\"")
    pixel_rows = [(e, r) for e in report["results"] if e.get("pixels") for r in e["pixels"]["images"]
                  if "error" in r or r["max_abs_diff"] > e["pixels"]["target"]["max_abs_diff"]
                  or r["mean_abs_diff"] > e["pixels"]["target"]["mean_abs_diff"]]
    if pixel_rows:
        lines += ["", "## Images decoded differently from Python (end-to-end)", ""]
        seen = set()
        for e, r in pixel_rows:
            if (e["runtime"], r["image"]) in seen:  # the same decoding for every dtype
                continue
            seen.add((e["runtime"], r["image"]))
            what = r["error"] if "error" in r else f"max {r['max_abs_diff']:.3g}, mean {r['mean_abs_diff']:.3g}"
            lines.append(f"- {e['runtime']}: {r['image']}: {what}")
    lines += ["", "How to read this: docs/parity.md.", ""]
    return "\n".join(lines)


def write(report: dict, json_path: Path | None, markdown_path: Path | None) -> None:
    if json_path:
        write_file(json_path, json.dumps(report, indent=2) + "\n", "parity report")
    if markdown_path:
        write_file(markdown_path, markdown(report), "parity report")


def update_card(export_dir: Path, report: dict) -> None:
    """Put the parity table into the export's README.md (replacing an earlier one)."""
    card = Path(export_dir) / "README.md"
    text = card.read_text() if card.is_file() else ""
    if CARD_START in text:
        text = text.split(CARD_START)[0] + text.split(CARD_END, 1)[-1].lstrip("\n")
    section = "\n".join([CARD_START, "## Parity with PyTorch", "",
                         "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER),
                         *("| " + " | ".join(r) + " |" for r in rows(report)), CARD_END, ""])
    card.write_text(text.rstrip("\n") + "\n\n" + section)
