"""Careless and hostile inputs (issue 14), one section per group: --overwrite never deletes what the toolkit did
not write, interrupted writes are cleaned up, outputs get normal permissions, uploads stay inside the export,
and bad arguments end in one `error:` line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from distilvit.atomic import OWNER_FILE, atomic_dir, remove_leftovers
from distilvit.errors import UserError


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """The installed entry point, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "distilvit.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), result.stderr
    return lines[-1]


# --- --overwrite replaces only what the toolkit wrote ---------------------------------------------------------

def test_overwrite_refuses_a_folder_of_user_files(tmp_path):
    photos = tmp_path / "holiday"
    photos.mkdir()
    (photos / "IMG_0001.jpg").write_bytes(b"precious")
    with pytest.raises(UserError, match=r"holiday holds no export_config.json, so it is not a distilvit-web export"):
        with atomic_dir(photos, overwrite=True, marker="export_config.json", what="export") as tmp:
            (tmp / "export_config.json").write_text("{}")
    assert (photos / "IMG_0001.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holiday"]  # no temporary folder left


def test_overwrite_replaces_a_toolkit_folder_once_complete(tmp_path):
    target = tmp_path / "export"
    with atomic_dir(target, marker="export_config.json") as tmp:
        (tmp / "export_config.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, overwrite=True, marker="export_config.json") as tmp:
            (tmp / "export_config.json").write_text("half")
            raise RuntimeError("killed halfway")
    assert (target / "export_config.json").read_text() == "old"
    with atomic_dir(target, overwrite=True, marker="export_config.json") as tmp:
        (tmp / "export_config.json").write_text("new")
    assert (target / "export_config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_export_and_merge_overwrite_refuse_user_folders_before_any_work(short_run, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    line = one_error_line(cli("export", short_run, "--output", folder, "--overwrite"))
    assert "mine holds no export_config.json, so it is not a distilvit-web export" in line
    line = one_error_line(cli("merge", short_run, "--output", folder, "--overwrite"))
    assert "distilvit_model.json" in line
    assert (folder / "notes.txt").read_text() == "keep me"


def test_output_dot_is_refused(short_run, tmp_path):
    line = one_error_line(cli("export", short_run, "--output", ".", "--overwrite", cwd=tmp_path))
    assert "current folder" in line


# --- leftovers of interrupted writes, permissions -------------------------------------------------------------

def test_leftovers_of_a_killed_write_are_named_and_removed(tmp_path, caplog):
    target = tmp_path / "export"
    target.mkdir()
    (target / "config.json").write_text("{}")  # the replace finished: the moved-aside old content is obsolete
    dead = tmp_path / ".export.tmp-abc123"
    dead.mkdir()
    (dead / OWNER_FILE).write_text("999999999\n")  # no such process
    stale_old = tmp_path / ".export.old-xyz"
    stale_old.mkdir()
    running = tmp_path / ".export.tmp-live"
    running.mkdir()
    (running / OWNER_FILE).write_text(f"{os.getppid()}\n")  # a live process: another write in progress
    with caplog.at_level("WARNING"):
        removed = remove_leftovers(target)
    assert sorted(p.name for p in removed) == [".export.old-xyz", ".export.tmp-abc123"]
    assert running.is_dir() and "interrupted earlier write" in caplog.text


def test_a_replace_that_fails_halfway_keeps_the_old_content(tmp_path, monkeypatch):
    """The earlier folder is moved aside before the new one takes its name: when that second rename fails (injected),
    the earlier content is put back under its name and nothing is left beside it."""
    from pathlib import Path

    target = tmp_path / "export"
    target.mkdir()
    (target / "config.json").write_text("old")
    real_rename = Path.rename

    def failing_rename(self, new):
        if self.name.startswith(".export.tmp-"):
            raise OSError(5, "Input/output error")
        return real_rename(self, new)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "config.json").write_text("new")
    monkeypatch.undo()
    assert (target / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_old_content_left_aside_by_a_killed_replace_is_restored_not_deleted(tmp_path, caplog):
    """A replace killed between its two renames leaves the earlier content in .NAME.old-* and no NAME: the next write
    of NAME puts it back (it is the only copy) instead of cleaning it away."""
    target = tmp_path / "export"
    aside = tmp_path / ".export.old-abc123"
    aside.mkdir()
    (aside / "config.json").write_text("old")
    with caplog.at_level("WARNING"):
        remove_leftovers(target)
    assert (target / "config.json").read_text() == "old" and not aside.exists()
    assert "restored" in caplog.text


def test_a_written_folder_has_the_users_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a.json").write_text("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "out").stat().st_mode)
    assert mode == 0o755, oct(mode)
    assert not (tmp_path / "out" / OWNER_FILE).exists()


