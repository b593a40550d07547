"""The analysis notebook runs top to bottom against a small recorded store, so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnnbench.config import RunConfig
from bnnbench.runner import run

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "compare_methods.ipynb"


def test_compare_methods_notebook_executes(tracking_uri, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for method in ("fp", "dra"):
        for seed in (0, 1):
            run(RunConfig(method=method, dataset="fake", seed=seed, epochs=2, tracking_uri=tracking_uri,
                          progress_bar=False))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("BNNBENCH_EXPERIMENT", "fake")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for o in outputs)
    assert "dra" in text and "fp" in text and "## fake" in text  # the table per method, and the leaderboard
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # learning curves and the Pareto plot
