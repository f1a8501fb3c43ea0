"""What a parity row must reach to pass (`Targets`), and which graph to suspect when fp32 misses: the pass rules
of `verify parity`, apart from how the figures are measured (`verify.parity`). It knows nothing about runtimes."""

from __future__ import annotations

from dataclasses import dataclass

from distilvit.limits import PIXEL_MAX_TOLERANCE, PIXEL_MEAN_TOLERANCE


# Graph outputs of fp32 farther than this from PyTorch point at a broken graph (validated exports are ~1e-5).
FP32_GRAPH_TOLERANCE = 1e-2


@dataclass(frozen=True)
class Targets:
    """What a (runtime, dtype) row must reach to pass: caption exact match with the same pixels (model) and with
    the runtime's own decoding (end to end; None: the model thresholds), and every image's pixels within the
    same-pixels target. fp32 has its own match thresholds (1.0: an export must say what PyTorch says)."""
    min_match: float = 0.0
    fp32_min_match: float = 1.0
    end_to_end_min_match: float | None = None
    fp32_end_to_end_min_match: float | None = None
    pixel_max: float = PIXEL_MAX_TOLERANCE
    pixel_mean: float = PIXEL_MEAN_TOLERANCE

    def checks(self, entry: dict) -> dict:
        """{check: {"value", "target", "passed"}} for the entry's model match, end-to-end match and pixels."""
        fp32 = entry["dtype"] == "fp32"
        model_min = self.fp32_min_match if fp32 else self.min_match
        e2e_min = self.fp32_end_to_end_min_match if fp32 else self.end_to_end_min_match
        e2e_min = model_min if e2e_min is None else e2e_min
        out = {"model_match": {"value": entry["model"]["exact_match"], "target": model_min}}
        out["model_match"]["passed"] = out["model_match"]["value"] >= model_min
        if entry.get("end_to_end"):
            value = entry["end_to_end"]["exact_match"]
            out["end_to_end_match"] = {"value": value, "target": e2e_min, "passed": value >= e2e_min}
        pixels = entry.get("pixels")
        if pixels:
            missed = [r["image"] for r in pixels["images"] if r["image"] not in pixels["within_target"]]
            out["pixels"] = {"value": {"max_abs_diff": pixels["max_abs_diff"], "mean_abs_diff": pixels["mean_abs_diff"]},
                             "target": pixels["target"], "missed": missed, "passed": not missed}
        return out


def suspect_graph(entry: dict) -> str | None:
    """The graph whose fp32 outputs are far from PyTorch's (image features first, then the decoder)."""
    graphs = entry.get("graphs") or {}
    for graph, outputs in graphs.items():
        for diff in outputs.values():
            if diff["max_abs_diff"] > FP32_GRAPH_TOLERANCE:
                return graph
    return None
