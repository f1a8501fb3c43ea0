"""The run folder's policy: what `train` may do with `--output-dir` (start, resume, skip, refuse), and the run
`--overwrite` set aside coming back when its replacement stopped before its first checkpoint.

It reads train_config.json (`distilvit.config`) and the checkpoints folder's names; it knows nothing about models,
data or the Trainer.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from distilvit.atomic import check_creatable, owner_alive, put_back
from distilvit.config import CONFIG_FILE, RESULT_NEUTRAL, TrainConfig
from distilvit.errors import UserError
from distilvit.modeling.merge import CHECKPOINTS_DIR, MERGED_DIR

log = logging.getLogger(__name__)


def run_state(run_dir: Path) -> str:
    """'new' (absent or empty), 'finished' (merged/ written), 'partial' (a run without merged/), or 'other'."""
    run_dir = Path(run_dir)
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not (run_dir / CONFIG_FILE).is_file():
        return "other"
    return "finished" if (run_dir / MERGED_DIR / "config.json").is_file() else "partial"


def check_output_dir(config: TrainConfig, resume: bool, overwrite: bool) -> str:
    """Decide what to do with the output folder: 'fresh', 'resume' or 'done'; refuse what would lose work."""
    out = Path(config.output_dir)
    check_creatable(out, "training run")
    state = run_state(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out} is a file; choose a folder")
    if state == "other":
        raise UserError(f"--output-dir {out} is not empty and holds no training run; choose an empty or new folder")
    if overwrite:
        if resume:
            raise UserError("--resume and --overwrite contradict each other; pass one")
        return "fresh"
    if state == "new":
        if resume:
            raise UserError(f"nothing to resume: {out} holds no training run")
        return "fresh"
    saved = TrainConfig.load(out)
    diff = {k: (v, getattr(config, k)) for k, v in saved.to_json().items()
            if k not in RESULT_NEUTRAL and getattr(config, k) != v}  # a moved run is the same run
    if diff:
        listed = "; ".join(f"{k}: saved {old!r}, given {new!r}" for k, (old, new) in diff.items())
        raise UserError(f"{out} holds a run trained with other settings ({listed}); continue it with its own settings "
                        f"(train --output-dir {out} --resume) or choose another --output-dir")
    if state == "finished":
        return "done"
    if not resume:
        raise UserError(f"{out} holds an unfinished run; pass --resume to continue it with its saved settings, or "
                        f"choose another --output-dir")
    return "resume"


def has_checkpoint(out: Path) -> bool:
    """Whether the run in `out` saved a checkpoint (the Trainer makes the checkpoints folder before its first)."""
    return any((out / CHECKPOINTS_DIR).glob("checkpoint-*"))


def recover_replaced(out: Path) -> None:
    """A run `train --overwrite` set aside (`.NAME.old-*`) whose replacement was killed: back in NAME when the
    replacement wrote no checkpoint (nothing of it is worth keeping), else removed (the replacement can be resumed).
    A folder another live process set aside is left alone."""
    for aside in sorted(out.parent.glob(f".{out.name}.old-*")):
        if not aside.is_dir() or owner_alive(aside) or not (aside / CONFIG_FILE).is_file():
            continue
        if has_checkpoint(out):
            shutil.rmtree(aside, ignore_errors=True)
            log.warning("removed %s: the run that replaced it in %s has checkpoints", aside, out)
        else:
            put_back(aside, out)
            log.warning("restored the previous run in %s from %s: the run started to replace it was stopped before "
                        "its first checkpoint", out, aside.name)
