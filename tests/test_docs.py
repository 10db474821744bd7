"""The documentation builds with warnings as errors, running every gallery example in quick mode.

A copy of docs/ and examples/ is built in a temporary directory, so the test writes nothing into the
checkout. ``PYTHONPATH`` points at the checkout so that its own docstrings are the ones documented.
Sphinx and its extensions come with the ``dev`` extra; a missing one fails the test rather than
skipping it, since CI must build the docs.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Build output and files generated at build time, never copied into the build.
GENERATED = ("_build", "auto_examples", "generated", "benchmarks.rst", "sg_execution_times.rst")


@pytest.mark.docs
def test_docs_build_without_warnings(tmp_path):
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns(*GENERATED))
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        "SKSEMIPARAM_QUICK": "1",
        "MPLBACKEND": "Agg",
        # One torch thread, as in the rest of the suite (conftest.py); the examples' small tensors
        # gain nothing from two, and lose much when the CPU is shared.
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"]
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    output = (proc.stdout + proc.stderr).splitlines()
    tail = "\n".join(output[-80:])
    assert proc.returncode == 0, f"sphinx-build exited with {proc.returncode}; last lines:\n{tail}"
    assert (tmp_path / "docs" / "_build" / "html" / "index.html").is_file(), tail
