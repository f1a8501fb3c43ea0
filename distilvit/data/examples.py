"""Write a few held-out synthetic images (and their reference captions) as PNG files to a folder.

Used by `make quickstart` to have images to caption, and as sample images for demos. The images come from the
synthetic test split, which training never sees. Run: `python -m distilvit.data.examples OUT_DIR [--count N] [--seed S]`.
This module knows nothing about models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distilvit.data.synthetic import make_synthetic_splits


def write_examples(folder: Path, count: int = 4, seed: int = 0) -> list[Path]:
    """Write `count` test-split images as `folder/example-<i>.png` and `folder/captions.json`; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    test = make_synthetic_splits(seed=seed, train_size=1, validation_size=1, test_size=count)["test"]
    paths, references = [], {}
    for i, row in enumerate(test):
        path = folder / f"example-{i}.png"
        row["image"].save(path)
        paths.append(path)
        references[path.name] = row["captions"][0]
    (folder / "captions.json").write_text(json.dumps(references, indent=2) + "\n")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_examples(args.folder, args.count, args.seed):
        print(path)


if __name__ == "__main__":
    main()
