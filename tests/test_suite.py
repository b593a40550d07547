"""`bnnbench bench`: a suite runs its matrix, resumes after an interruption, and mirrors to W&B."""

from __future__ import annotations

import mlflow
import pytest

from bnnbench.cli import main
from bnnbench.errors import BadInput
from bnnbench.suite import load_suite


def write_suite(tmp_path, text: str):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return str(path)


SUITE = "name: smoke\ndatasets: [fake]\nmethods: [fp, dra]\nseeds: [0, 1]\nepochs: 1\n"


def runs(uri: str):
    client = mlflow.MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_suite_runs_the_matrix_then_resumes_without_rerunning(tmp_path, tracking_uri, capsys):
    suite = write_suite(tmp_path, SUITE)
    assert main(["bench", suite, "--dry-run", "--tracking-uri", tracking_uri]) == 0
    assert runs(tracking_uri) == []  # a dry run records nothing
    assert "would run 4, resumed 0, skipped 0" in capsys.readouterr().out

    assert main(["bench", suite, "--tracking-uri", tracking_uri]) == 0
    recorded = runs(tracking_uri)
    assert sorted((r.data.params["method"], r.data.params["seed"]) for r in recorded) == [
        ("dra", "0"), ("dra", "1"), ("fp", "0"), ("fp", "1")]
    assert all(r.info.status == "FINISHED" and r.data.tags["suite"] == "smoke" for r in recorded)
    hashes = {(r.data.params["method"], r.data.tags["config_id"]) for r in recorded}
    assert len(hashes) == 2  # the config_id tag is shared by the seeds of one configuration
    out = capsys.readouterr().out
    assert "[4/4] dra on fake (tiny, fair) seed 1: acc" in out

    # An interrupted suite: one run is lost (deleted here); the rerun does only that one.
    mlflow.MlflowClient(tracking_uri).delete_run(recorded[0].info.run_id)
    assert main(["bench", suite, "--tracking-uri", tracking_uri]) == 0
    assert "ran 1, resumed 0, skipped 3 (already FINISHED or running), failed 0" in capsys.readouterr().out


def test_a_failing_run_does_not_stop_the_suite_and_is_retried(tmp_path, tracking_uri, capsys):
    suite = write_suite(tmp_path, SUITE + "overrides:\n  fp: {lr: 1.0e+30, scheduler: none}\n")
    assert main(["bench", suite, "--tracking-uri", tracking_uri]) == 1
    out = capsys.readouterr().out
    assert "ran 2, resumed 0, skipped 0 (already FINISHED or running), failed 2" in out
    statuses = sorted((r.data.params["method"], r.info.status) for r in runs(tracking_uri))
    assert statuses == [("dra", "FINISHED"), ("dra", "FINISHED"), ("fp", "FAILED"), ("fp", "FAILED")]
    main(["bench", suite, "--dry-run", "--tracking-uri", tracking_uri])
    assert "would run 2, resumed 0, skipped 2" in capsys.readouterr().out  # FAILED runs do not count as done


@pytest.mark.parametrize("text, message", [
    ("datasets: [fake]\nmethod: [fp]\n", "unknown suite key in"),
    ("datasets: [fakes]\n", "unknown dataset: 'fakes'"),
    ("datasets: [fake]\nmethods: [fpp]\n", "unknown method: 'fpp'"),
    ("methods: [fp]\n", "names no datasets"),
    ("datasets: [fake]\nmethods: [fp]\noverrides:\n  dra: {lr: 1}\n", "unknown method in the overrides"),
])
def test_bad_suites_are_clear_errors(tmp_path, text, message):
    with pytest.raises(BadInput, match=message):
        load_suite(write_suite(tmp_path, text))


def test_shipped_suites_are_valid():
    from pathlib import Path

    for path in sorted((Path(__file__).parent.parent / "benchmarks").glob("*.yaml")):
        suite = load_suite(path)
        assert suite.datasets and suite.methods and suite.seeds, path


def test_wandb_mirror_offline_holds_the_metrics(tmp_path, tracking_uri, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["run", "--method", "dra", "--dataset", "fake", "--wandb", "--tracking-uri", tracking_uri]) == 0
    (recorded,) = runs(tracking_uri)
    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()  # W&B's protobuf record log: keys and values are stored as text
    for key in ("train/loss", "val/acc", "val/acc_best", "test/acc", "cost/ops", "alpha_init",
                recorded.info.run_name):
        assert key.encode() in data, key
    assert repr(recorded.data.metrics["test/acc"]).encode()[:6] in data
