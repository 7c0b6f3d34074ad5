"""Every Makefile target has a `## help` line, and `make help` (the default goal) lists them all."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"
README = MAKEFILE.parent / "README.md"
TARGET = re.compile(r"^([a-zA-Z][a-zA-Z0-9_-]*):(?!=)(.*)$")


def targets() -> dict[str, str]:
    """name -> the rest of its rule line, for every plain target (not variables, not $(SETUP))."""
    out = {}
    for line in MAKEFILE.read_text().splitlines():
        m = TARGET.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_every_target_has_a_help_line():
    found = targets()
    assert {"help", "setup", "test", "bench", "ingest", "stats", "config", "doctor"} <= set(found)
    missing = [name for name, rest in found.items() if "## " not in rest]
    assert not missing, f"targets without a `## help` comment: {missing}"


def test_phony_lists_every_target():
    phony = " ".join(re.findall(r"^\.PHONY:((?:.*\\\n)*.*)", MAKEFILE.read_text(), re.M)).replace("\\", " ").split()
    assert set(targets()) <= set(phony)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_target():
    for argv in (["make", "help"], ["make"]):  # help is the default goal
        out = subprocess.run(argv + ["-s", "-f", str(MAKEFILE)], cwd=MAKEFILE.parent, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        listed = {line.split()[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", out.stdout).splitlines() if line.strip()}
        assert set(targets()) <= listed


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_into_a_pipe_has_no_colour_codes():
    out = subprocess.run(["make", "--no-print-directory", "-s", "-f", str(MAKEFILE), "help"], cwd=MAKEFILE.parent,
                         capture_output=True, text=True, timeout=60)
    assert "setup" in out.stdout and "\x1b" not in out.stdout


def _make_help() -> str:
    """`make help` as a person sees it, colours stripped (--no-print-directory: under `make test` make is nested)."""
    out = subprocess.run(["make", "--no-print-directory", "-s", "-f", str(MAKEFILE), "help"], cwd=MAKEFILE.parent,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_readme_copy_of_make_help_is_the_real_output():
    """Paste the output of `make help` into the README whenever a target or its `##` line changes."""
    m = re.search(r"`make help` lists every target:\n\n```\n(.*?)```", README.read_text(), re.S)
    assert m, "README.md: no ``` block right after '`make help` lists every target:'"
    assert m.group(1) == _make_help()


def test_readme_install_steps_are_what_make_setup_installs():
    """README "Install into your own environment" names the torch, model wheels and NLTK step `make setup` runs."""
    m = re.search(r"## Install into your own environment\n.*?```bash\n(.*?)```", README.read_text(), re.S)
    assert m, "README.md: no install block"
    steps, make = m.group(1), MAKEFILE.read_text()
    torch = re.search(r"^TORCH\s*\?=\s*(\S+)", make, re.M).group(1)
    wheels = re.search(r"pip install -q --no-deps (.+)$", make, re.M).group(1).strip()
    assert f'pip install "{torch}"' in steps
    assert f"pip install --no-deps {wheels}" in steps
    assert "python -m evals setup-nltk" in steps and "$(PY) -m evals setup-nltk" in make
