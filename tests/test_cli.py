"""The CLI: matches its command table, every command has help, and user errors end in one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from transformers import GPT2Config, GPT2LMHeadModel
from typer.main import get_command

from distilvit.cli import BENCH_COMMANDS, COMMANDS, VERIFY_COMMANDS, app

SUBCOMMANDS = {"bench": BENCH_COMMANDS, "verify": VERIFY_COMMANDS}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed entry point in a subprocess, as a user runs it (exit codes and stderr included)."""
    return subprocess.run([sys.executable, "-m", "distilvit.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_matches_the_command_table():
    group = get_command(app)
    assert set(group.commands) == set(COMMANDS)
    for name, command in group.commands.items():
        assert command.help == COMMANDS[name]
        leaves = {name: command}
        if name in SUBCOMMANDS:
            assert set(command.commands) == set(SUBCOMMANDS[name])
            leaves = {f"{name} {sub}": c for sub, c in command.commands.items()}
            for sub, c in command.commands.items():
                assert c.help == SUBCOMMANDS[name][sub]
        for label, leaf in leaves.items():
            for param in leaf.params:
                if param.name != "help":
                    assert getattr(param, "help", None), f"{label} --{param.name} has no help text"


@pytest.mark.parametrize("command", sorted(COMMANDS) + [f"{g} {s}" for g, subs in SUBCOMMANDS.items() for s in subs])
def test_every_command_has_help(command):
    """Readable in an 80-column terminal: no line wider, and every option's name printed whole."""
    import os

    result = subprocess.run([sys.executable, "-m", "distilvit.cli", *command.split(), "--help"], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    wide = [line for line in result.stdout.splitlines() if len(line) > 80]
    assert not wide, wide
    group = get_command(app)
    leaf = group.commands[command.split()[0]]
    if " " in command:
        leaf = leaf.commands[command.split()[1]]
    for param in leaf.params:
        for name in getattr(param, "opts", []):
            if name.startswith("--"):
                assert name in result.stdout, f"{command} --help does not print {name} whole"


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_unknown_preset(tmp_path):
    out = tmp_path / "run"
    assert_user_error(run_cli("train", "--preset", "huge", "--output-dir", str(out)), "'huge' is not one of", "'tiny'")
    assert not out.exists()


@pytest.mark.parametrize("args, listed", [
    (["train", "--device", "gpu"], "'cuda'"), (["train", "--precision", "half"], "'bf16'"),
    (["train", "--eval-metric", "bleu"], "'bleu4'"), (["export", "MODEL", "--output", "OUT", "--layout", "onnx"], "'llava'"),
    (["caption", "MODEL", "IMG", "--device", "tpu"], "'mps'"),
])
def test_options_with_choices_name_them_before_anything_runs(args, listed):
    """A value outside an option's choices is one error line listing them, before any model or data is read."""
    assert_user_error(run_cli(*args), "is not one of", listed)


def test_version():
    from importlib.metadata import version

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"distilvit-web {version('distilvit-web')}"


def test_missing_dataset_path(tmp_path):
    out, missing = tmp_path / "run", tmp_path / "no-such-folder"
    assert_user_error(run_cli("train", "--preset", "tiny", "--dataset", str(missing), "--output-dir", str(out)), str(missing))
    assert not out.exists()


def test_folder_without_captions(tmp_path):
    from PIL import Image

    folder, out = tmp_path / "pictures", tmp_path / "run"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), "red").save(folder / f"{i}.png")
    assert_user_error(run_cli("train", "--preset", "tiny", "--dataset", str(folder), "--output-dir", str(out)), str(folder))
    assert not out.exists()


def test_non_decoder_only_decoder_model(tmp_path, tiny_bases):
    gpt2, out = tmp_path / "gpt2", tmp_path / "run"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).save_pretrained(gpt2)
    result = run_cli("train", "--preset", "tiny", "--encoder-model", tiny_bases[0], "--decoder-model", str(gpt2),
                     "--output-dir", str(out))
    assert_user_error(result, "'gpt2'", "Llama-family")
    assert not out.exists()


def test_encoder_decoder_model_as_decoder(tmp_path, tiny_bases):
    from transformers import T5Config, T5ForConditionalGeneration

    t5, out = tmp_path / "t5", tmp_path / "run"
    T5ForConditionalGeneration(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=50, d_kv=8)).save_pretrained(t5)
    result = run_cli("train", "--preset", "tiny", "--encoder-model", tiny_bases[0], "--decoder-model", str(t5),
                     "--output-dir", str(out))
    assert_user_error(result, "'t5'")
    assert not out.exists()


def test_corrupt_image_to_caption(tmp_path, short_run):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert_user_error(run_cli("caption", str(short_run), str(bad)), "cannot read image", str(bad))


