"""`distilvit-web upload`. No Hugging Face Hub can be reached from the test machines, so the real upload code
runs against a recording stand-in for `huggingface_hub.HfApi` (same method names and arguments); `--dry-run`
and the refusals run for real."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from distilvit.cli import app
from distilvit.errors import UserError
from distilvit.upload import upload


@pytest.fixture
def export(tmp_path):
    folder = tmp_path / "tiny"
    (folder / "onnx").mkdir(parents=True)
    (folder / "export_config.json").write_text(json.dumps({"layout": "pipeline"}))
    (folder / "README.md").write_text("---\nlibrary_name: transformers.js\n---\n")
    (folder / "onnx" / "encoder_model.onnx").write_bytes(b"x" * 1000)
    return folder


class RecordingHub:
    """Stands in for HfApi: records calls, returns what the real one returns."""

    def __init__(self, token="hf_secret_token"):
        self.token = token
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def create_commit(self, **kwargs):
        self.calls.append(("create_commit", kwargs))


def test_dry_run_lists_the_files(export):
    result = CliRunner().invoke(app, ["upload", str(export), "--repo-id", "me/tiny", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "onnx/encoder_model.onnx" in result.output and "README.md" in result.output
    assert "would upload 3 files" in result.output


def test_upload_creates_the_repo_and_pushes_the_folder(export, capsys):
    hub = RecordingHub()
    result = upload(export, "me/tiny", private=True, api=hub)
    assert hub.calls[0] == ("create_repo", {"repo_id": "me/tiny", "repo_type": "model", "private": True, "exist_ok": True})
    name, kwargs = hub.calls[1]
    assert name == "create_commit" and kwargs["repo_id"] == "me/tiny"
    sent = {op.path_in_repo: op.path_or_fileobj for op in kwargs["operations"]}
    assert sent == {rel: str(export / rel) for rel, _ in result["files"]}  # exactly what the dry run lists
    assert result["url"] == "https://huggingface.co/me/tiny"
    assert "hf_secret_token" not in json.dumps(result) + capsys.readouterr().out


def test_refusals(export, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="must look like ORG/NAME"):
        upload(export, "no-slash", dry_run=True)
    for bad in ("org/x..", "org/x.git", "org/" + "a" * 200, "org/-x"):
        with pytest.raises(UserError, match="is not a valid Hub repo id"):
            upload(export, bad, dry_run=True)
    with pytest.raises(UserError, match="is not a distilvit-web export"):
        upload(tmp_path, "me/x", dry_run=True)
    import distilvit.upload as module

    monkeypatch.setattr(module, "_logged_in", lambda: False)
    with pytest.raises(UserError, match="no Hugging Face token"):
        upload(export, "me/tiny", api=RecordingHub(token=None))


def test_only_regular_files_inside_the_export_are_sent(export, tmp_path):
    """A symlink out of the export (to a secret), a VCS folder and hidden files are left out, and the dry run
    lists exactly what a real upload sends."""
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    (export / "notes.txt").symlink_to(secret)
    (export / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
    (export / ".git").mkdir()
    (export / ".git" / "config").write_text("[remote]")
    (export / ".DS_Store").write_bytes(b"x")
    dry = upload(export, "me/tiny", dry_run=True)
    assert [name for name, _ in dry["files"]] == ["README.md", "export_config.json", "onnx/encoder_model.onnx"]
    assert any("notes.txt (a symlink" in s for s in dry["skipped"]) and ".git/ (hidden)" in dry["skipped"]
    hub = RecordingHub()
    upload(export, "me/tiny", api=hub)
    sent = sorted(op.path_in_repo for op in hub.calls[1][1]["operations"])
    assert sent == [name for name, _ in dry["files"]]
    result = CliRunner().invoke(app, ["upload", str(export), "--repo-id", "me/tiny", "--dry-run"])
    assert "left out: notes.txt (a symlink" in result.output and ".git/config" not in result.output
