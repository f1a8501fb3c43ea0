"""Which checkpoint a run resumes from: the newest one whose files are all there and readable (a run killed while
saving leaves one that is not). It knows the Trainer's checkpoint file names, nothing else of training."""

from __future__ import annotations

import json
from pathlib import Path


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (a file missing, empty or unreadable), or None when it is complete."""
    import zipfile

    from safetensors import safe_open

    def weights(path):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                f.get_slice(key)  # header and offsets are checked; a truncated file fails here

    def archive(path):
        with zipfile.ZipFile(path) as z:  # torch.save's format: a file cut short has no central directory
            if z.testzip() is not None:
                raise ValueError("a member fails its CRC check")

    checks = {"trainer_state.json": lambda p: json.loads(p.read_text())["global_step"],
              "adapter_config.json": lambda p: json.loads(p.read_text()),
              "adapter_model.safetensors": weights, "optimizer.pt": archive, "scheduler.pt": archive}
    for name, check in checks.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            return f"{name} is missing or empty"
        try:
            check(path)
        except Exception as err:  # OSError, JSON, zip and safetensors' own errors alike: unusable
            return f"{name} is unreadable ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})"
    return None


def newest_complete_checkpoint(checkpoints: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint-N that is complete, and the newer ones skipped with the reason."""
    found = sorted((p for p in Path(checkpoints).glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                   key=lambda p: int(p.name[11:]), reverse=True) if Path(checkpoints).is_dir() else []
    skipped = []
    for folder in found:
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append((folder, problem))
    return None, skipped
