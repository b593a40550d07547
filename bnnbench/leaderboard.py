"""Recorded runs -> `results.csv` rows -> the Markdown leaderboard and its Pareto plots.

Three steps, each testable alone:

- `rows_from_runs(runs)`: FINISHED MLflow runs (plain dicts from `tracking.finished_runs`) become one
  row per run with provenance and its two identities (`bnnbench.identity`): `config_id`, digested from
  the recorded params exactly as the runner digests them (so runs recorded before the tag existed
  group correctly too), and `code_id`, the tag of the code that trained it. A run without a finite
  accuracy, without provenance tags, or that is an Optuna trial or a tuner's parent run is skipped and
  counted (trials are one seed of an ever-changing configuration; train the chosen one over seeds with
  `bnnbench run --from-study`).
- `merge(existing, new)`: rows join the committed `results.csv` by run id; nothing there is dropped
  because a local store lacks it, and a run of a (configuration, code, seed) already there is not added
  again (a rerun of an unchanged suite cannot inflate n).
- `render(results, published)`: a pure function from the two tables to the Markdown text and the PNG
  bytes of one accuracy-vs-OPs plot per dataset. Per configuration it shows the runs of the newest code
  identity, one per distinct seed (n = distinct seeds), and says how many older-code or duplicate runs
  it left out. `check` re-renders in memory and compares the text only.

Every cell of `results.csv` is kept as the string it was written as, so re-exporting never rewrites
old rows. Accuracies are fractions there and percentages on the page.
"""

from __future__ import annotations

import datetime
import io
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bnnbench.errors import BadInput
from bnnbench.identity import config_id
from bnnbench.tracking import CODE_ID_TAG

RUN_KEYS = ("method", "dataset", "arch", "mode", "seed", "epochs", "batch_size", "image_size")
METRICS = ("test/acc", "val/acc_best", "cost/ops", "cost/fp_macs", "cost/bwn_macs", "cost/bops", "cost/params_binary",
           "cost/params_real", "cost/size_kib", "time/wall_s", "time/epoch_s", "epochs_completed")
PROVENANCE = ("git_commit", "git_dirty", "version.bnnbench", "version.torch", "version.lightning", "version.mlflow",
              "version.python", "device")
REQUIRED_TAGS = ("git_commit", "git_dirty", "device", "version.bnnbench")
COLUMNS = ("run_id", "experiment", "run_name", "start_time", "dataset", "arch", "mode", "method", "config_id",
           "code_id", "seed", "epochs", "batch_size", "image_size", "acc", "acc_metric", *METRICS, *PROVENANCE,
           "config")
PUBLISHED_COLUMNS = ("source", "dataset", "arch", "method", "label", "metric", "value", "std", "n", "epochs", "match",
                     "setting")
METRIC_NAMES = {"test/acc": "test accuracy", "val/acc_best": "best validation accuracy"}
ALPHA = 0.05  # Welch's t-test: p >= ALPHA is "not significantly different from the best"


# -- MLflow runs -> rows -----------------------------------------------------------------------------------
def _cell(value) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    return "" if value is None else str(value)


def _accuracy(value) -> bool:
    """A fraction in [0, 1]; MLflow's SQLite store turns inf into ±1.8e308, so a range check catches it."""
    return value is not None and math.isfinite(float(value)) and 0.0 <= float(value) <= 1.0


def row_config_id(row) -> str:
    """The configuration identity of a `results.csv` row: its `config` params plus its run keys."""
    return config_id({**json.loads(row["config"] or "{}"), **{k: row[k] for k in RUN_KEYS}})


