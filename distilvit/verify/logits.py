"""Teacher-forced logits: a runtime's decoder logits at PyTorch's positions, compared with PyTorch's own.

Captions alone can hide a damaged graph: a weight matrix negated in the decoder moved the tiny model's logits by
0.1 while its 16 test captions stayed the same. So every runtime is also run with PyTorch's tokens forced at every
step (the same prefill and KV-cache calls as a caption; js/forced_logits.mjs in transformers.js,
`OrtCaptioner.forced_logits` in onnxruntime) and reports, per step, its logits at the WATCH ids (PyTorch's
likeliest tokens there and the forced ones) and its own TOP highest. `compare` then gives the largest absolute
difference from PyTorch's logits, the KL divergence of the two distributions over the ids both reported, and how
often the runtime's argmax is PyTorch's. verify.targets holds those to bounds per dtype. The distributions are
over the reported ids only (with a caption vocabulary: all the ids the model can generate; without one, the few
dozen that hold almost all of the probability), which is what decides greedy captions. `forced_reference` makes
PyTorch's side from the model. This module knows nothing about runtimes or files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distilvit.modeling import caption_vocab

WATCH_TOP = 16  # PyTorch's likeliest ids per step that every runtime reports
RUNTIME_TOP = 8  # the runtime's own highest logits per step it reports as well
CAPTION_VOCAB_WATCH_MAX = 4096  # a caption vocabulary up to this size is watched whole


@dataclass
class ForcedReference:
    """PyTorch's side: per image the tokens forced at each step (its greedy caption, then EOS where it stopped
    there) and its logits at those steps [steps, V] (masked as generation sees them); the ids watched."""
    forced: list[list[int]]
    logits: list[np.ndarray]
    watch: np.ndarray

    def request(self) -> dict:
        """What a JavaScript runtime needs to report (js/forced_logits.mjs)."""
        return {"forced": self.forced, "watch": [int(i) for i in self.watch], "top": RUNTIME_TOP}


def watch_ids(logits: list[np.ndarray], forced: list[list[int]], vocab: list[int] | None) -> np.ndarray:
    """The ids every runtime reports: a small caption vocabulary whole, else PyTorch's WATCH_TOP likeliest per step
    and every forced id."""
    if vocab and len(vocab) <= CAPTION_VOCAB_WATCH_MAX:
        return np.array(sorted(vocab), dtype=np.int64)
    ids = {int(t) for tokens in forced for t in tokens}
    for rows in logits:
        ids.update(int(i) for i in np.argsort(-rows, axis=-1)[:, :WATCH_TOP].ravel())
    return np.array(sorted(ids), dtype=np.int64)


def report(rows: np.ndarray, watch: np.ndarray) -> list[dict]:
    """What a runtime reports from full logits [steps, V]: as js/forced_logits.mjs does, in Python."""
    out = []
    for row in rows.astype(np.float64):
        finite = np.where(np.isfinite(row), row, -np.inf)
        top = np.argsort(-finite, kind="stable")[:RUNTIME_TOP]
        top = [int(i) for i in top if np.isfinite(row[i])]
        out.append({"watch": [float(v) if np.isfinite(v) else None for v in row[watch]],
                    "top_ids": top, "top_values": [float(row[i]) for i in top]})
    return out


def _softmax_log(values: np.ndarray) -> np.ndarray:
    shifted = values - values.max()
    return shifted - np.log(np.exp(shifted).sum())


def compare(reference: ForcedReference, reported: list[list[dict] | None], names: list[str]) -> dict:
    """Per step of every image: |runtime - PyTorch| over the ids reported (watched and the runtime's own top),
    KL(PyTorch || runtime) over those ids, argmax agreement. Images a runtime did not report are listed."""
    worst, worst_at, diffs, kls, agree, steps, missing = 0.0, None, [], [], 0, 0, []
    for i, (rows, got) in enumerate(zip(reference.logits, reported)):
        if got is None or len(got) != len(rows):
            missing.append(names[i])
            continue
        for step, (want, have) in enumerate(zip(rows.astype(np.float64), got)):
            values = {int(k): v for k, v in zip(reference.watch, have["watch"]) if v is not None}
            values.update({int(k): v for k, v in zip(have["top_ids"], have["top_values"])})
            ids = np.array([k for k in values if np.isfinite(want[k])], dtype=np.int64)
            if ids.size == 0:
                missing.append(f"{names[i]} step {step}")
                continue
            theirs = np.array([values[int(k)] for k in ids], dtype=np.float64)
            ours = want[ids]
            d = np.abs(theirs - ours)
            diffs.append(float(d.mean()))
            if d.max() > worst or worst_at is None:
                worst, worst_at = float(d.max()), {"image": names[i], "step": step, "token": int(ids[d.argmax()])}
            p_log, q_log = _softmax_log(ours), _softmax_log(theirs)
            kls.append(float((np.exp(p_log) * (p_log - q_log)).sum()))
            agree += int(ids[theirs.argmax()] == ids[ours.argmax()])
            steps += 1
    return {
        "steps": steps,
        "max_abs_diff": worst if steps else None,
        "mean_abs_diff": float(np.mean(diffs)) if diffs else None,
        "worst": worst_at,
        "kl_mean": float(np.mean(kls)) if kls else None,
        "kl_max": float(np.max(kls)) if kls else None,
        "top1_agreement": agree / steps if steps else None,
        "missing": missing,
    }


def forced_reference(model, prompt: torch.Tensor, pixels: torch.Tensor, tokens: list[list[int]],
                     max_new_tokens: int) -> ForcedReference:
    """PyTorch's logits at every step of its own captions, one forward per image over the prompt and the caption:
    the steps are those of generation (a caption that stopped early: one more step, the one that chose EOS)."""
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, int) else eos[0]
    vocab = caption_vocab.of(model.config)
    forced, rows = [], []
    with torch.no_grad():
        for i, caption in enumerate(tokens):
            steps = caption + [eos] if len(caption) < max_new_tokens else caption
            ids = torch.cat([prompt, torch.tensor([steps[:-1]], dtype=prompt.dtype)], dim=1)
            logits = model(input_ids=ids, pixel_values=pixels[i : i + 1], attention_mask=torch.ones_like(ids)).logits
            logits = caption_vocab.mask_logits(logits[0, prompt.shape[1] - 1 :], vocab)
            forced.append(steps)
            rows.append(logits.float().numpy())
    return ForcedReference(forced, rows, watch_ids(rows, forced, vocab))
