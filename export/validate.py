"""Validate an exported graph against the stock model: output names, then shapes, then values.

The reference is `LlavaForConditionalGeneration` itself (export.reference: its feature path, its embedding, its
forward with a DynamicCache), never the export wrappers the graphs were traced from, so an error in the rewrite
(export/llama_stack.py) fails here. Each graph runs on several input cases (batch 1 and 3; for decoders an empty
past, as on the first generation step, and a non-empty one, with 1 and 2 new tokens). Every output is compared
with a tolerance of ABS_TOLERANCE (per output) + REL_TOLERANCE x the reference's largest magnitude; all failures
are collected, one line per output with its max difference is logged, and a `ValidationError` lists them.
This module knows nothing about layouts or quantization.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from distilvit.export import constants as C
from distilvit.export.graphs import empty_past
from distilvit.export.onnx_export import GraphSpec
from distilvit.export.reference import graph_reference
from distilvit.modeling import caption_vocab

log = logging.getLogger(__name__)

ABS_TOLERANCE = {C.LOGITS: 1e-3}
DEFAULT_ABS_TOLERANCE = 1e-4
REL_TOLERANCE = 1e-3


class ValidationError(RuntimeError):
    """An exported graph disagrees with PyTorch; `failures` holds one line per problem."""

    def __init__(self, graph: str, failures: list[str]):
        self.graph, self.failures = graph, failures
        super().__init__(f"{graph}: {len(failures)} check(s) failed:\n  " + "\n  ".join(failures))


@dataclass
class OutputCheck:
    case: str
    output: str
    shape: list[int]
    max_abs_diff: float
    tolerance: float
    ok: bool


def session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def input_cases(spec: GraphSpec, model) -> list[tuple[str, tuple]]:
    """(label, inputs) for batch 1 and 3, and for decoders an empty and a non-empty past."""
    g = torch.Generator().manual_seed(1)
    cfg = model.config
    size, vocab = cfg.vision_config.image_size, cfg.text_config.vocab_size
    n_image, d_text = cfg.image_seq_length, cfg.text_config.hidden_size
    vocab_ids = caption_vocab.of(cfg)
    draw = (lambda shape: torch.tensor(vocab_ids)[torch.randint(0, len(vocab_ids), shape, generator=g)]) if vocab_ids \
        else (lambda shape: torch.randint(0, vocab, shape, generator=g))  # a decoder is fed ids it can generate
    cases = []
    for batch in (1, 3):
        if spec.input_names == [C.PIXEL_VALUES]:
            cases.append((f"batch {batch}", (torch.randn(batch, 3, size, size, generator=g),)))
        elif spec.input_names == [C.INPUT_IDS]:
            cases.append((f"batch {batch}", (torch.randint(0, vocab, (batch, 3), generator=g),)))
        elif spec.input_names[1] == C.ENCODER_HIDDEN_STATES:
            prefix = torch.randn(batch, n_image, d_text, generator=g)
            ids = draw((batch, 1))
            cases.append((f"batch {batch}, past 0", (ids, prefix, *empty_past(model, batch, 0, g))))
            ids2 = draw((batch, 2))
            cases.append((f"batch {batch}, past {n_image + 2}, 2 new", (ids2, prefix, *empty_past(model, batch, n_image + 2, g))))
        else:  # llava decoder
            for past_len, new in ((0, n_image + 1), (n_image + 2, 1)):
                embeds = torch.randn(batch, new, d_text, generator=g)
                mask = torch.ones(batch, past_len + new, dtype=torch.long)
                positions = (torch.arange(new) + past_len).unsqueeze(0).expand(batch, -1)
                cases.append((f"batch {batch}, past {past_len}, {new} new",
                              (embeds, mask, positions, *empty_past(model, batch, past_len, g))))
    return cases


def compare_output(label: str, name: str, want: torch.Tensor, have: np.ndarray, checks: list[OutputCheck],
                   failures: list[str]) -> None:
    """One output of one case against the stock model: a check appended, and a failure line when it is off."""
    want = want.float().numpy()
    if want.shape != have.shape:
        failures.append(f"[{label}] {name}: shape {list(have.shape)} != stock model {list(want.shape)}")
        return
    diff = float(np.abs(want - have.astype(np.float32)).max()) if want.size else 0.0
    # the relative part scales with the reference's magnitude; masked logits (caption_vocab.MASKED_LOGIT) carry none
    scale = np.abs(want[want != caption_vocab.MASKED_LOGIT])
    tol = ABS_TOLERANCE.get(name, DEFAULT_ABS_TOLERANCE) + REL_TOLERANCE * float(scale.max() if scale.size else 0)
    ok = bool(np.isfinite(have).all()) and diff <= tol
    checks.append(OutputCheck(label, name, list(have.shape), diff, tol, ok))
    if not ok:
        failures.append(f"[{label}] {name}: max abs diff {diff:.3g} > tolerance {tol:.3g}")


def validate_graph(spec: GraphSpec, model, path: Path) -> list[OutputCheck]:
    """Run every case through the stock model and onnxruntime; raise ValidationError listing every mismatch."""
    sess = session(path)
    got_names = [o.name for o in sess.get_outputs()]
    if got_names != spec.output_names:
        raise ValidationError(spec.name, [f"output names {got_names} != expected {spec.output_names}"])
    want_inputs = [i.name for i in sess.get_inputs()]
    if want_inputs != spec.input_names:
        raise ValidationError(spec.name, [f"input names {want_inputs} != expected {spec.input_names}"])
    checks, failures = [], []
    cases = input_cases(spec, model)
    for label, inputs in cases:
        expected = graph_reference(spec.input_names, model, inputs)
        got = sess.run(None, {n: t.numpy() for n, t in zip(spec.input_names, inputs)})
        for name, want, have in zip(spec.output_names, expected, got):
            compare_output(label, name, want, have, checks, failures)
    worst = {}
    for c in checks:
        worst[c.output] = max(worst.get(c.output, 0.0), c.max_abs_diff)
    for name, diff in list(worst.items())[:3]:
        log.info("  %s %s: max abs diff %.2e over %d cases", spec.name, name, diff, len(cases))
    if failures:
        raise ValidationError(spec.name, failures)
    return checks


def validate_pixels(model, path: Path, pixels) -> list[OutputCheck]:
    """The encoder graph with its pixel preparation (export/pixel_graph.py) against `distilvit.pixels.model_pixels`
    + the stock feature path, on raw images of 1 to 4 channels, up- and downscaled (`pixels`: a PixelPreparer)."""
    from distilvit.export.pixel_graph import raw_cases

    sess = session(path)
    output = sess.get_outputs()[0].name
    checks, failures = [], []
    for label, raw in raw_cases(pixels.size, torch.Generator().manual_seed(2)):
        want = graph_reference([C.PIXEL_VALUES], model, (pixels.prepare_raw(raw),))[0]
        have = sess.run(None, {C.PIXEL_VALUES: raw.numpy()})[0]
        compare_output(f"raw {label}", output, want, have, checks, failures)
    log.info("  pixel preparation + encoder %s: max abs diff %.2e over %d raw images", output,
             max((c.max_abs_diff for c in checks), default=0.0), len(checks))
    if failures:
        raise ValidationError(f"{path.stem} (raw pixels)", failures)
    return checks


def summary(checks: list[OutputCheck]) -> dict:
    """Per output: worst difference and tolerance, for export_config.json."""
    out: dict[str, dict] = {}
    for c in checks:
        entry = out.setdefault(c.output, {"max_abs_diff": 0.0, "tolerance": c.tolerance, "cases": 0})
        entry["max_abs_diff"] = max(entry["max_abs_diff"], c.max_abs_diff)
        entry["tolerance"] = min(entry["tolerance"], c.tolerance)
        entry["cases"] += 1
    return out


def as_dicts(checks: list[OutputCheck]) -> list[dict]:
    return [asdict(c) for c in checks]
