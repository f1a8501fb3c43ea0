"""Make the three splits train / validation / test from the prepared parts a source has.

Rules, in order (documented in docs/training.md):
1. All three present: kept as they are.
2. A split is missing and the rows to split carry a `split` column whose values are all split names
   (`train`, `val`/`validation`/`dev`, `test`, `restval` counted as train): rows go where that column says.
   Mozilla/flickr30k-transformed-captions-gpt4o is this case: its one Hub split `test` holds all 31,014 images and
   its `split` column is the Karpathy split (29,000 / 1,014 / 1,000).
3. Otherwise by image: the missing splits get SPLIT_OFF_FRACTION of the rows each (at least one), taken off train
   when there is a train split, else off all rows (a lone `test` or `train` split says nothing about use). Rows
   are ordered by sha256(seed, image content hash) and taken whole image by image, so the same image never lands
   in two splits, and the result depends on the seed and the images, not on file names or row order.

This module knows nothing about files, columns other than `split`, or captions.
"""

from __future__ import annotations

import hashlib
import logging

import datasets

from distilvit.data.prepare import Part
from distilvit.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation", "restval": "train"}
SPLIT_OFF_FRACTION = 0.05


def split_name(name) -> str | None:
    """`name` as one of SPLITS, or None when it is not a split name."""
    if not isinstance(name, str):
        return None
    name = SPLIT_ALIASES.get(name.strip().lower(), name.strip().lower())
    return name if name in SPLITS else None


def _concat(parts: list[datasets.Dataset]) -> datasets.Dataset:
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _assign(pool: list[Part], targets: dict[tuple[int, int], str]) -> dict[str, list[Part]]:
    """Parts per split from `targets`: (part index, row) -> split name."""
    out: dict[str, list[Part]] = {}
    for split in SPLITS:
        for p, part in enumerate(pool):
            rows = [r for r in range(len(part.dataset)) if targets.get((p, r)) == split]
            if rows:
                out.setdefault(split, []).append(Part(part.dataset.select(rows), [part.keys[r] for r in rows],
                                                      None, part.source))
    return out


def _by_column(pool: list[Part]) -> dict[tuple[int, int], str] | None:
    if not pool or any(part.split_values is None for part in pool):
        return None
    targets = {}
    for p, part in enumerate(pool):
        for r, value in enumerate(part.split_values):
            name = split_name(value)
            if name is None:
                return None
            targets[(p, r)] = name
    return targets


def _by_image(pool: list[Part], missing: list[str], seed: int, spec: str, source: str) -> dict[tuple[int, int], str]:
    groups: dict[str, list[tuple[int, int]]] = {}
    for p, part in enumerate(pool):
        for r, key in enumerate(part.keys):
            groups.setdefault(key, []).append((p, r))
    total = sum(len(part.dataset) for part in pool)
    if len(groups) < len(missing) + 1:
        raise UserError(f"dataset {spec!r} has only {len(groups)} distinct image(s), too few to split off "
                        f"{'/'.join(missing)}; add more examples (at least {len(missing) + 1} different images)")
    n_off = max(1, round(SPLIT_OFF_FRACTION * total))
    order = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    targets, filled, current = {}, dict.fromkeys(missing, 0), 0
    for key in order:
        name = missing[current] if current < len(missing) else "train"
        for row in groups[key]:
            targets[row] = name
        if current < len(missing):
            filled[name] += len(groups[key])
            current += filled[name] >= n_off
    if total > len(groups):
        log.warning("%s: %d rows repeat the image of another row; each image is kept in one split",
                    spec, total - len(groups))
    log.info("%s: split %s off %s by image (%s; seed %d)", spec, "/".join(missing), source,
             ", ".join(f"{s} {filled[s]}" for s in missing), seed)
    return targets


def complete_splits(parts: dict[str, list[Part]], spec: str, seed: int) -> dict[str, datasets.Dataset]:
    """train / validation / test datasets from the prepared parts of one source (split name -> parts)."""
    parts = {s: list(ps) for s, ps in parts.items() if s in SPLITS and ps}
    missing = [s for s in SPLITS if s not in parts]
    if missing:
        pool_splits = ["train"] if "train" in parts else list(parts)
        pool = [part for split in pool_splits for part in parts.pop(split)]
        if not pool:
            raise UserError(f"dataset {spec!r} has no usable split (found none of {', '.join(SPLITS)})")
        targets = _by_column(pool)
        if targets is not None:
            log.info("%s: rows assigned to splits by its %r column", spec, "split")
            made = _assign(pool, targets)
            for split, split_parts in made.items():
                parts.setdefault(split, []).extend(split_parts)
            still = [s for s in SPLITS if s not in parts]
            if still:  # the column names fewer splits than needed: split those off by image
                return complete_splits(parts, spec, seed)
        else:
            source = "train" if pool_splits == ["train"] else "all rows (" + "/".join(pool_splits) + ")"
            off = [s for s in ("validation", "test") if s not in parts]  # the rest of the pool is train
            parts.update(_assign(pool, _by_image(pool, off, seed, spec, source)))
    parts = drop_cross_split_duplicates(parts, spec)
    return {split: _concat([p.dataset for p in parts[split]]) for split in SPLITS}


def drop_cross_split_duplicates(parts: dict[str, list[Part]], spec: str) -> dict[str, list[Part]]:
    """Rows of validation and test whose image (same bytes) is also in an earlier split (train, then validation)
    are dropped, with a warning counting them: a test image seen in training inflates every score."""
    seen: set[str] = set()
    out: dict[str, list[Part]] = {}
    for split in SPLITS:  # train, validation, test
        kept_parts, dropped, total = [], 0, 0
        for part in parts[split]:
            total += len(part.keys)
            if split == "train":
                kept_parts.append(part)
                continue
            keep = [i for i, key in enumerate(part.keys) if key not in seen]
            dropped += len(part.keys) - len(keep)
            if len(keep) == len(part.keys):
                kept_parts.append(part)
            elif keep:
                kept_parts.append(Part(part.dataset.select(keep), [part.keys[i] for i in keep],
                                       [part.split_values[i] for i in keep] if part.split_values else None,
                                       part.source))
        if dropped:
            log.warning("%s: %d of %d %s images are also in an earlier split (same image bytes); they are left "
                        "out of %s so scores are not inflated", spec, dropped, total, split, split)
            if dropped == total:
                raise UserError(f"dataset {spec!r}: every {split} image is also in an earlier split (same image "
                                f"bytes); nothing is left to {'score' if split == 'test' else 'validate'} on")
        for part in parts[split]:
            seen.update(part.keys)
        out[split] = kept_parts
    return out
