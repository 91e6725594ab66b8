"""training/ stays a recipe (setup, one step, small handlers), not one long function."""

import ast
from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parents[2] / "src" / "multimodel" / "training"
LIMIT = 80


@pytest.mark.parametrize("path", sorted(TRAINING.glob("*.py")), ids=lambda p: p.name)
def test_no_function_in_training_is_longer_than_80_lines(path):
    tree = ast.parse(path.read_text())
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > LIMIT]
    assert not long, f"{path.name}: {long}"
