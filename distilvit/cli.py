"""The `distilvit-web` command line: thin Typer commands that read options, build a config, call one function.

`COMMANDS` is the table of commands; a test checks the CLI matches it. A `UserError` anywhere ends the command
with one line on stderr and exit status 2. Heavy imports happen inside the commands so `--help` stays fast.
This module is longer than the others on purpose: it is the whole command surface in one place, each command's
options declared with their help beside a body of a few lines that calls one stage (`distilvit.training`,
`distilvit.export`, `distilvit.verify`, `distilvit.bench`, `distilvit.serve`), so every flag is read in one file.
It is the one module that imports every stage; none imports it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from enum import Enum
from typing import Optional

import typer

from distilvit.config import DEFAULT_PRESET, PRESETS, TrainConfig
from distilvit.errors import UserError
from distilvit.limits import (DEFAULT_MAX_PIXELS, FP32_LOGITS_TOLERANCE, IMAGE_SUFFIXES, MIN_DEFAULT_AGREEMENT,
                              MIN_DEFAULT_CIDER_RATIO, PIXEL_MAX_TOLERANCE, PIXEL_MEAN_TOLERANCE)
from distilvit.quantize import Q8_RECIPE

IMAGE_TYPES = " ".join(IMAGE_SUFFIXES)  # what a folder given to caption, parity, export and bench contributes


def _default(name: str, key: str | None = None) -> str:
    """A train setting's default as --help states it, read from TrainConfig and the presets (the one home of these
    values): the default preset's value, then the presets that differ, e.g. "64; tiny: 32". `key`: one entry of a
    dict-valued setting."""
    from dataclasses import MISSING, fields

    field = next(f for f in fields(TrainConfig) if f.name == name)
    base = field.default_factory() if field.default_factory is not MISSING else field.default

    def shown(preset: str) -> str:
        value = PRESETS[preset].get(name, base)
        value = value[key] if key else value
        return ",".join(value) if isinstance(value, (tuple, list)) else str(value)

    others = [f"{p}: {shown(p)}" for p in PRESETS if shown(p) != shown(DEFAULT_PRESET)]
    return "; ".join([shown(DEFAULT_PRESET), *others])

COMMANDS = {
    "quickstart": "Run every stage offline on the embedded default: train the tiny preset, export, verify parity, serve.",
    "train": "Train the captioner (frozen SigLIP + projector + LoRA on a Llama decoder) and merge it.",
    "merge": "Merge a training run's LoRA adapter into a standalone model folder.",
    "caption": "Caption image files and folders with a merged model (PyTorch): one PATH<TAB>CAPTION line per image, printed batch by batch; an empty caption is printed as (the model gave no caption for this image).",
    "evaluate": "Score a merged model on a dataset split: BLEU-4, ROUGE-L, CIDEr-D and exact match.",
    "export": "Export a merged model (or a run) to ONNX with a KV cache, quantize it, and write a transformers.js repo.",
    "serve": "Serve web-demo/ and exports on this machine; caption images in a browser, offline.",
    "site": "Write a folder any static host serves as is: the demo page, its transformers.js files, the exports, models/index.json and _headers.",
    "upload": "Upload an export folder to a Hugging Face Hub model repo (its README.md is the model card); the repo then mirrors the export (files it lacks are deleted in the same commit).",
    "verify": "Checks of an export against the PyTorch model it came from.",
    "bench": "Benchmarks: alone, caption latency of every runtime vs the machine's floor on the real-size architecture (random weights, nothing downloaded); `bench train`, training throughput; `bench quality MODEL`, quantization recipes on your trained model.",
}
VERIFY_COMMANDS = {
    "parity": "Caption the same images with PyTorch, onnxruntime and transformers.js for every dtype; report where and how much they differ.",
}
BENCH_COMMANDS = {
    "train": "Training throughput of LoRA + projector vs full fine-tuning (samples/s, tokens/s, peak memory).",
    "quality": "Which quantization recipe keeps a trained model's captions: each candidate's agreement with fp32 and CIDEr-D on the run's validation images (and your photographs), and its caption time in Chromium.",
}

def _choices(name: str, values) -> type[Enum]:
    """A set of allowed values for an option: listed in --help and checked by typer before any heavy import."""
    return Enum(name, {v: v for v in values}, type=str)


Preset = _choices("Preset", PRESETS)
Device = _choices("Device", ("auto", "cuda", "mps", "cpu"))
Precision = _choices("Precision", ("auto", "bf16", "fp16", "fp32"))
EvalMetric = _choices("EvalMetric", ("cider", "bleu4", "rougeL", "exact_match"))
Layout = _choices("Layout", ("pipeline", "llava"))
Reporter = _choices("Reporter", ("none", "tensorboard", "wandb"))


def _value(choice):
    """An option's plain string (None stays None): the code below the CLI takes strings, not enum members."""
    return choice.value if isinstance(choice, Enum) else choice


