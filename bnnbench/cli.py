"""The `bnnbench` command: argparse subcommands that build configs and call the runner.

No ML logic lives here. Heavy modules (torch, lightning, mlflow) are imported inside the command
functions, so `bnnbench --help` and `bnnbench list` answer instantly. Every `BadInput` becomes one
line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

import bnnbench
from bnnbench import memory
from bnnbench.config import MODES, PRECISIONS
from bnnbench.errors import BadInput, Terminated


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit 2) instead of the usage block plus the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be a positive number")
    return value


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", help="training method (see 'bnnbench list methods')")
    p.add_argument("--dataset", help="dataset (see 'bnnbench list datasets')")
    p.add_argument("--arch", help="backbone (see 'bnnbench list archs'); default: the dataset's")
    p.add_argument("--mode", choices=MODES, help="fair: shared recipe (default); paper: the paper's")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--image-size", type=_positive_int, help="input side in pixels")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override a field of the method's config (converted to the field's type)")
    p.add_argument("--recipe", help="YAML file with run keys and a 'set:' mapping (flags override it)")


def _add_device_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=_positive_int,
                   help="processes per machine, one device each (default 1); the batch is split between them")
    p.add_argument("--num-nodes", type=_positive_int, help="machines, each running --devices processes (default 1)")
    p.add_argument("--strategy", help="Lightning strategy with several processes (default ddp), e.g. ddp, fsdp")


def _add_grace_argument(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--grace-period", type=_positive_int, metavar="SECONDS",
                   help=f"{what} whose worker has sent no heartbeat for this long (killed, machine lost) is "
                        f"retried by another worker (default 300)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bnnbench", description="Benchmark training methods for binary neural networks.")
    parser.add_argument("--version", action="version", version=f"bnnbench {bnnbench.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("run", help="train one method on one dataset and record it in MLflow")
    _add_run_arguments(p)
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--data-dir", help="where dataset files live or are downloaded to (default ./data)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment (default: the dataset's name)")
    p.add_argument("--wandb", action="store_true", default=None,
                   help="also mirror the run to Weights & Biases (WANDB_MODE=offline works without an account)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the network; the first step's time (compilation) is logged")
    p.add_argument("--precision", choices=PRECISIONS, help="Lightning precision (default 32; bf16-mixed on GPUs)")
    p.add_argument("--from-study", metavar="NAME",
                   help="train the best configuration of this Optuna study ('bnnbench tune'); flags override it")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage of --from-study (default: optuna.db beside the MLflow SQLite database)")
    p.add_argument("--resume", metavar="RUN_ID",
                   help="continue an interrupted (KILLED, or RUNNING with its process gone) run into the same MLflow "
                        "run, from its last checkpoint")
    p.add_argument("--checkpoint-dir", help="where checkpoints go, one folder per run "
                                            "(default: checkpoints/ beside a SQLite store, else ./checkpoints)")
    p.add_argument("--run-name", help="MLflow run name (default METHOD-DATASET-ARCH-MODE-sSEED)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (default: a bar on a terminal, else one line per epoch)")
    _add_device_arguments(p)
    p.set_defaults(func=cmd_run)

    p = commands.add_parser("tune", help="search a method's hyperparameters with Optuna; each trial is a run")
    _add_run_arguments(p)
    p.add_argument("--trials", type=_positive_int, default=20, help="trials this invocation adds (default 20)")
    p.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                   help="start no new trial after this many seconds (the running one finishes)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage, any SQLAlchemy URL; processes sharing it share the study "
                        "(default: optuna.db beside the MLflow SQLite database)")
    p.add_argument("--study-name", help="default <method>-<dataset>-<arch>-<mode>; an existing study is resumed")
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    p.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median",
                   help="stops unpromising trials on val/acc after each epoch (default median)")
    p.add_argument("--seed", type=int, help="seeds the sampler and every trial's training (default 0)")
    p.add_argument("--data-dir", help="where dataset files live or are downloaded to (default ./data)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment (default: the dataset's name)")
    p.add_argument("--wandb", action="store_true", default=None, help="also mirror every trial to Weights & Biases")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch lines on stderr (one line per trial stays)")
    _add_grace_argument(p, "a trial")
    _add_device_arguments(p)
    p.set_defaults(func=cmd_tune)

    p = commands.add_parser("cost", help="MACs, BOPs, OPs, parameters and size of a run's network (no data)")
    _add_run_arguments(p)
    p.add_argument("--json", action="store_true", help="print only the totals, as one JSON object")
    p.set_defaults(func=cmd_cost)

    p = commands.add_parser("bench", help="run a benchmark suite (methods x datasets x seeds; a tune: block tunes "
                                          "every method with the same budget first); resumes")
    p.add_argument("suite", help="suite YAML, e.g. benchmarks/digits.yaml")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--dry-run", action="store_true", help="print what would run or be skipped; run nothing")
    p.add_argument("--wandb", action="store_true", help="also mirror every run to Weights & Biases")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch lines on stderr (one line per run stays)")
    p.add_argument("--storage", metavar="URL",
                   help="share the suite through this Optuna storage (sqlite:///FILE on one machine, postgresql://... "
                        "for many): every process started with the same command takes cells until none is left")
    p.add_argument("--status", action="store_true",
                   help="with --storage: print each cell's state (done / running / waiting / failed); train nothing")
    _add_grace_argument(p, "a cell")
    _add_device_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = commands.add_parser("leaderboard", help="FINISHED runs -> leaderboard/results.csv -> leaderboard/README.md")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db; "
                                          "without one the page is rendered from --export alone)")
    p.add_argument("--export", default="leaderboard/results.csv", help="rows with provenance, merged by run id")
    p.add_argument("--out", default="leaderboard/README.md", help="the Markdown page; plots go beside it")
    p.add_argument("--published", help="published numbers (default: the papers' numbers shipped with bnnbench, "
                                       "bnnbench/published.csv)")
    p.add_argument("--readme", help="README whose block between '<!-- results:start -->' and '<!-- results:end -->' "
                                    "is rewritten with a compact results table (default: README.md in the folder "
                                    "above --export's, i.e. ./README.md for leaderboard/results.csv; a README "
                                    "without the markers is left alone)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if --out or the README's results block differs from what --export renders; reads "
                        "no MLflow, writes nothing")
    p.set_defaults(func=cmd_leaderboard)

    p = commands.add_parser("bench-step", help="time training steps of methods side by side (synthetic data)")
    p.add_argument("--arch", required=True, help="backbone every method is timed on")
    p.add_argument("--methods", default="fp,ste,dra", help="comma-separated, or 'all' (default fp,ste,dra)")
    p.add_argument("--dataset", default="cifar10", help="whose tensor shape and class count to use (no files)")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--image-size", type=_positive_int)
    p.add_argument("--steps", type=_positive_int, default=10, help="timed steps per method (after 2 warm-up)")
    p.add_argument("--compile", action="store_true", help="torch.compile each model (compile time reported)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--precision", choices=PRECISIONS, default="32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    p.set_defaults(func=cmd_bench_step)

    p = commands.add_parser("export", help="write a FINISHED run's network with 1-bit weights, and as ONNX")
    p.add_argument("run_id", metavar="RUN_ID", help="the MLflow run id that 'bnnbench run' printed")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the bit-packed network (load it with bnnbench.export.load_packed); the ONNX file is "
                        "written beside it, FILE with suffix .onnx")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--force", action="store_true", help="overwrite FILE and its .onnx file if they exist")
    p.add_argument("--no-onnx", action="store_true", help="write FILE only (the ONNX file needs bnnbench[export])")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("list", help="list registered methods, datasets or architectures")
    p.add_argument("what", choices=["methods", "datasets", "archs"])
    p.set_defaults(func=cmd_list)
    return parser


def run_config(args: argparse.Namespace):
    """RunConfig from a recipe or a study (if any), overridden by the flags that were given."""
    from bnnbench.config import RunConfig, config_fields, load_recipe, parse_assignments
    from bnnbench.config import run_config as merge
    from bnnbench.registry import DATASETS, METHODS

    recipe = load_recipe(args.recipe) if args.recipe else {}
    if getattr(args, "from_study", None):
        recipe = _study_recipe(args)
    elif getattr(args, "storage", None) and hasattr(args, "from_study"):
        raise BadInput("--storage on 'run' names the storage of --from-study; give --from-study NAME too")
    flags = {key: getattr(args, key) for key in config_fields(RunConfig) if getattr(args, key, None) is not None}
    if getattr(args, "no_progress", False):
        flags["progress"] = "none"
    cfg = merge(recipe, flags, parse_assignments(args.overrides))
    METHODS.check(cfg.method)
    DATASETS.check(cfg.dataset)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from bnnbench import distributed

    if args.resume:
        from bnnbench.config import RECIPE_KEYS

        given = [flag for flag in (*RECIPE_KEYS, "recipe", "from_study") if getattr(args, flag, None) is not None]
        given += ["set"] if args.overrides else []
        if given:
            raise BadInput(f"--resume continues a recorded run as it was; leave out --{given[0].replace('_', '-')}")
        from bnnbench.runner import resume_config

        where = {k: getattr(args, k) for k in ("checkpoint_dir", "wandb", "devices", "num_nodes", "strategy")
                 if getattr(args, k, None) is not None}
        cfg = distributed.share(resume_config(args.resume, args.tracking_uri, progress="none" if args.no_progress
                                              else "bar", **where) if distributed.is_main() else None)
    else:
        cfg = run_config(args)
    from bnnbench.runner import RunFailed, run
    from bnnbench.tracking import tracking_uri

    _quiet_libraries()
    try:
        result = run(cfg, resume=args.resume)
    except RunFailed as failure:
        print(f"bnnbench: {failure}", file=sys.stderr)
        return 1
    if not distributed.is_main():  # rank 0 prints the results
        return 0
    m = result.metrics
    print(f"val/acc_best  {m['val/acc_best']:.4f}")
    if "test/acc" in m:
        print(f"test/acc      {m['test/acc']:.4f}")
    print(f"MLflow run    {result.run_id}  (experiment '{result.experiment}', {tracking_uri(cfg.tracking_uri)})")
    return 0


def _study_recipe(args: argparse.Namespace) -> dict:
    """`run --from-study`: the best trial's configuration is the recipe; given flags override it."""
    if args.recipe:
        raise BadInput("--from-study and --recipe both give the whole configuration; use one of them")
    from bnnbench.tuning import study_recipe

    values = study_recipe(args.from_study, args.storage, args.tracking_uri)
    for key in ("method", "dataset"):
        flag = getattr(args, key, None)
        if flag is not None and flag != values[key]:
            raise BadInput(f"--{key} '{flag}' contradicts study '{args.from_study}', which tunes "
                           f"{key} '{values[key]}'; leave --{key} out")
    return values


