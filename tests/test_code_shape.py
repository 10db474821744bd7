"""The shape of the code a newcomer reads: no long functions, a training loop in named steps.

Lengths count a function's statements, its docstring left out (a numpydoc docstring of an API
function is long on purpose).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "sksemiparam"
# The training recipe of TorchEstimatorBase, each step short enough to read at once.
TRAINING_STEPS = (
    "_train",
    "_split_validation",
    "_run_epoch",
    "_step",
    "_validation_score",
    "_update_no_improvement_count",
    "_end_training",
)


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(PACKAGE.parent), node


def _length(node):
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return 0 if not body else body[-1].end_lineno - body[0].lineno + 1


def test_no_function_is_over_80_lines_apart_from_parameter_lists():
    long = [
        f"{path}:{node.lineno} {node.name} ({_length(node)} lines)"
        for path, node in _functions()
        if _length(node) > 80 and node.name != "__init__"
    ]
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


@pytest.mark.parametrize("name", TRAINING_STEPS)
def test_each_step_of_the_training_loop_is_at_most_60_lines(name):
    (node,) = [n for path, n in _functions() if path.name == "_base.py" and n.name == name]
    assert _length(node) <= 60
