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
  bytes of one plot per dataset with runs (accuracy against model size and against OPs, labels placed
  by `place_labels` so that none overlap). Datasets with runs come first, each opening with one sentence
  naming its best BWN and W1A1 method and the `fp` reference (the regime comes from the cost split,
  `regime`); the published numbers of datasets without runs close the page. Per configuration it shows
  the runs of the newest code identity, one per distinct seed (n = distinct seeds), and says how many
  older-code or duplicate runs it left out. `render_readme(results)` is the compact results block that
  `update` writes between the `<!-- results:start -->` and `<!-- results:end -->` markers of the
  repository README. `check` re-renders both in memory and compares the text only.

Every cell of `results.csv` is kept as the string it was written as, so re-exporting never rewrites
old rows. Accuracies are fractions there and percentages on the page.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bnnbench.errors import BadInput
from bnnbench.identity import config_id
from bnnbench.tracking import CODE_ID_TAG, TUNED_TAG

RUN_KEYS = ("method", "dataset", "arch", "mode", "seed", "epochs", "batch_size", "image_size")
METRICS = ("test/acc", "val/acc_best", "cost/ops", "cost/fp_macs", "cost/bwn_macs", "cost/bops", "cost/params_binary",
           "cost/params_real", "cost/size_kib", "time/wall_s", "time/epoch_s", "epochs_completed")
PROVENANCE = ("git_commit", "git_dirty", "version.bnnbench", "version.torch", "version.lightning", "version.mlflow",
              "version.python", "device")
REQUIRED_TAGS = ("git_commit", "git_dirty", "device", "version.bnnbench")
COLUMNS = ("run_id", "experiment", "run_name", "start_time", "dataset", "arch", "mode", "method", "config_id",
           "code_id", "seed", "epochs", "batch_size", "image_size", "acc", "acc_metric", *METRICS, *PROVENANCE,
           "config", "tuning")
PUBLISHED_COLUMNS = ("source", "dataset", "arch", "method", "label", "metric", "value", "std", "n", "epochs", "match",
                     "setting")
METRIC_NAMES = {"test/acc": "test accuracy", "val/acc_best": "best validation accuracy"}
PUBLISHED = Path(__file__).with_name("published.csv")  # the papers' numbers, shipped inside the package
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
                       config=json.dumps(config, sort_keys=True), tuning=_tuning(tags))
            rows.append(row)
    return _ordered(pd.DataFrame(rows, columns=list(COLUMNS), dtype=str)), skipped


