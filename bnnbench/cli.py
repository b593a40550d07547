"""The `bnnbench` command: argparse subcommands that build configs and call the runner.

No ML logic lives here. Heavy modules (torch, lightning, mlflow) are imported inside the command
functions, so `bnnbench --help` and `bnnbench list` answer instantly. Every `BadInput` becomes one
line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import argparse
import sys

import bnnbench
from bnnbench.errors import BadInput


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


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", help="training method (see 'bnnbench list methods')")
    p.add_argument("--dataset", help="dataset (see 'bnnbench list datasets')")
    p.add_argument("--arch", help="backbone (see 'bnnbench list archs'); default: the dataset's")
    p.add_argument("--mode", choices=["fair", "paper"], help="fair: shared recipe (default); paper: the paper's")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--image-size", type=_positive_int, help="input side in pixels")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override a field of the method's config (converted to the field's type)")
    p.add_argument("--recipe", help="YAML file with run keys and a 'set:' mapping (flags override it)")


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
    p.set_defaults(func=cmd_run)

    p = commands.add_parser("list", help="list registered methods, datasets or architectures")
    p.add_argument("what", choices=["methods", "datasets", "archs"])
    p.set_defaults(func=cmd_list)
    return parser


def run_config(args: argparse.Namespace):
    """RunConfig from a recipe (if any) overridden by the flags that were given."""
    from bnnbench.config import RUN_KEYS, RunConfig, load_recipe, parse_assignments
    from bnnbench.registry import DATASETS, METHODS

    values = load_recipe(args.recipe) if args.recipe else {}
    overrides = dict(values.pop("set", None) or {})
    overrides.update(parse_assignments(args.overrides))
    for key in RUN_KEYS:
        flag = getattr(args, key, None)
        if flag is not None:
            values[key] = flag
    for key in ("method", "dataset"):
        if not values.get(key):
            raise BadInput(f"--{key} is required (or a recipe that names it)")
    METHODS.check(values["method"])
    DATASETS.check(values["dataset"])
    return RunConfig(**values, method_overrides=overrides)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = run_config(args)
    from bnnbench.runner import RunFailed, run
    from bnnbench.tracking import tracking_uri

    _quiet_libraries()
    try:
        result = run(cfg)
    except RunFailed as failure:
        print(f"bnnbench: {failure}", file=sys.stderr)
        return 1
    m = result.metrics
    print(f"val/acc_best  {m['val/acc_best']:.4f}")
    if "test/acc" in m:
        print(f"test/acc      {m['test/acc']:.4f}")
    print(f"MLflow run    {result.run_id}  (experiment '{result.experiment}', {tracking_uri(cfg.tracking_uri)})")
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


def _quiet_libraries() -> None:
    """Lightning's INFO chatter (GPU/TPU availability, tips, checkpoint restores) hides the results.

    Called after lightning is imported: its import sets its own logger to INFO.
    """
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*treespec.*")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BadInput as error:
        print(f"bnnbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bnnbench: interrupted (a started run is marked KILLED in MLflow)", file=sys.stderr)
        return 130
