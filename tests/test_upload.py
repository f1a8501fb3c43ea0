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

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


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
    assert name == "upload_folder" and kwargs["folder_path"] == str(export) and kwargs["repo_id"] == "me/tiny"
    assert result["url"] == "https://huggingface.co/me/tiny"
    assert "hf_secret_token" not in json.dumps(result) + capsys.readouterr().out


def test_refusals(export, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="must look like ORG/NAME"):
        upload(export, "no-slash", dry_run=True)
    with pytest.raises(UserError, match="is not a distilvit-web export"):
        upload(tmp_path, "me/x", dry_run=True)
    import distilvit.upload as module

    monkeypatch.setattr(module, "_logged_in", lambda: False)
    with pytest.raises(UserError, match="no Hugging Face token"):
        upload(export, "me/tiny", api=RecordingHub(token=None))
