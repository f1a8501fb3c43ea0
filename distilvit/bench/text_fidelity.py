"""How far a quantized decoder graph is from its fp32 graph on real English prose: the field's standard measure of a
quantized language model (next-token top-1 agreement with the reference, perplexity), run on the exported files
as generation runs them.

The prose is scikit-learn's dataset descriptions (`sklearn/datasets/descr/*.rst`, shipped in its wheel, BSD), split
into windows of `window` tokens. Each window is read three ways, for fp32 and for the candidate:
- teacher forced, token by token: one call for the image prefix + BOS, then one call per token with the KV cache
  (what generation does: each call quantizes, in a dynamic recipe, the activations of one position);
- prefill: single calls over the prefix + BOS + the window's first j tokens (j = every `window // 8`-th position),
  the regime of a long prompt, harsher for one activation scale per call;
- greedy continuation: after the window's first `prompt` tokens, `continuation` greedy tokens, compared whole.

The image prefix is one mid-grey picture through the export's encoder: the decoder reads prose after an image, as
it reads captions. A `--full-vocab` export is needed (a caption vocabulary restricts the logits to the captions'
tokens: `CaptionVocabError` says so).

What this module does not know: captions (distilvit/bench/quality.py scores those), or any runtime but onnxruntime
in Python (the same files run in transformers.js; Python onnxruntime and onnxruntime-node share kernels).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from distilvit.export import constants as C


class CaptionVocabError(ValueError):
    """The export generates only its captions' tokens, so prose cannot be scored on it."""


@dataclass(frozen=True)
class Prose:
    windows: list[list[int]]  # token ids, each `window` long
    source: str


@dataclass
class Reading:
    """What one graph made of the prose: per window, per position."""
    top1: np.ndarray  # [W, T] argmax at each teacher-forced position
    nll: np.ndarray  # [W, T] -log p(actual next token)
    prefill_top1: np.ndarray  # [W, J] argmax of the single prefill calls
    continuations: list[list[int]]  # per window, `continuation` greedy tokens


@dataclass(frozen=True)
class TextFidelity:
    tokens: int  # teacher-forced positions compared
    top1_agreement: float  # token by token with the KV cache, vs fp32's argmax
    perplexity: float
    fp32_perplexity: float
    prefill_positions: int
    prefill_top1_agreement: float
    continuations_equal: int
    continuations: int

    @property
    def perplexity_ratio(self) -> float:
        return self.perplexity / self.fp32_perplexity

    def as_dict(self) -> dict:
        return {**asdict(self), "perplexity_ratio": self.perplexity_ratio}


def prose(tokenizer_json: Path, windows: int, window: int) -> Prose:
    """`windows` windows of `window` tokens of scikit-learn's dataset descriptions, in file order."""
    import sklearn
    from tokenizers import Tokenizer

    folder = Path(sklearn.__file__).parent / "datasets" / "descr"
    files = sorted(folder.glob("*.rst"))
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in files)
    ids = Tokenizer.from_file(str(tokenizer_json)).encode(text, add_special_tokens=False).ids
    if len(ids) < windows * window:
        raise ValueError(f"{folder} holds {len(ids)} tokens; {windows} windows of {window} need more")
    return Prose([ids[i * window:(i + 1) * window] for i in range(windows)],
                 f"scikit-learn {sklearn.__version__} dataset descriptions ({len(files)} files)")


class _Decoder:
    """The pipeline layout's decoder graph of one dtype, fed as transformers.js feeds it."""

    def __init__(self, export_dir: Path, dtype: str, threads: int | None = None):
        from distilvit.export.ort_generate import OrtCaptioner

        self.captioner = OrtCaptioner(export_dir, dtype, threads)
        if self.captioner.layout != C.Layout.PIPELINE:
            raise ValueError("text fidelity is measured on the pipeline layout")
        vocab = self.captioner.sessions["decoder_model_merged"].get_outputs()[0].shape[-1]
        from tokenizers import Tokenizer

        size = Tokenizer.from_file(str(Path(export_dir) / "tokenizer.json")).get_vocab_size()
        if isinstance(vocab, int) and vocab < size - 1:
            raise CaptionVocabError(f"{export_dir}'s decoder scores {vocab} of {size} tokens (a caption vocabulary); "
                                    "measure prose on an export of a `--full-vocab` run")
        self.dec = self.captioner.sessions["decoder_model_merged"]
        self.present = [o.name.replace("present.", "past_key_values.") for o in self.dec.get_outputs()][1:]
        rgba = np.full((1, 4, 64, 64), 128.0, dtype=np.float32)
        rgba[:, 3] = 255.0
        self.features = self.captioner.image_features(rgba)
        self.bos = self.captioner.gen["bos_token_id"]

    def call(self, ids: list[int], past: dict | None) -> tuple[np.ndarray, dict]:
        feeds = {C.INPUT_IDS: np.array([ids], dtype=np.int64), C.ENCODER_HIDDEN_STATES: self.features}
        out = self.dec.run(None, {**feeds, **(past if past is not None else self.captioner._empty_past(1))})
        return out[0][0, -1].astype(np.float64), dict(zip(self.present, out[1:]))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - math.log(np.exp(shifted).sum())


def read(export_dir: Path, dtype: str, text: Prose, prompt: int = 16, continuation: int = 32, prefill: bool = True,
         threads: int | None = None) -> Reading:
    """One graph's reading of `text` (module docstring); `continuation` 0 and `prefill` False read teacher forced
    only (their figures are then empty)."""
    decoder = _Decoder(export_dir, dtype, threads)
    top1, nll, prefills, continued = [], [], [], []
    for ids in text.windows:
        logits, past = decoder.call([decoder.bos], None)
        w_top1, w_nll = [], []
        for i, token in enumerate(ids):
            w_top1.append(int(logits.argmax()))
            w_nll.append(-_log_softmax(logits)[token])
            if i + 1 < len(ids):
                logits, past = decoder.call([token], past)
        top1.append(w_top1)
        nll.append(w_nll)
        step = max(len(ids) // 8, 1)
        prefills.append([int(decoder.call([decoder.bos, *ids[:j]], None)[0].argmax())
                        for j in range(step, len(ids), step)] if prefill else [])
        out = []
        if continuation:
            logits, past = decoder.call([decoder.bos, *ids[:prompt]], None)
        for _ in range(continuation):
            nxt = int(logits.argmax())
            out.append(nxt)
            if len(out) < continuation:
                logits, past = decoder.call([nxt], past)
        continued.append(out)
    return Reading(np.array(top1), np.array(nll), np.array(prefills), continued)


def compare(candidate: Reading, fp32: Reading) -> TextFidelity:
    """The candidate's reading against fp32's."""
    return TextFidelity(
        tokens=int(fp32.top1.size),
        top1_agreement=float((candidate.top1 == fp32.top1).mean()),
        perplexity=float(np.exp(candidate.nll.mean())),
        fp32_perplexity=float(np.exp(fp32.nll.mean())),
        prefill_positions=int(fp32.prefill_top1.size),
        prefill_top1_agreement=float((candidate.prefill_top1 == fp32.prefill_top1).mean()) if fp32.prefill_top1.size
        else float("nan"),
        # empty continuations (read with continuation=0) are not compared: equal empty lists would say nothing
        continuations_equal=sum(a == b for a, b in zip(candidate.continuations, fp32.continuations) if b),
        continuations=sum(1 for b in fp32.continuations if b),
    )