# --- one `error:` line, never a traceback ---------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["caption", "model", "a.png", "--batch-size", "0"], "--batch-size"),
    (["caption", "model", "a.png", "--num-beams", "0"], "--num-beams"),
    (["caption", "model", "a.png", "--max-new-tokens", "-5"], "--max-new-tokens"),
    (["serve", "exports", "--port", "70000"], "--port"),
    (["no-such-command"], "No such command"),
])
def test_bad_arguments_end_in_one_error_line(args, needle):
    assert needle in one_error_line(cli(*args))


OUTPUTS_UNDER_A_FILE = {  # every output a user names, each under a path whose folder is a file
    "train": ["train", "--preset", "tiny", "--dataset", "synthetic", "--output-dir", "{blocked}/run"],
    "export": ["export", "{run}", "--output", "{blocked}/export"],
    "merge": ["merge", "{run}", "--output", "{blocked}/merged"],
    "evaluate": ["evaluate", "{run}", "--dataset", "synthetic", "--output", "{blocked}/scores.json"],
    "verify parity": ["verify", "parity", "{run}", "--report", "{blocked}/parity.json"],
    "bench": ["bench", "--output", "{blocked}/benchmarks.md", "--workdir", "{tmp}/bench"],
    "bench workdir": ["bench", "--output", "{tmp}/docs/benchmarks.md", "--workdir", "{blocked}/bench"],
    "bench train": ["bench", "train", "--output", "{blocked}/train.json"],
}


@pytest.mark.parametrize("command", OUTPUTS_UNDER_A_FILE)
def test_an_output_under_a_file_is_refused_before_any_work(command, short_run, tmp_path):
    blocked = tmp_path / "notes.txt"
    blocked.write_text("a file where the output's folder would be")
    args = [a.format(blocked=blocked, run=short_run, tmp=tmp_path) for a in OUTPUTS_UNDER_A_FILE[command]]
    line = one_error_line(cli(*args))
    assert f"{blocked} is a file, not a folder" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing made, not even the other folders


def test_reports_are_written_whole_into_folders_made_for_them(short_run, tmp_path):
    import json

    from distilvit.atomic import write_file

    report = tmp_path / "results" / "2026" / "scores.json"
    result = cli("evaluate", short_run, "--dataset", "synthetic", "--sample", "2", "--output", report)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(report.read_text())["num_images"] == 2
    one_error_line_of_folder = one_error_line(cli("evaluate", short_run, "--dataset", "synthetic", "--output", tmp_path))
    assert f"the evaluation report {tmp_path} is a folder" in one_error_line_of_folder
    old = os.umask(0o022)
    try:
        write_file(report, "{}\n", "evaluation report")  # replaces the earlier file, leaves no temporary one
    finally:
        os.umask(old)
    assert report.read_text() == "{}\n" and os.listdir(report.parent) == ["scores.json"]
    assert stat.S_IMODE(report.stat().st_mode) == 0o644