def test_caption_of_folders_is_the_caption_of_their_files(tmp_path, short_run):
    """A folder is its image files in name order (other files and subfolders left alone), decoded a batch at a time;
    the printed captions are those of the files named one by one, and of the PIL images in Python."""
    from distilvit.modeling.caption import NO_CAPTION, load_captioner, open_image
    from photos import write_variants

    variants = write_variants(tmp_path / "all")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("flower.jpg", "china.jpg", "rgba-ramp.png", "gray16.png", "exif-rotated.jpg"):
        (folder / name).write_bytes(variants[name].read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    (folder / "sub" / "deeper.png").write_bytes(variants["gray.jpg"].read_bytes())
    lone = variants["cmyk.jpg"]
    in_order = sorted(p for p in folder.iterdir() if p.suffix != ".txt" and p.is_file())

    by_folder = run_cli("caption", str(short_run), str(folder), str(lone), "--batch-size", "2")
    by_file = run_cli("caption", str(short_run), *map(str, in_order + [lone]), "--batch-size", "4")
    assert by_folder.returncode == 0 and by_file.returncode == 0, (by_folder.stderr[-2000:], by_file.stderr[-2000:])
    captioner = load_captioner(short_run)
    expected = captioner.caption([open_image(p) for p in in_order + [lone]])
    lines = [f"{p}\t{c or NO_CAPTION}" for p, c in zip(in_order + [lone], expected)]
    assert by_folder.stdout.splitlines() == by_file.stdout.splitlines() == lines


def test_an_empty_caption_is_printed_as_a_message(tmp_path, short_run):
    """A model that gives no words (a copy of the short run's model whose caption vocabulary holds only BOS and EOS,
    the least it may) captions "": `caption` prints the message in the caption column and counts such images."""
    import json
    import shutil

    from distilvit.modeling.caption import NO_CAPTION, load_captioner, open_image
    from photos import sample_files

    model = tmp_path / "model"
    shutil.copytree(short_run / "merged", model)
    config = json.loads((model / "config.json").read_text())
    generation = json.loads((model / "generation_config.json").read_text())
    eos = generation["eos_token_id"] if isinstance(generation["eos_token_id"], int) else generation["eos_token_id"][0]
    config["caption_vocab"] = sorted({generation["bos_token_id"], eos})  # the least a caption vocabulary holds
    (model / "config.json").write_text(json.dumps(config))
    _, flower = sample_files()
    assert load_captioner(model).caption([open_image(flower)]) == [""]  # the planted model does caption nothing
    result = run_cli("caption", str(model), str(flower))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"{flower}\t{NO_CAPTION}"]
    assert "1 of 1 images got no caption" in result.stderr


def test_caption_prints_the_batches_before_a_file_damaged_past_its_header(tmp_path, short_run):
    from photos import sample_files

    china, flower = sample_files()
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(flower.read_bytes())
    (folder / "b.jpg").write_bytes(china.read_bytes()[: china.stat().st_size // 2])  # header intact, data cut
    result = run_cli("caption", str(short_run), str(folder), "--batch-size", "1")
    assert_user_error(result, "cannot read image", str(folder / "b.jpg"))
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(folder / "a.jpg")]


def test_caption_refuses_a_folder_without_images_before_loading_the_model(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    assert_user_error(run_cli("caption", str(tmp_path / "no-model"), str(folder)), str(folder), "holds no image files")
    not_an_image = folder / "photo.png"
    not_an_image.write_text("not a png")
    assert_user_error(run_cli("caption", str(tmp_path / "no-model"), str(folder)), "cannot read image", str(not_an_image))


def test_caption_of_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "img.png").write_bytes(b"")
    assert_user_error(run_cli("caption", str(tmp_path), str(tmp_path / "img.png")), str(tmp_path))


def test_dataset_whose_images_are_all_corrupt(tmp_path):
    folder, out = tmp_path / "broken", tmp_path / "run"
    folder.mkdir()
    lines = []
    for i in range(4):
        (folder / f"{i}.png").write_bytes(b"garbage")
        lines.append(f'{{"file_name": "{i}.png", "caption": "a thing"}}')
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    result = run_cli("train", "--preset", "tiny", "--dataset", str(folder), "--output-dir", str(out))
    assert_user_error(result, "unreadable")
    assert not out.exists()


def test_print_settings_shows_what_train_would_do_and_writes_nothing(short_run, tmp_path):
    """`train --print-settings`: a new folder gets the preset with the flags and the plan resolved here, and is not
    created; a run folder prints its saved settings (--resume alone), and a flag that differs is refused as train
    refuses it."""
    import json

    from distilvit.config import TrainConfig

    new = tmp_path / "new"
    shown = run_cli("train", "--preset", "tiny", "--output-dir", str(new), "--max-steps", "7", "--device", "cpu",
                    "--gpus", "1", "--print-settings")
    assert shown.returncode == 0, shown.stderr
    printed = json.loads(shown.stdout)
    assert printed["action"] == "fresh" and not new.exists()
    expected = TrainConfig.from_preset("tiny", str(new), max_steps=7, device="cpu").to_json()
    assert printed["settings"] == json.loads(json.dumps(expected))
    assert printed["plan"]["device"] == "cpu" and printed["plan"]["precision"] == "fp32"
    assert printed["plan"]["effective_batch"] == printed["settings"]["effective_batch_size"]
    before = sorted(p.relative_to(short_run) for p in short_run.rglob("*"))
    saved = run_cli("train", "--output-dir", str(short_run), "--resume", "--print-settings")
    assert saved.returncode == 0, saved.stderr
    assert json.loads(saved.stdout)["settings"] == json.loads(json.dumps(TrainConfig.load(short_run).to_json()))
    assert json.loads(saved.stdout)["action"] == "done"  # a finished run: train would do nothing
    differs = run_cli("train", "--output-dir", str(short_run), "--lora-r", "3", "--print-settings")
    assert differs.returncode == 2 and "lora_r: saved" in differs.stderr and differs.stdout == ""
    assert sorted(p.relative_to(short_run) for p in short_run.rglob("*")) == before
