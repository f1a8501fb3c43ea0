"""The prompt contract (distilvit/modeling/prompt.py) is the one every client uses. The JavaScript files, the demo, the
model card and the README example cannot import it, so they are checked against its constants here; the
BOS-adding tokenizer's end-to-end case is in tests/test_llama_family.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distilvit.export.card import _js_snippet
from distilvit.modeling.prompt import IMAGE_TOKEN, JS_OPTIONS, JS_PROMPT, PYTHON_CALL, prefix_ids, training_row

ROOT = Path(__file__).resolve().parents[1]
JS_CLIENTS = ["distilvit/runtimes/js/caption.mjs", "distilvit/runtimes/js/parity.mjs", "web-demo/worker.js"]


def _processor_calls(text: str) -> list[str]:
    return re.findall(r"processor\((?:[^()]|\([^()]*\))*\)", text)


@pytest.mark.parametrize("path", JS_CLIENTS)
def test_every_javascript_client_builds_the_prompt_of_the_contract(path):
    text = (ROOT / path).read_text()
    assert f"const prompt = pipelineLayout ? null : {JS_PROMPT};" in text or f"const prompt = {JS_PROMPT};" in text
    calls = [c for c in _processor_calls(text) if "prompt" in c]
    assert calls and all(c.endswith(f"prompt, {JS_OPTIONS})") for c in calls), calls


def test_the_model_card_and_the_readme_use_the_contract():
    card = _js_snippet("llava", "q8")
    assert f"const prompt = {JS_PROMPT};" in card
    assert f"prompt, {JS_OPTIONS})" in card
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```python", 1)[1].split("```", 1)[0]
    assert f'prompt = "{IMAGE_TOKEN}" + processor.tokenizer.bos_token' in example
    assert PYTHON_CALL in example.split("processor(images=", 1)[1].split("\n", 1)[0]


class _Tokenizer:  # the two attributes the contract reads, with the ids of the bos-adding tokenizer
    bos_token_id, eos_token_id = 1, 2

    def convert_tokens_to_ids(self, token):
        return {IMAGE_TOKEN: 32000}[token]


def test_training_rows_and_generation_prompts_share_the_prefix():
    tok = _Tokenizer()
    inputs, labels = training_row(tok, 3, [10, 11])
    assert inputs == prefix_ids(32000, 1, 3) + [10, 11, 2] == [32000, 32000, 32000, 1, 10, 11, 2]
    assert labels == [-100] * 4 + [10, 11, 2]