def test_an_image_over_the_pixel_limit_is_one_error_line(short_run, tmp_path):
    from PIL import Image

    big = tmp_path / "bomb.png"
    Image.new("L", (4000, 3000)).save(big)  # 12 megapixels in a few kilobytes
    line = one_error_line(cli("caption", short_run, big, "--max-image-pixels", "1000000"))
    assert "bomb.png has 4000 x 3000 = 12,000,000 pixels, over the limit of 1,000,000" in line


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path):
    import errno

    with pytest.raises(UserError, match=r"writing the export .*out failed: No space left on device; nothing was written"):
        with atomic_dir(tmp_path / "out", what="export") as tmp:
            (tmp / "part.onnx").write_bytes(b"x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a write raises on a full disk
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_model_file_is_one_error_line(short_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(short_run / "merged", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 30), "red").save(image)
    for args in (["caption", broken, image], ["export", broken, "--output", tmp_path / "out"]):
        line = one_error_line(cli(*args))
        assert f"cannot load the model in {broken}" in line and "damaged" in line
    assert not (tmp_path / "out").exists()


# --- datasets: duplicates across splits, encodings, links out -------------------------------------------------

def _image_folder(folder, names_and_colours, metadata_name="metadata.jsonl"):
    import json as jsonlib

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, colour, split in names_and_colours:
        (folder / split).mkdir(exist_ok=True)
        Image.new("RGB", (32, 32), colour).save(folder / split / name)
    for split in {s for _, _, s in names_and_colours}:
        rows = [{"file_name": n, "caption": f"a {c} square"} for n, c, s in names_and_colours if s == split]
        (folder / split / metadata_name).write_text("\n".join(jsonlib.dumps(r) for r in rows) + "\n")
        lines += rows
    return folder


def test_test_images_that_are_also_training_images_are_left_out(tmp_path, caplog):
    from distilvit.data import load_caption_splits

    colours = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
    rows = [(f"{c}.png", c, "train") for c in colours]
    rows += [("copy-red.png", "red", "test"), ("copy-blue.png", "blue", "test"), ("new.png", "gray", "test")]
    rows += [("v.png", "pink", "validation")]
    folder = _image_folder(tmp_path / "data", rows)
    with caplog.at_level("WARNING"):
        splits = load_caption_splits([str(folder)], cache_dir=str(tmp_path / "cache"), num_proc=1)
    assert len(splits["test"]) == 1 and splits["test"][0]["captions"] == ["a gray square"]
    assert "2 of 3 test images are also in an earlier split" in caplog.text


def test_non_utf8_metadata_is_named(tmp_path):
    from distilvit.data import load_caption_splits

    folder = _image_folder(tmp_path / "data", [("a.png", "red", "train")])
    (folder / "train" / "metadata.jsonl").write_bytes('{"file_name": "a.png", "caption": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match=r"metadata.jsonl is not UTF-8 text \(byte 0xe9"):
        load_caption_splits([str(folder)], cache_dir=str(tmp_path / "cache"), num_proc=1)


def test_a_link_out_of_the_dataset_folder_is_refused(tmp_path):
    from PIL import Image

    from distilvit.data import load_caption_splits

    folder = _image_folder(tmp_path / "data", [("a.png", "red", "train")])
    outside = tmp_path / "private.png"
    Image.new("RGB", (8, 8)).save(outside)
    (folder / "train" / "b.png").symlink_to(outside)
    with pytest.raises(UserError, match=r"b.png is a link to .*private.png, outside the dataset folder"):
        load_caption_splits([str(folder)], cache_dir=str(tmp_path / "cache"), num_proc=1)


def test_commands_started_at_once_take_turns_on_the_transformers_js_folder(tmp_path, monkeypatch):
    """While one command holds the runtime folder's lock (installing, or copying the demo's vendor files), another
    waits for it instead of installing into the same folder or reading a half-copied script."""
    import threading

    from distilvit import transformers_js

    monkeypatch.setenv("DISTILVIT_WEB_CACHE", str(tmp_path / "cache"))
    folder = transformers_js.cache_dir()
    marker = folder / "node_modules" / "@huggingface" / "transformers" / "package.json"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")  # installed: ensure_installed has only the scripts to copy
    done = threading.Event()
    worker = threading.Thread(target=lambda: (transformers_js.ensure_installed(), done.set()))
    with transformers_js.lock():
        worker.start()
        assert not done.wait(1.0), "ensure_installed went ahead while another command held the lock"
        assert not (folder / "caption.mjs").exists()
    worker.join(60)
    assert done.is_set()
    assert (folder / "caption.mjs").read_bytes() == (transformers_js.JS_DIR / "caption.mjs").read_bytes()
    assert not list(folder.glob(".*.tmp"))


def test_train_overwrite_killed_before_its_first_checkpoint_loses_nothing(short_run, tmp_path):
    """`train --overwrite` sets the finished run aside instead of deleting it; killed before the new run's first
    checkpoint, the next `train` of that folder puts the previous run back, byte for byte."""
    import shutil
    import signal
    import time
    from pathlib import Path

    from conftest import short_config

    from distilvit.training.train import train

    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    script = ("import sys\n"
              f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from conftest import short_config\n"
              "from distilvit.training.train import train\n"
              f"train(short_config({str(run)!r}, max_steps=2000, eval_steps=0, save_steps=1000), overwrite=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (list(tmp_path.glob(".run.old-*")) and (run / "train_config.json").is_file()):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the overwriting run never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(run.glob("checkpoints/checkpoint-*"))
    result = train(short_config(run))  # the same settings as the previous run: found finished once restored
    assert result.skipped
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.glob(".run.old-*"))


# --- one rule for "is this an export?" in every command that takes one ---------------------------------------------

@pytest.mark.parametrize("command", [("serve",), ("site", "--output", "{tmp}/site"),
                                     ("upload", "--repo-id", "me/model", "--dry-run"), ("verify", "parity")],
                         ids=["serve", "site", "upload", "verify-parity"])
def test_every_command_taking_an_export_refuses_the_same_folders_the_same_way(tmp_path, command):
    """A folder without export_config.json, and one whose export_config.json is damaged: one error line each,
    the same words whichever command was given it (export.constants.read_export_config), nothing written."""
    plain = tmp_path / "photos"
    plain.mkdir()
    (plain / "a.jpg").write_bytes(b"not an export")
    damaged = tmp_path / "cut"
    damaged.mkdir()
    (damaged / "export_config.json").write_text('{"layout": "pipel')
    name, *options = [part.format(tmp=tmp_path) for part in command]
    before = sorted(p.name for p in tmp_path.iterdir())
    for folder, words in ((plain, "photos is not a distilvit-web export (export_config.json missing); make one"),
                          (damaged, "cut/export_config.json is damaged (JSONDecodeError")):
        args = [name, *options[:1], folder, *options[1:]] if name == "verify" else [name, folder, *options]
        assert words in one_error_line(cli(*args)), args
    assert sorted(p.name for p in tmp_path.iterdir()) == before
