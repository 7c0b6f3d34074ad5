"""The wheel: `pip wheel .` packs every module of every subpackage of traces/train/evals/curate and the data files
beside the code; installed with --no-deps into a fresh venv (no third-party packages), every subpackage and
traces.migrations import from it, and every other module imports or fails only on a third-party package."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # builds a wheel and a venv: ~10 s

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("traces", "train", "evals", "curate")
DATA = ("evals/lm_eval_tasks/*.yaml", "evals/lm_eval_tasks/*.py", "evals/suites/*.yaml", "train/templates/*.jinja")
# need nothing third-party, so they must import from the bare install (besides every package's __init__)
PLAIN = ("traces.migrations",)
ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}

IMPORT_ALL = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = "ok " + importlib.import_module(name).__file__
    except ModuleNotFoundError as e:
        out[name] = "missing " + (e.name or "?")
    except Exception as e:
        out[name] = "error " + repr(e)
print(json.dumps(out))
"""


def source_files(pattern: str = "*.py") -> set[str]:
    return {str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob(pattern)
            if "__pycache__" not in p.parts}


def subpackages() -> list[str]:
    return sorted(str(Path(f).parent).replace("/", ".") for f in source_files("__init__.py"))


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, **kw)


def build(src: Path, dist: Path) -> Path:
    """Offline first (the running venv's setuptools); with build isolation only if that fails."""
    base = [sys.executable, "-m", "pip", "wheel", src, "--no-deps", "-w", dist, "-q"]
    done = run(base + ["--no-build-isolation"])
    if done.returncode != 0:
        done = run(base)
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = list(dist.glob("mend-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy: an in-tree build leaves build/ and mend.egg-info in the checkout, and a stale build/lib
    # would hand the wheel modules the tree no longer has
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return build(src, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The venv's python, with the wheel installed and nothing else."""
    env = tmp_path_factory.mktemp("venv")
    done = run([sys.executable, "-m", "venv", env])
    assert done.returncode == 0, done.stderr
    python = env / "bin" / "python"
    done = run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel])
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def test_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert all(list(ROOT.glob(pattern)) for pattern in DATA)  # no pattern matches nothing
    data = {str(f.relative_to(ROOT)) for pattern in DATA for f in ROOT.glob(pattern)}
    assert source_files() - names == set()
    assert data - names == set()
    assert {p.replace(".", "/") + "/__init__.py" for p in subpackages()} <= names


def test_installed_wheel_imports_without_third_party_packages(installed, tmp_path):
    modules = sorted(f[:-3].replace("/", ".").removesuffix(".__init__") for f in source_files())
    # -I and a scratch cwd: the checkout is not on sys.path, so every import comes from the installed wheel
    done = run([installed, "-I", "-c", IMPORT_ALL, *modules], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    site = str(installed.parent.parent)
    must = [*subpackages(), *PLAIN]
    assert {m: got[m] for m in must if not (got[m].startswith("ok ") and site in got[m])} == {}
    own = set(PACKAGES)
    bad = {m: r for m, r in got.items()
           if not (r.startswith("ok ") and site in r)
           and not (r.startswith("missing ") and r.split()[1].split(".")[0] not in own)}
    assert bad == {}, "a module of mend missing from the wheel, or failing on import for another reason"
