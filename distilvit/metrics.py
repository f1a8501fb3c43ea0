"""Caption quality: BLEU-4, ROUGE-L and CIDEr-D with the standard COCO caption scorers, plus exact match.

The scorers are pycocoevalcap's pure-Python `Bleu(4)`, `Rouge` and `Cider` (the coco-caption `Cider` with its
Gaussian length penalty sigma 6 and clipped counts is CIDEr-D, the variant the COCO server reports; its
document frequencies come from the references being scored). pycocoevalcap normally tokenizes with the Stanford
PTB tokenizer, a Java program; `tokenize` here is a Python rendering of what that pipeline does to captions
(lowercase, split punctuation and English clitics, then drop the punctuation tokens coco-caption drops), so no
Java is needed. A test checks it against the Java tokenizer where Java is installed.

This module knows nothing about models; it scores strings.
"""

from __future__ import annotations

import re

# Tokens coco-caption's PTBTokenizer removes after tokenizing (plus the double quote, which the Java tokenizer
# turns into `` or '' first).
PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...",
               ";", '"'}
# The Java tokenizer writes brackets as -LRB- etc. and, run with -lowerCase, as -lrb-, which coco-caption's
# (upper-case) list does not remove: brackets are scored as these words. Reproduced on purpose.
BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_SPLIT = re.compile(r"(\.\.\.|--|[.,!?;:()\[\]{}\"`])")
_CLITICS = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_QUOTE = re.compile(r"(^|\s)'(?!(?:s|re|ve|ll|d|m)\b)|'(\s|$)")


def tokenize(caption: str) -> str:
    """Lowercased, space-separated tokens without punctuation, as coco-caption scores them."""
    text = caption.lower()
    text = _SPLIT.sub(r" \1 ", text)
    text = _CLITICS.sub(r" \1", text)
    text = _QUOTE.sub(lambda m: f"{m.group(1) or ''} ' {m.group(2) or ''}", text)
    return " ".join(BRACKETS.get(t, t) for t in text.split() if t not in PUNCTUATION)


def caption_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-4, ROUGE-L and CIDEr-D of `predictions` against their reference lists."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    if not predictions:
        raise ValueError("no captions to score")
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(f"images {empty[:5]} have no reference caption")
    res = {i: [tokenize(p)] for i, p in enumerate(predictions)}
    gts = {i: [tokenize(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "rougeL": float(rouge), "cider": float(cider)}


def exact_match_rate(predictions: list[str], references: list[list[str]]) -> float:
    """Share of predictions whose tokens equal those of one of their references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    if not predictions:
        return 0.0
    hits = sum(tokenize(p) in {tokenize(r) for r in refs} for p, refs in zip(predictions, references))
    return hits / len(predictions)


METRICS = ("cider", "bleu4", "rougeL", "exact_match")


def all_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    return {**caption_scores(predictions, references), "exact_match": exact_match_rate(predictions, references)}