app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich's boxed columns wrapped a word per line at 80 columns
    help="Train a small image captioner and ship it to the browser (transformers.js).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"distilvit-web {version('distilvit-web')}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the installed version and exit.")) -> None:
    """Train a small image captioner and ship it to the browser (transformers.js)."""


verify_app = typer.Typer(help=COMMANDS["verify"], no_args_is_help=True, rich_markup_mode=None)
app.add_typer(verify_app, name="verify", help=COMMANDS["verify"])
bench_app = typer.Typer(help=COMMANDS["bench"], rich_markup_mode=None)
app.add_typer(bench_app, name="bench", help=COMMANDS["bench"])


def _setup_logging(verbose: bool = False) -> None:
    # Third-party libraries log at INFO through the root logger (onnxruntime's quantizer does, per tensor):
    # only ours speaks at INFO.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("distilvit").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("onnx_ir", "onnxscript", "onnxslim", "datasets", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    import transformers
    import datasets

    transformers.utils.logging.set_verbosity_error() if not verbose else transformers.utils.logging.set_verbosity_info()
    datasets.utils.logging.set_verbosity_error()
    transformers.utils.logging.enable_progress_bar()


def _split_values(values: Optional[list[str]]) -> Optional[list[str]]:
    """`--dataset a --dataset b` and `--dataset a,b` both give [a, b]."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@app.command(help=COMMANDS["quickstart"])
def quickstart(
    workdir: Path = typer.Option(Path("."), help="Where runs/tiny, exports/tiny and parity.json go; finished stages are reused."),
    serve: bool = typer.Option(False, "--serve", help="Serve the demo with the export at the end (Ctrl+C stops)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port for --serve."),
    host: str = typer.Option("127.0.0.1", help="Address --serve binds (as `serve --host`; another machine's browser needs a secure origin for threads and WebGPU: docs/browser.md, SSH tunnel)."),
):
    _setup_logging()
    from distilvit.quickstart import run_quickstart

    result = run_quickstart(workdir)
    typer.echo(f"trained model: {result['run']}/merged (test exact match {result['exact_match']:.3f})")
    typer.echo(result["parity_table"])
    typer.echo(f"parity {'passed' if result['parity_passed'] else 'FAILED'}; report {result['report']}")
    command = f"distilvit-web serve {result['export']} --port {port}" + (f" --host {host}" if host != "127.0.0.1" else "")
    if not result["parity_passed"]:
        raise typer.Exit(1)
    if serve:
        serve_exports([result["export"]], host, port)
    else:
        typer.echo(f"next: {command}   (then open http://{host}:{port}/)")


@app.command(help=COMMANDS["train"])
def train(
    preset: Optional[Preset] = typer.Option(None, help="Starting settings of a new run (default smollm-135m; a run being resumed keeps its own): 'smollm-135m' (SigLIP-base/16 + SmolLM-135M, 196 image tokens), 'smollm-135m-fast' (SigLIP 2 B/32-256 + SmolLM-135M, 64 image tokens: faster captions in the browser, quality not yet compared; docs/benchmarks.md) or 'tiny' (built from configs, trains offline on CPU)."),
    output_dir: Path = typer.Option(Path("runs/distilvit"), help="Run folder: checkpoints, adapter/, merged/, train_config.json."),
    dataset: Optional[list[str]] = typer.Option(None, help="'synthetic', 'flickr30k' ('flickr': Karpathy splits of Mozilla/flickr30k-transformed-captions-gpt4o), 'coco' (Mozilla/coco-gpt4o), any Hub dataset id (fetched with huggingface_hub, then read from the cache, also offline), or a local folder: a downloaded Hub repo (hf download ID --repo-type dataset --local-dir DIR), a save_to_disk folder, or images with metadata.jsonl/.csv (file_name, caption). Repeat or comma-separate to combine. Default: the preset's."),
    sample: Optional[int] = typer.Option(None, min=1, help="Train on at most N examples of the train split (a random subset drawn by --seed); the validation and test splits are capped by --eval-sample and --test-sample. Default: all."),
    encoder_model: Optional[str] = typer.Option(None, help="SigLIP vision encoder: Hub id or local folder. Default: the preset's."),
    decoder_model: Optional[str] = typer.Option(None, help="Decoder-only Llama-family LM: Hub id or local folder. Default: the preset's."),
    num_train_epochs: Optional[float] = typer.Option(None, help=f"Epochs (ignored when --max-steps > 0; default {_default('num_train_epochs')})."),
    max_steps: Optional[int] = typer.Option(None, help=f"Optimizer steps; overrides epochs when > 0 (default {_default('max_steps')})."),
    per_device_train_batch_size: Optional[int] = typer.Option(None, min=1, help="Batch size per device."),
    gradient_accumulation_steps: Optional[int] = typer.Option(None, help="Batches accumulated per optimizer step."),
    lora_r: Optional[int] = typer.Option(None, help=f"LoRA rank (default {_default('lora_r')})."),
    lora_alpha: Optional[int] = typer.Option(None, help=f"LoRA alpha (default {_default('lora_alpha')})."),
    lora_dropout: Optional[float] = typer.Option(None, help=f"LoRA dropout (default {_default('lora_dropout')})."),
    lora_targets: Optional[list[str]] = typer.Option(None, help=f"Decoder linear layers LoRA adapts (default {_default('lora_targets')})."),
    projection_lr: Optional[float] = typer.Option(None, help=f"Learning rate of the projector (default {_default('projection_lr')})."),
    lora_lr: Optional[float] = typer.Option(None, help=f"Learning rate of the LoRA weights (default {_default('lora_lr')})."),
    train_lm_head: Optional[bool] = typer.Option(None, "--train-lm-head/--no-train-lm-head", help="Also train the (untied) output head fully (the tiny preset does)."),
    head_lr: Optional[float] = typer.Option(None, help=f"Learning rate of the output head when trained (default {_default('head_lr')})."),
    vision_unfreeze_layers: Optional[int] = typer.Option(None, help=f"Train the last N vision layers too (default {_default('vision_unfreeze_layers')}; 0: encoder frozen)."),
    max_length: Optional[int] = typer.Option(None, help=f"Caption length in tokens (longer captions are cut; default {_default('max_length')})."),
    caption_vocab: Optional[bool] = typer.Option(None, "--caption-vocab/--full-vocab", help="Let the model generate only the tokens its training captions use (written to caption_vocab.json; PyTorch masks, stock transformers suppresses and the exported head computes only those: a smaller download and a faster head; a warning when it is a closed word list; docs/training.md has the measurements), or every token of the decoder's vocabulary. Default: --caption-vocab."),
    seed: Optional[int] = typer.Option(None, help="Random seed (data order, projector and LoRA init, synthetic data)."),
    save_steps: Optional[int] = typer.Option(None, help=f"Save a checkpoint every N steps (default {_default('save_steps')})."),
    num_proc: Optional[int] = typer.Option(None, help="Processes that check the images, once per dataset version (cached); default: one per core, up to 8."),
    effective_batch_size: Optional[int] = typer.Option(None, min=1, help=f"Samples per optimizer step over all devices (default {_default('effective_batch_size')}); gradient accumulation is derived from it."),
    warmup_ratio: Optional[float] = typer.Option(None, help=f"Share of the steps spent warming up the learning rate (default {_default('warmup_ratio')})."),
    optimizer: Optional[str] = typer.Option(None, help="adamw (default) or sgd (plain SGD: a step is lr x gradient; for checks such as the DDP test)."),
    max_grad_norm: Optional[float] = typer.Option(None, help=f"Clip the gradient norm to this (default {_default('max_grad_norm')}; 0: no clipping)."),
    device: Optional[Device] = typer.Option(None, help="auto (default: CUDA, else MPS, else CPU), cuda, mps or cpu."),
    precision: Optional[Precision] = typer.Option(None, help="auto (default: bf16 on GPUs that have it, else fp16; fp32 on MPS/CPU), bf16, fp16 or fp32."),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute the language model's activations in the backward pass: less memory, slower steps (docs/training.md has the measurements)."),
    eval_steps: Optional[int] = typer.Option(None, help=f"Caption the validation split every N steps and keep the best checkpoint (0: never; default {_default('eval_steps')})."),
    eval_metric: Optional[EvalMetric] = typer.Option(None, help=f"Metric that picks the best checkpoint: cider, bleu4, rougeL or exact_match (default {_default('eval_metric')})."),
    early_stopping_patience: Optional[int] = typer.Option(None, help="Stop after N evaluations without improvement (0: never; the default)."),
    eval_sample: Optional[int] = typer.Option(None, min=1, help=f"Validation images per evaluation (default {_default('eval_sample')})."),
    test_sample: Optional[int] = typer.Option(None, min=1, help="Test images scored at the end (default: the whole test split)."),
    report_to: Optional[list[Reporter]] = typer.Option(None, help="Also log to tensorboard (RUN/tensorboard/) or wandb (the Trainer's integrations; optional packages). RUN/training_curves.png (loss and validation metrics) is drawn either way. Default: none."),
    dataloader_workers: Optional[int] = typer.Option(None, help="Data loader worker processes (default: 0 on CPU, up to 8 on a GPU)."),
    synthetic_size: Optional[int] = typer.Option(None, help=f"Training images of the 'synthetic' dataset (default {_default('synthetic_sizes', 'train_size')}; validation and test stay 200)."),
    gpus: int = typer.Option(1, help="Start N training processes (torchrun) on N GPUs of this machine; the same as `torchrun --nproc_per_node=N -m distilvit.cli train ...`."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output-dir from its last checkpoint, with the settings saved in it (train_config.json): `train --output-dir RUN --resume` is enough. Flags given again must match them, except --num-proc and --dataloader-workers."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in --output-dir: it is kept aside (.NAME.old-*) until the new run writes its first checkpoint, and comes back if the new run stops before that."),
    print_settings: bool = typer.Option(False, "--print-settings", help="Print what this command would train with, as JSON (every setting, a resumed run's saved ones included; device, precision and batch sizes as resolved on this machine; fresh, resume or done), and exit without training or writing anything."),
    verbose: bool = typer.Option(False, "--verbose", help="Debug logging."),
):
    if gpus > 1 and "LOCAL_RANK" not in os.environ and not print_settings:
        from distilvit.training.launch import relaunch_with_torchrun

        raise typer.Exit(relaunch_with_torchrun(gpus, sys.argv[1:]))
    _setup_logging(verbose)
    from distilvit.config import run_settings
    from distilvit.training.train import train as run_training

    overrides = _train_overrides(locals())
    config = run_settings(output_dir, _value(preset), overrides, overwrite)
    if print_settings:
        from distilvit.training.train import planned

        typer.echo(json.dumps(planned(config, resume=resume, overwrite=overwrite, processes=gpus), indent=2))
        return
    result = run_training(config, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if result.skipped:
        typer.echo(f"{result.run_dir} already holds a finished run; nothing to do (--overwrite trains again).")
    if result.exact_match is not None:
        typer.echo(f"exact-match on the held-out test split: {result.exact_match:.3f}")
    typer.echo(f"merged model: {result.merged_dir}")


# train's options that are TrainConfig fields under the same name, given as typed (None: not given)
TRAIN_FIELDS = ("sample", "encoder_model", "decoder_model", "num_train_epochs", "max_steps",
                "per_device_train_batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha", "lora_dropout",
                "projection_lr", "lora_lr", "train_lm_head", "head_lr", "vision_unfreeze_layers", "max_length",
                "caption_vocab", "seed", "save_steps", "num_proc", "effective_batch_size", "warmup_ratio",
                "optimizer", "max_grad_norm", "gradient_checkpointing", "eval_steps", "early_stopping_patience",
                "eval_sample", "test_sample", "dataloader_workers")


def _train_overrides(options: dict) -> dict:
    """The TrainConfig fields `train`'s options give (None where not given): same-named fields as typed, lists
    split on commas, choices as their values, --synthetic-size as the synthetic dataset's sizes."""
    overrides = {name: options[name] for name in TRAIN_FIELDS}
    overrides.update(datasets=_split_values(options["dataset"]), lora_targets=_split_values(options["lora_targets"]),
                     device=_value(options["device"]), precision=_value(options["precision"]),
                     eval_metric=_value(options["eval_metric"]),
                     report_to=[_value(r) for r in options["report_to"]] if options["report_to"] else None)
    if options["synthetic_size"] is not None:
        overrides["synthetic_sizes"] = {"train_size": options["synthetic_size"], "validation_size": 200,
                                        "test_size": 200}
    return overrides


