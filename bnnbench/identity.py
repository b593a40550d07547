"""The two identities of a run: what is trained (configuration) and what trained it (code).

- `config_id(params)`: a digest of a run's MLflow params without the seed and without the `data/…`
  params a dataset reports (split sizes are a consequence, not a choice). Computed from the params as
  MLflow stores them (strings), so the runner (from `ResolvedRun.params()`) and the leaderboard (from
  a recorded run or a `results.csv` row) compute the same digest. The seeds of one configuration share
  it.
- `code_id()`: a digest of the training code — every module of this package on the training path,
  parsed, with docstrings dropped (so comments, docstrings and formatting do not count; a changed
  line of code does) — and of the torch and Lightning versions that ran it.

A suite skips a cell only when a FINISHED run with the same configuration, code and seed exists; the
leaderboard groups by configuration and shows the newest code identity of each.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Modules that record, schedule or show runs but do not change what a run computes.
NOT_TRAINING = frozenset({"__init__.py", "__main__.py", "cli.py", "errors.py", "export.py", "identity.py",
                          "leaderboard.py", "registry.py", "speed.py", "suite.py", "tracking.py", "tuning.py"})


def config_id(params: Mapping[str, Any]) -> str:
    """12 hex digits naming one configuration: every param but the seed and the dataset's reports."""
    data = {k: str(v) for k, v in params.items() if k != "seed" and not k.startswith("data/")}
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def training_sources() -> list[Path]:
    root = Path(__file__).parent
    return sorted(p for p in root.rglob("*.py") if not (p.parent == root and p.name in NOT_TRAINING))


@functools.lru_cache(maxsize=1)
def code_id() -> str:
    """12 hex digits naming the training code and the torch and Lightning versions (cached per process)."""
    import lightning
    import torch

    root = Path(__file__).parent
    digest = hashlib.sha1(f"torch {torch.__version__}; lightning {lightning.__version__}".encode())
    for path in training_sources():
        tree = _without_docstrings(ast.parse(path.read_text(encoding="utf-8")))
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(ast.dump(tree, annotate_fields=False).encode())
    return digest.hexdigest()[:12]
