"""The layout holds: no import cycle between the top-level folders, and lists kept in step."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from workflows import search_attributes

REPO_ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("workflows", "activities", "workers", "api", "common", "tooling", "bench", "tests")


def folder_imports() -> dict[str, dict[str, set[str]]]:
    """For each folder, the other folders it imports, with one file that does, per folder."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for folder in FOLDERS:
        for path in (REPO_ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    top = name.split(".", 1)[0]
                    if top in FOLDERS and top != folder:
                        found[folder][top].add(str(path.relative_to(REPO_ROOT)))
    return found


def test_bench_and_tooling_never_import_the_tests() -> None:
    imports = folder_imports()
    assert "tests" not in imports["bench"], sorted(imports["bench"]["tests"])
    assert "tests" not in imports["tooling"], sorted(imports["tooling"]["tests"])
    assert "bench" not in imports["tooling"], sorted(imports["tooling"]["bench"])


def test_no_import_cycle_between_folders() -> None:
    imports = folder_imports()
    graph = {folder: set(imports[folder]) for folder in FOLDERS}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        ahead = graph[start] - seen
        return any(nxt == goal or reaches(nxt, goal, seen | {nxt}) for nxt in ahead)

    cycles = [(a, b) for a in FOLDERS for b in graph[a] if reaches(b, a, {b})]
    details = {f"{a} -> {b}": sorted(imports[a][b])[:3] for a, b in cycles}
    assert cycles == [], details


def test_the_dev_server_registers_every_search_attribute() -> None:
    script = (REPO_ROOT / "temporal-dev" / "start.sh").read_text()
    [listed] = re.findall(r"^search_attributes=\((.*)\)$", script, re.MULTILINE)
    registered = dict(entry.split("=") for entry in listed.split())
    assert registered == {key.name: "Keyword" for key in search_attributes.ALL}