@app.command(help=COMMANDS["merge"])
def merge(
    run_dir: Path = typer.Argument(..., help="A training run folder (holds train_config.json)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Merge this checkpoint instead of the final adapter (or the last checkpoint)."),
    output: Optional[Path] = typer.Option(None, help="Where to write the merged model (default RUN_DIR/merged)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
):
    _setup_logging()
    from distilvit.modeling.merge import merge_run

    typer.echo(f"merged model: {merge_run(run_dir, checkpoint=checkpoint, output=output, overwrite=overwrite)}")


@app.command(help=COMMANDS["caption"])
def caption(
    model_dir: Path = typer.Argument(..., help="A merged model folder, or a training run holding merged/."),
    images: list[Path] = typer.Argument(..., help=f"Image files, or folders whose image files ({IMAGE_TYPES}) are captioned in name order."),
    num_beams: int = typer.Option(1, min=1, help="Beam search width (1 = greedy)."),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="Longest caption in tokens (default: the model's generation config)."),
    batch_size: int = typer.Option(16, min=1, help="Images per generate() call."),
    device: Device = typer.Option("auto", help="auto (CUDA, else MPS, else CPU), cuda, mps or cpu."),
    max_image_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1, help="Refuse images with more pixels than this (decoding takes 4 bytes per pixel; a small file can claim billions)."),
):
    _setup_logging()
    from distilvit.modeling.caption import NO_CAPTION, image_paths, load_captioner
    from distilvit.training.device import inference_device

    paths = image_paths(images, max_image_pixels)  # every header checked before the model loads
    captioner = load_captioner(model_dir, device=inference_device(_value(device)))
    captioner.pixels.max_pixels = max_image_pixels
    batches = captioner.caption_batches(paths, max_new_tokens, num_beams, batch_size)  # decoded batch by batch
    empty = 0
    for path, text in zip(paths, (text for batch in batches for text in batch)):
        empty += not text
        typer.echo(f"{path}\t{text or NO_CAPTION}")
    if empty:
        typer.echo(f"{empty} of {len(paths)} images got no caption: the model gave no words for them", err=True)


