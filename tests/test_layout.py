"""Imports point one way (docs: README "Layout"); checked by parsing every module's imports."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "multimodel"

# Which top-level parts of the package each part may import (itself, ``errors`` and
# ``__version__`` always allowed). Inference (``predict``, ``serve``) loads saved models through
# ``pretrained`` and never imports the training loop.
ALLOWED = {
    "errors": set(),
    "config": set(),
    "configs": {"config"},
    "layers": {"config"},
    "modalities": {"config", "layers"},
    "model": {"config", "layers", "modalities"},
    "baselines": {"config", "layers", "modalities", "model"},  # model.decoding's beam search
    "data": {"config"},
    "corpora": {"config", "data", "layers"},  # the log-mel front end (layers/log_mel.py)
    "tasks": {"config", "data", "corpora"},
    "pretrained": {"config", "layers", "modalities", "model", "data", "corpora", "tasks"},
    "evaluation": {"config", "layers", "modalities", "model", "data", "corpora", "tasks"},
    "training": {"config", "layers", "modalities", "model", "data", "corpora", "tasks", "evaluation", "pretrained"},
    "predict": {"config", "layers", "modalities", "model", "data", "corpora", "tasks", "evaluation", "pretrained"},
    "experiments": {"config", "layers", "modalities", "model", "baselines", "data", "corpora", "tasks", "evaluation",
                    "pretrained", "training", "predict"},
    "serve": {"config", "layers", "modalities", "model", "data", "corpora", "tasks", "evaluation", "pretrained",
              "predict"},
    "cli": None,  # the top: may import anything
    "__main__": {"cli"},
    "__init__": None,  # the public API: imports its names lazily from the parts above
}


def _part(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("multimodel"):
            names = node.module.split(".")
            if len(names) > 1:
                parts.add(names[1])
            else:
                parts.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "multimodel" and len(names) > 1:
                    parts.add(names[1])
    return parts


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_imports_point_one_way(path):
    part = _part(path)
    assert part in ALLOWED, f"{part} is not in the layout map of tests/test_layout.py"
    allowed = ALLOWED[part]
    if allowed is None:
        return
    bad = _imported_parts(path) - allowed - {part, "errors", "__version__"}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}, which sit above {part!r}"
