"""Several processes, one run: `--devices 2` on the CPU (gloo) under torchrun, which bnnbench starts
itself; rank 0 records one MLflow run whose numbers are the whole split's."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
import torch

from bnnbench import tracking
from bnnbench.cli import main
from bnnbench.data.fake import FakeDataModule

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
RUN = ["run", "--method", "ste", "--dataset", "fake", "--epochs", "3", "--seed", "2", "--no-progress"]


def all_runs(uri: str):
    client = mlflow.MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def whole_split_accuracy(network, split: str) -> float:
    """The accuracy of `network` on every image of `split`, in one process."""
    data = FakeDataModule(seed=2)
    data.setup("fit")
    correct = total = 0
    loader = data.test_dataloader() if split == "test" else data.val_dataloader()
    with torch.no_grad():
        for batch in loader:
            x, y = data.on_after_batch_transfer(batch, 0)
            correct += int((network(x).argmax(1) == y).sum())
            total += len(y)
    assert total == data.split_sizes[split]
    return correct / total


@pytest.mark.slow
def test_two_processes_record_one_run_with_the_whole_splits_metrics(tmp_path, capsys):
    one = f"sqlite:///{tmp_path / 'one.db'}"
    assert main([*RUN, "--tracking-uri", one]) == 0
    capsys.readouterr()
    two = f"sqlite:///{tmp_path / 'two.db'}"
    result = subprocess.run([sys.executable, "-m", "bnnbench", *RUN, "--tracking-uri", two, "--devices", "2"],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("test/acc") == 1  # rank 0 prints the results, once

    (single,), runs = all_runs(one), all_runs(two)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one MLflow run for two processes
    run = runs[0]
    assert set(run.data.metrics) == set(single.data.metrics)  # the same record as one process's
    assert run.data.params == single.data.params and run.data.tags["bnnbench.processes"] == "2"
    assert run.data.tags[tracking.CONFIG_ID_TAG] == single.data.tags[tracking.CONFIG_ID_TAG]
    history = mlflow.MlflowClient(two).get_metric_history(run.info.run_id, "val/acc")
    assert len(history) == 3  # each epoch once (not once per process)

    # test/acc is over the whole test split, not one process's half: the logged (best) network scores
    # it exactly on all of the split, evaluated here in one process.
    network = tracking.load_model(two, run.info.run_id)
    assert run.data.metrics["test/acc"] == pytest.approx(whole_split_accuracy(network, "test"), abs=1e-6)
    costs = {k: v for k, v in run.data.metrics.items() if k.startswith("cost/")}
    assert costs and costs == {k: v for k, v in single.data.metrics.items() if k.startswith("cost/")}  # once


@pytest.mark.slow
def test_a_suite_on_two_processes_trains_each_cell_once(tmp_path):
    (tmp_path / "suite.yaml").write_text("name: pair\ndatasets: [fake]\nmethods: [fp, dra]\nepochs: 1\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run([sys.executable, "-m", "bnnbench", "bench", "suite.yaml", "--tracking-uri", uri,
                             "--devices", "2", "--no-progress"], cwd=tmp_path, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "suite 'pair': ran 2, resumed 0, skipped 0" in result.stdout
    runs = all_runs(uri)
    assert sorted(r.data.params["method"] for r in runs) == ["dra", "fp"]
    assert all(r.info.status == "FINISHED" and r.data.tags["bnnbench.processes"] == "2" for r in runs)


def test_several_machines_need_a_launcher(capsys):
    assert main([*RUN, "--num-nodes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run the command under torchrun (--nnodes 2 --nproc-per-node 1) or srun" in err


@pytest.mark.slow
def test_a_study_on_two_processes_trains_each_trial_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run([sys.executable, "-m", "bnnbench", "tune", "--method", "fp", "--dataset", "fake",
                             "--epochs", "2", "--trials", "2", "--pruner", "none", "--tracking-uri", uri,
                             "--devices", "2", "--no-progress"], cwd=tmp_path, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("this run: 2 complete, 0 pruned, 0 failed") == 1
    trials = [r for r in all_runs(uri) if r.data.tags.get("tuning.role") == "trial"]
    assert sorted(r.data.tags["tuning.trial"] for r in trials) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and r.data.tags["bnnbench.processes"] == "2" for r in trials)


def test_bad_input_with_several_devices_is_one_line_before_any_process_starts(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bnnbench", *RUN, "--devices", "2", "--set", "lr=-1",
                             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "lr" in result.stderr, result.stderr
    assert "torch.distributed" not in result.stderr and not (tmp_path / "mlflow.db").exists()
