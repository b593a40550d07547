"""`bnnbench tune` and `bnnbench run --from-study`: Optuna studies whose trials are ordinary runs.

Offline and small: digits or fake data, 1–2 epochs, the tiny backbone.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from bnnbench import tuning
from bnnbench.cli import build_parser, main
from bnnbench.config import RunConfig


def _runs(tracking_uri: str, experiment: str) -> list:
    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def _split(runs):
    parents = [r for r in runs if r.data.tags.get("tuning.role") == "parent"]
    trials = {int(r.data.tags["tuning.trial"]): r for r in runs if r.data.tags.get("tuning.role") == "trial"}
    return parents, trials


def test_tune_flags_parse_as_documented():
    args = build_parser().parse_args(
        ["tune", "--method", "ste", "--dataset", "digits", "--trials", "8", "--timeout", "60", "--epochs", "10",
         "--arch", "tiny", "--mode", "fair", "--storage", "sqlite:///x.db", "--study-name", "s", "--sampler",
         "random", "--pruner", "hyperband", "--seed", "3", "--tracking-uri", "sqlite:///m.db", "--set", "lr=0.01"])
    assert (args.trials, args.timeout, args.sampler, args.pruner, args.seed) == (8, 60.0, "random", "hyperband", 3)
    args = build_parser().parse_args(["run", "--from-study", "s", "--storage", "sqlite:///x.db"])
    assert (args.from_study, args.storage) == ("s", "sqlite:///x.db")


def test_digits_study_records_trials_resumes_and_its_best_retrains(tmp_path, tracking_uri, capsys):
    common = ["--method", "ste", "--dataset", "digits", "--epochs", "1", "--pruner", "none", "--tracking-uri",
              tracking_uri]
    assert main(["tune", *common, "--trials", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines if line.startswith("trial ")] == [
        ["trial", str(n), "COMPLETE"] for n in range(3)]
    assert all("best 0." in line for line in lines if line.startswith("trial "))

    # default storage: optuna.db beside the MLflow database; default study name from the resolved arch
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert (tmp_path / "optuna.db").is_file()
    study = optuna.load_study(study_name="ste-digits-tiny-fair", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert study.metric_names == ["val/acc_best"]  # optuna-dashboard names the objective

    parents, trials = _split(_runs(tracking_uri, "digits"))
    assert len(parents) == 1 and sorted(trials) == [0, 1, 2]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["study/best_value"] == pytest.approx(study.best_value)
    assert parent.data.params["best/lr"] == str(study.best_params["lr"])
    for trial in study.trials:
        run = trials[trial.number]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["tuning.study"] == "ste-digits-tiny-fair"
        assert run.data.metrics["val/acc_best"] == pytest.approx(trial.value)  # the objective: not test/acc
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])

    # the same command again resumes the study and adds trials
    assert main(["tune", *common, "--trials", "1"]) == 0
    study = optuna.load_study(study_name="ste-digits-tiny-fair", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    parents, trials = _split(_runs(tracking_uri, "digits"))
    assert len(parents) == 2 and sorted(trials) == [0, 1, 2, 3]

    # another budget under the same name is refused before anything is recorded
    capsys.readouterr()
    assert main(["tune", *common[:-4], "--epochs", "2", "--tracking-uri", tracking_uri, "--trials", "1"]) == 2
    assert "epochs: study 1, now 2" in capsys.readouterr().err
    assert len(_runs(tracking_uri, "digits")) == 2 + 4

    # --from-study trains the best trial's configuration as an ordinary run
    assert main(["run", "--from-study", "ste-digits-tiny-fair", "--tracking-uri", tracking_uri]) == 0
    best_run = trials[study.best_trial.number]
    retrained = [r for r in _runs(tracking_uri, "digits") if r.data.tags.get("tuning.from_study")]
    assert len(retrained) == 1
    assert retrained[0].data.params == best_run.data.params
    assert retrained[0].info.status == "FINISHED" and "mlflow.parentRunId" not in retrained[0].data.tags
    assert retrained[0].data.tags["tuning.from_trial"] == str(study.best_trial.number)


def test_pruned_trial_is_pruned_in_optuna_and_never_finished_in_mlflow(tracking_uri):
    cfg = RunConfig(method="ste", dataset="fake", epochs=2, tracking_uri=tracking_uri, progress="none")
    lines = []
    # val/acc is at most 1, so this pruner stops every trial after its first epoch
    result = tuning.tune(cfg, trials=2, pruner=optuna.pruners.ThresholdPruner(lower=1.5), echo=lines.append)
    assert result.states == {"PRUNED": 2} and result.trial_epochs == 2 and result.best_value is None
    assert sum("PRUNED" in line and "pruned after 1 epochs" in line for line in lines) == 2

    study = optuna.load_study(study_name="ste-fake-tiny-fair", storage=result.storage)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    parents, trials = _split(_runs(tracking_uri, "fake"))
    for run in trials.values():
        assert run.info.status == "KILLED"
        assert run.data.tags["tuning.pruned"] == "true" and run.data.tags["tuning.state"] == "PRUNED"
    assert parents[0].info.status == "FINISHED" and "study/best_value" not in parents[0].data.metrics


def test_a_trial_that_ran_every_epoch_completes_whatever_the_pruner_says(tracking_uri):
    cfg = RunConfig(method="ste", dataset="fake", epochs=1, tracking_uri=tracking_uri, progress="none")
    result = tuning.tune(cfg, trials=1, pruner=optuna.pruners.ThresholdPruner(lower=1.5), echo=lambda line: None)
    assert result.states == {"COMPLETE": 1}
    trial = optuna.load_study(study_name="ste-fake-tiny-fair", storage=result.storage).trials[0]
    assert list(trial.intermediate_values) == [0] and trial.value == trial.intermediate_values[0]  # reported
    _, trials = _split(_runs(tracking_uri, "fake"))
    assert trials[0].info.status == "FINISHED"


def test_failed_trial_is_recorded_and_the_study_goes_on(tracking_uri, monkeypatch):
    import bnnbench.methods.fp as fp

    def space(trial):  # an infinite learning rate makes the loss NaN: the runner raises RunFailed
        return {"lr": math.inf if trial.number == 0 else 1e-3,
                "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)}

    monkeypatch.setattr(fp, "search_space", space)
    cfg = RunConfig(method="fp", dataset="fake", epochs=1, tracking_uri=tracking_uri, progress="none")
    lines = []
    result = tuning.tune(cfg, trials=2, pruner="none", echo=lines.append)
    assert result.states == {"FAIL": 1, "COMPLETE": 1} and result.best_trial == 1
    assert "FAIL" in lines[1] and "NonFiniteLossError" in lines[1]

    study = optuna.load_study(study_name="fp-fake-tiny-fair", storage=result.storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    _, trials = _split(_runs(tracking_uri, "fake"))
    assert trials[0].info.status == "FAILED" and "NonFiniteLossError" in trials[0].data.tags["failure_reason"]
    assert trials[1].info.status == "FINISHED"


def test_two_processes_share_one_study(tmp_path, tracking_uri):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    command = [sys.executable, "-m", "bnnbench", "tune", "--method", "fp", "--dataset", "fake", "--epochs", "1",
               "--trials", "2", "--pruner", "none", "--storage", storage, "--tracking-uri", tracking_uri]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs

    study = optuna.load_study(study_name="fp-fake-tiny-fair", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({t.params["lr"] for t in study.trials}) == 4  # same --seed, yet no duplicated configuration
    parents, trials = _split(_runs(tracking_uri, "fake"))
    assert len(parents) == 2 and sorted(trials) == [0, 1, 2, 3]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials.values()} == {p.info.run_id for p in parents}


@pytest.mark.parametrize("argv, message", [
    (["tune", "--method", "ste", "--dataset", "fake", "--storage", "not a url"], "cannot open Optuna storage"),
    (["tune", "--method", "ste", "--dataset", "fake", "--storage", "sqlite:////no/such/dir/o.db"],
     "unable to open database file"),
    (["tune", "--method", "ste", "--dataset", "fake", "--storage", "postgresql://u:secret@127.0.0.1:9/db"],
     "cannot open Optuna storage 'postgresql://u:***@"),
    (["run", "--from-study", "s", "--storage", "sqlite:///missing.db"], "does not exist"),
    (["run", "--from-study", "ste-fake-tny-fair"], "did you mean 'ste-fake-tiny-fair'"),
    (["run", "--method", "ste", "--dataset", "fake", "--storage", "sqlite:///optuna.db"], "--from-study"),
])
def test_bad_storage_and_unknown_study_are_one_line_errors(argv, message, tmp_path, tracking_uri, capsys):
    optuna.create_study(study_name="ste-fake-tiny-fair", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert main([*argv, "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "secret" not in err
    assert message in err
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_sampler_is_reproducible_and_seeded_per_trial():
    def params(seed: int, sampler: str = "tpe") -> list[float]:
        study = optuna.create_study(sampler=tuning.make_sampler(sampler, seed), direction="maximize")
        study.optimize(lambda t: -abs(t.suggest_float("x", -1, 1)), n_trials=12)
        return [t.params["x"] for t in study.trials]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert params(0) == params(0) and params(0, "random") == params(0, "random")
    assert params(0) != params(1)
    assert len(set(params(0))) == 12
