"""Caption metrics: our Python tokenization + pycocoevalcap scorers equal the reference pipeline (Java PTB
tokenizer + the same scorers), and the scores behave (identical captions score best)."""

from __future__ import annotations

import shutil

import pytest

from distilvit.metrics import all_scores, caption_scores, exact_match_rate, tokenize

PREDICTIONS = [
    "A man riding a bike down the street.",
    "Two dogs, playing in the snow!",
    "a red circle left of a blue square",
    "The child's kite isn't flying; it's stuck in a tree.",
    "A black-and-white photo of a city (at night).",
]
REFERENCES = [
    ["A man rides his bicycle on a city street.", "A cyclist on the road."],
    ["Two dogs play in the snow.", "Dogs running through snow, happily."],
    ["a red circle left of a blue square"],
    ["A kite is stuck in a tree.", "The child's kite didn't fly."],
    ["A black and white photo of a city at night.", "City lights \"at night\"."],
]


@pytest.mark.skipif(shutil.which("java") is None, reason="the reference PTB tokenizer is a Java program; java is not installed (.ci/run installs Debian's default-jre-headless)")
def test_same_scores_as_the_java_reference_pipeline():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {i: [{"caption": r} for r in refs] for i, refs in enumerate(REFERENCES)}
    res = {i: [{"caption": p}] for i, p in enumerate(PREDICTIONS)}
    ptb = PTBTokenizer()
    gts_tok, res_tok = ptb.tokenize(gts), ptb.tokenize(res)
    for i, p in enumerate(PREDICTIONS):
        assert tokenize(p) == res_tok[i][0]
        assert [tokenize(r) for r in REFERENCES[i]] == gts_tok[i]
    reference = {
        "bleu4": Bleu(4).compute_score(gts_tok, res_tok, verbose=0)[0][3],
        "rougeL": Rouge().compute_score(gts_tok, res_tok)[0],
        "cider": Cider().compute_score(gts_tok, res_tok)[0],
    }
    ours = caption_scores(PREDICTIONS, REFERENCES)
    assert ours == pytest.approx(reference, rel=1e-12)


def test_perfect_captions_score_higher_than_wrong_ones():
    perfect = all_scores([refs[0] for refs in REFERENCES], REFERENCES)
    ours = all_scores(PREDICTIONS, REFERENCES)
    assert perfect["exact_match"] == 1.0
    assert ours["exact_match"] == pytest.approx(1 / 5)
    for name in ("bleu4", "rougeL", "cider"):
        assert perfect[name] > ours[name], name


def test_exact_match_ignores_case_and_punctuation():
    assert exact_match_rate(["A red circle."], [["a red circle"]]) == 1.0
    assert exact_match_rate(["a red circles"], [["a red circle"]]) == 0.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="2 predictions for 1"):
        caption_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no reference"):
        caption_scores(["a"], [[]])
