"""The MLflow record stays true: parallel first use, kill -9 and resume, SIGTERM, identities, bad stores.

What a user does (start processes, kill them, resume, change the code, point at a bad store) and what
they see in MLflow afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import mlflow
import pytest

from bnnbench import identity, tracking
from bnnbench.cli import main
from bnnbench.config import RunConfig
from bnnbench.errors import Terminated
from bnnbench.registry import METHODS
from bnnbench.runner import run
from tests import killed_run
from tests.datafiles import write_cifar10

BNNBENCH = [sys.executable, "-m", "bnnbench"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def all_runs(uri: str):
    if not tracking.store_exists(uri):
        return []
    client = mlflow.MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def only(uri: str):
    (recorded,) = all_runs(uri)
    return recorded


# -- 3. parallel first use ----------------------------------------------------------------------------------
def test_four_processes_on_a_fresh_store_all_finish(tmp_path):
    store = tmp_path / "fresh"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    argv = [*BNNBENCH, "run", "--method", "fp", "--dataset", "fake", "--epochs", "1", "--no-progress",
            "--tracking-uri", uri]
    processes = [subprocess.Popen([*argv, "--seed", str(seed)], cwd=tmp_path, env=ONE_THREAD, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for seed in range(4)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err[-2000:] for _, err in outputs]
    recorded = all_runs(uri)
    assert sorted(r.data.params["seed"] for r in recorded) == ["0", "1", "2", "3"]
    assert {r.info.status for r in recorded} == {"FINISHED"}
    assert len(mlflow.MlflowClient(uri).search_experiments(filter_string="name = 'fake'")) == 1


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_four_processes_open_a_fresh_optuna_storage_and_one_study(tmp_path, request, store):
    """Optuna creates its tables on first use: SQLite is serialised on this machine, a database server
    (workers on many machines) lets the losers of the race try again."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}" if store == "sqlite" else \
        request.getfixturevalue("postgres").database("fresh_optuna")
    at = time.time() + 10  # all four open it at the same moment, after their imports
    code = ("import optuna, sys, time\nfrom bnnbench.tuning import open_storage\n"
            f"time.sleep(max(0, {at} - time.time()))\n"
            f"s = optuna.create_study(storage=open_storage({url!r}), study_name='shared', load_if_exists=True,"
            " direction='maximize')\ns.enqueue_trial({'x': 1.0})\nprint(s.study_name)\n")
    processes = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err[-2000:] for _, err in outputs]
    import optuna

    assert optuna.get_all_study_names(url) == ["shared"]
    assert len(optuna.load_study(study_name="shared", storage=url).trials) == 4