@app.command(help=COMMANDS["evaluate"])
def evaluate(
    model_dir: Path = typer.Argument(..., help="A merged model folder, or a training run holding merged/."),
    dataset: list[str] = typer.Option(..., help="Dataset(s) as for `train --dataset`."),
    split: str = typer.Option("test", help="Split to caption: train, validation or test."),
    sample: Optional[int] = typer.Option(None, min=1, help="Score only the first N images of --split. Default: all of it."),
    seed: int = typer.Option(0, help="Seed of the synthetic data and of split-offs (use the run's)."),
    batch_size: int = typer.Option(32, min=1, help="Images per generate() call."),
    output: Optional[Path] = typer.Option(None, help="Write the scores and examples to this JSON file."),
    device: Device = typer.Option("auto", help="auto (CUDA, else MPS, else CPU), cuda, mps or cpu."),
    num_proc: Optional[int] = typer.Option(None, help="Processes that check the images, once per dataset version (cached); default: one per core, up to 8."),
):
    _setup_logging()
    from distilvit.training.evaluate import evaluate_model

    result = evaluate_model(model_dir, _split_values(dataset), split, sample, seed, batch_size, output, device=_value(device),
                            num_proc=num_proc)
    typer.echo(json.dumps({"num_images": result["num_images"], **result["metrics"]}, indent=2))
    from distilvit.training.curves import CURVES_FILE

    curves = Path(model_dir) / CURVES_FILE
    if curves.is_file():  # a run folder: its training curves (to stderr: stdout stays the JSON)
        typer.echo(f"training curves (loss, validation metrics): {curves}", err=True)


