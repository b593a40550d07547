"""The analysis notebook runs top to bottom as its usage says, against a small recorded store, so it cannot
rot: from the folder holding mlflow.db and from a `notebooks/` folder below it, reading deliberate runs only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bnnbench.config import RunConfig
from bnnbench.runner import run

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "compare_methods.ipynb"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A folder with mlflow.db: fp and dra over two seeds, plus one tuning trial of a third method."""
    folder = tmp_path_factory.mktemp("repo")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    for method in ("fp", "dra"):
        for seed in (0, 1):
            run(RunConfig(method=method, dataset="fake", seed=seed, epochs=2, tracking_uri=uri, progress="none"))
    run(RunConfig(method="ste", dataset="fake", epochs=1, tracking_uri=uri, progress="none",
                  tags={"tuning.role": "trial", "tuning.study": "s", "tuning.trial": "0"}))
    return folder


@pytest.mark.parametrize("where", [".", "notebooks"])
def test_compare_methods_notebook_executes(store, where, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    repo = tmp_path / "repo"
    shutil.copytree(store, repo)
    (repo / "notebooks").mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("BNNBENCH_EXPERIMENT", "fake")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(repo / where)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for o in outputs)
    assert "dra" in text and "fp" in text and "## fake" in text  # the table per method, and the leaderboard
    assert "ste" not in text.split("## fake")[0]  # the tuning trial is not a deliberate run
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # learning curves and the Pareto plot
    assert not (repo / "notebooks" / "mlflow.db").exists()  # no empty store made beside the notebook
