"""What a parity row must reach to pass (`Targets`), and which graph to suspect when fp32 misses: the pass rules
of `verify parity`, apart from how the figures are measured (`verify.parity`). It knows nothing about runtimes."""

from __future__ import annotations

from dataclasses import dataclass

from distilvit.limits import FP32_LOGITS_TOLERANCE, PIXEL_MAX_TOLERANCE, PIXEL_MEAN_TOLERANCE


# Graph outputs of fp32 farther than this from PyTorch point at a broken graph (validated exports are ~1e-5).
FP32_GRAPH_TOLERANCE = 1e-2
# A quantized dtype's mean KL(PyTorch fp32 || dtype) per teacher-forced step, over the ids reported: a bound on how
# far its rounding may move the distribution, from the worst sound export measured with margin (CPU, 2026-12-08,
# docs/parity.md; the real SmolLM2-135M decoder, a 240-step caption run and a 2-step full-vocabulary one: fp16
# 7.3e-6, q8 4.2e-3, int8 0.62, q4 0.42; the 6-step tiny model: all below 3.3e-4). It catches a graph that computes
# something else (the tiny model's projector negated: 0.24); a damaged weight within rounding's reach is the weights
# check's (quantize/rounding.py), not this bound's.
QUANTIZED_KL_BOUND = {"fp16": 1e-3, "q8": 0.05, "int8": 2.0, "uint8": 2.0, "q4": 4.0, "q4f16": 4.0, "bnb4": 4.0}


@dataclass(frozen=True)
class Targets:
    """What a (runtime, dtype) row must reach to pass: caption exact match with the same pixels (model) and with
    the runtime's own decoding (end to end; None: the model thresholds), every image's pixels within the
    same-pixels target, the teacher-forced logits (fp32: within `fp32_logits_tolerance` of PyTorch's; other dtypes:
    mean KL within QUANTIZED_KL_BOUND) and, for q8 and fp16, weights that are fp32's rounded (quantize/rounding.py). fp32
    has its own match thresholds (1.0: an export must say what PyTorch says)."""
    min_match: float = 0.0
    fp32_min_match: float = 1.0
    end_to_end_min_match: float | None = None
    fp32_end_to_end_min_match: float | None = None
    pixel_max: float = PIXEL_MAX_TOLERANCE
    pixel_mean: float = PIXEL_MEAN_TOLERANCE
    fp32_logits_tolerance: float = FP32_LOGITS_TOLERANCE

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
        out["logits"] = self.logits_check(entry)
        weights = entry.get("weights")
        if weights and not weights.get("skipped"):
            out["weights"] = {"value": {"checked": weights["checked"], "off": len(weights["off"])}, "target": 0,
                              "missed": weights["graphs_off"], "passed": not weights["off"]}
        pixels = entry.get("pixels")
        if pixels:
            missed = [r["image"] for r in pixels["images"] if r["image"] not in pixels["within_target"]]
            out["pixels"] = {"value": {"max_abs_diff": pixels["max_abs_diff"], "mean_abs_diff": pixels["mean_abs_diff"]},
                             "target": pixels["target"], "missed": missed, "passed": not missed}
        return out


    def logits_check(self, entry: dict) -> dict:
        """fp32: the largest logit difference within FP32_LOGITS_TOLERANCE; a quantized dtype: the mean KL within
        its QUANTIZED_KL_BOUND. No logits reported (a runtime that could not run an image) is a failure."""
        logits = entry.get("logits") or {}
        fp32 = entry["dtype"] == "fp32"
        key = "max_abs_diff" if fp32 else "kl_mean"
        value = logits.get(key)
        target = self.fp32_logits_tolerance if fp32 else QUANTIZED_KL_BOUND.get(entry["dtype"], 2.0)
        passed = value is not None and value <= target and not logits.get("missing")
        return {"value": value, "target": target, "measure": key, "passed": passed}


def suspect_graph(entry: dict) -> str | None:
    """The graph to look at: one whose weights are not fp32's rounded (any dtype), else, for fp32, the first whose
    outputs are far from PyTorch's (image features, token embeddings, then the decoder)."""
    weights = entry.get("weights") or {}
    if weights.get("graphs_off"):
        return weights["graphs_off"][0]
    if entry["dtype"] != "fp32":
        return None
    graphs = entry.get("graphs") or {}
    for graph, outputs in graphs.items():
        for diff in outputs.values():
            if diff["max_abs_diff"] > FP32_GRAPH_TOLERANCE:
                return graph
    return None


def captions_informative(captions: list[str]) -> dict:
    """Whether matching PyTorch's captions says anything: not when every caption is empty, or all are the same
    (a model that says one thing whatever it sees; any damage that keeps that one caption passes)."""
    empty = sum(1 for c in captions if not c)
    distinct = len({c for c in captions if c})
    if not captions or empty == len(captions):
        why = "are all empty"
    elif distinct == 1 and len(captions) > 1:
        why = f"are all {next(c for c in captions if c)!r}" + (f" or empty ({empty})" if empty else "")
    else:
        why = None
    return {"informative": why is None, "why": why, "empty": empty, "distinct": distinct}


def verdict_from(entry: dict, informative: dict) -> list[str]:
    """The checks whose pass means something here: captions only when PyTorch's captions are informative; the
    teacher-forced logits whenever steps were compared; weights where compared; pixels where measured."""
    checks = entry["checks"]
    out = []
    if informative["informative"]:
        out.append("captions")
    if (entry.get("logits") or {}).get("steps"):
        out.append("logits")
    if "weights" in checks:
        out.append("weights")
    if "pixels" in checks and checks["pixels"]["value"]["max_abs_diff"] is not None:
        out.append("pixels")
    return out