def rows_from_runs(runs: list[dict]) -> tuple[pd.DataFrame, Counter]:
    """One row per FINISHED run with a finite accuracy and provenance; the rest counted by reason."""
    rows, skipped = [], Counter()
    for run in runs:
        params, metrics, tags = run["params"], run["metrics"], run["tags"]
        test, val = metrics.get("test/acc"), metrics.get("val/acc_best")
        if run.get("status", "FINISHED") != "FINISHED":
            skipped[f"status {run['status']}"] += 1
        elif tags.get("tuning.role") in ("trial", "parent"):
            skipped[f"tuning {tags['tuning.role']}"] += 1
        elif test is None and val is None:
            skipped["no accuracy recorded"] += 1
        elif not all(_accuracy(v) for v in (test, val) if v is not None):
            skipped["non-finite accuracy"] += 1
        elif any(not tags.get(key) for key in REQUIRED_TAGS) or any(not params.get(k) for k in RUN_KEYS):
            skipped["no provenance"] += 1
        else:
            config = {k: v for k, v in sorted(params.items()) if k not in RUN_KEYS and not k.startswith("data/")}
            row = {key: params[key] for key in RUN_KEYS}
            row.update({key: _cell(metrics.get(key)) for key in METRICS})
            row.update({key: tags.get(key, "") for key in PROVENANCE})
            start = datetime.datetime.fromtimestamp(run["start_time"] / 1000, datetime.timezone.utc)
            row.update(run_id=run["run_id"], experiment=run["experiment"], run_name=run["run_name"],
                       start_time=start.strftime("%Y-%m-%dT%H:%M:%SZ"), acc=_cell(test if test is not None else val),
                       acc_metric="test/acc" if test is not None else "val/acc_best",
                       config_id=config_id(params), code_id=tags.get(CODE_ID_TAG, ""),
                       config=json.dumps(config, sort_keys=True))
            rows.append(row)
    return _ordered(pd.DataFrame(rows, columns=list(COLUMNS), dtype=str)), skipped


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.fillna("")
    extra = sorted(c for c in frame.columns if c not in COLUMNS)  # columns a later version wrote: kept
    frame = frame.reindex(columns=[*COLUMNS, *extra], fill_value="")
    keys = frame.assign(_seed=pd.to_numeric(frame["seed"], errors="coerce"))
    order = keys.sort_values(["dataset", "method", "arch", "mode", "config_id", "_seed", "start_time", "run_id"],
                             kind="stable")
    return frame.loc[order.index].reset_index(drop=True)


def _identity(frame: pd.DataFrame) -> pd.Series:
    """(configuration, code, seed) per row: two rows with the same are the same result trained twice."""
    return frame["config_id"] + "|" + frame["code_id"] + "|" + frame["seed"]


def merge(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Union by run id (a run in both takes the store's values where it has them; no row is dropped);
    a new run whose (configuration, code, seed) a row already holds is not added."""
    existing, new = existing.fillna("").astype(str), new.fillna("").astype(str)
    new = new.sort_values(["start_time", "run_id"])  # of one (configuration, code, seed), the first run counts
    fresh = ~new["run_id"].isin(existing["run_id"])
    new = new[~(fresh & (_identity(new).isin(set(_identity(existing))) | _identity(new).duplicated()))]
    both = pd.concat([existing, new], ignore_index=True).fillna("")
    merged = both.groupby("run_id", sort=False).agg(lambda values: next((v for v in reversed(list(values)) if v), ""))
    return _ordered(merged.reset_index())


def read_results(path: str | Path) -> pd.DataFrame:
    """`results.csv`; rows written before the identities existed get their `config_id` from their params
    and an empty `code_id` (older than any known code)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS), dtype=str)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=["config_hash"], errors="ignore")
    frame = frame.reindex(columns=[*COLUMNS, *[c for c in frame.columns if c not in COLUMNS]], fill_value="")
    frame["config_id"] = [row_config_id(row) for _, row in frame.iterrows()]
    return _ordered(frame)


