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


def header(markdown: str, *cells: str) -> list[str]:
    """The header of the leaderboard table holding the row with all of `cells` (without cells: the first
    table's); each dataset's table has its own columns."""
    lines = markdown.splitlines()
    if cells:
        row = table_row(markdown, *cells)
        at = next(i for i, line in enumerate(lines) if [c.strip() for c in line.strip("|").split("|")] == row)
        lines = lines[at::-1]  # the nearest header above the row
    line = next(line for line in lines if line.startswith("| # |"))
    return [c.strip() for c in line.strip("|").split("|")]


def cell(markdown: str, column: str, *cells: str) -> str:
    return table_row(markdown, *cells)[header(markdown, *cells).index(column)]


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
    assert "FINISHED" in page and "bnnbench leaderboard --check" in page
    assert cell(page, "test accuracy % mean ± std (n)", "dra", "fair") == "91.00 ± 1.00 (3)"
    assert "![digits: accuracy against model size and against OPs" in page
    assert (tmp_path / "lb" / "digits.png").read_bytes()[:4] == b"\x89PNG"


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


def test_config_labels_round_numbers_and_leave_out_settings_a_run_lacks(published):
    tuned = fake_run("t0", 0.95, lr=0.0011781448719376517, weight_decay=2.5e-06, mu_growth=1.05,
                     alpha_clamp=(0.06517805439204108, 1.9529833761873385))
    older = fake_run("o0", 0.90, lr=0.001)  # recorded before the configs had `weight_decay`, `mu_growth`
    page, _ = leaderboard.render(rows(tuned, older), published, plots=False)
    label = header(page).index("config")
    tuned_label, older_label = table_row(page, "lr=0.001178")[label], table_row(page, "lr=0.001")[label]
    assert tuned_label.endswith(" alpha_clamp=(0.06518, 1.953) lr=0.001178 mu_growth=1.05 weight_decay=2.5e-06")
    assert older_label.endswith(" lr=0.001")


def test_a_repeated_seed_counts_once_and_only_the_newest_code_is_shown(published):
    def at(run_id, acc, seed, code, start):
        return {**fake_run(run_id, acc, seed=seed), "start_time": start,
                "tags": {**PROVENANCE, "code_id": code}}

    old_code = [at(f"old{s}", 0.50, s, "aaaa", 1000 + s) for s in range(3)]
    new_code = [at("n0", 0.90, 0, "bbbb", 5000), at("n1", 0.92, 1, "bbbb", 5001)]
    repeated = at("n0-again", 0.99, 0, "bbbb", 6000)  # the same configuration, code and seed, trained twice
    results = rows(*old_code, *new_code, repeated)
    page, _ = leaderboard.render(results, published, plots=False)
    assert cell(page, "test accuracy % mean ± std (n)", "dra", "fair") == "91.00 ± 1.41 (2)"  # n = distinct seeds
    assert "3 runs of older code and 1 repeated seeds are left out" in page

    # results.csv never takes the same (configuration, code, seed) twice, however often a suite reruns
    merged = leaderboard.merge(leaderboard.merge(rows(*old_code), rows(*new_code)), rows(repeated))
    assert sorted(merged["run_id"]) == sorted([r["run_id"] for r in old_code + new_code])
    again = leaderboard.merge(merged, rows(at("n2", 0.91, 2, "bbbb", 7000), at("n2b", 0.91, 2, "bbbb", 7001)))
    assert sorted(set(again["run_id"]) - set(merged["run_id"])) == ["n2"]


def test_runs_recorded_before_the_identities_group_by_their_params(tmp_path, published):
    results = rows(*[fake_run(f"p{s}", 0.9, seed=s) for s in range(2)])
    legacy = results.drop(columns=["config_id", "code_id"]).assign(config_hash="deadbeef")
    legacy.to_csv(tmp_path / "results.csv", index=False)
    read = leaderboard.read_results(tmp_path / "results.csv")
    assert list(read["config_id"]) == list(results["config_id"]) and set(read["code_id"]) == {""}
    assert "config_hash" not in read.columns


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
    table = leaderboard.read_published(leaderboard.PUBLISHED)
    assert table["source"].str.contains("Table").all()
    assert table["value"].astype(float).between(0, 100).all()
    lookup = {(r.source.split(" (")[0], r.dataset, r.arch, r.method, r.label, r.epochs): (r.value, r.std, r.n)
              for r in table.itertuples()}
    assert lookup["DRA-BNN", "garbage", "dra_resnet18", "dra", "DRA-BNN", "97"] == ("82.66", "", "")
    annealed = lookup["AdaSTE", "cifar10", "resnet18", "adaste", "AdaSTE (with annealing) (*)", "500"]
    assert annealed == ("94.11", "0.08", "5")
    assert lookup["BNEW", "cifar100", "bnew_resnet20", "bop", "BOP", "200"] == ("54.3", "0.7", "5")