def _tuning(tags: dict) -> str:
    """The `tuning` cell: a tuned suite's JSON (`tracking.TUNED_TAG`: study, trial, budget, tuned values), the
    study and trial of a `run --from-study` run, or empty for a run of the defaults."""
    if tags.get(TUNED_TAG):
        return tags[TUNED_TAG]
    if tags.get("tuning.from_study"):
        return json.dumps({"study": tags["tuning.from_study"], "trial": int(tags.get("tuning.from_trial") or -1)})
    return ""


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
        raise BadInput(f"no published numbers at '{path}' (give --published FILE.csv, or leave it out for the "
                       f"numbers that ship with bnnbench)")
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
        mean_of = {c: frame[c].map(_num).mean() for c in ("cost/ops", "cost/fp_macs", "cost/bwn_macs", "cost/bops",
                                                          "cost/params_binary", "cost/params_real", "cost/size_kib",
                                                          "time/epoch_s")}
        commits = sorted({c[:7] for c in frame["git_commit"]})
        groups.append({**dict(zip(keys, key, strict=True)), "accs": accs, "n": len(accs), "mean": sum(accs) / len(accs),
                       "std": pd.Series(accs).std(ddof=1) if len(accs) > 1 else math.nan,
                       "config": json.loads(frame["config"].iloc[0] or "{}"),
                       "tuning": json.loads(frame["tuning"].iloc[0]) if frame["tuning"].iloc[0] else None,
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
        shown = [f"{k}={_setting(mine[k])}" for k in varying if k in mine]  # keys an older run lacks: left out
        group["label"] = " ".join([f"`{group['config_id'][:8]}`", *shown])


_DECIMAL = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")


def _setting(text) -> str:
    """A recorded setting as a label shows it: every decimal number in it to 4 significant digits (a tuned
    lr of 0.0011781448719376517 reads 0.001178, a pair (0.06517805439204108, 1.95298337618) (0.06518, 1.953)),
    integers and everything else as recorded."""
    return _DECIMAL.sub(lambda number: format(float(number.group()), ".4g"), str(text))


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



REGIMES = {"BWN": "binary weights, real activations", "W1A1": "binary weights and activations",
           "FP": "full precision"}
UNKNOWN = "—"
EMPTY = ("", UNKNOWN)  # a cell that says nothing: a column of only these is left out of its table
SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹"


def regime(group: dict) -> str:
    """The group's regime from its cost split (`bnnbench.cost`): BOPs (binary weight × binary input) make it
    W1A1, binary-weight MACs on real inputs without BOPs BWN, neither (or no binary weights at all) FP;
    "—" when the runs recorded no cost split."""
    bops, bwn, fp = (group.get(k, math.nan) for k in ("cost/bops", "cost/bwn_macs", "cost/fp_macs"))
    binary = group.get("cost/params_binary", math.nan)
    if bops > 0:
        return "W1A1"
    if bwn > 0:
        return "BWN"
    if binary == 0 or (not binary > 0 and fp > 0 and bwn == 0 and bops == 0):
        return "FP"
    return UNKNOWN


def _accuracy_text(group: dict) -> str:
    return f"{group['mean']:.2f}" + (f" ± {group['std']:.2f}" if group["n"] > 1 else "") + f" ({group['n']})"


def _varying(groups: list[dict]) -> dict[str, bool]:
    """Which of arch, mode, epochs and accuracy metric differ between the groups of one dataset."""
    values = {"arch": lambda g: g["arch"], "mode": lambda g: g["mode"], "epochs": lambda g: g["run"]["epochs"],
              "acc_metric": lambda g: g["acc_metric"]}
    return {key: len({get(g) for g in groups}) > 1 for key, get in values.items()}


def _summary(groups: list[dict]) -> str:
    """One sentence: the best BWN and W1A1 groups and the best `fp` group, with mean ± std and n."""
    varying = _varying(groups)

    def where(g: dict) -> str:
        qualifiers = [f"`{g['arch']}`"] if varying["arch"] else []
        qualifiers += [f"{g['mode']} mode"] if varying["mode"] else []
        qualifiers += [f"`{g['acc_metric']}`"] if varying["acc_metric"] else []
        return f" ({', '.join(qualifiers)})" if qualifiers else ""

    def accuracy(g: dict) -> str:
        return f"{g['mean']:.2f}" + (f" ± {g['std']:.2f}" if g["n"] > 1 else "") + f" % (n = {g['n']})"

    parts = []
    for name in ("BWN", "W1A1"):  # groups are sorted best first
        best = next((g for g in groups if g["regime"] == name), None)
        parts.append(f"best {name} ({REGIMES[name]}) is **{best['method']}**{where(best)} with {accuracy(best)}"
                     if best else f"no {name} runs")
    fp = next((g for g in groups if g["method"] == "fp"), None)
    parts.append(f"the full-precision reference **fp**{where(fp)} reaches {accuracy(fp)}" if fp
                 else "no full-precision reference (`fp`) runs")
    unknown = sum(g["regime"] == UNKNOWN for g in groups)
    if unknown:
        parts.append(f"{unknown} group{'s' * (unknown > 1)} recorded no cost split, so no regime")
    text = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    return text[0].upper() + text[1:] + "."


def _markdown_table(header: list[str], rows: list[list[str]], keep: tuple[str, ...] = ()) -> list[str]:
    """A Markdown table without the columns that are empty (or "—") in every row, except those in `keep`."""
    kept = [i for i, name in enumerate(header) if name in keep or any(row[i] not in EMPTY for row in rows)]
    lines = ["| " + " | ".join(header[i] for i in kept) + " |",
             "|" + "|".join("---:" if header[i] == "#" else "---" for i in kept) + "|"]
    return lines + ["| " + " | ".join(row[i] for i in kept) + " |" for row in rows]


def _table(dataset: str, groups: list[dict], published: pd.DataFrame, ids: dict[int, str]) -> list[str]:
    metrics = sorted({g["acc_metric"] for g in groups})
    what = METRIC_NAMES[metrics[0]] if len(metrics) == 1 else "accuracy"
    header = ["#", "method", "regime", "arch", "mode", "config", "tuning", "tuned hyperparameters",
              f"{what} % mean ± std (n)", "vs best", "gain (pp)"]
    header += ["metric"] if len(metrics) > 1 else []
    header += ["published [ref]", "ours − published (pp)", "OPs / image", "binary params", "real params",
               "size (KiB)", "epochs", "s / epoch", "commit"]
    best_of, notes, rows = {}, {}, []
    tuned_any = any(g["tuning"] for g in groups)
    for g in groups:  # sorted best first: the first group of each kind is its best; tuned against tuned
        best_of.setdefault(_kind(g), g)

    def note(text: str) -> str:
        notes.setdefault(text, len(notes) + 1)
        return SUPERSCRIPTS[notes[text]]

    for rank, g in enumerate(groups, 1):
        best = best_of[_kind(g)]
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
        cells = [str(rank), g["method"], g["regime"], g["arch"], g["mode"], g["label"],
                 tuning_label(g["tuning"]) if tuned_any else "", _tuned_values(g["tuning"]), _accuracy_text(g), versus,
                 _gain(g, groups)]
        cells += [g["acc_metric"]] if len(metrics) > 1 else []
        cells += [reference, difference, _count(g["cost/ops"]), _fixed(g["cost/params_binary"], ",.0f"),
                  _fixed(g["cost/params_real"], ",.0f"), _fixed(g["cost/size_kib"], ",.1f"), g["run"]["epochs"],
                  _fixed(g["time/epoch_s"], ".3g"), commit]
        rows.append(cells)
    footer = [f"{SUPERSCRIPTS[i]} {text}" for text, i in notes.items()]
    if any(g["dirty"] for g in groups):
        footer.append("\\* after a commit: at least one run of the group had uncommitted changes (`git_dirty` not "
                      "false).")
    return _markdown_table(header, rows) + ([""] + ["  \n".join(footer)] if footer else [])


def _kind(group: dict) -> tuple:
    """Groups compete with their kind: same mode and accuracy metric, tuned with tuned, defaults with defaults."""
    return group["mode"], group["acc_metric"], bool(group["tuning"])


def budget_text(tuning: dict) -> str:
    return f"{tuning['trials']} trials × {tuning['epochs']} epochs, {tuning['pruner']}"


def tuning_label(tuning: dict | None) -> str:
    """ "defaults", "tuned (8 trials × 2 epochs, median)" for a tuned suite's group, "tuned (study S, trial T)"
    for `run --from-study` runs (their study's budget is not recorded)."""
    if not tuning:
        return "defaults"
    if "trials" in tuning:
        return f"tuned ({budget_text(tuning)})"
    return f"tuned (study {tuning['study']}, trial {tuning['trial']})"


def _tuned_values(tuning: dict | None) -> str:
    def show(value) -> str:
        return "/".join(show(v) for v in value) if isinstance(value, list) else _setting(value)

    return ", ".join(f"{k}={show(v)}" for k, v in sorted((tuning or {}).get("params", {}).items()))


def _gain(group: dict, groups: list[dict]) -> str:
    """Tuned mean − the mean of the same method's defaults group (the suite's configuration without the tuned
    values, by configuration identity); — when that group has no runs here."""
    if not group["tuning"] or "defaults_config_id" not in group["tuning"]:
        return ""
    defaults = next((h for h in groups if h["config_id"] == group["tuning"]["defaults_config_id"]
                     and h["acc_metric"] == group["acc_metric"]), None)
    return f"{group['mean'] - defaults['mean']:+.2f}" if defaults else UNKNOWN


def _budgets(groups: list[dict]) -> str:
    """The sentence that states the tuning budget of a dataset's tuned groups (empty without any)."""
    pruning = {"none": "no pruning", "median": "median pruning", "hyperband": "Hyperband pruning"}
    budgets = sorted({(g["tuning"]["trials"], g["tuning"]["epochs"], g["tuning"]["pruner"]) for g in groups
                      if g["tuning"] and "trials" in g["tuning"]})
    if not budgets:
        return ""
    texts = [f"{t} trials × {e} epochs ({pruning.get(p, p + ' pruning')})" for t, e, p in budgets]
    which = (f"every method had the same tuning budget, {texts[0]}," if len(texts) == 1
             else f"budgets {'; '.join(texts)} (compare rows of one budget),")
    return (f"Tuned rows: {which} of Optuna on the validation split (`val/acc_best`; pruned and failed trials "
            f"count), and its best trial's configuration was then trained with every seed; tuned rows are ranked "
            f"against tuned rows, defaults against defaults.")


def _published_table(quoted: pd.DataFrame, ids: dict[int, str]) -> list[str]:
    lines = ["| ref | source | row | arch | method | metric | value | epochs | match | setting |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for index, row in quoted.iterrows():
        cells = [ids[index], row["source"], row["label"], row["arch"] or "not stated", row["method"], row["metric"],
                 _published_value(row), row["epochs"], f"`{row['match']}`" if row["match"] else "", row["setting"]]
        lines.append("| " + " | ".join(_escape(c) if c[:1] != "`" else c for c in cells) + " |")
    return lines


# -- plots -------------------------------------------------------------------------------------------------
Box = tuple[float, float, float, float]  # x0, y0, x1, y1
REGIME_COLOURS = {"FP": "black", "BWN": "tab:blue", "W1A1": "tab:orange", UNKNOWN: "tab:gray"}
LABEL_FONT_SIZE = 8
PANELS = (("cost/size_kib", "model size (KiB; binary weights 1 bit, the rest 32), log scale", "accuracy vs size"),
          ("cost/ops", "OPs per image (FP MACs + BWN MACs + BOPs/64), log scale", "accuracy vs OPs"))


def boxes_overlap(a: Box, b: Box) -> bool:
    """True when the two boxes share interior (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _stack(wishes: list[float], heights: list[float]) -> list[float]:
    """Centres for boxes stacked top to bottom in the given order, touching but not overlapping, each run of
    touching boxes centred so that its members' displacements from their `wishes` sum to zero."""
    clusters: list[list[int]] = []
    tops: list[float] = []

    def top_of(items: list[int]) -> float:  # the top that centres the cluster on its members' wishes
        above, total = 0.0, 0.0
        for i in items:
            total += wishes[i] + above + heights[i] / 2
            above += heights[i]
        return total / len(items)

    for i in range(len(wishes)):
        clusters.append([i])
        tops.append(top_of([i]))
        while len(clusters) > 1 and tops[-2] - sum(heights[j] for j in clusters[-2]) < tops[-1]:
            clusters[-2:] = [clusters[-2] + clusters[-1]]
            tops[-2:] = [top_of(clusters[-1])]
    centres = [0.0] * len(wishes)
    for items, top in zip(clusters, tops):
        for i in items:
            centres[i] = top - heights[i] / 2
            top -= heights[i]
    return centres


def place_labels(anchors: list[tuple[float, float]], sizes: list[tuple[float, float]], bounds: Box | None = None,
                 obstacles: list[Box] = (), gap: float = 8.0, fan: float = 20.0,
                 steps: int = 60) -> list[tuple[float, float]]:
    """Lower-left corners for one label per point so that no two label boxes, and no label box and obstacle
    (the markers and error bars), intersect; all in one unit (pixels of the figure, y up). Deterministic.

    Labels sit `gap` to the right of their points. Points whose labels would share horizontal space form
    a column; its labels are stacked `fan` further right, in the points' top-to-bottom order (ties: input
    order), as close to their points as stacking allows, and the column is shifted inside `bounds`. A
    label that still touches an obstacle, a label placed before it or the bounds is placed greedily
    instead: nearest first, its box shifted down or up in steps of a third of its height, right of the
    point before left at the same shift (left costs two label heights more); the first candidate inside
    `bounds` touching nothing wins, else the first anywhere touching nothing, else the box goes above
    everything."""
    n = len(anchors)
    order = sorted(range(n), key=lambda i: (anchors[i][0] + gap, i))
    columns: list[list[int]] = []
    reach = -math.inf
    for i in order:  # labels whose horizontal extents overlap (transitively) form one column
        left = anchors[i][0] + gap
        if not columns or left >= reach:
            columns.append([])
            reach = -math.inf
        columns[-1].append(i)
        reach = max(reach, left + sizes[i][0])
    wanted: list[tuple[float, float]] = [(0.0, 0.0)] * n
    for column in columns:
        column.sort(key=lambda i: (-anchors[i][1], i))
        heights = [sizes[i][1] for i in column]
        centres = _stack([anchors[i][1] for i in column], heights)
        if bounds is not None:
            shift = min(0.0, bounds[3] - (centres[0] + heights[0] / 2))  # the column's top inside the bounds
            shift = shift or max(0.0, bounds[1] - (centres[-1] - heights[-1] / 2))  # else its bottom
            centres = [c + shift for c in centres]
        offset = gap + (fan if len(column) > 1 else 0.0)
        for i, centre in zip(column, centres):
            wanted[i] = (anchors[i][0] + offset, centre - sizes[i][1] / 2)

    placed = [tuple(box) for box in obstacles]
    corners: list[tuple[float, float]] = [(0.0, 0.0)] * n
    for i in sorted(range(n), key=lambda i: (-anchors[i][1], anchors[i][0], i)):
        (x, y), (w, h) = anchors[i], sizes[i]

        def free(cx: float, cy: float, w: float = w, h: float = h) -> bool:
            return not any(boxes_overlap((cx, cy, cx + w, cy + h), other) for other in placed)

        def inside(cx: float, cy: float, w: float = w, h: float = h) -> bool:
            return bounds is None or (bounds[0] <= cx and cx + w <= bounds[2] and bounds[1] <= cy
                                      and cy + h <= bounds[3])

        corner = wanted[i] if inside(*wanted[i]) and free(*wanted[i]) else None
        if corner is None:
            candidates = []
            for k in range(steps + 1):
                for dy in (0.0,) if k == 0 else (-k * h / 3, k * h / 3):
                    for left, cx in ((0, x + gap), (1, x - gap - w)):
                        candidates.append((abs(dy) + 2 * h * left, len(candidates), cx, y - h / 2 + dy))
            candidates.sort()
            corner = next(((cx, cy) for *_, cx, cy in candidates if inside(cx, cy) and free(cx, cy)), None)
            corner = corner or next(((cx, cy) for *_, cx, cy in candidates if free(cx, cy)), None)
            corner = corner or (x + gap, max(box[3] for box in placed) + 1.0)
        corners[i] = corner
        placed.append((corner[0], corner[1], corner[0] + w, corner[1] + h))
    return corners


def _point_label(g: dict, points: list[dict]) -> str:
    label = g["method"] + ("" if g["mode"] == "fair" else f" ({g['mode']})")
    if sum((h["method"], h["mode"]) == (g["method"], g["mode"]) for h in points) > 1:
        label += f" {g['config_id'][:4]}"
    return label


def _log_ticks(ax, decades: float, text: Callable[[float], str]) -> None:
    """Log-scale x ticks at 1-2-5 (up to 1.6 decades shown), 1-3 (up to 3.2) or powers of ten, labelled by
    `text`, without minor labels: no two tick labels collide."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if decades <= 1.6 else (1.0, 3.0) if decades <= 3.2 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: text(value)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _panel(ax, renderer, groups: list[dict], key: str, xlabel: str, title: str) -> None:
    points = [g for g in groups if math.isfinite(g[key]) and g[key] > 0]
    ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="accuracy % (mean ± std)", title=title)
    ax.grid(True, which="both", alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center", color="0.5")
        return
    xs, ys = [g[key] for g in points], [g["mean"] for g in points]
    errors = [g["std"] if g["n"] > 1 and math.isfinite(g["std"]) else 0.0 for g in points]
    low, high = math.log10(min(xs)), math.log10(max(xs))
    span = max(high - low, 1.0)
    ax.set_xlim(10 ** (low - 0.2 * span), 10 ** (high + 0.35 * span))
    _log_ticks(ax, 1.55 * span, _count if key == "cost/ops" else lambda v: f"{v:,.4g}")
    bottom, top = min(y - e for y, e in zip(ys, errors)), max(y + e for y, e in zip(ys, errors))
    if top - bottom < 2.0:  # at least 2 points of accuracy, centred
        bottom, top = (bottom + top) / 2 - 1.0, (bottom + top) / 2 + 1.0
    ax.set_ylim(bottom - 0.1 * (top - bottom), top + 0.1 * (top - bottom))
    front = pareto_front(list(zip(xs, ys)))
    for g, x, y, e, on_front in zip(points, xs, ys, errors, front):
        colour = REGIME_COLOURS[g["regime"]]
        ax.errorbar(x, y, yerr=e, fmt="o", markersize=5, capsize=3, color=colour, ecolor=colour, elinewidth=1,
                    markerfacecolor=colour if on_front else "white", zorder=3 if on_front else 2)
    edge = sorted((x, y) for x, y, on in zip(xs, ys, front) if on)
    ax.step([x for x, _ in edge], [y for _, y in edge], where="post", color="tab:red", alpha=0.5, zorder=1)

    to_pixels = ax.transData.transform
    anchors = [tuple(float(v) for v in to_pixels((x, y))) for x, y in zip(xs, ys)]
    obstacles = []
    for (px, py), x, y, e in zip(anchors, xs, ys, errors):
        obstacles.append((px - 4.0, py - 4.0, px + 4.0, py + 4.0))  # the marker
        if e:
            (_, y0), (_, y1) = to_pixels((x, y - e)), to_pixels((x, y + e))
            obstacles.append((px - 4.0, float(y0), px + 4.0, float(y1)))  # the error bar and its caps
    labels = [_point_label(g, points) for g in points]
    sizes = []
    for label in labels:
        probe = ax.text(0, 0, label, fontsize=LABEL_FONT_SIZE)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        sizes.append((extent.width + 2.0, extent.height + 1.0))
    frame = ax.get_window_extent(renderer)
    bounds = (frame.x0 + 2.0, frame.y0 + 2.0, frame.x1 - 2.0, frame.y1 - 2.0)
    corners = place_labels(anchors, sizes, bounds, obstacles)
    for g, label, (px, py), (cx, cy), (_, h), x, y in zip(points, labels, anchors, corners, sizes, xs, ys):
        moved = not 0 < cx - px < 12 or abs(cy + h / 2 - py) > h / 4  # away from its point: a leader line
        ax.annotate(label, (x, y), xytext=(cx - px + 1.0, cy - py), textcoords="offset pixels", ha="left",
                    va="bottom", fontsize=LABEL_FONT_SIZE, color=REGIME_COLOURS[g["regime"]], annotation_clip=False,
                    bbox=dict(boxstyle="square,pad=0", facecolor="white", edgecolor="none", alpha=0.8),
                    arrowprops=dict(arrowstyle="-", color="0.6", linewidth=0.6, shrinkA=0, shrinkB=3)
                    if moved else None)


def _figure(dataset: str, groups: list[dict]):
    """The two panels, accuracy vs size and vs OPs, labels placed; None when neither cost was recorded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not any(math.isfinite(g[key]) and g[key] > 0 for g in groups for key, *_ in PANELS):
        return None
    figure = Figure(figsize=(11, 5.6), dpi=100)
    canvas = FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.2, top=0.89, wspace=0.18)
    axes = figure.subplots(1, len(PANELS))
    figure.suptitle(f"{dataset}: accuracy against model size and against OPs")
    renderer = canvas.get_renderer()
    for ax, (key, xlabel, title) in zip(axes, PANELS):
        _panel(ax, renderer, groups, key, xlabel, title)
    shown = [g for g in groups if any(math.isfinite(g[key]) and g[key] > 0 for key, *_ in PANELS)]
    present = [r for r in REGIME_COLOURS if any(g["regime"] == r for g in shown)]
    handles = [Line2D([], [], color=REGIME_COLOURS[r], marker="o", linestyle="", label=f"{r} ({REGIMES[r]})"
                      if r in REGIMES else "regime not recorded") for r in present]
    handles += [Line2D([], [], color="tab:red", alpha=0.5, label="non-dominated (Pareto) front: filled markers"),
                Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="",
                       label="dominated: hollow markers")]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=8, frameon=False)
    return figure


