"""Figures the docs quote agree with their one source: timings and counts cited from the generated docs are in them,
and the photograph forms are what tests/photos.py writes (the tiny run's parameter counts are checked in
tests/test_tiny_quality.py, beside the run; a module here waiting for it would hold an xdist worker idle).
Defaults in `--help` need no check here: the CLI reads them from TrainConfig and the presets (distilvit/cli.py
`_default`)."""

from __future__ import annotations

import re
from pathlib import Path

from photos import write_variants

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
# "2175.7 vs 1163.1 ms", "560.0 ms", "2.62 vs 2.81 s": a figure, or two compared, and their unit; "~" marks an
# approximation worked out from the table, not quoted from it
TIMING = re.compile(r"(?<![~\d.])(\d+(?:\.\d+)?)(?: vs (\d+(?:\.\d+)?))? (ms|s)\b")


def sentences(text: str) -> list[str]:
    """The prose of a Markdown file as sentences: tables, code blocks and indented blocks (README's file tree, commands)
    left out, a paragraph break always ending a sentence."""
    text = re.sub(r"```.*?```", "\n\n", text, flags=re.S)
    kept = ["" if line.lstrip().startswith("|") or line.startswith("    ") else line for line in text.splitlines()]
    paragraphs = re.split(r"\n\s*\n", "\n".join(kept))
    return [s for p in paragraphs for s in re.split(r"(?<=[.;:])\s+(?=[A-Z(`*\-])", " ".join(p.split())) if s]


GENERATED = [BENCHMARKS, ROOT / "docs" / "quantization.md"]  # written by `bench` and `bench quality`
FRACTION = re.compile(r"(?<![\w./])(\d+)/(\d+)(?![\w/])")  # "9/64 kept"


def citing(generated: Path) -> list[tuple[str, str]]:
    """(file name, sentence) for every sentence outside `generated` that names it."""
    return [(path.name, s) for path in DOCS if path != generated for s in sentences(path.read_text())
            if generated.name in s]


def quoted_from(figure: str, unit: str, table: list[float]) -> bool:
    """Whether `figure` (as written, in `unit`) is one of `table`'s millisecond values at the figure's precision."""
    decimals = len(figure.split(".")[1]) if "." in figure else 0
    scale = 1000 if unit == "s" else 1
    return any(round(value / scale, decimals) == float(figure) for value in table)


def stale_quotes(generated: Path) -> list[tuple]:
    """Timings and counts (N/M) in sentences citing `generated` that it does not hold."""
    text = generated.read_text()
    table = [float(n) for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", text)]
    counts = {m.group(0) for m in FRACTION.finditer(text)}
    stale = []
    for name, sentence in citing(generated):
        for match in TIMING.finditer(sentence):
            stale += [(name, f"{figure} {match.group(3)}", sentence[:160]) for figure in match.groups()[:2]
                      if figure and not quoted_from(figure, match.group(3), table)]
        stale += [(name, m.group(0), sentence[:160]) for m in FRACTION.finditer(sentence) if m.group(0) not in counts]
    return stale


def test_figures_cited_from_generated_docs_are_in_them():
    """A sentence that cites docs/benchmarks.md or docs/quantization.md quotes only their timings and counts: figures
    from other runs sit in sentences of their own, with their date. Fails when a generated file is written again
    and a quote is left behind."""
    assert len(citing(BENCHMARKS)) >= 5, "the sentence splitter no longer finds the citations"
    stale = [row for generated in GENERATED for row in stale_quotes(generated)]
    assert not stale, "figures cited from generated docs that they do not hold:\n" + "\n".join(map(str, stale))


def test_the_check_finds_a_stale_quote():
    """The check above fails on a sentence quoting a timing benchmarks.md lacks (the drift it guards against)."""
    table = [1163.1, 2175.7]
    sentence = "took 1.9x as long, 2176 vs 1160 ms in docs/benchmarks.md"
    found = [(f, m.group(3)) for m in TIMING.finditer(sentence) for f in m.groups()[:2] if f]
    assert found == [("2176", "ms"), ("1160", "ms")]
    assert [quoted_from(f, u, table) for f, u in found] == [True, False]
    assert quoted_from("1.16", "s", table) and not quoted_from("1.2", "ms", table)
    assert not TIMING.search("add ~0.2 s to the first token")  # an approximation, not a quote


def test_photograph_forms_quoted_are_what_the_tests_write(tmp_path):
    forms = len(write_variants(tmp_path))
    for path in (ROOT / "README.md", ROOT / "docs" / "parity.md"):
        quoted = re.findall(r"photographs in (\d+) forms", " ".join(path.read_text().split()))
        assert quoted and {int(n) for n in quoted} == {forms}, f"{path.name}: {quoted} vs {forms} forms written"