def cmd_tune(args: argparse.Namespace) -> int:
    import dataclasses

    from bnnbench import distributed

    if not distributed.is_main():  # another process of multi-process trials: trains what rank 0 shares
        _quiet_libraries()
        distributed.follow()
        return 0
    cfg = run_config(args)
    cfg = dataclasses.replace(cfg, progress="none" if args.no_progress else "epochs")  # lines, not bars
    import optuna

    from bnnbench import tuning

    _quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = tuning.tune(cfg, trials=args.trials, timeout=args.timeout, storage=args.storage,
                         study_name=args.study_name, sampler=args.sampler, pruner=args.pruner,
                         grace_period=args.grace_period or tuning.GRACE_S, echo=lambda line: print(line, flush=True))
    s = result.states
    print(f"this run: {s['COMPLETE']} complete, {s['PRUNED']} pruned, {s['FAIL']} failed; "
          f"{result.trial_epochs} trial-epochs")
    if result.best_value is None:
        print(f"study '{result.study_name}': no completed trial yet")
    else:
        params = " ".join(f"{k}={v}" for k, v in result.best_params.items())
        print(f"study best    {tuning.OBJECTIVE} {result.best_value:.4f} (trial {result.best_trial}): {params}")
        storage = "" if result.storage == tuning.default_storage() else f" --storage '{result.storage}'"
        print(f"train it      bnnbench run --from-study {result.study_name}{storage} --seed S")
    print(f"MLflow run    {result.parent_run_id}  (parent of the trials)")
    return 1 if s["FAIL"] and not (s["COMPLETE"] or s["PRUNED"]) else 0


