"""`distilvit-web quickstart`: every stage on the embedded default, offline, on a CPU, in one command.

    synthetic shapes -> train the tiny preset (merged at the end) -> export (pipeline layout, fp32 + q8)
    -> verify parity (PyTorch vs onnxruntime vs transformers.js) -> the serve command (or serve)

Each stage is skipped when its output is already complete, so re-running resumes where it stopped. This module
only orders the stages; each one is the same library function its own command calls.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from distilvit.config import TrainConfig
from distilvit.export import constants as C

log = logging.getLogger(__name__)


def run_quickstart(workdir: Path) -> dict:
    """Run (or reuse) every stage under `workdir`; return where each output is and the headline figures."""
    from distilvit.export.exporter import export_model
    from distilvit.verify.parity import verify_parity
    from distilvit.verify.images import collect_images
    from distilvit.verify.report import table, write
    from distilvit.pixels import rule_is_current
    from distilvit.training.train import train

    workdir = Path(workdir)
    run_dir, export_dir = workdir / "runs" / "tiny", workdir / "exports" / "tiny"
    log.info("[1/3] training the tiny preset on synthetic shapes in %s", run_dir)
    trained = train(TrainConfig.from_preset("tiny", str(run_dir)))
    current = (export_dir / C.EXPORT_CONFIG).is_file() and \
        rule_is_current(json.loads((export_dir / C.EXPORT_CONFIG).read_text()).get("pixels"))
    if current:
        log.info("[2/3] %s already holds an export; reusing it", export_dir)
    else:
        if (export_dir / C.EXPORT_CONFIG).is_file():
            log.info("[2/3] %s was exported with an earlier pixel rule; exporting it again", export_dir)
        log.info("[2/3] exporting to %s (pipeline layout, fp32 + q8)", export_dir)
        export_model(run_dir, export_dir, layout="pipeline", quantize="q8", overwrite=export_dir.exists())
    log.info("[3/3] parity: PyTorch vs onnxruntime vs transformers.js on 16 held-out images")
    with collect_images(None, "synthetic", 16) as images:
        report = verify_parity(export_dir, images)
    report_path = workdir / "parity.json"
    write(report, report_path, report_path.with_suffix(".md"))
    return {
        "run": run_dir,
        "export": export_dir,
        "exact_match": trained.exact_match if trained.exact_match is not None
        else json.loads((run_dir / "eval.json").read_text())["exact_match"],
        "parity_table": table(report),
        "parity_passed": report["passed"],
        "report": report_path,
    }