# -- the page's layout, the README block and the plots ---------------------------------------------------------
SPLITS = {"BWN": {"cost/fp_macs": 2560.0, "cost/bwn_macs": 1152.0, "cost/bops": 0.0, "cost/ops": 3712.0},
          "W1A1": {"cost/fp_macs": 2560.0, "cost/bwn_macs": 0.0, "cost/bops": 73728.0, "cost/ops": 3712.0},
          "FP": {"cost/fp_macs": 52480.0, "cost/bwn_macs": 0.0, "cost/bops": 0.0, "cost/ops": 52480.0,
                 "cost/params_binary": 0.0, "cost/params_real": 6730.0, "cost/size_kib": 26.29}}


def costed(run_id, acc, regime, **kwargs) -> dict:
    """`fake_run` with the cost split of a BWN, W1A1 or FP network."""
    run = fake_run(run_id, acc, **kwargs)
    return {**run, "metrics": {**run["metrics"], **SPLITS[regime]}}


def test_the_regime_comes_from_the_cost_split():
    assert leaderboard.regime({"cost/bops": 544.0, "cost/bwn_macs": 1152.0, "cost/fp_macs": 2560.0}) == "W1A1"
    assert leaderboard.regime({"cost/bops": 0.0, "cost/bwn_macs": 1152.0, "cost/fp_macs": 2560.0}) == "BWN"
    assert leaderboard.regime({"cost/bops": 0.0, "cost/bwn_macs": 0.0, "cost/fp_macs": 2560.0}) == "FP"
    assert leaderboard.regime({"cost/params_binary": 0.0}) == "FP"  # no binary weights at all
    assert leaderboard.regime({"cost/params_binary": 5120.0}) == "—"  # binary, but no split recorded
    assert leaderboard.regime({}) == "—"


def test_a_section_opens_with_the_best_bwn_the_best_w1a1_and_fp(published):
    accuracies = {("ste", "BWN"): [0.90, 0.92, 0.91], ("bmd", "BWN"): [0.95, 0.93, 0.96],
                  ("bnn", "W1A1"): [0.85, 0.80, 0.83], ("xnor", "W1A1"): [0.88, 0.86, 0.87],
                  ("fp", "FP"): [0.97, 0.98, 0.99]}
    runs = [costed(f"{m}{s}", a, regime, method=m, seed=s) for (m, regime), accs in accuracies.items()
            for s, a in enumerate(accs)]
    results = rows(*runs)
    page, _ = leaderboard.render(results, published, plots=False)

    def numbers(method: str) -> str:  # from the rows, as the sentence must state them
        accs = 100 * results[results["method"] == method]["acc"].astype(float)
        return f"{accs.mean():.2f} ± {accs.std(ddof=1):.2f} % (n = {len(accs)})"

    lines = page.splitlines()
    opening = lines[lines.index("## digits") + 2]
    assert opening == (f"Best BWN (binary weights, real activations) is **bmd** with {numbers('bmd')}, best W1A1 "
                       f"(binary weights and activations) is **xnor** with {numbers('xnor')} and the "
                       f"full-precision reference **fp** reaches {numbers('fp')}.")
    assert numbers("bmd") == "94.67 ± 1.53 % (n = 3)"
    assert cell(page, "regime", "bnn") == "W1A1" and cell(page, "regime", "ste") == "BWN"
    assert cell(page, "regime", "fp") == "FP"


def test_columns_empty_in_every_row_are_dropped_per_dataset(published):
    fair = [fake_run(f"d{s}", 0.9, seed=s) for s in range(2)]
    paper = [fake_run(f"a{s}", 0.94, seed=s, method="adaste", dataset="cifar10", arch="resnet18", mode="paper",
                      epochs=500, lr=0.0003, alpha=0.01, anneal=True) for s in range(2)]
    results = rows(*fair, *paper)
    results.loc[results["dataset"] == "cifar10", "image_size"] = "32"
    page, _ = leaderboard.render(results, published, plots=False)
    digits, cifar10 = header(page, "dra", "fair"), header(page, "adaste", "paper")
    assert "published [ref]" not in digits and "ours − published (pp)" not in digits  # no paper-mode match
    assert "published [ref]" in cifar10 and "ours − published (pp)" in cifar10
    assert len(digits) == len(cifar10) - 2 and "OPs / image" in digits
    # a column with a value in one row stays, its empty cells included (garbage's run without costs)
    golden, _ = leaderboard.render(leaderboard.read_results(GOLDEN / "results.csv"), published, plots=False)
    assert cell(golden, "OPs / image", "dra", "tiny", "61.25 (1)") == "—"


