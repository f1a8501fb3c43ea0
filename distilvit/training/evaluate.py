"""Generation-based evaluation: caption a split with a model and score it (BLEU-4, ROUGE-L, CIDEr-D, exact match).

Used during training (the validation split every `--eval-steps`, sharded across processes), at its end (the
test split), and by `distilvit-web evaluate MODEL_DIR --dataset ...`. This module knows nothing about the
Trainer or about how the model was trained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from distilvit.atomic import check_writable_file, write_file
from distilvit.metrics import all_scores
from distilvit.modeling.caption import Captioner, load_captioner

log = logging.getLogger(__name__)


def caption_split(captioner: Captioner, rows, batch_size: int = 32) -> tuple[list[str], list[list[str]]]:
    """Captions for every row of a dataset split, and the rows' reference captions."""
    predictions, references = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows.select(range(start, min(start + batch_size, len(rows))))
        predictions += captioner.caption([r["image"] for r in chunk], batch_size=batch_size)
        references += [list(r["captions"]) for r in chunk]
    return predictions, references


def score_split(captioner: Captioner, rows, batch_size: int = 32) -> tuple[dict[str, float], list[dict]]:
    """Metrics for a split and the first examples (prediction and references) for the report."""
    predictions, references = caption_split(captioner, rows, batch_size)
    examples = [{"prediction": p, "references": r} for p, r in zip(predictions[:10], references[:10])]
    return all_scores(predictions, references), examples


def evaluate_model(model_dir: Path, specs: list[str], split: str = "test", sample: int | None = None, seed: int = 0,
                   batch_size: int = 32, output: Path | None = None, device: str = "auto",
                   num_proc: int | None = None) -> dict:
    """`distilvit-web evaluate`: score a merged model on a dataset split; write JSON when `output` is given."""
    from distilvit.data import load_caption_splits
    from distilvit.errors import UserError

    from distilvit.training.device import inference_device

    if output:
        check_writable_file(output, "evaluation report")  # before minutes of captioning
    captioner = load_captioner(model_dir, device=inference_device(device))
    splits = load_caption_splits(specs, seed=seed, num_proc=num_proc)
    if split not in splits:
        raise UserError(f"split {split!r} not found; the data has {', '.join(splits)}")
    rows = splits[split]
    if sample:
        rows = rows.select(range(min(sample, len(rows))))
    metrics, examples = score_split(captioner, rows, batch_size)
    result = {"model": str(model_dir), "datasets": specs, "split": split, "num_images": len(rows),
              "device": str(next(captioner.model.parameters()).device),
              "metrics": metrics, "examples": examples}
    if output:
        write_file(output, json.dumps(result, indent=2) + "\n", "evaluation report")
    return result
