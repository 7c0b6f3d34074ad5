"""The house. Floors: traces <- train <- evals <- curate (bench/ above them all, outside the wheel). Nothing imports a
higher floor or shells out to a higher floor's command, no import circle joins two modules (function-level imports
count), curate's wings keep their ranks, and no `except ImportError` guards mend's own modules (one distribution
ships all four; bench/ too)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {"traces": 0, "train": 1, "evals": 2, "curate": 3}
OWN = set(FLOORS) | {"bench"}  # mend's own top-level packages

# Import circles allowed, each as the exact set of modules it joins (a strongly connected component of the graph).
# Deliberate: evals.checks imports its built-in check modules (importlib.import_module) so they register on its
# registry, and they import evals.checks for `register`: the plugin registration, a circle by design.
DELIBERATE_CIRCLES = [{"evals.checks", "evals.checks_generic", "evals.checks_judge"}]
# none left (train.dpo <-> train.lora went with train/trainer.py); an entry here is a circle being taken apart
KNOWN_CIRCLES: list = []

# curate's layout as ranks: a unit (a wing folder or a flat module) imports only units of a lower rank, and itself.
# loop > synth > {filters, export} > {dedup, review, replay, accept, status, formats}; loop is the one unit that may import
# every floor and wing. A new module of curate has to be given a rank here (or be neutral).
CURATE_RANKS = {"loop": 3, "synth": 2, "filters": 1, "export": 1,
                "dedup": 0, "review": 0, "replay": 0, "accept": 0, "status": 0, "formats": 0}
# Neutral: the package itself, the CLI (it names commands as "module:func" strings), the entry point and the
# settings. Any unit may import them; they import no unit.
CURATE_NEUTRAL = {"curate", "cli", "__main__", "settings"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(pkgs=tuple(FLOORS)):
    for pkg in pkgs:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield pkg, path, ast.parse(path.read_text(), str(path))


def imports(tree, name: str = "", is_package: bool = False) -> set[str]:
    """Every dotted name the tree imports, at any depth (function-level imports too): `import a.b` -> a.b,
    `from a import b` -> a and a.b, relative imports resolved against `name`, and importlib.import_module("a.b")
    (or __import__) with a constant argument -> a.b. Callers keep the names that are modules or packages."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[:len(here) - (node.level - 1)]
                base = ".".join(here + ([node.module] if node.module else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Call) and _dynamic_import(node.func) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            out.add(node.args[0].value)
    return {m for m in out if m}


def _dynamic_import(func) -> bool:
    """importlib.import_module / il.import_module / import_module / __import__."""
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") \
        or (isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))


def top(module: str) -> str:
    return module.split(".")[0]


def graph() -> dict[str, set[str]]:
    """module -> the modules of the four floors it imports (a module also runs its parent packages' __init__)."""
    trees = {module_name(path): (path, tree) for _, path, tree in sources()}
    out = {}
    for name, (path, tree) in trees.items():
        targets = set()
        for m in imports(tree, name, path.name == "__init__.py"):
            parts = m.split(".")
            targets |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(trees)
        out[name] = targets - {name}
    return out


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in edges.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The sets of modules that import one another, directly or through others (the strongly connected components
    of more than one module); a few hundred modules, so plain reachability will do."""
    reach = {v: reachable(edges, v) for v in edges}
    found = []
    for v in sorted(edges):
        circle = {u for u in reach[v] if v in reach[u]} | {v}
        if len(circle) > 1 and circle not in found:
            found.append(circle)
    return found


# ------------------------------------------------------------------ floors


@pytest.mark.parametrize("pkg", list(FLOORS))
def test_no_import_runs_back_up(pkg):
    upward = [f"{path.relative_to(ROOT)} imports {m}" for p, path, tree in sources() if p == pkg
              for m in sorted(imports(tree)) if top(m) in FLOORS and FLOORS[top(m)] > FLOORS[pkg]]
    assert upward == []


def test_nothing_below_curate_names_a_curate_command():
    found = [str(path.relative_to(ROOT)) for pkg, path, _ in sources()
             if pkg != "curate" and "-m curate" in path.read_text()]
    assert found == []


def shell_outs(tree) -> list[tuple[int, str]]:
    """(line, module) of every list/tuple/set literal holding the string constants "-m" and a module side by side:
    [sys.executable, "-m", "curate", "nightly"], ("python", "-m", "evals.cli")."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            words = [e.value if isinstance(e, ast.Constant) and isinstance(e.value, str) else None for e in node.elts]
            out += [(node.lineno, b) for a, b in zip(words, words[1:]) if a == "-m" and b]
    return out


def test_no_shell_out_to_a_higher_floor():
    found = [f"{path.relative_to(ROOT)}:{line} runs -m {m}" for pkg, path, tree in sources()
             for line, m in shell_outs(tree) if top(m) in FLOORS and FLOORS[top(m)] > FLOORS[pkg]]
    assert found == []


# ------------------------------------------------------------------ circles


def allowed_circles() -> list[set[str]]:
    return DELIBERATE_CIRCLES + KNOWN_CIRCLES


def test_no_import_circle():
    unexpected = [sorted(c) for c in circles(graph()) if c not in allowed_circles()]
    assert unexpected == []


def test_allowed_circles_still_exist():
    """An allowance outlives its circle only by mistake: remove the entry once the circle is gone."""
    found = circles(graph())
    assert [sorted(c) for c in allowed_circles() if c not in found] == []


# ------------------------------------------------------------------ curate's wings


def curate_unit(module: str) -> str:
    """curate.synth.driver -> synth, curate.filters -> filters, curate -> curate."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_nothing_outside_curate_loop_imports_it():
    found = [f"{path.relative_to(ROOT)} imports {m}" for _, path, tree in sources()
             if not module_name(path).startswith("curate.loop")
             for m in sorted(imports(tree)) if m == "curate.loop" or m.startswith("curate.loop.")]
    assert found == []


def test_every_curate_module_has_a_rank():
    units = {curate_unit(module_name(path)) for _, path, _ in sources(["curate"])}
    assert units - set(CURATE_RANKS) - CURATE_NEUTRAL == set()


def test_curate_wings_import_only_lower_ranks():
    edges = graph()
    wrong = []
    for source in sorted(m for m in edges if top(m) == "curate"):
        a = curate_unit(source)
        for target in sorted(m for m in edges[source] if top(m) == "curate"):
            b = curate_unit(target)
            if a == b or b in CURATE_NEUTRAL:
                continue
            if a in CURATE_NEUTRAL or CURATE_RANKS.get(a, -1) <= CURATE_RANKS.get(b, -1):
                wrong.append(f"{source} ({a}) imports {target} ({b})")
    assert wrong == []


# ------------------------------------------------------------------ ImportError guards


def test_no_import_error_guard_around_mends_own_modules():
    guarded = []
    for _, path, tree in sources([*FLOORS, "bench"]):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try):
                continue
            catches = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            if not any("ImportError" in c or "ModuleNotFoundError" in c for c in catches):
                continue
            inner = ast.Module(body=node.body, type_ignores=[])
            own = sorted(m for m in imports(inner, module_name(path)) if top(m) in OWN)
            relative = any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(inner))
            if own or relative:
                guarded.append(f"{path.relative_to(ROOT)}:{node.lineno} {own or 'relative import'}")
    assert guarded == []
