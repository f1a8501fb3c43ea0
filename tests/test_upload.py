"""`distilvit-web upload`. No Hugging Face Hub can be reached from the test machines, so the real upload code
runs against a recording stand-in for `huggingface_hub.HfApi` (same method names and arguments); `--dry-run`
and the refusals run for real."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from distilvit.cli import app
from distilvit.errors import UserError
from distilvit.serve.upload import upload


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

    def __init__(self, token="hf_secret_token", present=None):
        self.token = token
        self.calls = []
        self.present = present  # the repo's files; None: the repo does not exist

    def list_repo_files(self, **kwargs):
        from huggingface_hub.errors import RepositoryNotFoundError

        self.calls.append(("list_repo_files", kwargs))
        if self.present is None:
            import httpx2 as httpx  # what huggingface_hub 2 builds its errors from

            url = f"https://huggingface.co/api/models/{kwargs['repo_id']}/tree/main"
            raise RepositoryNotFoundError("404 Client Error: Repository Not Found",
                                          response=httpx.Response(404, request=httpx.Request("GET", url)))
        return list(self.present)

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
    name, kwargs = hub.calls[-1]
    assert name == "create_commit" and kwargs["repo_id"] == "me/tiny"
    import hashlib

    sent = {op.path_in_repo: (op.upload_info.size, op.upload_info.sha256.hex()) for op in kwargs["operations"]}
    assert sent == {rel: (size, hashlib.sha256((export / rel).read_bytes()).hexdigest())
                    for rel, size in result["files"]}  # exactly what the dry run lists, read from the files
    assert all(op.path_or_fileobj.closed for op in kwargs["operations"])
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
    import distilvit.serve.upload as module

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
    sent = sorted(op.path_in_repo for op in hub.calls[-1][1]["operations"])
    assert sent == [name for name, _ in dry["files"]]
    result = CliRunner().invoke(app, ["upload", str(export), "--repo-id", "me/tiny", "--dry-run"])
    assert "left out: notes.txt (a symlink" in result.output and ".git/config" not in result.output


def test_the_repo_mirrors_the_export(export):
    """Files the repo holds and the export no longer has (a dtype dropped since the last upload) are deleted in the
    same commit as the files sent; the Hub's hidden .gitattributes stays; the dry run lists the same deletions."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    present = [".gitattributes", "README.md", "export_config.json", "onnx/encoder_model.onnx",
               "onnx/decoder_model_merged_q4.onnx", "onnx/encoder_model_q4.onnx"]
    dry = upload(export, "me/tiny", dry_run=True, api=RecordingHub(present=present))
    assert dry["deleted"] == ["onnx/decoder_model_merged_q4.onnx", "onnx/encoder_model_q4.onnx"]
    hub = RecordingHub(present=present)
    result = upload(export, "me/tiny", api=hub)
    operations = hub.calls[-1][1]["operations"]
    assert sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)) == dry["deleted"]
    assert sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd)) == \
        [rel for rel, _ in result["files"]]
    assert [name for name, _ in hub.calls] == ["create_repo", "list_repo_files", "create_commit"]


def test_dry_run_offline_says_the_deletions_are_unknown(export):
    result = CliRunner().invoke(app, ["upload", str(export), "--repo-id", "me/tiny", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "export lacks (deleted by the upload): unknown, the Hub could not be read" in result.output


def test_a_file_swapped_for_a_link_after_the_listing_is_refused(export, tmp_path, monkeypatch):
    """Files are opened without following links and checked on the open handle: one replaced by a symlink to a
    secret between the listing and the upload is refused, not sent."""
    import distilvit.serve.upload as module

    secret = tmp_path / "secret.txt"
    secret.write_text("x" * 1000)  # the same size as the file it replaces
    listed = module.select_files(export)

    def listing_then_swap(folder):
        target = export / "onnx" / "encoder_model.onnx"
        target.unlink()
        target.symlink_to(secret)
        return listed

    monkeypatch.setattr(module, "select_files", listing_then_swap)
    hub = RecordingHub()
    with pytest.raises(UserError, match="encoder_model.onnx changed after it was listed"):
        upload(export, "me/tiny", api=hub)
    assert "create_commit" not in [name for name, _ in hub.calls]