@app.command(help=COMMANDS["export"])
def export(
    model_dir: Path = typer.Argument(..., help="A merged model folder, or a training run (its adapter is merged first if needed)."),
    output: Path = typer.Option(..., help="The export folder to write (refused if it exists and is not empty, unless --overwrite)."),
    layout: Layout = typer.Option("pipeline", help="pipeline: pipeline('image-to-text') works; llava: AutoModelForImageTextToText + processor."),
    quantize: Optional[str] = typer.Option(None, help="Extra dtypes besides fp32: fp16,q8,int8,uint8,q4,q4f16,bnb4 or all; or a per-graph mix such as vision=q8,decoder=q4. q8 (8-bit weights turned into float32 when the model loads: fp32's arithmetic at an int8 download) captions the same on every CPU; int8 (dynamic quantization) may differ on x86 CPUs without VNNI (export_config.json cpu_dependent_dtypes)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder (only once the new export is complete)."),
    slim: bool = typer.Option(True, "--slim/--no-slim", help="Shrink graphs with onnxslim (validated again after)."),
    agreement_images: str = typer.Option("16", help=f"The ship gate: N of the training run's validation images (or DIR, a folder of your own: its {IMAGE_TYPES} files) on which each quantized dtype's captions are compared with fp32's; a dtype keeping less than {MIN_DEFAULT_AGREEMENT:.0%} of them, or less than {MIN_DEFAULT_CIDER_RATIO:.0%} of fp32's CIDEr-D where the images have reference captions, is written but never made the default. 0: skip (the default dtype is then unchecked). A merged folder outside its run falls back to N synthetic shapes, with a warning."),
):
    _setup_logging()
    from distilvit.export.exporter import export_model

    info = export_model(model_dir, output, _value(layout), quantize, overwrite, slim, agreement_images)
    for name, size in info["sizes_bytes"].items():
        typer.echo(f"  {name:45s} {size / 1e6:9.2f} MB")
    from distilvit.export.agreement import describe

    for dtype, agreement in info["caption_agreement_with_fp32"].items():
        typer.echo(f"  {dtype}: {describe(agreement)}")
    default = info["default_dtype"]["dtype"]
    typer.echo(f"  default dtype: {next(iter(set(default.values()))) if len(set(default.values())) == 1 else default}")
    typer.echo(f"export: {output} ({info['layout']} layout, {info['seconds']['total']:.0f} s)")


@app.command(help=COMMANDS["serve"])
def serve(
    exports: list[Path] = typer.Argument(None, help="Export folders to serve under /models/<folder name>/ (default: exports/* that hold an export)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; the default serves this machine only."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free port)."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Also answer requests whose Host header is this name (repeatable; '*' answers any). By default only localhost names, IP literals and --host are answered, so a DNS-rebinding page cannot read the models."),
    timeout: float = typer.Option(30.0, min=1.0, help="Deadline in seconds for each request's head to arrive, for a client that stops reading, and for an idle keep-alive connection; past it the connection is closed."),
):
    _setup_logging()
    if not exports:
        exports = sorted(p.parent for p in Path("exports").glob("*/export_config.json"))
    if not exports:
        raise UserError("no export to serve: pass an export folder (e.g. `distilvit-web serve exports/tiny`)")
    serve_exports(exports, host, port, set(allow_host), timeout)