def cmd_cost(args: argparse.Namespace) -> int:
    """Count the network a run would train, at its input size; builds the model, reads no data files."""
    cfg = run_config(args)
    import json

    from bnnbench import cost
    from bnnbench.runner import build_method, resolve

    resolved = resolve(cfg)
    size = (resolved.dataset_cls.in_channels, resolved.image_size, resolved.image_size)
    try:
        costs = cost.count(build_method(resolved).model, size)
    except cost.ForwardError as error:
        raise BadInput(f"cannot count '{resolved.arch}' at {resolved.image_size} px: {error}") from None
    if args.json:
        print(json.dumps(costs.totals()))
        return 0
    print(f"{cfg.method} ({cfg.mode} mode), {resolved.arch}, {cfg.dataset} input {'x'.join(map(str, size))}, "
          f"{resolved.dataset_cls.num_classes} classes: MACs per image (not FLOPs)\n")
    print(costs.table())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from bnnbench import distributed
    from bnnbench.suite import load_suite, run_suite

    if not distributed.is_main():  # another process of multi-process runs: trains what rank 0 shares
        _quiet_libraries()
        distributed.follow()
        return 0
    suite = load_suite(args.suite)
    if args.status:
        return _suite_status(suite, args)
    _quiet_libraries()
    execution = {k: getattr(args, k) for k in ("devices", "num_nodes", "strategy") if getattr(args, k) is not None}
    counts = run_suite(suite, tracking_uri=args.tracking_uri, dry_run=args.dry_run, wandb=args.wandb,
                       echo=lambda line: print(line, flush=True), progress="none" if args.no_progress else "epochs",
                       storage=args.storage, grace_period=args.grace_period, execution=execution)
    verb = "would run" if args.dry_run else "ran"
    print(f"suite '{suite.name}': {verb} {counts['ran']}, resumed {counts['resumed']}, skipped {counts['skipped']} "
          f"(already FINISHED or running), failed {counts['failed']}")
    return 1 if counts["failed"] else 0


