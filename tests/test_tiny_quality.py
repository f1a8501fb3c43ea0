"""The tiny preset really learns: trained with its defaults (16000 synthetic images, 4000 steps, about 5 minutes
on 2 CPU cores), its merged model captions the held-out test split with exact match >= 0.8.

This is the one slow test (marked `slow`; `pytest -m "not slow"` skips it). Its run is shared through the
`trained_tiny` fixture with later tests that need a trained model.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_tiny_preset_reaches_exact_match_0_8(trained_tiny):
    result = json.loads((trained_tiny / "eval.json").read_text())
    assert result["num_images"] == 200
    assert result["exact_match"] >= 0.8, result["examples"]