# -- 4. kill and resume -------------------------------------------------------------------------------------
def _wait_for_checkpoint(root: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    """Until the first epoch's checkpoint of the run that `process` trains is on disk."""
    deadline = time.monotonic() + seconds
    while not list(root.glob("*/last.ckpt")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no checkpoint appeared under {root}"
        time.sleep(0.02)


def test_kill_9_then_resume_ends_with_exactly_the_uninterrupted_metrics(tmp_path):
    write_cifar10(tmp_path / "data", per_class_train=10, per_class_test=2)  # random crop + flip: RNG in use
    common = ["run", "--method", "bnn", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--arch", "tiny",
              "--image-size", "16", "--batch-size", "16", "--epochs", "40", "--seed", "3", "--no-progress"]
    killed_uri, whole_uri = f"sqlite:///{tmp_path / 'killed.db'}", f"sqlite:///{tmp_path / 'whole.db'}"

    victim = subprocess.Popen([*BNNBENCH, *common, "--tracking-uri", killed_uri], cwd=tmp_path, env=ONE_THREAD,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "checkpoints"
    _wait_for_checkpoint(checkpoints, victim)
    time.sleep(0.3)  # into a later epoch
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    interrupted = only(killed_uri)
    assert interrupted.info.status == "RUNNING"  # nobody could mark it: the process is gone
    assert tracking.owner_gone(interrupted.data.tags).startswith(f"process {victim.pid}")
    epochs_before = len(mlflow.MlflowClient(killed_uri).get_metric_history(interrupted.info.run_id, "val/acc"))
    assert 1 <= epochs_before < 40

    resumed = subprocess.run([*BNNBENCH, "run", "--resume", interrupted.info.run_id, "--no-progress",
                              "--tracking-uri", killed_uri], cwd=tmp_path, env=ONE_THREAD, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = subprocess.run([*BNNBENCH, *common, "--tracking-uri", whole_uri], cwd=tmp_path, env=ONE_THREAD,
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]

    after, reference = only(killed_uri), only(whole_uri)
    assert after.info.run_id == interrupted.info.run_id and after.info.status == "FINISHED"
    results = {k: v for k, v in after.data.metrics.items() if not k.startswith("time/")}
    expected = {k: v for k, v in reference.data.metrics.items() if not k.startswith("time/")}
    assert results == expected  # exactly: same floats, every metric
    client = mlflow.MlflowClient(killed_uri)
    for key in after.data.metrics:  # every epoch's point once: none lost, none counted twice
        steps = [m.step for m in client.get_metric_history(after.info.run_id, key)]
        assert steps == [m.step for m in mlflow.MlflowClient(whole_uri).get_metric_history(reference.info.run_id, key)]
    assert len(client.get_metric_history(after.info.run_id, "val/acc")) == 40
    assert not (checkpoints / after.info.run_id).exists()  # a finished run's checkpoints are removed


def histories(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every point of every metric of a run (but the wall-clock ones), as (step, value) in order."""
    client = mlflow.MlflowClient(uri)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics if not key.startswith("time/")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('whole') / 'mlflow.db'}"
    return histories(uri, run(killed_run.config(uri, "whole")).run_id)


@pytest.mark.parametrize("moment", killed_run.MOMENTS)
def test_a_kill_at_any_instant_then_resume_records_every_point_exactly_once(moment, tmp_path, uninterrupted):
    """SIGKILL at each instant of an epoch, the worst being right after the checkpoint is in place;
    the resumed run's every metric history equals an uninterrupted run's, point by point."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = subprocess.run([sys.executable, "-m", "tests.killed_run", moment, uri], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**ONE_THREAD, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    interrupted = only(uri)
    assert interrupted.info.status == "RUNNING"
    run(killed_run.config(uri), resume=interrupted.info.run_id)
    assert histories(uri, interrupted.info.run_id) == uninterrupted


def test_resume_refuses_a_finished_or_live_run(tmp_path, tracking_uri, capsys):
    result = run(RunConfig(method="fp", dataset="fake", epochs=1, tracking_uri=tracking_uri, progress="none"))
    assert main(["run", "--resume", result.run_id, "--tracking-uri", tracking_uri]) == 2
    assert "is FINISHED: there is nothing to resume" in capsys.readouterr().err
    assert main(["run", "--resume", "nope", "--tracking-uri", tracking_uri]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["run", "--resume", result.run_id, "--epochs", "3", "--tracking-uri", tracking_uri]) == 2
    assert "leave out --epochs" in capsys.readouterr().err


class SigtermAt(pl.Callback):
    """Sends this process SIGTERM at one hook of the run, from epoch `epoch` on."""

    def __init__(self, hook: str, epoch: int = 0):
        self.epoch = epoch
        setattr(self, hook, self._terminate)

    def _terminate(self, trainer, *args):
        if trainer.current_epoch >= self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends


@pytest.mark.parametrize("hook", ["on_train_batch_end", "on_validation_batch_end", "on_test_batch_start"])
def test_sigterm_at_any_point_ends_the_run_killed_and_it_resumes(hook, tracking_uri):
    cfg = RunConfig(method="dra", dataset="fake", epochs=2, tracking_uri=tracking_uri, progress="none")
    with pytest.raises(Terminated):
        run(cfg, callbacks=[SigtermAt(hook)])
    killed = only(tracking_uri)
    assert killed.info.status == "KILLED"
    assert killed.data.tags["failure_reason"] == "terminated (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone with it

    result = run(cfg, resume=killed.info.run_id)
    assert result.run_id == killed.info.run_id and only(tracking_uri).info.status == "FINISHED"
    assert 0 <= result.metrics["test/acc"] <= 1


def test_a_sigterm_after_validation_then_resume_records_every_point_exactly_once(tracking_uri, uninterrupted):
    """Stopped after an epoch's validation is logged but before its checkpoint: those points are the
    resumed run's to send (it validates that epoch again), not the stopped one's."""
    with pytest.raises(Terminated):
        run(killed_run.config(tracking_uri), callbacks=[SigtermAt("on_validation_end", epoch=1)])
    stopped = only(tracking_uri)
    assert stopped.info.status == "KILLED"
    run(killed_run.config(tracking_uri), resume=stopped.info.run_id)
    assert histories(tracking_uri, stopped.info.run_id) == uninterrupted


def test_sigterm_while_logging_artifacts_ends_the_run_killed(tracking_uri, monkeypatch):
    from bnnbench import callbacks

    def terminate(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(callbacks, "curves_figure", terminate)
    with pytest.raises(Terminated):
        run(RunConfig(method="fp", dataset="fake", epochs=1, tracking_uri=tracking_uri, progress="none"))
    killed = only(tracking_uri)
    assert (killed.info.status, killed.data.tags["failure_reason"]) == ("KILLED", "terminated (SIGTERM)")


def test_a_real_sigterm_to_the_command(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = subprocess.Popen([*BNNBENCH, "run", "--method", "fp", "--dataset", "digits", "--epochs", "200",
                                "--no-progress", "--tracking-uri", uri], cwd=tmp_path, env=ONE_THREAD,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(tmp_path / "checkpoints", process)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err[-3000:]
    killed = only(uri)
    assert err.strip().splitlines()[-1] == (f"bnnbench: terminated (SIGTERM); run {killed.info.run_id} is KILLED in "
                                            f"MLflow, 'bnnbench run --resume {killed.info.run_id}' continues it")
    assert (killed.info.status, killed.data.tags["failure_reason"]) == ("KILLED", "terminated (SIGTERM)")


def test_a_suite_resumes_its_interrupted_cell_into_the_same_run(tmp_path, tracking_uri, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\ndatasets: [fake]\nmethods: [fp]\nseeds: [0]\nepochs: 2\n")
    from bnnbench.suite import load_suite

    (cfg,) = load_suite(suite).configs(tracking_uri)
    with pytest.raises(Terminated):
        run(cfg, callbacks=[SigtermAt("on_train_batch_end")])
    killed = only(tracking_uri).info.run_id
    assert main(["bench", str(suite), "--tracking-uri", tracking_uri]) == 0
    out = capsys.readouterr().out
    assert f"resuming interrupted run {killed}" in out and "resumed 1, skipped 0" in out
    assert only(tracking_uri).info.status == "FINISHED"


# -- 2. identities ------------------------------------------------------------------------------------------
def test_code_identity_follows_code_not_docs(tmp_path, monkeypatch):
    import shutil

    import bnnbench

    copy = tmp_path / "bnnbench"
    shutil.copytree(Path(bnnbench.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(identity, "__file__", str(copy / "identity.py"))
    original = identity.code_id.__wrapped__()
    quantizers = copy / "quantizers.py"
    text = quantizers.read_text()
    quantizers.write_text(text.replace('"""', '"""Reworded. ', 1) + "\n# a comment\n")
    (copy / "leaderboard.py").write_text("x = 1\n")  # not training code
    assert identity.code_id.__wrapped__() == original
    quantizers.write_text(text + "\nEXTRA = 1\n")
    assert identity.code_id.__wrapped__() != original


def test_a_code_change_makes_the_suite_rerun_its_cells(tmp_path, tracking_uri, monkeypatch, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\ndatasets: [fake]\nmethods: [fp]\nseeds: [0, 1]\nepochs: 1\n")
    assert main(["bench", str(suite), "--tracking-uri", tracking_uri]) == 0
    assert main(["bench", str(suite), "--tracking-uri", tracking_uri]) == 0
    assert "ran 0, resumed 0, skipped 2" in capsys.readouterr().out
    monkeypatch.setattr(identity, "code_id", lambda: "changedcode0")
    assert main(["bench", str(suite), "--tracking-uri", tracking_uri]) == 0
    assert "ran 2, resumed 0, skipped 0" in capsys.readouterr().out
    recorded = all_runs(tracking_uri)
    assert sorted(r.data.tags["code_id"] == "changedcode0" for r in recorded) == [False, False, True, True]
    assert len({r.data.tags["config_id"] for r in recorded}) == 1  # the same configuration throughout


def test_precision_and_compile_are_part_of_the_configuration(tracking_uri):
    from bnnbench.config import resolve

    base = RunConfig(method="fp", dataset="fake")
    ids = {resolve(RunConfig(method="fp", dataset="fake", **kw)).config_id
           for kw in ({}, {"precision": "bf16-mixed"}, {"compile": True})}
    assert len(ids) == 3
    assert resolve(base).config_id == resolve(RunConfig(method="fp", dataset="fake", seed=9)).config_id


def test_config_yaml_reproduces_the_run(tmp_path, tracking_uri):
    first = run(RunConfig(method="ste", dataset="fake", epochs=1, precision="32", seed=4,
                          method_overrides={"lr": "0.01"}, tracking_uri=tracking_uri, progress="none"))
    client = mlflow.MlflowClient(tracking_uri)
    recipe = client.download_artifacts(first.run_id, "config.yaml")
    assert main(["run", "--recipe", recipe, "--tracking-uri", tracking_uri, "--no-progress"]) == 0
    a, b = sorted(all_runs(tracking_uri), key=lambda r: r.info.start_time)
    assert a.data.params == b.data.params and a.data.tags["config_id"] == b.data.tags["config_id"]
    assert {k: v for k, v in a.data.metrics.items() if not k.startswith("time/")} == \
        {k: v for k, v in b.data.metrics.items() if not k.startswith("time/")}


# -- 8. artifacts live with their store ----------------------------------------------------------------------
def test_artifacts_go_beside_the_sqlite_store_not_the_working_directory(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    result = run(RunConfig(method="fp", dataset="fake", epochs=1, tracking_uri=uri, progress="none"))
    assert (store / "mlartifacts" / result.run_id / "artifacts" / "config.yaml").is_file()
    assert not (tmp_path / "mlruns").exists()
    assert not (store / "checkpoints" / result.run_id).exists()


# -- 5, 6. bad input: one line, exit 2, nothing recorded ---------------------------------------------------------
@pytest.mark.parametrize("make_uri, message", [
    (lambda d: f"sqlite:///{d / 'missing' / 'mlflow.db'}", "does not exist"),
    (lambda d: "notascheme/whatever", "unsupported tracking URI"),
    (lambda d: "http://127.0.0.1:9", "is unreachable"),
    (lambda d: f"sqlite:///{d / 'text.db'}", "is not a SQLite database"),
])
def test_bad_tracking_uris_answer_fast_in_one_line(tmp_path, capsys, make_uri, message):
    (tmp_path / "text.db").write_text("not a database")
    started = time.monotonic()
    code = main(["run", "--method", "fp", "--dataset", "fake", "--tracking-uri", make_uri(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert time.monotonic() - started < 10
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "bad value -1 for 'seed': must lie in [0, 4294967296)"),
    (["--image-size", "5000"], "bad value 5000 for 'image_size': must lie in [1, 1024]"),
    (["--set", "lr=0"], "bad value '0' for 'lr': must lie in (0, inf)"),
    (["--set", "lr=-1"], "bad value '-1' for 'lr'"),
])
def test_out_of_range_values_record_nothing(argv, message, tracking_uri, capsys):
    assert main(["run", "--method", "fp", "--dataset", "fake", *argv, "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert all_runs(tracking_uri) == []


@pytest.mark.parametrize("text, message", [
    ("method: fp\ndataset: fake\nepochs: [1\n",
     "recipe.yaml:4' is not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence "
     "that starts at line 3)"),
    ("method: fp\ndataset: fake\naccelerator: tpu\n", "unknown recipe key in"),
    ("method: fp\ndataset: fake\nset:\n  lr: 0\n", "bad value 0 for 'lr'"),
])
def test_bad_recipes_are_one_line(tmp_path, tracking_uri, capsys, text, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    assert main(["run", "--recipe", str(recipe), "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and all_runs(tracking_uri) == []


@pytest.mark.parametrize("text, message", [
    ("datasets: [fake]\nmethods: [fp\n", "suite.yaml:3' is not valid YAML"),
    ("datasets: [fake]\nmethods: [fp]\nseeds: [0, x]\n", "seed 'x' is not an integer"),
    ("datasets: [fake]\nmethods: [fp]\nseeds: [1.5]\n", "seed 1.5 is not an integer"),
    ("datasets: [fake, garbage]\nmethods: [fp]\nepochs: 1\ndata_dir: nowhere\n", "nowhere"),
])
def test_bad_suites_are_one_line_and_train_nothing(tmp_path, tracking_uri, capsys, text, message):
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    assert main(["bench", str(suite), "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and all_runs(tracking_uri) == []


def test_wandb_without_an_account_or_offline_mode_is_one_line(tmp_path, tracking_uri, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    monkeypatch.delenv("NETRC", raising=False)
    assert main(["run", "--method", "fp", "--dataset", "fake", "--wandb", "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert "WANDB_MODE=offline" in err and err.count("\n") == 1 and all_runs(tracking_uri) == []


class SlowEpochs(pl.Callback):
    def on_train_epoch_end(self, trainer, module):
        time.sleep(0.5)


def test_wall_time_counts_every_epoch_although_test_loads_an_earlier_checkpoint(tracking_uri):
    """Lightning restores callbacks also when `test` loads the best epoch's checkpoint; that must not set
    the recorded wall time back to the time of that epoch. Each epoch ends with 0.5 s of waiting after its
    validation (and so after any best checkpoint of that epoch), so the 4 waits are only all in
    `time/wall_s` if nothing set it back."""
    result = run(RunConfig(method="fp", dataset="fake", epochs=4, tracking_uri=tracking_uri, progress="none"),
                 callbacks=[SlowEpochs()])
    assert result.metrics["time/wall_s"] >= 4 * 0.5
    assert result.metrics["time/wall_s"] >= result.metrics["time/epoch_s"] * result.metrics["epochs_completed"]


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_resumes_to_exactly_the_uninterrupted_metrics(method, tracking_uri):
    """Each method's own state (optimizer entries, schedules, phases) survives a checkpoint and a resume."""
    def config(experiment):
        return RunConfig(method=method, dataset="fake", epochs=3, tracking_uri=tracking_uri, progress="none",
                         experiment=experiment)

    with pytest.raises(Terminated):
        run(config("killed"), callbacks=[SigtermAt("on_train_batch_end", epoch=1)])
    client = mlflow.MlflowClient(tracking_uri)
    (killed,) = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    resumed = run(config("killed"), resume=killed.info.run_id)
    whole = run(config("whole"))
    assert {k: v for k, v in resumed.metrics.items() if not k.startswith("time/")} == \
        {k: v for k, v in whole.metrics.items() if not k.startswith("time/")}


class _SwallowedSigterm(pl.Callback):
    """Sends this process SIGTERM after the first training batch and swallows the exception its handler
    raises, as Python does when the signal lands inside a finalizer or a weakref callback."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == 0:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1.0)  # the handler raises Terminated here
            except Terminated:
                pass


def test_a_sigterm_whose_exception_was_swallowed_still_stops_the_run_killed(tracking_uri):
    cfg = RunConfig(method="fp", dataset="fake", epochs=3, tracking_uri=tracking_uri, progress="none")
    with pytest.raises(Terminated) as stopped:
        run(cfg, callbacks=[_SwallowedSigterm()])
    recorded = mlflow.MlflowClient(tracking_uri).get_run(stopped.value.args[0])
    assert recorded.info.status == "KILLED" and recorded.data.tags["failure_reason"] == "terminated (SIGTERM)"
    assert recorded.data.metrics.get("epochs_completed", 0) < 3
    assert run(cfg).metrics["epochs_completed"] == 3  # the next run in this process is not stopped by it
