"""What every stage writes beside its output so a result can be traced: library versions, time, host facts.

This module knows nothing about the stages themselves.
"""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib import metadata

LIBRARIES = ("distilvit-web", "torch", "transformers", "peft", "datasets", "accelerate", "tokenizers", "pillow",
             "onnx", "onnxruntime", "onnxslim")


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def stamp() -> dict:
    """Versions, UTC time and platform, for a `*_config.json` or `*_info.json`."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "versions": versions(),
    }