def serve_exports(exports: list[Path], host: str, port: int, allow_hosts: set[str] | None = None,
                  timeout: float = 30.0) -> None:
    from distilvit.serve.served_site import build_site, is_loopback
    from distilvit.serve.server import make_server

    site = build_site(exports)
    site.allowed_hosts = set(allow_hosts or ())
    server = make_server(site, host, port, timeout=timeout)
    if not is_loopback(host):
        typer.echo(f"warning: --host {host} exposes the demo page and {', '.join(str(p) for p in site.models.values())} "
                   f"to every machine that can reach this one on port {server.server_address[1]}", err=True)
    typer.echo(f"serving {', '.join(site.models)} at http://{host}:{server.server_address[1]}/ (Ctrl+C stops)", err=False)
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command(help=COMMANDS["site"])
def site(
    exports: list[Path] = typer.Argument(..., help="Export folders to put on the site (each under models/<folder name>/)."),
    output: Path = typer.Option(..., help="The site folder to write (refused if it exists and is not empty, unless --overwrite and it is a site)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier site in --output (only once the new one is complete)."),
):
    _setup_logging()
    from distilvit.serve.site import write_site

    record = write_site(exports, output, overwrite)
    typer.echo(f"site: {output} ({record['bytes'] / 1e6:.1f} MB; models {', '.join(record['versions'])})")
    typer.echo(f"try it: python3 -m http.server --bind 127.0.0.1 --directory {output} 8000   (then open "
               "http://127.0.0.1:8000/; a host that sends its _headers runs WebAssembly on every core)")


@app.command(help=COMMANDS["upload"])
def upload(
    export_dir: Path = typer.Argument(..., help="An export folder written by `distilvit-web export`."),
    repo_id: str = typer.Option(..., help="The Hub model repo, ORG/NAME (created if missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be uploaded, and the repo's files the export lacks that would be deleted (read from the Hub; unknown offline); change nothing."),
):
    _setup_logging()
    from distilvit.serve.upload import upload as run_upload

    result = run_upload(export_dir, repo_id, private, dry_run)
    for name, size in result["files"]:
        typer.echo(f"  {name:50s} {size / 1e6:9.2f} MB")
    for name in result["skipped"]:
        typer.echo(f"  left out: {name}")
    for name in result["deleted"] or []:
        typer.echo(f"  {'would delete' if dry_run else 'deleted'} from the repo: {name}")
    if result.get("deletions_unknown"):
        typer.echo(f"  files the repo has and the export lacks (deleted by the upload): unknown, the Hub could not "
                   f"be read ({result['deletions_unknown']})")
    total = f"{len(result['files'])} files, {result['bytes'] / 1e6:.1f} MB"
    typer.echo(f"would upload {total} to {repo_id}" if dry_run else f"uploaded {total} to {result['url']}")


