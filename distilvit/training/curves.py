"""A run's training curves and its console log lines, both from the Trainer's log entries.

`plot_curves` draws the training loss and the validation metrics against optimizer steps into
RUN/training_curves.png (matplotlib, no display needed), replacing the file whole each time; train calls it at every
evaluation and at the end, so a long run's curve can be looked at while it trains. `log_line` is what the console
shows for one log entry: numbers printed as numbers (transformers' own progress callback prints a dict of strings).
This module knows nothing about models or the Trainer beyond the keys of its log entries.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

CURVES_FILE = "training_curves.png"
METRICS = ("eval_cider", "eval_bleu4", "eval_rougeL", "eval_exact_match")
NAMES = {"eval_cider": "CIDEr-D", "eval_bleu4": "BLEU-4", "eval_rougeL": "ROUGE-L", "eval_exact_match": "exact match"}


def series(log_history: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of every entry that has `key` (a number), in log order."""
    return [(int(e["step"]), float(e[key])) for e in log_history
            if key in e and "step" in e and isinstance(e[key], (int, float)) and math.isfinite(e[key])]


def plot_curves(log_history: list[dict], path: Path, best_metric: str | None = None) -> Path | None:
    """Draw the loss and validation metrics of `log_history` into `path` (PNG); None when there is nothing to draw
    yet (no loss and no evaluation logged)."""
    from distilvit.atomic import write_file

    loss = series(log_history, "loss")
    evals = {k: series(log_history, k) for k in METRICS}
    evals = {k: v for k, v in evals.items() if v}
    if not loss and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    try:
        if loss:
            left.plot(*zip(*loss), label="training loss")
        eval_loss = series(log_history, "eval_loss")
        if eval_loss:
            left.plot(*zip(*eval_loss), "o-", label="validation loss")
        left.set_xlabel("optimizer step")
        left.set_title("loss")
        left.grid(alpha=0.3)
        if loss or eval_loss:
            left.legend()
        for key, points in evals.items():
            width = 2.5 if best_metric and key == f"eval_{best_metric}" else 1.2
            right.plot(*zip(*points), "o-", linewidth=width, label=NAMES[key])
        right.set_xlabel("optimizer step")
        right.set_title("validation" + (f" (best checkpoint by {best_metric})" if best_metric else ""))
        right.grid(alpha=0.3)
        if evals:
            right.legend()
        else:
            right.text(0.5, 0.5, "no evaluation yet (--eval-steps)", ha="center", va="center", transform=right.transAxes)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    write_file(Path(path), buffer.getvalue(), "training curves")
    return Path(path)


def log_line(step: int, max_steps: int, logs: dict) -> str:
    """One console line for a log entry: `step 200/4000  loss 1.234  grad_norm 0.5  learning_rate 0.002 ...`."""
    parts = [f"step {step}/{max_steps}"]
    for key, value in logs.items():
        if key == "total_flos":
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key} {value}")
    return "  ".join(parts)