def _plot(dataset: str, groups: list[dict]) -> bytes | None:
    figure = _figure(dataset, groups)
    if figure is None:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


# -- the page ----------------------------------------------------------------------------------------------
HEADER = """# bnnbench leaderboard

<!-- Generated by `bnnbench leaderboard` from results.csv and published.csv. Do not edit by hand. -->

Accuracy of binary-network training methods from recorded MLflow runs: only runs that ended **FINISHED**
with a finite accuracy and their provenance (all in `results.csv`) appear. Datasets with runs come first,
each opening with its best **BWN** (binary weights, real activations) and **W1A1** (binary weights and
activations) method and the full-precision reference `fp`; [how to read the tables](#how-to-read-the-tables)
and the papers' numbers for datasets without runs follow them. Regenerate with
`bnnbench leaderboard --tracking-uri URI`; `bnnbench leaderboard --check` fails when this page (or the
results block of the repository README) is stale.
"""

READING = """## How to read the tables

`bnnbench leaderboard --tracking-uri URI` reads every experiment of the store, merges its runs into
`results.csv` by run id (rows already there are never dropped; a run repeating a configuration, code
and seed already there is not added), and rewrites this page, the plots and the results block of the
repository README. Failed, killed and still-running runs, and Optuna trials, never appear.

One row per group of runs with the same architecture, mode, method and resolved configuration
(`config`: the first digits of its configuration identity, a digest of everything that is trained but
the seed, followed by the settings that differ between configs of one method). Of each configuration
only the runs of the newest code identity (the training code and the torch and Lightning versions)
count, one per distinct seed; accuracy is their mean ± sample standard deviation, n (the number of
distinct seeds) in parentheses, sorted best first. **best** is the group with the highest mean among
those of its mode (fair or paper), accuracy metric and kind (tuned or defaults); ≈ marks a group not
significantly different from that best (Welch's t-test, p ≥ 0.05; the p-value is shown). A column empty
in every row of a dataset is left out of its table.

The regime comes from the runs' cost split (`bnnbench/cost.py`): **W1A1** when the network has BOPs
(binary weights × binary inputs), **BWN** when it has binary-weight MACs on real inputs and no BOPs,
**FP** when it has neither; — when the runs recorded no cost split. OPs are FP MACs + binary-weight
MACs + BOPs/64 per image at the run's input size (the Bi-Real/ReActNet convention, binary-weight MACs
at full cost); size counts binary weights at 1 bit and the rest at 32. The plots show accuracy (mean,
error bar ± std) against size and against OPs on log scales; filled markers are the non-dominated
(Pareto) front of their panel, joined by the red step line, and a label away from its point has a
leader line.

A **tuned** row comes from a suite with a `tune:` block: every method of the suite had the same number of
Optuna trials of the same epochs on the validation split (`val/acc_best`; pruned and failed trials use
their share), and its best trial's configuration was then trained with every seed of the suite. The
tuned hyperparameters are shown; gain is the tuned mean minus that of the same method's **defaults**
row (the suite's configuration without the tuned values), — when that row has no runs. best and ≈
compare tuned rows with tuned rows and defaults rows with defaults rows.

A published number (`published.csv`, quoted from the papers) stands beside a **paper**-mode group of the
same dataset, architecture and method whose config satisfies the row's `match`; the difference is
ours − published in percentage points.
"""

