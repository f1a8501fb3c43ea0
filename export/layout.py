"""The non-graph files of the two transformers.js repo layouts: config.json, generation_config.json,
preprocessor_config.json, processor_config.json (llava), tokenizer.json + tokenizer_config.json.

`pipeline` presents the captioner as a `vision-encoder-decoder` whose decoder is a plain Llama config, so stock
transformers.js runs it with `pipeline('image-to-text', ...)`; `llava` keeps the merged model's own config. The
`transformers.js_config` block names the dtype of every graph and whether graphs use external data. This module
knows nothing about how graphs were made; it reads the merged model folder and writes JSON.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers import LlavaConfig

from distilvit.export import constants as C
from distilvit.export.constants import BROWSER_PREFERENCE
from distilvit.modeling import caption_vocab


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def token_ids(model_dir: Path) -> dict:
    gen = json.loads((model_dir / "generation_config.json").read_text())
    return {k: gen.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}


def default_dtypes(graphs: list[str], dtypes: list[str], mix: dict[str, str] | None = None) -> dict[str, str]:
    """graph -> dtype for `transformers.js_config.dtype`: the per-graph mix, else the preferred exported dtype."""
    if mix:
        return {g: mix[g] for g in graphs}
    pick = next(d for d in BROWSER_PREFERENCE if d in dtypes)
    return {g: pick for g in graphs}


def transformers_js_config(dtypes: dict[str, str], external: set[str]) -> dict:
    """`dtypes`: graph -> dtype (one per graph, the default files); `external`: the .onnx file names (e.g.
    `decoder_model_merged_q4.onnx`) that have a `.onnx_data` file. transformers.js looks a file up by its full
    name first, so each dtype file says for itself whether it has external data (one chunk)."""
    cfg: dict = {"dtype": dict(dtypes)}
    if external:
        cfg["use_external_data_format"] = {name: 1 for name in sorted(external)}
    return cfg


def decoder_config(config: LlavaConfig) -> dict:
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return {
        "model_type": "llama",
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "hidden_size": text.hidden_size,
        "head_dim": head_dim,
        "intermediate_size": text.intermediate_size,
        "vocab_size": text.vocab_size,
        "max_position_embeddings": text.max_position_embeddings,
        "rms_norm_eps": text.rms_norm_eps,
        "is_decoder": True,
    }


def pipeline_config(config: LlavaConfig, ids: dict, js: dict) -> dict:
    vision = config.vision_config
    return {
        "model_type": "vision-encoder-decoder",
        "architectures": ["VisionEncoderDecoderModel"],
        "is_encoder_decoder": True,
        "encoder": {
            "model_type": "siglip_vision_model",
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "num_channels": vision.num_channels,
            "hidden_size": config.text_config.hidden_size,  # after the projector
            "num_image_tokens": config.image_seq_length,
        },
        "decoder": decoder_config(config),
        "decoder_start_token_id": ids["bos_token_id"],
        **ids,
        "image_token_index": config.image_token_index,
        "transformers.js_config": js,
    }


def llava_config(model_dir: Path, js: dict) -> dict:
    data = json.loads((model_dir / "config.json").read_text())
    data.pop(caption_vocab.CONFIG_KEY, None)  # the decoder graph applies it; export_config.json records its size
    data["transformers.js_config"] = js
    return data


def generation_config(model_dir: Path, config: LlavaConfig, max_new_tokens: int, layout: C.Layout) -> dict:
    ids = token_ids(model_dir)
    image = config.image_token_index
    gen = {
        **ids,
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "bad_words_ids": [[image]],  # transformers.js applies these; the image token is never a caption word
        "suppress_tokens": [image],
    }
    if layout == C.Layout.PIPELINE:
        gen["decoder_start_token_id"] = ids["bos_token_id"]
    return gen


HAND_OVER_PIXELS = {"do_resize": False, "do_rescale": False, "do_normalize": False, "do_convert_rgb": False,
                    "do_center_crop": False, "do_pad": False}
UNREACHABLE_PATCH_SIZE = 2**31 - 1


def processor_files(model_dir: Path, out: Path, config: LlavaConfig, layout: C.Layout) -> None:
    """preprocessor_config.json, tokenizer files, and (llava) processor_config.json."""
    processor = json.loads((model_dir / "processor_config.json").read_text())
    image = dict(processor["image_processor"])
    image["image_processor_type"] = "SiglipImageProcessor"
    # The decoded pixels go to the graph untouched: it composites, resizes and normalises them itself
    # (export/pixel_graph.py), the same in every runtime; image_mean/std/size stay as a record.
    image.update(HAND_OVER_PIXELS)
    if layout == C.Layout.LLAVA:
        image["processor_class"] = "LlavaProcessor"
        _write(out / "processor_config.json", {
            "processor_class": "LlavaProcessor",
            "image_token": processor.get("image_token", "<image>"),
            # transformers.js' LlavaProcessor expands <image> to floor(H / patch_size) * floor(W / patch_size) +
            # num_additional_image_tokens tokens, H and W of the pixel values it hands over. Those are the image's
            # own size now (the graph resizes), so the count comes from num_additional_image_tokens alone: a patch
            # size no image reaches makes the product 0 for every image.
            "patch_size": UNREACHABLE_PATCH_SIZE,
            "num_additional_image_tokens": config.image_seq_length,
            "vision_feature_select_strategy": "full",
        })
    _write(out / "preprocessor_config.json", image)
    shutil.copyfile(model_dir / "tokenizer.json", out / "tokenizer.json")
    tok = json.loads((model_dir / "tokenizer_config.json").read_text())
    if tok.get("tokenizer_class") in (None, "TokenizersBackend", "PreTrainedTokenizerFast"):
        # transformers 5 writes its generic backend class, which transformers.js does not know by name.
        tok["tokenizer_class"] = "PreTrainedTokenizer"
    for key in ("processor_class", "is_local", "local_files_only"):
        tok.pop(key, None)
    _write(out / "tokenizer_config.json", tok)


def write_layout(model_dir: Path, out: Path, config: LlavaConfig, layout: C.Layout, dtypes: dict[str, str],
                 external: set[str], max_new_tokens: int) -> None:
    js = transformers_js_config(dtypes, external)
    ids = token_ids(model_dir)
    if layout == C.Layout.PIPELINE:
        _write(out / "config.json", pipeline_config(config, ids, js))
    else:
        _write(out / "config.json", llava_config(model_dir, js))
    _write(out / "generation_config.json", generation_config(model_dir, config, max_new_tokens, layout))
    processor_files(model_dir, out, config, layout)