def write_results(frame: pd.DataFrame, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _ordered(frame).to_csv(path, index=False, lineterminator="\n")


def read_published(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise BadInput(f"no published numbers at '{path}' (give --published, or put published.csv beside results.csv)")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
    if missing:
        raise BadInput(f"{path}: missing columns {missing}; expected {list(PUBLISHED_COLUMNS)}")
    for index, row in frame.iterrows():
        for key in ("value", "std", "n", "epochs"):
            if row[key] and not _is_number(row[key]):
                raise BadInput(f"{path} row {index + 2}: {key} '{row[key]}' is not a number")
        if not row["source"] or not row["value"]:
            raise BadInput(f"{path} row {index + 2}: every published number needs a source and a value")
    return frame


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# -- statistics --------------------------------------------------------------------------------------------
def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, accuracy) points: True where no other point is at most as costly and at least as accurate
    while strictly better in one of the two (equal points are all on the front)."""
    return [not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points) for c, a in points]


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p of Welch's t-test; None when a group has one run or both have zero variance."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return None
    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


# -- render ------------------------------------------------------------------------------------------------
def _num(text: str) -> float:
    return float(text) if text not in ("", None) and _is_number(text) else math.nan


def _count(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    for scale, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _fixed(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "—"


def newest_code(frame: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """The runs of one configuration that count: those of its newest code identity (the one whose latest
    run started last), one per distinct seed (the first run of a seed). Also returns how many runs of
    older code and how many repeated seeds were left out."""
    latest = frame.groupby("code_id")["start_time"].max()
    newest = latest.sort_values(kind="stable").index[-1]
    current = frame[frame["code_id"] == newest].sort_values(["start_time", "run_id"])
    kept = current.drop_duplicates(subset="seed")
    return kept, len(frame) - len(current), len(current) - len(kept)


def _groups(runs: pd.DataFrame) -> tuple[list[dict], int, int]:
    """Seeds of one (dataset, arch, mode, method, configuration, metric), sorted by mean accuracy, and the
    numbers of older-code and duplicate runs left out."""
    groups, older, repeated = [], 0, 0
    keys = ["arch", "mode", "method", "config_id", "acc_metric"]
    for key, all_runs in runs.groupby(keys, sort=True):
        frame, older_here, repeated_here = newest_code(all_runs)
        older, repeated = older + older_here, repeated + repeated_here
        accs = [100 * _num(v) for v in frame["acc"]]
        mean_of = {c: frame[c].map(_num).mean() for c in ("cost/ops", "cost/params_binary", "cost/params_real",
                                                          "cost/size_kib", "time/epoch_s")}
        commits = sorted({c[:7] for c in frame["git_commit"]})
        groups.append({**dict(zip(keys, key, strict=True)), "accs": accs, "n": len(accs), "mean": sum(accs) / len(accs),
                       "std": pd.Series(accs).std(ddof=1) if len(accs) > 1 else math.nan,
                       "config": json.loads(frame["config"].iloc[0] or "{}"),
                       "run": {k: frame[k].iloc[0] for k in ("epochs", "batch_size", "image_size")},
                       "commits": commits, "dirty": (frame["git_dirty"] != "false").any(), **mean_of})
    ordered = sorted(groups, key=lambda g: (-g["mean"], g["method"], g["arch"], g["mode"], g["config_id"]))
    return ordered, older, repeated


def _label_configs(groups: list[dict]) -> None:
    """Config label = hash plus the settings that differ between configs of the same arch/mode/method."""
    for group in groups:
        same = [g for g in groups if (g["arch"], g["mode"], g["method"]) == (group["arch"], group["mode"],
                                                                              group["method"])]
        settings = [{**g["config"], **g["run"]} for g in same]
        varying = sorted({k for s in settings for k in s if any(t.get(k) != settings[0].get(k) for t in settings)})
        mine = {**group["config"], **group["run"]}
        group["label"] = " ".join([f"`{group['config_id'][:8]}`"] + [f"{k}={mine.get(k, '')}" for k in varying])


def _match(group: dict, published: pd.DataFrame, dataset: str) -> tuple[int, pd.Series] | None:
    """The published row for a paper-mode group: same dataset, arch and method, every `match` condition
    (key=value on the run's config, epochs, batch_size or image_size) holds; most conditions, then nearest
    epochs, then file order win."""
    if group["mode"] != "paper":
        return None
    setting = {**{k: str(v).lower() for k, v in group["config"].items()},
               **{k: str(v).lower() for k, v in group["run"].items()}}
    candidates = []
    for index, row in published.iterrows():
        if (row["dataset"], row["arch"], row["method"]) != (dataset, group["arch"], group["method"]):
            continue
        conditions = [c.split("=", 1) for c in row["match"].split(";") if c.strip()]
        if all(setting.get(k.strip()) == v.strip().lower() for k, v in conditions):
            epochs = abs(_num(row["epochs"]) - _num(group["run"]["epochs"]))
            candidates.append(((-len(conditions), epochs if math.isfinite(epochs) else math.inf, index), index, row))
    return min(candidates, key=lambda c: c[0])[1:] if candidates else None


def _escape(text: str) -> str:
    """Table-cell text as literal Markdown: the papers' "(*)" markers must not turn into emphasis."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def _published_value(row: pd.Series) -> str:
    text = row["value"] + (f" ± {row['std']}" if row["std"] else "")
    return text + (f" ({row['n']})" if row["n"] else "")


def _table(dataset: str, groups: list[dict], published: pd.DataFrame, ids: dict[int, str]) -> list[str]:
    metrics = sorted({g["acc_metric"] for g in groups})
    what = METRIC_NAMES[metrics[0]] if len(metrics) == 1 else "accuracy"
    header = ["#", "method", "arch", "mode", "config", f"{what} % mean ± std (n)", "vs best"]
    header += ["metric"] if len(metrics) > 1 else []
    header += ["published [ref]", "ours − published (pp)", "OPs / image", "binary params", "real params",
               "size (KiB)", "epochs", "s / epoch", "commit"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if h in ("#",) else "---" for h in header) + "|"]
    best_of, notes = {}, {}
    for g in groups:  # sorted best first: the first group of each mode (and metric) is its best
        best_of.setdefault((g["mode"], g["acc_metric"]), g)

    def note(text: str) -> str:
        notes.setdefault(text, len(notes) + 1)
        return "⁰¹²³⁴⁵⁶⁷⁸⁹"[notes[text]]

    for rank, g in enumerate(groups, 1):
        acc = f"{g['mean']:.2f}" + (f" ± {g['std']:.2f}" if g["n"] > 1 else "") + f" ({g['n']})"
        best = best_of[g["mode"], g["acc_metric"]]
        if g is best:
            versus = "**best**"
        else:
            p = welch_p(g["accs"], best["accs"])
            if p is None and (g["n"] < 2 or best["n"] < 2):
                versus = "n/a" + note("n = 1: a single run cannot be tested; Welch's t-test needs n ≥ 2 in both "
                                      "groups")
            elif p is None:
                versus = "n/a" + note("zero variance in both groups: Welch's t-test is undefined")
            else:
                shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
                versus = f"≈ ({shown})" if p >= ALPHA else shown
        found = _match(g, published, dataset)
        if found:
            index, row = found
            reference = f"{_published_value(row)} [{ids[index]}]"
            difference = f"{g['mean'] - float(row['value']):+.2f}"
        else:
            reference = difference = ""
        commit = ", ".join(f"`{c}`" for c in g["commits"][:2]) + (f" +{len(g['commits']) - 2}"
                                                                  if len(g["commits"]) > 2 else "")
        commit += "\\*" if g["dirty"] else ""
        cells = [str(rank), g["method"], g["arch"], g["mode"], g["label"], acc, versus]
        cells += [g["acc_metric"]] if len(metrics) > 1 else []
        cells += [reference, difference, _count(g["cost/ops"]), _fixed(g["cost/params_binary"], ",.0f"),
                  _fixed(g["cost/params_real"], ",.0f"), _fixed(g["cost/size_kib"], ",.1f"), g["run"]["epochs"],
                  _fixed(g["time/epoch_s"], ".3g"), commit]
        lines.append("| " + " | ".join(cells) + " |")
    footer = [f"{'⁰¹²³⁴⁵⁶⁷⁸⁹'[i]} {text}" for text, i in notes.items()]
    if any(g["dirty"] for g in groups):
        footer.append("\\* after a commit: at least one run of the group had uncommitted changes (`git_dirty` not "
                      "false).")
    return lines + ([""] + ["  \n".join(footer)] if footer else [])


def _plot(dataset: str, groups: list[dict]) -> bytes | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [g for g in groups if math.isfinite(g["cost/ops"]) and g["cost/ops"] > 0]
    if not points:
        return None
    front = pareto_front([(g["cost/ops"], g["mean"]) for g in points])
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for g, on_front in zip(points, front, strict=True):
        ax.errorbar(g["cost/ops"], g["mean"], yerr=0 if g["n"] < 2 else g["std"], fmt="o", capsize=3,
                    color="tab:red" if on_front else "tab:gray", zorder=3 if on_front else 2)
        label = g["method"] + ("" if g["mode"] == "fair" else f" ({g['mode']})")
        if sum((h["method"], h["mode"]) == (g["method"], g["mode"]) for h in points) > 1:
            label += f" {g['config_id'][:4]}"
        ax.annotate(label, (g["cost/ops"], g["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    edge = sorted((g["cost/ops"], g["mean"]) for g, on in zip(points, front, strict=True) if on)
    ax.step([c for c, _ in edge], [a for _, a in edge], where="post", color="tab:red", alpha=0.6,
            label="non-dominated (Pareto) front")
    ax.set_xscale("log")
    ax.set(xlabel="OPs per image (FP MACs + BWN MACs + BOPs/64), log scale", ylabel="accuracy % (mean ± std)",
           title=f"{dataset}: accuracy vs OPs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None}, bbox_inches="tight")
    return buffer.getvalue()


HEADER = """# bnnbench leaderboard

<!-- Generated by `bnnbench leaderboard` from results.csv and published.csv. Do not edit by hand. -->

Only MLflow runs that ended **FINISHED** with a finite accuracy and their provenance (git commit and
dirty flag, seed, library versions, device: all in `results.csv`) appear here. Failed, killed and
still-running runs, and Optuna trials, never do. Regenerate with
`bnnbench leaderboard --tracking-uri URI`: it reads every experiment of the store, merges its runs into
`results.csv` by run id (rows already there are never dropped; a run repeating a configuration, code
and seed already there is not added), and rewrites this page and the plots;
`bnnbench leaderboard --check` fails when this page is stale.

How to read a table: one row per group of runs with the same architecture, mode, method and resolved
configuration (`config`: the first digits of its configuration identity, a digest of everything that
is trained but the seed, followed by the settings that differ between configs of one method). Of each
configuration only the runs of the newest code identity (the training code and the torch and Lightning
versions) count, one per distinct seed; accuracy is their mean ± sample standard deviation, n (the
number of distinct seeds) in parentheses, sorted best first. **best** is the group with the
highest mean among those of its mode (fair or paper) and accuracy metric; ≈ marks a group not
significantly different from that best (Welch's t-test, p ≥ 0.05; the p-value is shown). OPs are
FP MACs + binary-weight MACs + BOPs/64 per image at the run's input size (the Bi-Real/ReActNet
convention, binary-weight MACs at full cost); size counts binary weights at 1 bit and the rest at 32.
A published number (`published.csv`, quoted from the papers) stands beside a **paper**-mode group of the
same dataset, architecture and method whose config satisfies the row's `match`; the difference is
ours − published in percentage points.
"""


def render(results: pd.DataFrame, published: pd.DataFrame, plots: bool = True) -> tuple[str, dict[str, bytes]]:
    """The leaderboard page and `{"<dataset>.png": bytes}`; a pure function of the two tables."""
    results = results.fillna("").astype(str)
    datasets = sorted(set(results["dataset"]) | set(published["dataset"]))
    lines = [HEADER, f"{len(results)} runs from `results.csv`; {len(published)} published numbers.", ""]
    lines += ["Datasets: " + ", ".join(f"[{d}](#{d})" for d in datasets), ""]
    images = {}
    for dataset in datasets:
        runs = results[results["dataset"] == dataset]
        quoted = published[published["dataset"] == dataset]
        ids = {index: f"P{k}" for k, index in enumerate(quoted.index, 1)}
        lines += [f"## {dataset}", ""]
        if len(runs):
            metric = ", ".join(f"`{m}` ({METRIC_NAMES[m]})" for m in sorted(set(runs["acc_metric"])))
            lines += [f"{len(runs)} runs; accuracy metric: {metric}. `val/acc_best` is used only where the "
                      "dataset (in that mode) has no test split.", ""]
            groups, older, repeated = _groups(runs)
            _label_configs(groups)
            if older or repeated:
                lines += [f"Per configuration only the runs of its newest code identity count, one per seed: "
                          f"{older} runs of older code and {repeated} repeated seeds are left out.", ""]
            if any(math.isfinite(g["cost/ops"]) and g["cost/ops"] > 0 for g in groups):
                lines += [f"![{dataset}: accuracy vs OPs, Pareto front highlighted]({dataset}.png)", ""]
                if plots:
                    images[f"{dataset}.png"] = _plot(dataset, groups)
            lines += _table(dataset, groups, quoted, ids) + [""]
        else:
            lines += ["No recorded runs yet.", ""]
        if len(quoted):
            lines += [f"Published numbers for {dataset} (value % ± std (n)):", "",
                      "| ref | source | row | arch | method | metric | value | epochs | match | setting |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for index, row in quoted.iterrows():
                cells = [ids[index], row["source"], row["label"], row["arch"] or "not stated", row["method"],
                         row["metric"], _published_value(row), row["epochs"], f"`{row['match']}`" if row["match"]
                         else "", row["setting"]]
                lines.append("| " + " | ".join(_escape(c) if c[:1] != "`" else c for c in cells) + " |")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n", images


# -- commands ----------------------------------------------------------------------------------------------
def update(uri: str | None, export: str | Path, out: str | Path, published: str | Path | None = None,
           echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Read FINISHED runs from MLflow, merge them into `export`, write the page and plots to `out`'s folder."""
    from bnnbench import tracking

    export, out = Path(export), Path(out)
    published_table = read_published(published or export.parent / "published.csv")
    existing = read_results(export)
    if uri is None and not tracking.store_exists(None):
        echo(f"no MLflow store at '{tracking.tracking_uri(None)}': rendering from {export} only")
        new, skipped = rows_from_runs([])
    else:
        new, skipped = rows_from_runs(tracking.finished_runs(uri))
    merged = merge(existing, new)
    write_results(merged, export)
    text, images = render(merged, published_table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    for name, data in images.items():
        (out.parent / name).write_bytes(data)
    added = len(set(new["run_id"]) - set(existing["run_id"]))
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items())) or "none"
    echo(f"{export}: {len(merged)} runs ({added} new from MLflow, {len(existing)} already there); skipped: {reasons}")
    echo(f"{out}: {len(set(merged['dataset']))} datasets with runs, {len(images)} plots")
    return merged


def check(export: str | Path, out: str | Path, published: str | Path | None = None) -> str | None:
    """None when `out` equals what `export` and `published` render; otherwise the one-line reason."""
    export, out = Path(export), Path(out)
    expected, _ = render(read_results(export), read_published(published or export.parent / "published.csv"),
                         plots=False)
    if not out.exists():
        return f"{out} does not exist; run 'bnnbench leaderboard' to generate it"
    actual = out.read_text(encoding="utf-8")
    if actual == expected:
        return None
    have, want = actual.splitlines(), expected.splitlines()
    first = next((i for i, (a, b) in enumerate(zip(have, want, strict=False), 1) if a != b),
                 min(len(have), len(want)) + 1)
    return (f"{out} is stale (differs from what {export} and the published numbers render, first at line "
            f"{first}); run 'bnnbench leaderboard' to regenerate it")