def test_datasets_with_runs_come_first_and_published_only_ones_last(published):
    page, _ = leaderboard.render(leaderboard.read_results(GOLDEN / "results.csv"), published, plots=False)
    lines = page.splitlines()
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## garbage", "## cifar10", "## digits", "## How to read the tables",
                        "## Published numbers for datasets without runs"]
    assert lines.index("### cifar100") > lines.index("## Published numbers for datasets without runs")
    first_table = next(i for i, line in enumerate(lines) if line.startswith("| # |"))
    assert first_table < 30  # results before the explanations and the papers' numbers of other datasets
    assert "[cifar100](#cifar100)" in page and "BOP | resnet20 | bop" in page  # still listed, at the end
    assert page.index("| P1 | BNEW") > page.index("## Published numbers for datasets without runs")


def readme_repo(tmp_path: Path, readme: str) -> Path:
    """A repository with README.md and leaderboard/{results,published}.csv, as bnnbench's."""
    repo = tmp_path / "repo"
    (repo / "leaderboard").mkdir(parents=True)
    shutil.copy(GOLDEN / "results.csv", repo / "leaderboard" / "results.csv")
    shutil.copy(GOLDEN / "published.csv", repo / "leaderboard" / "published.csv")
    (repo / "README.md").write_text(readme)
    return repo


def repo_args(repo: Path, *extra: str) -> list[str]:
    return ["leaderboard", "--export", str(repo / "leaderboard" / "results.csv"), "--out",
            str(repo / "leaderboard" / "README.md"), *extra]


README = """# project

## Results on digits

Text before.

<!-- results:start -->
a hand-edited table
<!-- results:end -->

Text after.
"""


