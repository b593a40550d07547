"""`bnnbench leaderboard`: recorded runs -> results.csv -> the Markdown page, as a user runs it.

Runs are created directly with `mlflow.MlflowClient` in a temporary SQLite store, with the params,
metrics and tags the runner records, so these tests need no training.

The golden page `tests/golden/leaderboard.md` is rendered from the hand-written `tests/golden/results.csv`
and `tests/golden/published.csv`. After an intended change to the page, refresh it with

    BNNBENCH_UPDATE_GOLDEN=1 python -m pytest tests/test_leaderboard.py -k golden

and review the diff before committing.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from scipy.stats import ttest_ind

from bnnbench import leaderboard
from bnnbench.cli import main

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).parent.parent
PROVENANCE = {"git_commit": "6bf2dd8a1b2c3d4e5f60718293a4b5c6d7e8f901", "git_dirty": "false",
              "mlflow.source.git.commit": "6bf2dd8a1b2c3d4e5f60718293a4b5c6d7e8f901", "version.bnnbench": "0.1.0",
              "version.torch": "2.5.1", "version.lightning": "2.4.0", "version.mlflow": mlflow.__version__,
              "version.python": "3.11.2", "device": "cpu (x86_64, 2 threads)", "hostname": "test"}
COST = {"cost/ops": 3720.5, "cost/fp_macs": 2560.0, "cost/bwn_macs": 1152.0, "cost/bops": 544.0,
        "cost/params_binary": 5120.0, "cost/params_real": 1610.0, "cost/size_kib": 6.91, "cost/thop_legacy": 3000.0}


def params(method="dra", dataset="digits", seed=0, mode="fair", arch="tiny", epochs=30, **config):
    config = config or {"lr": 0.001, "weight_decay": 0.0001, "activation": "prelu"}
    return {"method": method, "dataset": dataset, "arch": arch, "mode": mode, "seed": seed, "epochs": epochs,
            "batch_size": 64, "image_size": 8, **config, "data/train_size": 1258, "data/val_size": 180,
            "data/test_size": 359}


@functools.cache
def _client(uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(uri)


def record(uri, status="FINISHED", test=0.9, val=0.92, tags=None, cost=True, **kwargs) -> str:
    """One run as `runner.run` records it: params, per-epoch and final metrics, provenance tags, status."""
    client = _client(uri)
    p = params(**kwargs)
    experiment = client.get_experiment_by_name(p["dataset"])
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(p["dataset"])
    run = client.create_run(experiment_id, run_name=f"{p['method']}-s{p['seed']}",
                            tags={**PROVENANCE, "code_id": "c0de", **(tags or {})})
    run_id = run.info.run_id
    metrics = {**(COST if cost else {}), "val/acc": val, "train/acc": 0.95, "time/wall_s": 15.0, "time/epoch_s": 0.5,
               "epochs_completed": 30}
    metrics.update({k: v for k, v in (("test/acc", test), ("val/acc_best", val)) if v is not None})
    client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                     params=[Param(k, str(v)) for k, v in p.items()])
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def fake_run(run_id, acc, metric="test/acc", **kwargs) -> dict:
    """A FINISHED run as `tracking.finished_runs` returns it, without a store."""
    return {"run_id": run_id, "status": "FINISHED", "experiment": "digits", "run_name": run_id, "start_time": 0,
            "params": {k: str(v) for k, v in params(**kwargs).items()}, "metrics": {**COST, metric: acc},
            "tags": PROVENANCE}


def rows(*runs) -> pd.DataFrame:
    return leaderboard.rows_from_runs(list(runs))[0]


def table_row(markdown: str, *cells: str) -> list[str]:
    """The cells of the one leaderboard row (not a published-numbers row) holding all of `cells`."""
    found = [line for line in markdown.splitlines()
             if re.match(r"\| \d+ \|", line) and all(f" {c} " in line for c in cells)]
    assert len(found) == 1, (cells, found)
    return [c.strip() for c in found[0].strip("|").split("|")]


def header(markdown: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith("| # |"))
    return [c.strip() for c in line.strip("|").split("|")]


def cell(markdown: str, column: str, *cells: str) -> str:
    return table_row(markdown, *cells)[header(markdown).index(column)]


@pytest.fixture(scope="module")
def _empty_store(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite file: creating one takes seconds, copying it does not."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tracking_uri, _empty_store) -> str:
    """`tracking_uri` (tests/conftest.py), already holding an empty store."""
    shutil.copy(_empty_store, tracking_uri[len("sqlite:///"):])
    return tracking_uri


@pytest.fixture
def published() -> pd.DataFrame:
    return leaderboard.read_published(GOLDEN / "published.csv")


def lb_args(tmp_path, *extra) -> list[str]:
    folder = tmp_path / "lb"
    return ["leaderboard", "--export", str(folder / "results.csv"), "--out", str(folder / "README.md"),
            "--published", str(GOLDEN / "published.csv"), *extra]


def test_only_finished_runs_with_a_finite_accuracy_reach_results_csv(store, tmp_path, capsys):
    tracking_uri = store
    good = [record(tracking_uri, seed=s, test=0.9 + s / 100) for s in range(3)]
    good.append(record(tracking_uri, dataset="garbage", mode="paper", arch="dra_resnet18", test=None, val=0.81))
    bad = [record(tracking_uri, status="FAILED", tags={"failure_reason": "NonFiniteLossError"}),
           record(tracking_uri, status="KILLED"), record(tracking_uri, status="RUNNING"),
           record(tracking_uri, test=math.nan), record(tracking_uri, val=math.inf),
           record(tracking_uri, tags={"tuning.role": "trial", "mlflow.parentRunId": "p"}),
           record(tracking_uri, tags={"git_commit": ""})]

    assert main(lb_args(tmp_path, "--tracking-uri", tracking_uri)) == 0
    out = capsys.readouterr().out
    assert "4 new from MLflow" in out and "2 non-finite accuracy" in out and "1 no provenance" in out

    results = pd.read_csv(tmp_path / "lb" / "results.csv", dtype=str, keep_default_na=False)
    assert set(results["run_id"]) == set(good) and not set(results["run_id"]) & set(bad)
    first = results.set_index("run_id").loc[good[0]]
    assert first["git_commit"] == PROVENANCE["git_commit"] and first["git_dirty"] == "false"
    assert first["version.torch"] == "2.5.1" and first["device"] == PROVENANCE["device"]
    assert (first["seed"], first["epochs"], first["acc"], first["acc_metric"]) == ("0", "30", "0.9", "test/acc")
    assert first["cost/ops"] == "3720.5" and first["cost/params_binary"] == "5120" and first["time/epoch_s"] == "0.5"
    garbage = results.set_index("run_id").loc[good[3]]
    assert (garbage["acc"], garbage["acc_metric"], garbage["test/acc"]) == ("0.81", "val/acc_best", "")
    assert results[results["dataset"] == "digits"]["config_id"].nunique() == 1  # seeds of one config: one group

    page = (tmp_path / "lb" / "README.md").read_text()
    assert "test accuracy % mean ± std (n)" in header(page)
    assert "FINISHED" in page and "bnnbench leaderboard --check" in page
    assert cell(page, "test accuracy % mean ± std (n)", "dra", "fair") == "91.00 ± 1.00 (3)"
    assert "![digits: accuracy vs OPs" in page and (tmp_path / "lb" / "digits.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_store_named_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'nowhere.db'}"
    assert main(lb_args(tmp_path, "--tracking-uri", missing)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere.db" in err
    assert not (tmp_path / "nowhere.db").exists() and not (tmp_path / "lb").exists()


def test_seeds_of_one_config_are_one_group_and_configs_are_separate(published):
    runs = [fake_run(f"p{s}", acc, seed=s) for s, acc in enumerate([0.90, 0.92, 0.97])]
    runs += [fake_run(f"r{s}", acc, seed=s, lr=0.001, weight_decay=0.0001, activation="relu")
             for s, acc in enumerate([0.80, 0.84])]
    results = rows(*runs)
    assert results.groupby("config_id")["run_id"].count().sort_values().tolist() == [2, 3]
    page, _ = leaderboard.render(results, published, plots=False)
    column = "test accuracy % mean ± std (n)"
    mean, std = sum([90, 92, 97]) / 3, pd.Series([90, 92, 97]).std()
    assert cell(page, column, "activation=prelu") == f"{mean:.2f} ± {std:.2f} (3)" == "93.00 ± 3.61 (3)"
    assert cell(page, column, "activation=relu") == "82.00 ± 2.83 (2)"
    assert table_row(page, "activation=prelu")[0] == "1"  # sorted by accuracy
    assert cell(page, "OPs / image", "activation=relu") == "3.72 k"
    assert cell(page, "binary params", "activation=relu") == "5,120"


def test_welch_marker_and_untestable_single_runs(published):
    runs = [fake_run(f"best{s}", a, seed=s, method="fp") for s, a in enumerate([0.90, 0.91, 0.92])]
    runs += [fake_run(f"close{s}", a, seed=s, method="dra") for s, a in enumerate([0.905, 0.915, 0.895])]
    runs += [fake_run(f"far{s}", a, seed=s, method="ste") for s, a in enumerate([0.70, 0.71, 0.72])]
    runs += [fake_run("single", 0.89, method="bnn")]
    page, _ = leaderboard.render(rows(*runs), published, plots=False)
    p_close = ttest_ind([90, 91, 92], [90.5, 91.5, 89.5], equal_var=False).pvalue
    assert cell(page, "vs best", "fp") == "**best**"
    assert cell(page, "vs best", "dra") == f"≈ (p = {p_close:.3f})"
    assert cell(page, "vs best", "ste") == "p < 0.001"  # significantly worse: no ≈
    assert cell(page, "vs best", "bnn") == "n/a¹"
    assert "¹ n = 1: a single run cannot be tested" in page


def test_published_number_beside_a_paper_mode_group_with_the_difference(published):
    def adaste(run_id, acc, seed, mode="paper", anneal=True):
        return fake_run(run_id, acc, seed=seed, method="adaste", dataset="cifar10", arch="resnet18", mode=mode,
                        epochs=500, lr=0.0003, alpha=0.01, anneal=anneal)

    runs = [adaste("a0", 0.9400, 0), adaste("a1", 0.9420, 1), adaste("n0", 0.9300, 0, anneal=False),
            adaste("f0", 0.9000, 0, mode="fair")]
    results = rows(*runs)
    results["image_size"] = "32"
    page, _ = leaderboard.render(results, published, plots=False)
    assert cell(page, "published [ref]", "paper", "anneal=True") == "94.11 ± 0.08 (5) [P2]"
    assert cell(page, "ours − published (pp)", "paper", "anneal=True") == f"{94.10 - 94.11:+.2f}" == "-0.01"
    assert cell(page, "published [ref]", "paper", "anneal=False") == "93.96 ± 0.14 (5) [P1]"
    assert cell(page, "ours − published (pp)", "paper", "anneal=False") == "-0.96"
    assert cell(page, "published [ref]", "fair") == ""  # only paper mode is compared with the papers
    assert "| P2 | AdaSTE (Le et al., CVPR 2022), Table 1 | AdaSTE (with annealing) (\\*) |" in page


def test_export_merges_by_run_id_and_never_drops_rows(store, tmp_path):
    export = tmp_path / "lb" / "results.csv"
    old = rows(fake_run("committed-elsewhere", 0.5, method="ste"))
    leaderboard.write_results(old, export)
    before = export.read_text().splitlines()[1]

    first = record(store, test=0.9)
    assert main(lb_args(tmp_path, "--tracking-uri", store)) == 0
    assert set(pd.read_csv(export)["run_id"]) == {"committed-elsewhere", first}

    second = record(store, seed=1, test=0.8)
    _client(store).delete_run(first)  # the store no longer lists it: results.csv keeps it
    assert main(lb_args(tmp_path, "--tracking-uri", store)) == 0
    assert main(lb_args(tmp_path, "--tracking-uri", store)) == 0  # exporting twice adds nothing
    results = pd.read_csv(export, dtype=str, keep_default_na=False)
    assert sorted(results["run_id"]) == sorted(["committed-elsewhere", first, second])
    assert results["run_id"].is_unique
    assert before in export.read_text().splitlines()  # old rows are kept byte for byte


def test_golden_page(published):
    page, images = leaderboard.render(leaderboard.read_results(GOLDEN / "results.csv"), published)
    golden = GOLDEN / "leaderboard.md"
    if os.environ.get("BNNBENCH_UPDATE_GOLDEN"):
        golden.write_text(page, encoding="utf-8")
    assert page == golden.read_text(encoding="utf-8"), "rendering changed; see this file's docstring to refresh"
    assert sorted(images) == ["cifar10.png", "digits.png", "garbage.png"]
    again, images_again = leaderboard.render(leaderboard.read_results(GOLDEN / "results.csv"), published)
    assert again == page and images_again == images  # deterministic, plots included


def test_check_passes_on_a_fresh_render_and_fails_in_one_line_when_stale(tmp_path, capsys):
    (tmp_path / "lb").mkdir()
    shutil.copy(GOLDEN / "results.csv", tmp_path / "lb" / "results.csv")
    assert main(lb_args(tmp_path)) == 0  # no MLflow store here: renders from results.csv alone
    assert "rendering from" in capsys.readouterr().out
    readme = tmp_path / "lb" / "README.md"
    assert readme.read_text() == (GOLDEN / "leaderboard.md").read_text()

    assert main(lb_args(tmp_path, "--check")) == 0
    capsys.readouterr()
    files = {p: p.read_bytes() for p in (tmp_path / "lb").iterdir()}
    readme.write_text(readme.read_text().replace("94.05 ± 0.10 (2)", "95.00 ± 0.10 (2)"))
    edited = readme.read_bytes()
    assert main(lb_args(tmp_path, "--check")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "README.md is stale" in err and "bnnbench leaderboard" in err
    assert readme.read_bytes() == edited  # --check rewrites nothing
    assert {p: p.read_bytes() for p in (tmp_path / "lb").iterdir() if p != readme} == {
        p: b for p, b in files.items() if p != readme}


def test_pareto_front_on_a_hand_made_example():
    points = [(1.0, 50.0), (2.0, 60.0), (2.0, 55.0), (4.0, 60.0), (8.0, 70.0), (0.5, 40.0), (8.0, 70.0)]
    assert leaderboard.pareto_front(points) == [True, True, False, False, True, True, True]


def test_the_committed_published_numbers_are_valid_and_cite_their_table():
    table = leaderboard.read_published(REPO / "leaderboard" / "published.csv")
    assert table["source"].str.contains("Table").all()
    assert table["value"].astype(float).between(0, 100).all()
    lookup = {(r.source.split(" (")[0], r.dataset, r.arch, r.method, r.label, r.epochs): (r.value, r.std, r.n)
              for r in table.itertuples()}
    assert lookup["DRA-BNN", "garbage", "dra_resnet18", "dra", "DRA-BNN", "97"] == ("82.66", "", "")
    annealed = lookup["AdaSTE", "cifar10", "resnet18", "adaste", "AdaSTE (with annealing) (*)", "500"]
    assert annealed == ("94.11", "0.08", "5")
    assert lookup["BNEW", "cifar100", "resnet20", "bop", "BOP", "200"] == ("54.3", "0.7", "5")