@verify_app.command("parity", help=VERIFY_COMMANDS["parity"])
def verify_parity(
    export_dir: Path = typer.Argument(..., help="An export folder written by `distilvit-web export`."),
    model: Optional[Path] = typer.Option(None, help="The PyTorch model (default: the source named in export_config.json)."),
    images: Optional[Path] = typer.Option(None, help=f"A folder whose image files ({IMAGE_TYPES}) are captioned."),
    dataset: Optional[str] = typer.Option(None, help="Take images from this dataset's test split instead (as for `train --dataset`)."),
    sample: int = typer.Option(16, min=1, help="How many images of --dataset to caption: the first N of its test split (16 synthetic test images when neither --images nor --dataset is given)."),
    dtype: str = typer.Option("all", help="Comma-separated dtypes to check (fp32,q8,...) or all present."),
    runtime: str = typer.Option("onnxruntime,transformers.js", help="Runtimes to check: onnxruntime, transformers.js (Node), chromium-wasm, chromium-webgpu (stock transformers.js in real Chromium via Playwright; WebGPU through Chromium's software adapter: correctness only)."),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="Longest caption (default: the export's generation config)."),
    report: Optional[Path] = typer.Option(None, help="Write the JSON report here (a Markdown report beside it, .md)."),
    min_match: float = typer.Option(0.0, min=0.0, max=1.0, help="Minimum caption exact-match rate (model parity) for dtypes other than fp32."),
    fp32_min_match: float = typer.Option(1.0, min=0.0, max=1.0, help="Minimum exact-match rate for fp32."),
    end_to_end_min_match: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Minimum exact-match rate end to end (each runtime decoding the files itself), dtypes other than fp32 (default: --min-match)."),
    fp32_end_to_end_min_match: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="The same for fp32 (default: --fp32-min-match)."),
    pixel_max_diff: float = typer.Option(PIXEL_MAX_TOLERANCE, min=0.0, help="Every image's pixels from a JavaScript runtime's own decoding, prepared for the model, must be within this max abs difference of Python's (normalised units)."),
    pixel_mean_diff: float = typer.Option(PIXEL_MEAN_TOLERANCE, min=0.0, help="... and within this mean abs difference."),
    fp32_logits_diff: float = typer.Option(FP32_LOGITS_TOLERANCE, min=0.0, help="fp32's decoder logits at every step of PyTorch's captions (its tokens forced, through the runtime's own generate and KV cache) must be within this largest absolute difference of PyTorch's; other dtypes: their mean KL from PyTorch's within a bound per dtype, and q8 and fp16 weights within rounding of fp32's (docs/parity.md)."),
    update_card: bool = typer.Option(False, "--update-card", help="Add the summary table to the export's README.md."),
    max_image_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1, help="Refuse images with more pixels than this."),
):
    _setup_logging()
    from distilvit.verify import report as parity_report
    from distilvit.atomic import check_writable_file
    from distilvit.verify.targets import Targets
    from distilvit.verify.parity import verify_parity as run_parity
    from distilvit.verify.images import collect_images

    if report:
        for path in (report, report.with_suffix(".md")):
            check_writable_file(path, "parity report")  # before the captions are made
    with collect_images(images, dataset, sample) as paths:
        targets = Targets(min_match, fp32_min_match, end_to_end_min_match, fp32_end_to_end_min_match, pixel_max_diff,
                          pixel_mean_diff, fp32_logits_diff)
        result = run_parity(export_dir, paths, model, _split_values([dtype]), _split_values([runtime]), max_new_tokens,
                            max_image_pixels=max_image_pixels, targets=targets)
    typer.echo(parity_report.table(result))
    if report:
        parity_report.write(result, report, report.with_suffix(".md"))
        typer.echo(f"report: {report} and {report.with_suffix('.md')}")
    if update_card:
        parity_report.update_card(export_dir, result)
    if not result["passed"]:
        failed = [f"{e['runtime']} {e['dtype']}" for e in result["results"] if not e["passed"]]
        typer.echo(f"parity FAILED for {', '.join(failed)}", err=True)
        raise typer.Exit(1)
    typer.echo("parity passed")


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    workdir: Path = typer.Option(Path("runs/bench"), help="Where the real-size model and its export are built (reused when present; the export is redone when the exporter code changed)."),
    tokens: int = typer.Option(20, min=1, help="Generated tokens per caption (EOS ignored)."),
    repeats: int = typer.Option(3, min=1, help="Timed captions per runtime (median reported), after one warm-up."),
    output: Path = typer.Option(Path("runs/bench/benchmarks.md"), help="The Markdown report; the plot and the JSON go beside it (this project's docs/benchmarks.md is written with --output docs/benchmarks.md)."),
    browser: bool = typer.Option(True, "--browser/--no-browser", help="Also time stock transformers.js in Chromium WebAssembly (q8, q4, vision=q8,decoder=q4; 1 thread and every core). Needs Chromium and playwright."),
    peer: bool = typer.Option(True, "--peer/--no-peer", help="Also time the peer: ViT-base/16 + GPT-2 (transformers.js' default image-to-text architecture), random weights, q8, in transformers.js (Node) and, with --browser, Chromium on 1 thread and every core."),
    fewer_tokens: bool = typer.Option(True, "--fewer-tokens/--no-fewer-tokens", help="Also time q8 with a 64-token vision tower (256 px, 32 px patches: google/siglip2-base-patch32-256's shape) in onnxruntime and, with --browser, Chromium on every core: what fewer image tokens buy."),
    photo_sizes: bool = typer.Option(True, "--photo-sizes/--no-photo-sizes", help="With --browser, also caption a 224 px image, a 1 MP and a 12 MP photo (one EXIF-rotated) in Chromium WASM (q8, every core), decoding included as in the demo: caption time and the page's peak memory."),
    full_vocab: bool = typer.Option(True, "--full-vocab/--no-full-vocab", help="Also time q8 without a caption vocabulary (the output head over all 49,153 tokens, as `train --full-vocab` makes it) in onnxruntime and, with --browser, Chromium on every core: what the caption vocabulary buys. Ours carries 10,000 tokens (an assumed size)."),
):
    if ctx.invoked_subcommand is not None:
        return
    _setup_logging()
    from distilvit.bench import report as bench_report
    from distilvit.atomic import check_creatable, check_writable_file, write_file
    from distilvit.bench.runtime import run_bench

    plot = output.with_suffix(".png")
    for path in (output, output.with_suffix(".json"), plot):  # docs/ need not exist where an installed toolkit runs
        check_writable_file(path, "bench report")  # before the minutes of building and timing
    check_creatable(workdir, "bench work folder")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    report = run_bench(workdir, tokens, repeats, browser_dtypes=("q8", "q4", "mix") if browser else (), fewer_tokens=fewer_tokens, full_vocab=full_vocab, peer=peer, photo_sizes=photo_sizes)
    output.parent.mkdir(parents=True, exist_ok=True)
    bench_report.plot(report, plot)
    markdown = bench_report.markdown(report, plot.name)
    write_file(output, markdown, "bench report")
    write_file(output.with_suffix(".json"), json.dumps(report, indent=2) + "\n", "bench report")
    typer.echo(markdown)