def test_the_readme_block_is_rewritten_between_its_markers_and_checked(tmp_path, capsys):
    repo = readme_repo(tmp_path, README)
    assert main(repo_args(repo)) == 0  # the README is the one above leaderboard/: repo/README.md
    assert "README.md: results block rewritten" in capsys.readouterr().out
    text = (repo / "README.md").read_text()
    block = leaderboard.render_readme(leaderboard.read_results(repo / "leaderboard" / "results.csv"))
    assert text == README.replace("a hand-edited table\n", block)
    assert "| fp | `679f2486` | FP | 96.01 ± 0.43 (3) | 26.3 | 52.5 k |" in block
    assert "[leaderboard/README.md](leaderboard/README.md#digits)" in block  # relative to the README
    assert main(repo_args(repo, "--check")) == 0
    capsys.readouterr()

    (repo / "README.md").write_text(text.replace("96.01 ± 0.43 (3)", "97.00 ± 0.43 (3)"))
    edited = (repo / "README.md").read_bytes()
    assert main(repo_args(repo, "--check")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "README.md: the results block is stale" in err and "bnnbench leaderboard" in err
    assert (repo / "README.md").read_bytes() == edited  # --check writes nothing
    assert main(repo_args(repo)) == 0 and (repo / "README.md").read_text() == text
    assert main(repo_args(repo, "--check")) == 0
    assert main(repo_args(repo)) == 0 and "results block up to date" in capsys.readouterr().out


def test_a_readme_without_markers_is_left_alone_and_a_named_missing_one_is_bad_input(tmp_path, capsys):
    repo = readme_repo(tmp_path, "# no markers here\n")
    assert main(repo_args(repo)) == 0 and main(repo_args(repo, "--check")) == 0
    assert (repo / "README.md").read_text() == "# no markers here\n"
    other = tmp_path / "OTHER.md"
    other.write_text(README)
    assert main(repo_args(repo, "--readme", str(other))) == 0
    assert "| fp | `679f2486` | FP |" in other.read_text()
    assert "](../repo/leaderboard/README.md#digits)" not in other.read_text()  # other lies beside repo
    assert "](repo/leaderboard/README.md#digits)" in other.read_text()
    capsys.readouterr()
    assert main(repo_args(repo, "--readme", str(tmp_path / "missing.md"))) == 2
    assert "missing.md" in capsys.readouterr().err
    (repo / "README.md").write_text("<!-- results:start -->\nno end\n")
    page = (repo / "leaderboard" / "README.md").read_bytes()
    (repo / "leaderboard" / "README.md").write_text("stale")
    assert main(repo_args(repo)) == 2 and "results:end" in capsys.readouterr().err
    assert (repo / "leaderboard" / "README.md").read_text() == "stale" != page.decode()  # nothing written


def test_the_leaderboard_help_names_the_readme_default(capsys):
    with pytest.raises(SystemExit):
        main(["leaderboard", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--readme" in text and "results:start" in text and "./README.md for leaderboard/results.csv" in text


def test_label_boxes_never_intersect_for_points_at_one_x():
    # 8 points at one x within 15 px, 4 at another, one far below: the digits layout
    anchors = [(300.0, 400.0 - 2 * i) for i in range(8)] + [(120.0, 380.0 - 3 * i) for i in range(4)]
    anchors += [(300.0, 150.0)]
    sizes = [(30.0 + 3 * (i % 4), 11.0) for i in range(len(anchors))]
    obstacles = [(x - 4, y - 4, x + 4, y + 4) for x, y in anchors]
    bounds = (50.0, 50.0, 500.0, 450.0)
    corners = leaderboard.place_labels(anchors, sizes, bounds, obstacles)
    boxes = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(corners, sizes)]
    for i, a in enumerate(boxes):
        assert all(not leaderboard.boxes_overlap(a, b) for b in boxes[i + 1:] + obstacles), (i, a)
        assert bounds[0] <= a[0] and a[2] <= bounds[2] and bounds[1] <= a[1] and a[3] <= bounds[3]
    column = sorted(range(8), key=lambda i: -anchors[i][1])
    assert [boxes[i][1] for i in column] == sorted((boxes[i][1] for i in column), reverse=True)  # order kept
    assert corners == leaderboard.place_labels(anchors, sizes, bounds, obstacles)  # deterministic
    # crowded beyond the bounds: still no intersection (placed outside rather than on top)
    crowded = leaderboard.place_labels([(100.0, 100.0)] * 30, [(40.0, 12.0)] * 30, (0.0, 0.0, 200.0, 200.0))
    boxes = [(x, y, x + 40, y + 12) for x, y in crowded]
    assert not any(leaderboard.boxes_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_the_drawn_labels_do_not_overlap_on_the_digits_layout(published):
    """Eight BWN groups at one size and OPs within 0.7 points, four W1A1 at another, FP apart: the
    committed digits results' shape. The drawn text boxes (not their leader lines) stay apart."""
    from matplotlib.text import Text

    bwn = {"bnn_plus": 0.9898, "bmd": 0.9879, "ste": 0.9878, "bnnpp": 0.9870, "dra": 0.9851, "pc": 0.9850,
           "adaste": 0.9155, "proxy": 0.9860}
    w1a1 = {"bop": 0.9786, "xnor": 0.9712, "bnn": 0.9666, "bnew": 0.9656}
    runs = [costed(f"{m}{s}", a + (s - 1) / 500, "BWN", method=m, seed=s) for m, a in bwn.items() for s in range(3)]
    runs += [costed(f"{m}{s}", a + (s - 1) / 500, "W1A1", method=m, seed=s) for m, a in w1a1.items()
             for s in range(3)]
    runs += [costed(f"fp{s}", 0.9916 + (s - 1) / 500, "FP", method="fp", seed=s) for s in range(3)]
    groups, _, _ = leaderboard._dataset_groups(rows(*runs))
    figure = leaderboard._figure("digits", groups)
    figure.canvas.draw()  # annotations resolve their offsets when drawn
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        labels = [a for a in ax.texts if a.get_text()]
        assert len(labels) == len(groups)
        extents = [Text.get_window_extent(a, renderer) for a in labels]
        frame = ax.get_window_extent(renderer)
        for i, a in enumerate(extents):
            assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
            for j, b in enumerate(extents[i + 1:], i + 1):
                assert not a.overlaps(b), (labels[i].get_text(), labels[j].get_text())


def test_the_leaderboard_runs_in_an_empty_directory(tmp_path, monkeypatch, capsys):
    """Outside the repository: the published numbers come with the package, the page is written here."""
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard"]) == 0
    page = (tmp_path / "leaderboard" / "README.md").read_text()
    assert "DRA-BNN" in page and "82.66" in page  # a published number, from the package's own copy
    assert main(["leaderboard", "--check"]) == 0


def test_the_dataset_that_separates_methods_best_comes_first(published):
    """digits, which every method nearly solves, goes after a dataset whose best accuracy is lower."""
    easy = [fake_run(f"d{s}", 0.99, seed=s) for s in range(2)]
    hard = [{**fake_run(f"f{s}", 0.90, seed=s, dataset="fashion_mnist"), "experiment": "fashion_mnist"}
            for s in range(2)]
    page, _ = leaderboard.render(rows(*easy, *hard), published, plots=False)
    assert page.index("## fashion_mnist") < page.index("## digits")
    assert leaderboard.render_readme(rows(*easy, *hard)).index("**fashion_mnist**") < \
        leaderboard.render_readme(rows(*easy, *hard)).index("**digits**")
