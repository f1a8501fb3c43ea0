"""Training runs end to end: what trains, what stays frozen, what is written, resume, and refusals."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration, TrainerCallback

from conftest import SMALL_SYNTHETIC, short_config
from distilvit.config import TrainConfig
from distilvit.errors import UserError
from distilvit.modeling.caption import load_captioner
from distilvit.modeling.merge import build_base, merge_run
from distilvit.modeling.prompt import PROCESSOR_KWARGS, prompt_text
from distilvit.training import lora
from distilvit.training.train import train


def test_only_projector_lora_and_head_train(tmp_path, tiny_bases):
    config = short_config(tmp_path / "run", encoder_model=tiny_bases[0], decoder_model=tiny_bases[1])
    model, _ = build_base(config, tmp_path / "run")
    counts = lora.trainable_counts(lora.apply_lora(model, config))
    text = model.config.text_config
    vocab = model.get_input_embeddings().weight.shape[0]
    q_out = text.num_attention_heads * text.head_dim
    kv_out = text.num_key_value_heads * text.head_dim
    r, h = config.lora_r, text.hidden_size
    per_layer = r * (h + q_out) + 2 * r * (h + kv_out) + r * (q_out + h)  # q, k, v, o: A [r, in] + B [out, r]
    vis, proj = model.config.vision_config.hidden_size, model.model.multi_modal_projector
    assert counts == {
        "lora": per_layer * text.num_hidden_layers,
        "projector": vis * h + h + h * h + h,
        "lm_head": vocab * h,
    }
    assert proj.linear_2.out_features == h


def test_vision_unfreeze_and_head_flags_change_the_groups(tmp_path, tiny_bases):
    config = short_config(tmp_path / "run", encoder_model=tiny_bases[0], decoder_model=tiny_bases[1],
                          vision_unfreeze_layers=1, train_lm_head=False)
    model, _ = build_base(config, tmp_path / "run")
    last_layer = sum(p.numel() for p in model.model.vision_tower.encoder.layers[-1].parameters())
    counts = lora.trainable_counts(lora.apply_lora(model, config))
    assert set(counts) == {"lora", "projector", "vision"}
    assert counts["vision"] == last_layer


def test_run_writes_its_files_and_keeps_the_vision_tower(short_run):
    for name in ["train_config.json", "train_log.json", "eval.json", "adapter/adapter_config.json",
                 "merged/config.json", "merged/model.safetensors", "merged/tokenizer.json",
                 "merged/tokenizer_config.json", "merged/processor_config.json", "merged/generation_config.json",
                 "merged/distilvit_model.json", "base/encoder/model.safetensors", "base/decoder/tokenizer.json",
                 "metrics.json"]:
        assert (short_run / name).is_file(), name
    saved = json.loads((short_run / "train_config.json").read_text())
    assert saved["run_info"]["versions"]["transformers"]
    assert TrainConfig.load(short_run).max_steps == 6
    before = load_file(short_run / "base/encoder/model.safetensors")
    merged = AutoModelForImageTextToText.from_pretrained(short_run / "merged")
    vision = merged.model.vision_tower.state_dict()
    assert before.keys() == vision.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, vision[name]), name
    # the frozen decoder weights LoRA does not touch are unchanged too; the adapted ones changed
    decoder = load_file(short_run / "base/decoder/model.safetensors")
    language = merged.model.language_model.state_dict()
    assert torch.equal(decoder["model.layers.0.mlp.up_proj.weight"], language["layers.0.mlp.up_proj.weight"])
    assert not torch.equal(decoder["model.layers.0.self_attn.q_proj.weight"], language["layers.0.self_attn.q_proj.weight"])


def test_the_run_draws_its_training_curves(short_run):
    """RUN/training_curves.png holds the run's logged loss and its evaluations (at steps 3 and 6): the picture
    drawn from train_log.json again is the same picture, and it differs from one drawn without the evaluations."""
    from distilvit.training.curves import CURVES_FILE, plot_curves, series

    log = json.loads((short_run / "train_log.json").read_text())
    assert [step for step, _ in series(log, "eval_exact_match")] == [3, 6] and series(log, "loss")
    drawn = (short_run / CURVES_FILE).read_bytes()
    assert drawn.startswith(b"\x89PNG")
    again = plot_curves(log, short_run.parent / "again.png", "exact_match").read_bytes()
    assert again == drawn
    without = [{k: v for k, v in e.items() if not k.startswith("eval_")} for e in log]
    assert plot_curves(without, short_run.parent / "without.png", "exact_match").read_bytes() != drawn
    assert plot_curves([], short_run.parent / "empty.png") is None


def test_console_log_lines_are_numbers_and_report_to_tensorboard_writes_events(tmp_path):
    """Each log line reads `step N/M  loss 1.234 ...` (transformers' own callback prints a dict of quoted
    strings); `--report-to tensorboard` writes event files into RUN/tensorboard/ (tensorboardX, a test dependency)."""
    from typer.testing import CliRunner

    from distilvit.cli import app

    out = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--dataset", "synthetic", "--synthetic-size", "64", "--max-steps", "4",
            "--eval-steps", "0", "--test-sample", "4", "--per-device-train-batch-size", "8",
            "--effective-batch-size", "8", "--report-to", "tensorboard", "--output-dir", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    final = [line for line in result.output.splitlines() if line.startswith("step 4/4  ")]
    assert final and "train_loss " in final[0] and "': '" not in result.output, result.output[-2000:]
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events), list((out / "tensorboard").rglob("*"))


def test_report_to_a_missing_integration_names_what_to_install():
    import importlib.util

    from distilvit.training.train import check_reporters

    if importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed here, so its absence cannot be shown")
    with pytest.raises(UserError, match="--report-to wandb needs the wandb package.*pip install wandb"):
        check_reporters(("wandb",))


def test_merged_model_loads_with_plain_transformers_and_matches_caption(short_run, tmp_path):
    from PIL import Image

    from distilvit.data.synthetic import make_synthetic_splits

    images = [r["image"] for r in make_synthetic_splits(seed=5, train_size=1, validation_size=1, test_size=4)["test"]]
    ours = load_captioner(short_run).caption(images)

    model = AutoModelForImageTextToText.from_pretrained(short_run / "merged")
    processor = AutoProcessor.from_pretrained(short_run / "merged")
    assert isinstance(model, LlavaForConditionalGeneration)
    batch = processor(images=images, text=[prompt_text(processor.tokenizer)] * len(images), return_tensors="pt",
                      **PROCESSOR_KWARGS)
    out = model.generate(**batch, do_sample=False)
    plain = [c.strip() for c in processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
    assert plain == ours

    # and the same through the CLI
    from typer.testing import CliRunner

    from distilvit.cli import app

    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    result = CliRunner().invoke(app, ["caption", str(short_run), *map(str, paths)])
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[1] for line in result.output.strip().splitlines()[-len(paths):]] == ours


def test_merge_command_rebuilds_the_same_model(short_run, tmp_path):
    out = merge_run(short_run, output=tmp_path / "again")
    a = load_file(short_run / "merged/model.safetensors")
    b = load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_finished_run_is_not_trained_again(short_run):
    result = train(TrainConfig.load(short_run))
    assert result.skipped


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated stop")


def stop_training_at(monkeypatch, config, step: int) -> None:
    """Train `config` until `step`, then stop it as Ctrl+C would (a KeyboardInterrupt out of the Trainer)."""
    import distilvit.training.train as train_module

    original = train_module.CaptionTrainer.__init__

    def with_stop(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(StopAt(step))

    monkeypatch.setattr(train_module.CaptionTrainer, "__init__", with_stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config)
    finally:
        monkeypatch.setattr(train_module.CaptionTrainer, "__init__", original)


def test_resume_continues_to_the_same_weights(tmp_path, monkeypatch):
    """A run stopped after step 4 (checkpoint at 3) and resumed equals a run that never stopped."""
    straight = tmp_path / "straight"
    train(short_config(straight))

    stopped = tmp_path / "stopped"
    stop_training_at(monkeypatch, short_config(stopped), 4)
    assert (stopped / "checkpoints/checkpoint-3").is_dir() and not (stopped / "merged").exists()

    with pytest.raises(UserError, match="unfinished run; pass --resume"):
        train(short_config(stopped))
    # as README says: the folder and --resume are enough (the run's saved settings, not the default preset's);
    # --num-proc does not change the result, so it may differ from the saved value
    from typer.testing import CliRunner

    from distilvit.cli import app

    result = CliRunner().invoke(app, ["train", "--output-dir", str(stopped), "--resume", "--num-proc", "2"])
    assert result.exit_code == 0, result.output
    state = json.loads((stopped / "checkpoints/checkpoint-6/trainer_state.json").read_text())
    assert state["global_step"] == 6
    a = load_file(straight / "adapter/adapter_model.safetensors")
    b = load_file(stopped / "adapter/adapter_model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_checkpoints_every_save_steps_and_resume_skips_an_incomplete_one(tmp_path, monkeypatch, caplog):
    """--save-steps 2 with evaluation every 3: checkpoints at 2, 3, 4 (and 6 at the end); a checkpoint cut short
    by a kill is skipped on --resume, which says so and continues from the newest complete one."""
    from distilvit.training.checkpoints import checkpoint_problem

    out = tmp_path / "run"
    stop_training_at(monkeypatch, short_config(out, save_steps=2, save_total_limit=10), 5)
    saved = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
    assert saved == [2, 3, 4], saved
    weights = out / "checkpoints/checkpoint-4/adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # killed while writing
    assert "adapter_model.safetensors" in (checkpoint_problem(weights.parent) or "")
    with caplog.at_level("INFO"):
        train(short_config(out, save_steps=2, save_total_limit=10), resume=True)
    assert "skipping" in caplog.text and "checkpoint-4" in caplog.text
    assert "resuming from" in caplog.text and "checkpoint-3" in caplog.text
    assert json.loads((out / "checkpoints/checkpoint-6/trainer_state.json").read_text())["global_step"] == 6
    assert (out / "merged" / "config.json").is_file()


def test_other_settings_in_a_run_folder_are_refused(short_run):
    changed = dataclasses.replace(TrainConfig.load(short_run), lora_r=4)
    with pytest.raises(UserError, match="other settings.*lora_r"):
        train(changed)


def test_run_settings_come_from_the_run_folder_and_name_what_differs(short_run, tmp_path):
    """A folder holding a run: its saved settings, whatever the default preset; flags that change the result must
    agree (each one that does not is named, with both values, and deleting the run is never suggested); flags that
    do not (processes) apply. A new folder or --overwrite: the preset with the flags."""
    from distilvit.config import run_settings

    saved = TrainConfig.load(short_run)
    assert run_settings(short_run, None, {}) == saved  # not the default smollm-135m preset
    assert run_settings(short_run, "tiny", {"lora_r": saved.lora_r, "datasets": list(saved.datasets)}) == saved
    assert run_settings(short_run, None, {"num_proc": 3, "dataloader_workers": 1}) == dataclasses.replace(
        saved, num_proc=3, dataloader_workers=1)
    with pytest.raises(UserError) as refused:
        run_settings(short_run, "smollm-135m", {"lora_r": 4, "max_steps": saved.max_steps, "num_proc": 2})
    message = str(refused.value)
    assert "preset: saved 'tiny', given 'smollm-135m'" in message and f"lora_r: saved {saved.lora_r}, given 4" in message
    assert "max_steps" not in message and "num_proc" not in message and "--overwrite" not in message
    assert run_settings(tmp_path / "new", None, {"lora_r": 4}) == TrainConfig.from_preset("smollm-135m", str(tmp_path / "new"), lora_r=4)
    assert run_settings(short_run, "smollm-135m", {}, overwrite=True).preset == "smollm-135m"


def test_the_whole_test_split_is_scored_whatever_eval_sample_and_sample_are(tmp_path):
    """--eval-sample caps the validation images of each evaluation and --sample the train split, not the final test
    score (--test-sample does)."""
    out = tmp_path / "run"
    train(short_config(out, max_steps=2, eval_steps=0, eval_sample=4, sample=5))
    assert json.loads((out / "eval.json").read_text())["num_images"] == SMALL_SYNTHETIC["test_size"] == 8


def test_resume_without_a_run_is_refused(tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        train(short_config(tmp_path / "empty"), resume=True)
    assert not (tmp_path / "empty").exists()


def test_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds no training run"):
        train(short_config(tmp_path / "mine"), overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_metrics_file_holds_plan_throughput_and_evaluations(short_run):
    metrics = json.loads((short_run / "metrics.json").read_text())
    assert metrics["plan"]["device"] == "cpu" and metrics["plan"]["effective_batch"] == 8
    assert metrics["throughput"]["train_samples_per_second"] > 0
    assert metrics["throughput"]["train_tokens_per_second"] > 0
    assert [e["step"] for e in metrics["evaluations"]] == [3, 6]
    for key in ("eval_bleu4", "eval_rougeL", "eval_cider", "eval_exact_match"):
        assert key in metrics["evaluations"][0]
    assert set(metrics["test"]) == {"bleu4", "rougeL", "cider", "exact_match"}


def test_best_checkpoint_is_the_one_merged(short_run, tmp_path):
    metrics = json.loads((short_run / "metrics.json").read_text())
    best = metrics["best_checkpoint"]
    scores = {e["step"]: e["eval_exact_match"] for e in metrics["evaluations"]}
    assert best.endswith(f"checkpoint-{max(scores, key=lambda s: (scores[s], -s))}")
    again = merge_run(short_run, checkpoint=best, output=tmp_path / "best")
    a = load_file(short_run / "merged/model.safetensors")
    b = load_file(again / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_early_stopping_stops_a_stalled_run(tmp_path):
    """With every learning rate 0 the metric cannot improve: patience 1 stops after the second evaluation."""
    out = tmp_path / "stalled"
    train(short_config(out, max_steps=40, eval_steps=2, early_stopping_patience=1, lora_lr=0.0, projection_lr=0.0,
                       head_lr=0.0))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and metrics["stopped_early"]
    assert metrics["best_checkpoint"].endswith("checkpoint-2")


def test_evaluate_command_scores_a_model(short_run, tmp_path):
    from typer.testing import CliRunner

    from distilvit.cli import app
    from distilvit.training.evaluate import evaluate_model

    out = tmp_path / "scores.json"
    result = CliRunner().invoke(app, ["evaluate", str(short_run), "--dataset", "synthetic", "--sample", "4", "--output", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["num_images"] == 4 and set(saved["metrics"]) == {"bleu4", "rougeL", "cider", "exact_match"}
    # the same images through the library function give the same scores
    assert evaluate_model(short_run, ["synthetic"], sample=4)["metrics"] == saved["metrics"]