PUBLISHED_ONLY = "Published numbers for datasets without runs"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return "".join(c for c in heading.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _dataset_groups(runs: pd.DataFrame) -> tuple[list[dict], int, int]:
    groups, older, repeated = _groups(runs)
    _label_configs(groups)
    for g in groups:
        g["regime"] = regime(g)
    return groups, older, repeated


def datasets_in_order(results: pd.DataFrame) -> list[str]:
    """Datasets with runs, the one that separates methods best first: the lowest best mean accuracy (a
    dataset every method nearly solves, like digits, tells the least), then by name."""
    best = {dataset: max(g["mean"] for g in _groups(results[results["dataset"] == dataset])[0])
            for dataset in set(results["dataset"])}
    return sorted(best, key=lambda dataset: (best[dataset], dataset))


def render(results: pd.DataFrame, published: pd.DataFrame, plots: bool = True) -> tuple[str, dict[str, bytes]]:
    """The leaderboard page and `{"<dataset>.png": bytes}`; a pure function of the two tables."""
    results = results.fillna("").astype(str)
    with_runs = datasets_in_order(results)
    without = sorted(set(published["dataset"]) - set(with_runs))
    lines = [HEADER, f"{len(results)} runs from `results.csv`; {len(published)} published numbers.", ""]
    index = "Datasets with runs: " + (", ".join(f"[{d}](#{d})" for d in with_runs) or "none yet") + "."
    if without:
        index += (f" [{PUBLISHED_ONLY}](#{_anchor(PUBLISHED_ONLY)}): "
                  + ", ".join(f"[{d}](#{d})" for d in without) + ".")
    lines += [index, ""]
    images = {}
    for dataset in with_runs:
        runs = results[results["dataset"] == dataset]
        quoted = published[published["dataset"] == dataset]
        ids = {i: f"P{k}" for k, i in enumerate(quoted.index, 1)}
        groups, older, repeated = _dataset_groups(runs)
        lines += [f"## {dataset}", "", " ".join(filter(None, (_summary(groups), _budgets(groups)))), ""]
        metric = ", ".join(f"`{m}` ({METRIC_NAMES[m]})" for m in sorted(set(runs["acc_metric"])))
        lines += [f"{len(runs)} runs; accuracy metric: {metric}. `val/acc_best` is used only where the dataset (in "
                  "that mode) has no test split.", ""]
        if older or repeated:
            lines += [f"Per configuration only the runs of its newest code identity count, one per seed: {older} "
                      f"runs of older code and {repeated} repeated seeds are left out.", ""]
        if any(math.isfinite(g[key]) and g[key] > 0 for g in groups for key, *_ in PANELS):
            lines += [f"![{dataset}: accuracy against model size and against OPs, Pareto fronts highlighted]"
                      f"({dataset}.png)", ""]
            if plots:
                images[f"{dataset}.png"] = _plot(dataset, groups)
        lines += _table(dataset, groups, quoted, ids) + [""]
        if len(quoted):
            lines += [f"Published numbers for {dataset} (value % ± std (n)):", "", *_published_table(quoted, ids), ""]
    lines += [READING]
    if without:
        lines += [f"## {PUBLISHED_ONLY}", "", "No recorded runs yet; the papers' numbers (value % ± std (n)) for when "
                  "there are.", ""]
        for dataset in without:
            quoted = published[published["dataset"] == dataset]
            ids = {i: f"P{k}" for k, i in enumerate(quoted.index, 1)}
            lines += [f"### {dataset}", "", *_published_table(quoted, ids), ""]
    return "\n".join(lines).rstrip("\n") + "\n", images


# -- the README's results block ----------------------------------------------------------------------------
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def render_readme(results: pd.DataFrame, page: str = "leaderboard/README.md") -> str:
    """The block between the README's results markers: per dataset with runs, a compact table (method,
    regime, accuracy, size, OPs) of the same groups as the page; `page` is the link to the full page."""
    results = results.fillna("").astype(str)
    lines = ["<!-- Generated by `bnnbench leaderboard` from leaderboard/results.csv. Do not edit by hand. -->", ""]
    for dataset in datasets_in_order(results):
        groups, _, _ = _dataset_groups(results[results["dataset"] == dataset])
        varying, first = _varying(groups), groups[0]
        configs = any(sum((h["arch"], h["mode"], h["method"]) == (g["arch"], g["mode"], g["method"]) for h in groups)
                      > 1 for g in groups)
        fixed = [f"`{first['arch']}`"] if not varying["arch"] else []
        fixed += [f"{first['mode']} mode"] if not varying["mode"] else []
        fixed += [f"{first['run']['epochs']} epochs"] if not varying["epochs"] else []
        what = METRIC_NAMES[first["acc_metric"]] if not varying["acc_metric"] else "accuracy"
        lines += [f"**{dataset}**" + (f" ({', '.join(fixed)})" if fixed else "") + f": {what} %, mean ± std (n "
                  f"seeds), best first; full table and plots in [{page}]({page}#{dataset}).", ""]
        tuned = any(g["tuning"] for g in groups)
        header = ["method", *(["tuning"] if tuned else []), *(["config"] if configs else []),
                  *(["arch"] if varying["arch"] else []),
                  *(["mode"] if varying["mode"] else []), *(["epochs"] if varying["epochs"] else []), "regime",
                  f"{what} %", *(["metric"] if varying["acc_metric"] else []), "size (KiB)", "OPs / image"]
        rows = []
        for g in groups:
            rows.append([g["method"], *([tuning_label(g["tuning"])] if tuned else []),
                         *([g["label"]] if configs else []), *([g["arch"]] if varying["arch"] else []),
                         *([g["mode"]] if varying["mode"] else []),
                         *([g["run"]["epochs"]] if varying["epochs"] else []), g["regime"], _accuracy_text(g),
                         *([g["acc_metric"]] if varying["acc_metric"] else []), _fixed(g["cost/size_kib"], ",.1f"),
                         _count(g["cost/ops"])])
        lines += _markdown_table(header, rows, keep=("method", f"{what} %")) + [""]
    if len(lines) == 2:
        lines += ["No recorded runs yet.", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def splice_readme(text: str, block: str, name: str = "README") -> str | None:
    """`text` with `block` between its results markers; None when it has none."""
    starts, ends = text.count(README_START), text.count(README_END)
    if not starts and not ends:
        return None
    start, end = text.find(README_START), text.find(README_END)
    if starts != 1 or ends != 1 or end < start:
        raise BadInput(f"{name}: expected one '{README_START}' line followed by one '{README_END}' line")
    head = text[:start + len(README_START)]
    return head + "\n" + block + text[end:]


def default_readme(export: str | Path) -> Path:
    """The repository README for an export at `<repo>/leaderboard/results.csv`: `<repo>/README.md`."""
    return Path(export).parent.parent / "README.md"


def _readme_update(export: Path, out: Path, readme: str | Path | None, results: pd.DataFrame) -> tuple[Path, str,
                                                                                                          str | None]:
    """(README path, its text, its text with a fresh results block or None when it has no markers or is
    absent); an explicitly named README must exist."""
    path = Path(readme) if readme is not None else default_readme(export)
    if not path.exists():
        if readme is not None:
            raise BadInput(f"no README at '{path}' (give --readme PATH, or leave it out for the default)")
        return path, "", None
    text = path.read_text(encoding="utf-8")
    link = Path(os.path.relpath(out.resolve(), path.resolve().parent)).as_posix()
    return path, text, splice_readme(text, render_readme(results, link), str(path))


# -- commands ----------------------------------------------------------------------------------------------
def update(uri: str | None, export: str | Path, out: str | Path, published: str | Path | None = None,
           echo: Callable[[str], None] = print, readme: str | Path | None = None) -> pd.DataFrame:
    """Read FINISHED runs from MLflow, merge them into `export`, write the page and plots to `out`'s folder
    and the results block of `readme` (default `default_readme(export)`, skipped without markers)."""
    from bnnbench import tracking

    export, out = Path(export), Path(out)
    published_table = read_published(published or PUBLISHED)
    existing = read_results(export)
    if readme is not None and not Path(readme).exists():
        raise BadInput(f"no README at '{readme}' (give --readme PATH, or leave it out for the default)")
    if uri is None and not tracking.store_exists(None):
        echo(f"no MLflow store at '{tracking.tracking_uri(None)}': rendering from {export} only")
        new, skipped = rows_from_runs([])
    else:
        new, skipped = rows_from_runs(tracking.finished_runs(uri))
    merged = merge(existing, new)
    text, images = render(merged, published_table)
    path, before, after = _readme_update(export, out, readme, merged)  # bad markers: nothing is written
    write_results(merged, export)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    for name, data in images.items():
        (out.parent / name).write_bytes(data)
    added = len(set(new["run_id"]) - set(existing["run_id"]))
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items())) or "none"
    echo(f"{export}: {len(merged)} runs ({added} new from MLflow, {len(existing)} already there); skipped: {reasons}")
    echo(f"{out}: {len(set(merged['dataset']))} datasets with runs, {len(images)} plots")
    if after is None:
        if readme is not None:
            echo(f"{path}: no '{README_START}' marker, results block skipped")
    elif after == before:
        echo(f"{path}: results block up to date")
    else:
        path.write_text(after, encoding="utf-8")
        echo(f"{path}: results block rewritten")
    return merged


def _first_difference(actual: str, expected: str) -> int:
    have, want = actual.splitlines(), expected.splitlines()
    return next((i for i, (a, b) in enumerate(zip(have, want), 1) if a != b), min(len(have), len(want)) + 1)


def check(export: str | Path, out: str | Path, published: str | Path | None = None,
          readme: str | Path | None = None) -> str | None:
    """None when `out`, and the results block of `readme` (when it has markers), equal what `export` and
    `published` render; otherwise the one-line reason."""
    export, out = Path(export), Path(out)
    results = read_results(export)
    expected, _ = render(results, read_published(published or PUBLISHED), plots=False)
    if not out.exists():
        return f"{out} does not exist; run 'bnnbench leaderboard' to generate it"
    actual = out.read_text(encoding="utf-8")
    if actual != expected:
        return (f"{out} is stale (differs from what {export} and the published numbers render, first at line "
                f"{_first_difference(actual, expected)}); run 'bnnbench leaderboard' to regenerate it")
    path, before, after = _readme_update(export, out, readme, results)
    if after is not None and after != before:
        return (f"{path}: the results block is stale (differs from what {export} renders, first at line "
                f"{_first_difference(before, after)}); run 'bnnbench leaderboard' to regenerate it")
    return None