@bench_app.command("train", help=BENCH_COMMANDS["train"])
def bench_train(
    device: Device = typer.Option("auto", help="auto, cuda, mps or cpu."),
    precision: Precision = typer.Option("auto", help="auto, bf16, fp16 or fp32."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Samples per step (default: train's per-device default)."),
    steps: int = typer.Option(5, help="Timed steps per mode."),
    warmup: int = typer.Option(2, help="Untimed steps first."),
    mode: Optional[list[str]] = typer.Option(None, help="lora, full-lm, full (default: all three)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Checkpoint the language model's activations."),
    output: Optional[Path] = typer.Option(None, help="Write the report as JSON."),
):
    _setup_logging()
    from distilvit.bench.train import MODES, bench_train as run_bench

    modes = tuple(_split_values(mode) or MODES)
    unknown = set(modes) - set(MODES)
    if unknown:
        raise UserError(f"unknown --mode {sorted(unknown)}; choose from {', '.join(MODES)}")
    report = run_bench(_value(device), _value(precision), batch_size, steps, warmup, modes, gradient_checkpointing=gradient_checkpointing, output=output)
    typer.echo(f"{report['plan']['machine']}, {report['plan']['precision']}, batch {report['plan']['per_device_batch']}:")
    for r in report["results"]:
        memory = f", peak {r['peak_gpu_memory_gib']:.2f} GiB" if r["peak_gpu_memory_gib"] is not None else ""
        typer.echo(f"  {r['mode']:8s} {r['samples_per_second']:8.2f} samples/s  {r['tokens_per_second']:9.0f} tokens/s  "
                   f"{r['median_step_s']:.3f} s/step  {r['trainable_parameters']:>11,} trainable{memory}")
    if report["lora_over_full"]:
        typer.echo(f"  lora / full: {report['lora_over_full']:.2f}x samples/s")


@bench_app.command("quality", help=BENCH_COMMANDS["quality"])
def bench_quality(
    model_dir: Path = typer.Argument(..., help="A training run or its merged/ folder (its validation images are read as training read them)."),
    recipes: str = typer.Option(
        "fp32,fp16,stored-int8,stored-int8-per-channel,stored-int8-b128,dynamic-int8-pair-safe,dynamic-int8,"
        "dynamic-int8@no-vnni,weight-int8,q4",
        help=f"Candidates, comma-separated: fp32, fp16, q4 and the 8-bit recipes of quantize/modes.py (q8 is "
             f"{Q8_RECIPE}); a dynamic recipe + @no-vnni: its graphs computed as x86 CPUs without VNNI compute them "
             "(AVX2 u8 x s8 multiply-adds, emulated; not timed)."),
    prose_model: Optional[Path] = typer.Option(
        None, help="A run trained with --full-vocab (its merged/ folder or the run): also read real English prose "
                   "(scikit-learn's dataset descriptions) with each candidate of it, as generation reads (token by "
                   "token with the KV cache, and in single prefill calls), against its fp32 graphs: top-1 agreement, "
                   "perplexity, greedy continuations. Defaults to MODEL_DIR when that has no caption vocabulary."),
    prose_windows: int = typer.Option(12, min=1, help="Windows of 128 prose tokens to read (with --prose-model)."),
    sample: int = typer.Option(64, min=1, help="How many of the run's validation images to caption: the first N."),
    images: Optional[Path] = typer.Option(None, help=f"Also caption the image files ({IMAGE_TYPES}) in this folder (your photographs)."),
    workdir: Path = typer.Option(Path("runs/bench-quality"), help="Where the fp32 export (reused when the exporter code and model are the same) and each candidate's files are written."),
    browser: bool = typer.Option(True, "--browser/--no-browser", help="Also time each candidate in Chromium WebAssembly (stock transformers.js, every core), in turns."),
    tokens: int = typer.Option(20, min=1, help="Generated tokens per timed caption (EOS ignored)."),
    repeats: int = typer.Option(2, min=1, help="Timed captions per round."),
    rounds: int = typer.Option(3, min=1, help="Rounds of timing, candidates in turns; the median round is reported."),
    output: Path = typer.Option(Path("runs/bench-quality/quantization.md"), help="The Markdown report; the JSON goes beside it (this project's docs/quantization.md is written with --output docs/quantization.md)."),
):
    _setup_logging()
    from distilvit.bench import quality
    from distilvit.atomic import check_creatable, check_writable_file, write_file

    for path in (output, output.with_suffix(".json")):
        check_writable_file(path, "bench report")
    check_creatable(workdir, "bench work folder")
    if prose_model is None and quality.has_full_vocab(model_dir):
        prose_model = model_dir
    report = quality.run_bench_quality(model_dir, workdir, _split_values([recipes]), sample, images, browser, tokens,
                                       repeats, rounds, prose_model=prose_model, prose_windows=prose_windows)
    output.parent.mkdir(parents=True, exist_ok=True)
    markdown = quality.markdown(report)
    write_file(output, markdown, "bench report")
    write_file(output.with_suffix(".json"), json.dumps(report, indent=2) + "\n", "bench report")
    typer.echo(markdown)


def main() -> None:
    """Console-script entry point: user errors become one line and exit status 2."""
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code instead of exiting
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.TyperException as err:  # a bad option or value (typer's own click): one line too
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        code = getattr(err, "exit_code", 2)
        typer.echo(f"error: {message}" + (" (see --help)" if code == 2 else ""), err=True)
        sys.exit(code)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
