"""Tuned suites: every (method, dataset) gets the same Optuna budget on the validation split, then its best
configuration trains over the suite's seeds as ordinary runs that the leaderboard marks as tuned."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from bnnbench import leaderboard, tracking
from bnnbench.cli import main
from bnnbench.identity import code_id
from bnnbench.suite import load_suite

SUITE = ("name: tuned\ndatasets: [fake]\nmethods: [fp, ste]\nseeds: [0, 1]\nepochs: 2\n"
         "tune: {trials: 3, epochs: 1, pruner: none, seed: 7}\n")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def write_suite(tmp_path, text: str = SUITE) -> str:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return str(path)


def all_runs(uri: str):
    client = mlflow.MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def studies(storage: str) -> dict[str, optuna.Study]:
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith("tune-")}


def test_each_method_gets_exactly_the_budget_then_its_best_trains_over_the_seeds(tmp_path, tracking_uri, capsys):
    suite = write_suite(tmp_path)
    assert main(["bench", suite, "--tracking-uri", tracking_uri, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would tune fp on fake (tiny, fair): 3 trials × 1 epochs (0 done), pruner none" in out
    assert all_runs(tracking_uri) == []  # a dry run records nothing

    assert main(["bench", suite, "--tracking-uri", tracking_uri]) == 0
    out = capsys.readouterr().out
    assert "ran 4, resumed 0, skipped 0" in out
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    found = studies(storage)
    assert sorted(found) == [f"tune-tuned-{m}-fake-{code_id()}" for m in ("fp", "ste")]
    runs = all_runs(tracking_uri)
    cells = [r for r in runs if "tuning.role" not in r.data.tags]
    assert len(cells) == 4 and all(r.info.status == "FINISHED" for r in cells)
    for name, study in found.items():
        assert len(study.trials) == 3 and all(t.state == TrialState.COMPLETE for t in study.trials)
        best = study.best_trial
        method = name.split("-")[2]
        retrained = [r for r in cells if r.data.params["method"] == method]
        assert sorted(r.data.params["seed"] for r in retrained) == ["0", "1"]
        for run in retrained:
            tuned = json.loads(run.data.tags[tracking.TUNED_TAG])
            assert (tuned["study"], tuned["trial"], tuned["trials"], tuned["epochs"], tuned["pruner"]) == (
                name, best.number, 3, 1, "none")
            assert run.data.params["epochs"] == "2"  # the suite's epochs, not the trials'
            assert math.isclose(float(run.data.params["lr"]), best.params["lr"], rel_tol=1e-9)
            assert math.isclose(tuned["params"]["lr"], best.params["lr"], rel_tol=1e-9)
            assert run.data.tags["tuning.from_trial"] == str(best.number)
    trials = [r for r in runs if r.data.tags.get("tuning.role") == "trial"]
    assert len(trials) == 6 and all(r.data.params["epochs"] == "1" and r.data.params["seed"] == "7" for r in trials)

    # Run again: every study has its budget and every cell its run; nothing is trained or recorded again.
    assert main(["bench", suite, "--tracking-uri", tracking_uri]) == 0
    assert "ran 0, resumed 0, skipped 4" in capsys.readouterr().out
    assert len(all_runs(tracking_uri)) == len(runs)
    assert all(len(s.trials) == 3 for s in studies(storage).values())


def test_failed_trials_count_against_the_budget(tmp_path, tracking_uri, monkeypatch, capsys):
    import bnnbench.methods.fp as fp

    def space(trial):  # an infinite learning rate makes the loss NaN: the trial fails
        return {"lr": math.inf if trial.number < 2 else trial.suggest_float("lr", 1e-4, 1e-2, log=True)}

    monkeypatch.setattr(fp, "search_space", space)
    suite = write_suite(tmp_path, SUITE.replace("[fp, ste]", "[fp]"))
    assert main(["bench", suite, "--tracking-uri", tracking_uri]) == 0
    (study,) = studies(f"sqlite:///{tmp_path / 'optuna.db'}").values()
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    cells = [r for r in all_runs(tracking_uri) if "tuning.role" not in r.data.tags]
    assert {json.loads(r.data.tags[tracking.TUNED_TAG])["trial"] for r in cells} == {2}


@pytest.mark.slow
def test_an_interrupted_tuned_suite_resumes_with_the_same_budget(tmp_path, tracking_uri):
    """SIGTERM during a trial: the trial is retried by the next run of the suite, not added to the budget."""
    suite = write_suite(tmp_path, SUITE.replace("epochs: 1,", "epochs: 3,"))
    worker = subprocess.Popen([sys.executable, "-m", "bnnbench", "bench", suite, "--tracking-uri", tracking_uri],
                              cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any(r.data.tags.get("tuning.role") == "trial" and r.info.status ==
                                                  "RUNNING" for r in _quiet_runs(tracking_uri)):
        time.sleep(0.5)
    time.sleep(1.0)
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 143, output
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    (first, *_) = studies(storage).values()
    states = [t.state for t in first.trials]
    assert TrialState.FAIL in states and TrialState.WAITING in states  # the stopped trial is queued again

    done = subprocess.run([sys.executable, "-m", "bnnbench", "bench", suite, "--tracking-uri", tracking_uri],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for study in studies(storage).values():
        finished = [t for t in study.trials if t.state.is_finished()]
        retries = [t for t in finished if "failed_trial" in t.system_attrs]
        assert len(finished) - len(retries) == 3  # the budget: 3 trials, a stopped one retried in place
        assert all(t.state != TrialState.WAITING for t in study.trials)
    cells = [r for r in all_runs(tracking_uri) if "tuning.role" not in r.data.tags]
    assert len(cells) == 4 and all(r.info.status == "FINISHED" for r in cells)


def _quiet_runs(uri: str):
    try:
        return all_runs(uri)
    except Exception:  # the store is being created by the worker
        return []


@pytest.mark.slow
def test_two_workers_share_a_tuned_suite_and_train_each_trial_and_cell_once(tmp_path, tracking_uri):
    suite = write_suite(tmp_path)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    command = [sys.executable, "-m", "bnnbench", "bench", suite, "--tracking-uri", tracking_uri,
               "--storage", storage]
    workers = [subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    for study in studies(storage).values():
        assert len(study.trials) == 3 and all(t.state == TrialState.COMPLETE for t in study.trials)
    runs = all_runs(tracking_uri)
    trials = [r for r in runs if r.data.tags.get("tuning.role") == "trial"]
    assert len(trials) == 6
    cells = [r for r in runs if "tuning.role" not in r.data.tags]
    assert sorted((r.data.params["method"], r.data.params["seed"]) for r in cells) == [
        ("fp", "0"), ("fp", "1"), ("ste", "0"), ("ste", "1")]
    status = subprocess.run(command + ["--status"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                            timeout=120)
    assert "tuning fp on fake (tiny, fair): 3 of 3 trials finished" in status.stdout, status.stdout + status.stderr
    assert "4 done, 0 running, 0 waiting, 0 failed" in status.stdout


@pytest.mark.parametrize("block, message", [
    ("{trials: 3, epochs: 1, prunner: none}", "unknown tune key in"),
    ("{trials: 0, epochs: 1}", "tune trials 0"),
    ("{trials: 3, epochs: -1}", "tune epochs -1"),
    ("{trials: 3}", "needs trials and epochs"),
    ("{trials: 3, epochs: 1, pruner: sometimes}", "'sometimes'; valid: median, hyperband, none"),
    ("[3, 1]", "tune: must be a mapping"),
])
def test_a_bad_tune_block_is_one_line_and_records_nothing(tmp_path, tracking_uri, capsys, block, message):
    suite = write_suite(tmp_path, SUITE.replace("{trials: 3, epochs: 1, pruner: none, seed: 7}", block))
    assert main(["bench", suite, "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()


def test_a_method_without_a_search_space_is_refused(tmp_path, tracking_uri, monkeypatch, capsys):
    import bnnbench.methods.ste as ste

    monkeypatch.delattr(ste, "search_space")
    assert main(["bench", write_suite(tmp_path), "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert "method 'ste' has no search_space(trial)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()


def test_a_changed_budget_is_refused_naming_the_difference(tmp_path, tracking_uri, capsys):
    assert main(["bench", write_suite(tmp_path, SUITE.replace("[fp, ste]", "[fp]")), "--tracking-uri",
                 tracking_uri]) == 0
    capsys.readouterr()
    before = len(all_runs(tracking_uri))
    changed = write_suite(tmp_path, SUITE.replace("[fp, ste]", "[fp]").replace("trials: 3", "trials: 5"))
    assert main(["bench", changed, "--tracking-uri", tracking_uri]) == 2
    assert "trials: study 3, suite 5" in capsys.readouterr().err
    assert len(all_runs(tracking_uri)) == before


@pytest.mark.parametrize("name", ["digits-tuned", "fashion_mnist-tuned"])
def test_the_tuned_benchmarks_load(name):
    suite = load_suite(Path(__file__).parents[1] / "benchmarks" / f"{name}.yaml")
    assert suite.tune is not None and suite.tune.pruner == "median" and len(suite.seeds) == 3


# -- the leaderboard --------------------------------------------------------------------------------------------
def _row(method: str, seed: int, acc: float, config_id: str, tuning: dict | None = None) -> dict:
    row = {c: "" for c in leaderboard.COLUMNS}
    row.update(run_id=f"{method}-{config_id}-{seed}", dataset="fake", arch="tiny", mode="fair", method=method,
               config_id=config_id, code_id="c0", seed=str(seed), epochs="2", batch_size="32", image_size="8",
               acc=str(acc), acc_metric="test/acc", start_time=f"2026-12-01T00:00:0{seed}Z", git_commit="abc1234",
               git_dirty="false", config=json.dumps({"lr": str(tuning["params"]["lr"]) if tuning else "0.001"}),
               **{"cost/bwn_macs": "0" if method == "fp" else "100", "cost/fp_macs": "100" if method == "fp" else "0",
                  "cost/bops": "0", "cost/params_binary": "0" if method == "fp" else "10"})
    row["tuning"] = json.dumps(tuning) if tuning else ""
    return row


def test_the_leaderboard_marks_tuned_rows_states_the_budget_and_the_gain():
    import pandas as pd

    tuned = {"study": "s", "trial": 4, "trials": 8, "epochs": 2, "pruner": "median", "params": {"lr": 0.0031}}
    rows = [_row("ste", s, a, "dddddddd1111") for s, a in ((0, 0.80), (1, 0.82), (2, 0.81))]
    rows += [_row("ste", s, a, "eeeeeeee2222", {**tuned, "defaults_config_id": "dddddddd1111"})
             for s, a in ((0, 0.86), (1, 0.87), (2, 0.85))]
    rows += [_row("bnn", s, a, "ffffffff3333", {**tuned, "defaults_config_id": "ffff0000"})
             for s, a in ((0, 0.83), (1, 0.87), (2, 0.85))]
    page, _ = leaderboard.render(pd.DataFrame(rows), leaderboard.read_published(leaderboard.PUBLISHED), plots=False)
    section = page.split("## fake")[1].split("## ")[0]
    assert "Tuned rows: every method had the same tuning budget, 8 trials × 2 epochs (median pruning)" in section
    table = [line for line in section.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    cells = {(r[header.index("method")], r[header.index("tuning")]): r for r in
             ([c.strip() for c in line.strip("|").split("|")] for line in table[1:])}
    tuned_ste = cells["ste", "tuned (8 trials × 2 epochs, median)"]
    assert tuned_ste[header.index("tuned hyperparameters")] == "lr=0.0031"
    assert tuned_ste[header.index("gain (pp)")] == "+5.00"  # 86.00 − 81.00
    assert cells["bnn", "tuned (8 trials × 2 epochs, median)"][header.index("gain (pp)")] == "—"  # no defaults row
    # Significance: tuned rows against the best tuned row, defaults rows against the best defaults row.
    assert tuned_ste[header.index("vs best")] == "**best**"
    assert cells["ste", "defaults"][header.index("vs best")] == "**best**"
    assert cells["bnn", "tuned (8 trials × 2 epochs, median)"][header.index("vs best")].startswith("≈")
