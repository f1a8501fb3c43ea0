"""Greedy captioning from an exported repo layout with onnxruntime in Python: the same loop transformers.js runs.

Pipeline layout: encoder once, then the decoder with `input_ids = [BOS]` and an empty past (the graph prepends the
image prefix), then one token at a time. LLaVA layout: vision encoder, token embeddings with the image features
put at the `<image>` positions, then the decoder with explicit mask and positions. Both suppress the image token
and stop rows at EOS. `pixel_values` are decoded pixels [B, C, H, W] (float 0..255, distilvit.pixels.decode_rgba):
the encoder graph composites, resizes and normalises them itself. Used by export (quantized-vs-fp32 agreement) and by the parity check. This module knows
nothing about PyTorch models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from distilvit.export import constants as C
from distilvit.modeling.prompt import prefix_ids


@dataclass
class Generation:
    tokens: list[list[int]]  # per image, EOS excluded
    first_logits: np.ndarray  # [B, V] logits of the first generated position


def _session(path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtCaptioner:
    """Sessions for one dtype per graph of an export folder."""

    def __init__(self, export_dir: Path, dtypes: str | dict[str, str] = "fp32", threads: int | None = None):
        self.dir = Path(export_dir)
        config = json.loads((self.dir / "config.json").read_text())
        self.gen = json.loads((self.dir / "generation_config.json").read_text())
        self.layout = C.Layout.PIPELINE if config["model_type"] == "vision-encoder-decoder" else C.Layout.LLAVA
        graphs = C.GRAPHS[self.layout]
        per_graph = dtypes if isinstance(dtypes, dict) else {g: dtypes for g in graphs}
        self.files = {g: self.dir / C.onnx_file(g, per_graph[g]) for g in graphs}
        self.sessions = {g: _session(p, threads) for g, p in self.files.items()}
        channels = self.sessions[graphs[0]].get_inputs()[0].shape[1]
        if channels == 3:  # a fixed 3: resized, normalised pixels (an export of before the pixel graph)
            from distilvit.errors import UserError

            raise UserError(f"{self.dir} was exported by an earlier distilvit-web, whose encoder takes resized "
                            "pixels; re-export it (`distilvit-web export MODEL --output DIR --overwrite`)")
        self.image_token = config["image_token_index"]
        dec = self.sessions["decoder_model_merged"]
        self.past_inputs = [i for i in dec.get_inputs() if i.name.startswith("past_key_values.")]
        self.float_type = np.float16 if self.past_inputs[0].type == "tensor(float16)" else np.float32

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype=self.float_type) for i in self.past_inputs}

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        graph = C.GRAPHS[self.layout][0]
        return self.sessions[graph].run(None, {C.PIXEL_VALUES: pixel_values.astype(np.float32)})[0]

    def caption_files(self, paths: list, max_new_tokens: int | None = None) -> list[str]:
        """Greedy captions of image files, one by one (they differ in size), decoded by distilvit.pixels."""
        from distilvit.pixels import decode_rgba, raw_tensor

        return [self.caption(raw_tensor(decode_rgba(p)).numpy(), max_new_tokens)[0] for p in paths]

    def caption(self, pixel_values: np.ndarray, max_new_tokens: int | None = None) -> list[str]:
        """Greedy captions as text (the export's tokenizer.json, special tokens skipped)."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        return [tokenizer.decode(ids, skip_special_tokens=True).strip()
                for ids in self.generate(pixel_values, max_new_tokens).tokens]

    def generate(self, pixel_values: np.ndarray, max_new_tokens: int | None = None) -> Generation:
        max_new = max_new_tokens or self.gen.get("max_new_tokens") or 30
        eos = self.gen["eos_token_id"]
        batch = pixel_values.shape[0]
        tokens = [[] for _ in range(batch)]
        done = np.zeros(batch, dtype=bool)
        first_logits = None

        def greedy(step: int, logits: np.ndarray) -> np.ndarray | None:
            nonlocal first_logits
            if first_logits is None:
                first_logits = logits.copy()
            logits[:, self.image_token] = -np.inf
            nxt = logits.argmax(axis=-1)
            for i in range(batch):
                if not done[i]:
                    if nxt[i] == eos:
                        done[i] = True
                    else:
                        tokens[i].append(int(nxt[i]))
            return None if done.all() or step + 1 == max_new else nxt

        self._decode(pixel_values, greedy)
        return Generation(tokens, first_logits)

    def forced_logits(self, pixel_values: np.ndarray, forced: list[int]) -> np.ndarray:
        """[len(forced), V]: the decoder's logits at each step of generating `forced` (one image), each step fed
        the forced token rather than its own choice: teacher forcing through the same calls and KV cache as
        `generate`, so every step can be compared with another runtime's at the same position."""
        rows = []

        def force(step: int, logits: np.ndarray) -> np.ndarray | None:
            rows.append(logits[0].copy())
            return None if step + 1 == len(forced) else np.array([forced[step]], dtype=np.int64)

        self._decode(pixel_values[:1], force)
        return np.stack(rows)

    def _decode(self, pixel_values: np.ndarray, pick) -> None:
        """The decoding loop: prefill over the image prefix + BOS, then one call per token with the KV cache.
        `pick(step, logits [B, V] float32)` returns the next tokens [B], or None to stop."""
        bos = self.gen["bos_token_id"]
        batch = pixel_values.shape[0]
        features = self.image_features(pixel_values)  # [B, N, D]
        past = self._empty_past(batch)
        dec = self.sessions["decoder_model_merged"]
        present_names = [o.name for o in dec.get_outputs()][1:]
        if self.layout == C.Layout.PIPELINE:
            feeds = {C.INPUT_IDS: np.full((batch, 1), bos, dtype=np.int64), C.ENCODER_HIDDEN_STATES: features}
        else:
            ids = np.array([prefix_ids(self.image_token, bos, features.shape[1])] * batch, dtype=np.int64)
            embeds = self.sessions["embed_tokens"].run(None, {C.INPUT_IDS: ids})[0]
            embeds[:, : features.shape[1]] = features.astype(embeds.dtype)
            length = ids.shape[1]
            feeds = {C.INPUTS_EMBEDS: embeds, C.ATTENTION_MASK: np.ones((batch, length), dtype=np.int64),
                     C.POSITION_IDS: np.tile(np.arange(length, dtype=np.int64), (batch, 1))}
        step = 0
        while True:
            outputs = dec.run(None, {**feeds, **past})
            nxt = pick(step, outputs[0][:, -1, :].astype(np.float32))  # [B, V]
            if nxt is None:
                return
            step += 1
            past = dict(zip([n.replace("present.", "past_key_values.") for n in present_names], outputs[1:]))
            total = next(iter(past.values())).shape[2] + 1
            if self.layout == C.Layout.PIPELINE:
                feeds = {C.INPUT_IDS: nxt[:, None].astype(np.int64), C.ENCODER_HIDDEN_STATES: features}
            else:
                embeds = self.sessions["embed_tokens"].run(None, {C.INPUT_IDS: nxt[:, None].astype(np.int64)})[0]
                feeds = {C.INPUTS_EMBEDS: embeds, C.ATTENTION_MASK: np.ones((batch, total), dtype=np.int64),
                         C.POSITION_IDS: np.full((batch, 1), total - 1, dtype=np.int64)}


