"""The benchmarks use sksemiparam's public API only (as examples/ and users do).

Each module of benchmarks/ is parsed, not imported. Rejected:

- importing a private sksemiparam module or name (``from sksemiparam._index import ...``,
  ``import sksemiparam._base``, ``from sksemiparam.nn import _helper``);
- reading a private attribute (``est._optimizer``, ``sksemiparam._index``), except on ``self`` and
  ``cls`` (a benchmark's own classes) and on the benchmarks' helper modules ``_common`` and
  ``_images``;
- naming a private attribute in a string passed to a call (``getattr(est, "_optimizer")``,
  ``setattr(NNGKClassifier, "_refresh", timed)``, or a helper that does the same).

Dunder names (``__dict__``, ``__name__``) are not private in this sense.
"""

import ast
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# The benchmarks' own modules, whose private helpers a benchmark may use.
OWN_MODULES = {"_common", "_images"}
OWN_OBJECTS = {"self", "cls"} | OWN_MODULES


def _private(name: str) -> bool:
    """``_x`` and ``__x`` are private; ``__x__``, ``_`` alone and non-identifiers are not."""
    if not name.isidentifier() or name == "_" or (name.startswith("__") and name.endswith("__")):
        return False
    return name.startswith("_")


def _is_sksemiparam(module: str) -> bool:
    return module == "sksemiparam" or module.startswith("sksemiparam.")


def private_uses(source: str) -> list[str]:
    """Each use of a private sksemiparam name in ``source``, as ``line: code``."""
    found = []

    def report(node):
        found.append(f"{node.lineno}: {ast.unparse(node)}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            if any(_is_sksemiparam(a.name) and any(map(_private, a.name.split("."))) for a in node.names):
                report(node)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and _is_sksemiparam(module):
                if any(map(_private, module.split("."))) or any(_private(a.name) for a in node.names):
                    report(node)
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in OWN_OBJECTS):
                report(node)
        elif isinstance(node, ast.Call):
            args = [*node.args, *(k.value for k in node.keywords)]
            strings = [a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if any(map(_private, strings)):
                report(node)
    return found


def benchmark_files():
    return sorted(BENCHMARKS.glob("*.py"))


@pytest.mark.parametrize("path", benchmark_files(), ids=lambda p: p.name)
def test_benchmark_uses_public_api_only(path):
    uses = private_uses(path.read_text())
    assert not uses, f"{path.name} uses private sksemiparam names:\n" + "\n".join(uses)


@pytest.mark.parametrize(
    "code",
    [
        "from sksemiparam._index import NeighborIndex",
        "import sksemiparam._index",
        "import sksemiparam._index as idx",
        "from sksemiparam.nn import _helper",
        "from sksemiparam import _base",
        "import sksemiparam\nsksemiparam._index.NeighborIndex",
        "est._optimizer.state_dict()",
        "x = getattr(est, '_optimizer', None)",
        "setattr(NNGKClassifier, '_refresh', timed)",
        "_Stopwatch(NNGKClassifier, '_refresh')",
        "watch._start = None",
    ],
)
def test_private_uses_are_caught(code):
    assert private_uses(code)


@pytest.mark.parametrize(
    "code",
    [
        "from sksemiparam.index import NeighborIndex",
        "from sksemiparam import NNGKClassifier",
        "from ._common import timed",
        "from ._images import load_images",
        "from benchmarks._images import load_images",
        "from . import _common",
        "self._start = 0.0",
        "_common._version('torch')",
        "est.module_.embedding",
        "type(obj).__module__",
        "_Stopwatch(NeighborIndex, 'query')",
        "for _ in range(3): pass",
        "name = 'pq' + '_opq'",
    ],
)
def test_public_uses_pass(code):
    assert not private_uses(code)
