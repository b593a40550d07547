"""Scale-out: suites and studies shared by many processes through Optuna's RDB storage, on a real
PostgreSQL cluster with a real MLflow tracking server (`tests/servers.py`), workers killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from bnnbench import tracking
from bnnbench.cli import main
from bnnbench.identity import code_id

SUITE = "name: shared\ndatasets: [fake]\nmethods: [fp, ste, dra]\nseeds: [0, 1]\nepochs: {epochs}\n"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def bnnbench(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "bnnbench", *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def all_runs(uri: str):
    client = mlflow.MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def run_of(uri: str, pid: int):
    """The RUNNING run owned by process `pid`, once its last checkpoint exists (a resumable cell)."""
    for run in all_runs(uri):
        if run.info.status == "RUNNING" and run.data.tags.get(tracking.PID_TAG) == str(pid):
            folder = tracking.checkpoint_root(uri, None) / run.info.run_id
            if (folder / "last.ckpt").is_file():
                return run
    return None


@pytest.mark.slow
def test_three_workers_share_a_suite_on_postgresql_and_a_killed_workers_cell_is_resumed(
        tmp_path, postgres, mlflow_server):
    storage = postgres.database("suite")
    server = mlflow_server.uri
    (tmp_path / "suite.yaml").write_text(SUITE.format(epochs=12))
    command = ["bench", "suite.yaml", "--storage", storage, "--tracking-uri", server, "--grace-period", "4",
               "--no-progress"]
    workers = [bnnbench(*command, cwd=tmp_path) for _ in range(3)]
    try:
        victim = workers[0]
        killed = wait_for(lambda: run_of(server, victim.pid), 240, "worker 1 to checkpoint a cell")
        victim.send_signal(signal.SIGKILL)
        outputs = [worker.communicate(timeout=300)[0] for worker in workers[1:]]
    finally:
        for worker in workers:
            worker.kill()
    assert [worker.returncode for worker in workers[1:]] == [0, 0], outputs

    runs = all_runs(server)
    assert len(runs) == 6, [(r.data.params.get("method"), r.data.params.get("seed")) for r in runs]  # none twice
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({(r.data.tags[tracking.CONFIG_ID_TAG], r.data.params["seed"]) for r in runs}) == 6
    resumed = next(r for r in runs if r.info.run_id == killed.info.run_id)  # the same MLflow run, finished
    assert resumed.data.tags[tracking.PID_TAG] != str(victim.pid)
    assert any(f"resuming interrupted run {killed.info.run_id}" in out for out in outputs)
    history = mlflow.MlflowClient(server).get_metric_history(killed.info.run_id, "val/acc")
    steps = [m.step for m in history]  # every epoch once, from before and after the kill
    assert len(steps) == len(set(steps)) == 12

    client = mlflow.MlflowClient(server)  # every run readable through the server, with its artifacts
    for run in runs:
        assert {"config.yaml", "curves.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    model = tracking.load_model(server, killed.info.run_id)  # downloaded through the server
    assert sum(p.numel() for p in model.parameters()) > 0

    study = optuna.load_study(study_name=f"suite-shared-{code_id()}", storage=storage)
    cells = {}
    for trial in study.trials:
        cells.setdefault(trial.user_attrs["bnnbench.cell"], []).append(trial.state)
    assert sorted(cells) == list(range(6)) and all(states[-1] == TrialState.COMPLETE for states in cells.values())
    assert sorted(len(states) for states in cells.values()) == [1, 1, 1, 1, 1, 2]  # the killed cell: once more

    status = subprocess.run([sys.executable, "-m", "bnnbench", *command[:4], "--status"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(" done ") == 6 and "6 done, 0 running, 0 waiting, 0 failed" in status.stdout


@pytest.mark.slow
def test_a_dead_tune_workers_trial_is_retried_by_another_worker(tmp_path, postgres, mlflow_server):
    storage, server = postgres.database("study"), mlflow_server.uri
    command = ["tune", "--method", "fp", "--dataset", "fake", "--epochs", "30", "--trials", "1", "--pruner", "none",
               "--storage", storage, "--tracking-uri", server, "--experiment", "tune-retry", "--grace-period", "3",
               "--no-progress"]
    victim = bnnbench(*command, cwd=tmp_path)
    try:
        wait_for(lambda: run_of(server, victim.pid), 240, "the first worker's trial to checkpoint")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        time.sleep(3)  # its heartbeat goes stale
        survivor = subprocess.run([sys.executable, "-m", "bnnbench", *command], cwd=tmp_path, env=ENV,
                                  capture_output=True, text=True, timeout=300)
    finally:
        victim.kill()
    assert survivor.returncode == 0, survivor.stdout + survivor.stderr

    study = optuna.load_study(study_name="fp-fake-tiny-fair", storage=storage)
    first, retry = study.trials
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == first.params  # the same configuration
    dead = tracking.run_info(server, first.user_attrs["mlflow_run_id"])
    assert dead["status"] == "KILLED" and "trial 0 is retried" in dead["tags"]["failure_reason"]
    assert tracking.run_info(server, retry.user_attrs["mlflow_run_id"])["status"] == "FINISHED"


def test_a_suite_changed_under_the_same_storage_is_refused(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "suite.yaml").write_text(SUITE.format(epochs=1).replace("[fp, ste, dra]", "[fp]"))
    assert main(["bench", "suite.yaml", "--storage", storage, "--tracking-uri", uri, "--no-progress"]) == 0
    capsys.readouterr()
    (tmp_path / "suite.yaml").write_text(SUITE.format(epochs=2).replace("[fp, ste, dra]", "[fp, ste]"))
    assert main(["bench", "suite.yaml", "--storage", storage, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differs from this file" in err
    assert "fp on fake (tiny, fair) seed 0: epochs 1 -> 2" in err and "not in the storage: ste on fake" in err
    assert len(all_runs(uri)) == 2  # nothing more recorded


@pytest.mark.parametrize("url, message", [
    ("postgresql://postgres@127.0.0.1:{port}/nothing", "cannot open Optuna storage 'postgresql://postgres@127.0.0.1"),
    ("mysql://u:secret@127.0.0.1:1/db", "needs the database driver 'MySQLdb': pip install mysqlclient"),
    ("postgres//nowhere", "cannot open Optuna storage 'postgres//nowhere'"),
])
def test_a_bad_storage_is_one_line_and_records_nothing(tmp_path, capsys, url, message):
    from tests.servers import free_port

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "suite.yaml").write_text(SUITE.format(epochs=1))
    started = time.monotonic()
    assert main(["bench", "suite.yaml", "--storage", url.format(port=free_port()), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "secret" not in err
    assert time.monotonic() - started < 30
    assert all_runs(uri) == []


def test_status_names_the_storage_and_suite_it_cannot_find(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    (tmp_path / "suite.yaml").write_text(SUITE.format(epochs=1))
    assert main(["bench", "suite.yaml", "--storage", storage, "--status"]) == 2
    assert "no Optuna storage at" in capsys.readouterr().err
    assert main(["bench", "suite.yaml", "--status"]) == 2
    assert "give --storage URL too" in capsys.readouterr().err



def test_a_suite_whose_data_is_missing_queues_nothing(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    (tmp_path / "suite.yaml").write_text(f"name: nodata\ndatasets: [garbage]\nmethods: [fp]\ndata_dir: {tmp_path}\n")
    assert main(["bench", "suite.yaml", "--storage", storage, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert optuna.get_all_study_names(storage) == []  # the storage was opened, no suite was queued
