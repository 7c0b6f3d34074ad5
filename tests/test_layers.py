"""The floors: traces <- train <- evals <- curate. Nothing imports a higher floor, nothing below curate names a
curate command to run, and no `except ImportError` guards mend's own modules (one distribution ships all four)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {"traces": 0, "train": 1, "evals": 2, "curate": 3}


def modules():
    for pkg in FLOORS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield pkg, path, ast.parse(path.read_text(), str(path))


def imported_packages(tree) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out & set(FLOORS)


@pytest.mark.parametrize("pkg", list(FLOORS))
def test_no_import_runs_back_up(pkg):
    upward = [f"{path.relative_to(ROOT)} imports {other}" for p, path, tree in modules() if p == pkg
              for other in imported_packages(tree) if FLOORS[other] > FLOORS[pkg]]
    assert upward == []


def test_nothing_below_curate_names_a_curate_command():
    found = [str(path.relative_to(ROOT)) for pkg, path, _ in modules()
             if pkg != "curate" and "-m curate" in path.read_text()]
    assert found == []


def test_no_import_error_guard_around_mends_own_modules():
    guarded = []
    for _, path, tree in modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try):
                continue
            catches = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            if not any("ImportError" in c for c in catches):
                continue
            inner = ast.Module(body=node.body, type_ignores=[])
            if imported_packages(inner):
                guarded.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert guarded == []