def _suite_status(suite, args: argparse.Namespace) -> int:
    """`bench SUITE --storage URL --status`: one line per cell, then the counts."""
    if not args.storage:
        raise BadInput("--status reads a shared suite: give --storage URL too")
    from collections import Counter

    from bnnbench.config import resolve
    from bnnbench.suite import SharedSuite, SuiteTuning

    configs = suite.configs(args.tracking_uri)
    if suite.tune:  # a tuned suite: its studies first; its cells exist once every study has its trials
        tuning = SuiteTuning(suite, args.tracking_uri, "none", {}, args.storage, None)
        tuning.open(create=False)
        for line in tuning.status():
            print(line)
        if not tuning.finished():
            print(f"suite '{suite.name}': the cells (each study's best, with each seed) are queued once every study "
                  f"has its {suite.tune.trials} trials")
            return 0
        configs = tuning.tuned(configs)[0]
    shared = SharedSuite(suite, [resolve(cfg) for cfg in configs], args.storage, must_exist=True)
    shared.join(create=False)
    rows = shared.status()
    width = max(len(row["label"]) for row in rows)
    for row in rows:
        detail = {"done": f"val/acc_best {row['value']:.4f}" if row["value"] is not None else "",
                  "running": f"on {row['worker']}", "failed": (row["reason"] or "-").splitlines()[0][:100],
                  "waiting": "retry of a stopped worker's cell" if row["attempts"] > 1 else ""}[row["state"]]
        run = f"run {row['run_id']}" if row["run_id"] and row["state"] != "waiting" else ""
        print(f"{row['cell']:>3}  {row['label']:<{width}}  {row['state']:<8} {run:<36} {detail}".rstrip())
    counts = Counter(row["state"] for row in rows)
    print(f"suite '{suite.name}' in study '{shared.name}': " +
          ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "waiting", "failed")))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bnnbench import leaderboard

    if args.check:
        problem = leaderboard.check(args.export, args.out, args.published, readme=args.readme)
        if problem:
            print(f"bnnbench: {problem}", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    leaderboard.update(args.tracking_uri, args.export, args.out, args.published, readme=args.readme)
    return 0


def cmd_bench_step(args: argparse.Namespace) -> int:
    from bnnbench.registry import DATASETS, METHODS

    methods = METHODS.names() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        METHODS.check(method)
    DATASETS.check(args.dataset)
    import json
    import platform

    import torch

    from bnnbench.speed import bench_step, noise_warnings, report

    _quiet_libraries()
    timings = bench_step(methods, args.dataset, args.arch, args.batch_size, args.image_size, args.steps,
                         compile=args.compile, channels_last=args.channels_last, precision=args.precision,
                         device=args.device)
    for line in noise_warnings(timings):
        print(f"bnnbench: warning: {line}", file=sys.stderr)
    rows = report(timings)
    if args.json:
        print(json.dumps(rows))
        return 0
    device = torch.cuda.get_device_name() if args.device == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    memory = "peak MiB" if args.device == "cuda" else "saved-for-backward MiB"
    print(f"{args.arch}, batch {args.batch_size}, {args.dataset} shape, {args.device} ({device}), "
          f"precision {args.precision}{', compiled' if args.compile else ''}"
          f"{', channels_last' if args.channels_last else ''}; median of {args.steps} steps")
    print(f"{'method':<10} {'ms/step':>9} {'min':>9} {'max':>9} {'ratio':>6} {'min ratio':>9} {memory:>22}")
    for r in rows:
        ratio, min_ratio = ("" if r[k] is None else f"{r[k]:.3f}" for k in ("ratio_to_fp", "min_ratio_to_fp"))
        print(f"{r['method']:<10} {r['median_ms']:>9.1f} {r['min_ms']:>9.1f} {r['max_ms']:>9.1f} {ratio:>6} "
              f"{min_ratio:>9} {r['memory_mib']:>22.1f}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """The run's MLflow model, bit-packed (size as `cost/size_kib` promises) and as ONNX."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one model download: no bar
    _quiet_libraries()
    from bnnbench.export import export_run

    result = export_run(args.run_id, args.out, tracking_uri=args.tracking_uri, force=args.force,
                        onnx=not args.no_onnx)
    print(f"packed  {result.packed}  {result.packed_bytes / 1024:.1f} KiB ({result.binary_weights:,} weights at "
          f"1 bit, {result.real_values:,} float32 values; cost/size_kib {result.size_kib:.1f})")
    if result.onnx is not None:
        print(f"onnx    {result.onnx}  {result.onnx_bytes / 1024:.1f} KiB (float32 weights)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from bnnbench.registry import DATASETS, METHODS, summary

    if args.what == "archs":
        from bnnbench.archs import ARCHS

        rows = [(name, (ARCHS[name].__doc__ or "").strip().splitlines()[0] if ARCHS[name].__doc__ else "")
                for name in sorted(ARCHS)]
    else:
        registry = METHODS if args.what == "methods" else DATASETS
        rows = [(name, summary(registry, name)) for name in registry.names()]
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}".rstrip())
    return 0


class _StderrHandler(logging.StreamHandler):
    """A log handler writing to whatever `sys.stderr` is when a record comes (a test may replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _quiet_libraries() -> None:
    """Lightning's INFO chatter (GPU/TPU availability, tips, checkpoint restores) hides the results.

    Lightning's import sets its own logger to INFO, so it is imported first; so does that of the
    standalone `pytorch_lightning` package, which MLflow's PyTorch flavour imports when a run logs its
    model (and through which the later runs of a suite would log), so it is imported too.
    """
    import contextlib
    import warnings

    import lightning.pytorch  # noqa: F401

    with contextlib.suppress(ImportError):
        import pytorch_lightning  # noqa: F401

    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ours = logging.getLogger("bnnbench")  # the library's warnings: one line each on stderr
    if not any(isinstance(h, _StderrHandler) for h in ours.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("bnnbench: warning: %(message)s"))
        ours.addHandler(handler)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*treespec.*")
    # Several processes: bnnbench's unsynced epoch values (val/acc_best, flip rates) are equal on all of them.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


def _processes(args: argparse.Namespace, argv: list[str]) -> None:
    """Several processes (`--devices`, `--num-nodes`): start this command again under torchrun, or,
    under torchrun or srun already, open the process group (`bnnbench.distributed`)."""
    import os

    devices, nodes = getattr(args, "devices", None) or 1, getattr(args, "num_nodes", None) or 1
    if devices * nodes == 1 and not {"WORLD_SIZE", "SLURM_NTASKS"} & set(os.environ):
        return
    from bnnbench import distributed

    env = distributed.environment()
    if env is None and devices * nodes > 1:
        if nodes > 1 or os.environ.get(distributed.RELAUNCHED):
            raise BadInput(f"--num-nodes {nodes} needs {devices} processes started on each of the {nodes} machines: "
                           f"run the command under torchrun (--nnodes {nodes} --nproc-per-node {devices}) or srun")
        _check_before_launch(args)
        distributed.relaunch(devices, argv)
    if env is None:
        return
    if not hasattr(args, "devices"):
        raise BadInput(f"'bnnbench {args.command}' runs in one process; {env.world_size()} were started "
                       f"(torchrun, srun): start it as a plain command")
    if env.world_size() != devices * nodes:
        raise BadInput(f"{env.world_size()} processes were started, but --devices {devices} --num-nodes {nodes} make "
                       f"{devices * nodes}; give the launcher's numbers to bnnbench too")
    from bnnbench.runner import uses_cuda

    distributed.start("nccl" if uses_cuda("auto") else "gloo")


def _check_before_launch(args: argparse.Namespace) -> None:
    """What one process finds wrong in a command (names, keys, values, the store) is one line here, not
    once per process under torchrun; data files are found by each process later."""
    from bnnbench import tracking
    from bnnbench.config import resolve

    if args.command == "bench":
        from bnnbench.suite import SuiteTuning, load_suite

        suite = load_suite(args.suite)
        for cfg in suite.configs(args.tracking_uri):
            resolve(cfg)
        if suite.tune:  # the trials' configs and every method's search space
            SuiteTuning(suite, args.tracking_uri, "none", {}, None, None)
    elif not getattr(args, "resume", None):
        resolve(run_config(args))
    tracking.check_store(args.tracking_uri)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    memory.keep_freed_memory()  # before the first tensor: every step's large tensors reuse freed memory
    try:
        _processes(args, argv)
        return args.func(args)
    except BadInput as error:
        print(f"bnnbench: error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as stop:
        what, code = ("terminated (SIGTERM)", 143) if isinstance(stop, Terminated) else ("interrupted", 130)
        run_id = stop.args[0] if stop.args else None  # the recorded run that was stopped, if any
        where = f"; run {run_id} is KILLED in MLflow, 'bnnbench run --resume {run_id}' continues it" if run_id else ""
        print(f"bnnbench: {what}{where}", file=sys.stderr)
        return code
    finally:
        from bnnbench import distributed

        distributed.stop()
