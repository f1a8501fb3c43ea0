"""The package's shape: imports point one way (entry points -> stages -> modeling and data -> contracts), every
stage subpackage says what it owns, and no module grows past ~350 lines without a reason. Read from the source
(ast), nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each installed package's source lives (pyproject.toml's package-dir).
SOURCES = {"distilvit": ROOT / "distilvit", "distilvit.export": ROOT / "export", "distilvit.quantize": ROOT / "quantize"}
# Lowest first. A module may import its own package and any package ranked below it, never one ranked above.
# "contracts" are the top-level modules every stage shares; "entry" the two that drive the stages.
ORDER = ["contracts", "data", "modeling", "quantize", "export", "serve", "runtimes", "training", "verify", "bench",
         "entry"]
ENTRY = {"distilvit.cli", "distilvit.quickstart"}
# Over ~350 lines on purpose; each says why in its docstring.
LONG_MODULES = {"distilvit.cli": "the whole command surface in one place"}
MAX_LINES = 350


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if package == "distilvit" and parts[0] in ("export", "quantize"):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def layer(module: str) -> str:
    if module in ENTRY:
        return "entry"
    parts = module.split(".")
    if len(parts) == 1:
        return "contracts"  # distilvit/__init__.py
    if module in MODULES and MODULES[module].parent == SOURCES["distilvit"] and MODULES[module].name != "__init__.py":
        return "contracts"
    return parts[1]


MODULES = modules()


def imported(module: str, path: Path) -> set[str]:
    """Every distilvit module `module` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(package + [node.module])
            names |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {n for n in names if n.split(".")[0] == "distilvit"}


def test_every_module_belongs_to_a_known_layer():
    unknown = {m: layer(m) for m in MODULES if layer(m) not in ORDER}
    assert not unknown, f"add these packages to ORDER (where they sit in the import direction): {unknown}"


def test_imports_point_one_way():
    wrong = []
    for module, path in MODULES.items():
        source = layer(module)
        for target in imported(module, path):
            target_layer = layer(target if target in MODULES else target.rsplit(".", 1)[0])
            if ORDER.index(target_layer) > ORDER.index(source):
                wrong.append(f"{module} ({source}) imports {target} ({target_layer})")
    assert not wrong, "imports against the direction " + " < ".join(ORDER) + ":\n" + "\n".join(wrong)


def test_export_knows_nothing_of_training_runs_beyond_the_settings_file():
    """export takes a model folder; a run is known to it only through train_config.json (distilvit.config), read to
    find the run's validation images for the ship gate."""
    for module, path in MODULES.items():
        if layer(module) == "export":
            reached = {t for t in imported(module, path) if layer(t) == "training"}
            assert not reached, f"{module} imports {reached}"


@pytest.mark.parametrize("package", ["data", "modeling", "training", "runtimes", "serve", "verify", "bench"])
def test_each_stage_says_what_it_owns_and_what_it_does_not_know(package):
    doc = ast.get_docstring(ast.parse((SOURCES["distilvit"] / package / "__init__.py").read_text())) or ""
    assert "knows nothing" in doc or "owns no" in doc, f"distilvit/{package}/__init__.py: say what it does not know"
    named = [p.stem for p in (SOURCES["distilvit"] / package).glob("*.py") if p.stem != "__init__"]
    missing = [n for n in named if f"`{n}`" not in doc and n not in doc]
    assert not missing, f"distilvit/{package}/__init__.py does not name its modules {missing}"


def test_no_module_over_350_lines_without_a_reason():
    long = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    unexplained = {m: n for m, n in long.items() if n > MAX_LINES and m not in LONG_MODULES}
    assert not unexplained, f"split these modules at their seams, or give the reason in LONG_MODULES: {unexplained}"
    for module, reason in LONG_MODULES.items():
        doc = " ".join((ast.get_docstring(ast.parse(MODULES[module].read_text())) or "").split())
        assert reason in doc, f"{module}'s docstring should say why it is long ({reason!r})"