def time_caption(captioner: OrtCaptioner, pixel_values: np.ndarray, tokens: int = 20) -> dict[str, float]:
    """Milliseconds of one caption of exactly `tokens` tokens (EOS ignored): vision encoder, prefill (the first
    decoder step, over the image prefix + BOS), and the mean of the following single-token steps."""
    import time

    if captioner.layout != C.Layout.PIPELINE:
        raise ValueError("timing is implemented for the pipeline layout")
    dec = captioner.sessions["decoder_model_merged"]
    present_names = [o.name.replace("present.", "past_key_values.") for o in dec.get_outputs()][1:]
    t0 = time.perf_counter()
    features = captioner.image_features(pixel_values[:1])
    t1 = time.perf_counter()
    feeds = {C.INPUT_IDS: np.full((1, 1), captioner.gen["bos_token_id"], dtype=np.int64), C.ENCODER_HIDDEN_STATES: features}
    outputs = dec.run(None, {**feeds, **captioner._empty_past(1)})
    t2 = time.perf_counter()
    for _ in range(tokens - 1):
        nxt = outputs[0][:, -1, :].argmax(-1)
        past = dict(zip(present_names, outputs[1:]))
        outputs = dec.run(None, {C.INPUT_IDS: nxt[:, None].astype(np.int64), C.ENCODER_HIDDEN_STATES: features, **past})
    t3 = time.perf_counter()
    return {"encoder_ms": (t1 - t0) * 1e3, "prefill_ms": (t2 - t1) * 1e3,
            "per_token_ms": (t3 - t2) * 1e3 / max(tokens - 1, 1), "total_ms": (t3 - t0) * 1e3}
