"""README.md stays true: two fresh-machine commands, CI runs the test one, the file tree matches the repo."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def fresh_machine_commands() -> list[str]:
    section = README.split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_two_commands_and_ci_runs_the_test_one():
    commands = fresh_machine_commands()
    assert commands == ["make quickstart", "make test"], commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), "CI must run README's test command"


def test_file_tree_matches_the_repository():
    tree = README.split("## Files", 1)[1].split("\n## ", 1)[0]
    listed, stack = set(), []  # stack: (indent, folder path) of the folders enclosing the current line
    for line in tree.splitlines():
        m = re.match(r"^    (\s*)(\S+)", line)
        if not m:
            continue
        indent, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (stack[-1][1] + "/" if stack else "") + name.rstrip("/")
        listed.add(path)
        if name.endswith("/"):
            stack.append((indent, path))
    for path in listed:
        assert (ROOT / path).exists(), f"README lists {path}, which does not exist"
    stages = [f"distilvit/{d.name}" for d in sorted((ROOT / "distilvit").iterdir()) if (d / "__init__.py").is_file()]
    for package in ("distilvit", *stages, "distilvit/runtimes/js", "export", "quantize", "tests", "docs", "web-demo"):
        for f in sorted((ROOT / package).glob("*.*")):
            code = {".py", ".md", ".js", ".mjs", ".html"} | ({".json"} if package == "distilvit/runtimes/js" else set())
            if f.suffix in code and f.name != "__init__.py":
                assert f"{package}/{f.name}" in listed, f"{package}/{f.name} is missing from README's file tree"
