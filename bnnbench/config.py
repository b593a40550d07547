"""The run's description: typed requests, one merge into a `ResolvedRun`, and everything derived from it.

Precedence, lowest first: dataset defaults < the method's paper recipe and paper config (paper mode
only) < recipe YAML < command-line flags and `--set key=value` < an Optuna trial. `RunConfig` is what
the user asked for (`None` = "the default"); `resolve()` is the one function that applies the
precedence, and the CLI, suites, the tuner and the tests all call it. Its `ResolvedRun` is the single,
complete, typed description of a run: MLflow params, `config.yaml` (a recipe that reproduces the run),
a trial's recipe, a study's identity, a suite's resume key and the leaderboard's grouping are all
derived from it (`bnnbench.identity` digests it).

Every value is converted to its field's declared type and checked against the field's declared range
(`Annotated[float, POSITIVE]` and friends, below); unknown keys, wrong types and out-of-range values
are `BadInput` errors that name the field, the bad value and what is valid. No Hydra, no `**kwargs`
bags.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from bnnbench.errors import BadInput
from bnnbench.registry import unknown_choice

Mode = Literal["fair", "paper"]
MODES: tuple[str, ...] = typing.get_args(Mode)
Precision = Literal["32", "bf16-mixed", "16-mixed"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
Progress = Literal["bar", "epochs", "none"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null", ""}


# -- valid ranges, declared on the fields: `lr: PositiveFloat = 1e-3` --------------------------------------
@dataclass(frozen=True)
class Range:
    """The interval a numeric field must lie in; `low_open`/`high_open` exclude the end point."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __str__(self) -> str:
        def end(x: float) -> str:
            if math.isinf(x):
                return "inf" if x > 0 else "-inf"
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        return (f"{'(' if self.low_open or self.low == -math.inf else '['}{end(self.low)}, {end(self.high)}"
                f"{')' if self.high_open or self.high == math.inf else ']'}")

    def check(self, key: str, value: Any, given: Any) -> None:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if not (above and below) or (isinstance(value, float) and math.isnan(value)):
            raise BadInput(f"bad value {given!r} for '{key}': must lie in {self}")


@dataclass(frozen=True)
class Increasing:
    """A (low, high) pair whose first item is strictly below the second (a clamp, a range)."""

    def check(self, key: str, value: tuple, given: Any) -> None:
        if not value[0] < value[1]:
            raise BadInput(f"bad value {given!r} for '{key}': needs low < high")


POSITIVE = Range(0.0, low_open=True)
NON_NEGATIVE = Range(0.0)
PositiveFloat = Annotated[float, POSITIVE]
NonNegativeFloat = Annotated[float, NON_NEGATIVE]
PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, NON_NEGATIVE]
UnitFraction = Annotated[float, Range(0.0, 1.0, high_open=True)]  # momentum, decay factors: [0, 1)
OpenFraction = Annotated[float, Range(0.0, 1.0, low_open=True, high_open=True)]  # (0, 1)
Seed = Annotated[int, Range(0, 2**32, high_open=True)]  # what numpy's and torch's generators accept
ImageSize = Annotated[int, Range(1, 1024)]  # pixels per side; 1024² uint8 images already need GBs per 1,000


@dataclass(frozen=True)
class MethodConfig:
    """Fields every method has: the optimizer and the learning-rate schedule.

    Each method subclasses this with its own fields and its paper's defaults. Units are in the
    comments: "per step" quantities are what the optimizer applies once per batch.
    """

    lr: PositiveFloat = 1e-3  # learning rate (per optimizer step)
    weight_decay: NonNegativeFloat = 0.0  # L2 penalty coefficient, as torch optimizers apply it (dimensionless)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: UnitFraction = 0.9  # SGD momentum (dimensionless); unused by Adam
    scheduler: Literal["cosine", "linear", "plateau", "none"] = "cosine"  # per-epoch LR schedule
    lr_min: NonNegativeFloat = 0.0  # floor of the cosine/linear/plateau schedule (learning rate)
    plateau_factor: OpenFraction = 0.5  # ReduceLROnPlateau multiplier (dimensionless)
    plateau_patience_epochs: NonNegativeInt = 5  # epochs without improvement before the LR is reduced
    monitor: Literal["train/loss", "val/loss", "val/acc"] = "val/loss"  # what plateau and early stopping watch
    early_stopping_patience_epochs: NonNegativeInt = 0  # epochs without improvement before stopping; 0 = never
    early_stopping_min_delta: NonNegativeFloat = 0.001  # smallest change of `monitor` that counts as improvement

    def __post_init__(self):
        validate(self)  # the declared ranges, also for a config built directly in code or a test
        # a method's own schedule fields (`BinaryMethod.lr_factor`): they shape the cosine/linear decay only
        for key, value in (("warmup_epochs", getattr(self, "warmup_epochs", 0)),
                           ("lr_step_first", getattr(self, "lr_step_first", False))):
            if value and self.scheduler not in ("cosine", "linear"):
                shown = "true" if value is True else value
                raise BadInput(f"bad value {key}={shown} with scheduler={self.scheduler!r}: it shapes the cosine "
                               f"or linear schedule only; set scheduler=cosine or linear, or {key}="
                               f"{'false' if value is True else 0}")


def config_fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation (with its `Annotated` range, if any)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def convert(key: str, value: Any, annotation: Any) -> Any:
    """Convert a string (from `--set` or YAML) or a typed value to `annotation` and check its range,
    or raise BadInput."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        converted = convert(key, value, args[0])
        for constraint in annotation.__metadata__:
            constraint.check(key, converted, value)
        return converted
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in _NONE)):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(key, value, arg)
            except BadInput as err:
                errors.append(str(err))
        raise BadInput(errors[0] if len(errors) == 1 else f"bad value {value!r} for '{key}': " + "; ".join(errors))
    if origin is Literal:
        if value not in args:
            choices = [str(a) for a in args]
            raise unknown_choice(f"value for '{key}'", str(value), choices)
        return value
    if origin is tuple:
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        item_types = args if args[-1:] != (Ellipsis,) else (args[0],) * len(items)
        if len(items) != len(item_types):
            raise BadInput(f"bad value {value!r} for '{key}': expected {len(item_types)} comma-separated values")
        return tuple(convert(key, v, t) for v, t in zip(items, item_types))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise BadInput(f"bad value {value!r} for '{key}': expected a boolean (true/false)")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise BadInput(f"bad value {value!r} for '{key}': expected {annotation.__name__}")
        if isinstance(value, int | float) and (annotation is float or float(value).is_integer()):
            return annotation(value)
        try:
            return annotation(value) if annotation is float else int(str(value), 0)
        except (TypeError, ValueError):
            raise BadInput(f"bad value {value!r} for '{key}': expected {annotation.__name__}") from None
    if annotation is str:
        return str(value)
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise BadInput(f"bad value {value!r} for '{key}': expected a mapping")
        return dict(value)
    raise TypeError(f"config field '{key}' has unsupported type {annotation!r}")


def apply_overrides(config: Any, overrides: dict[str, Any], what: str = "key") -> Any:
    """`dataclasses.replace` with type conversion and range checks; an unknown key lists every valid key."""
    fields = config_fields(type(config))
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        raise unknown_choice(what, unknown[0], sorted(fields))
    return dataclasses.replace(config, **{k: convert(k, v, fields[k]) for k, v in overrides.items()})


def validate(config: Any, what: str = "") -> Any:
    """Check every field of a typed config against its declared type and range (the defaults and a
    paper config too, so a wrong value in the code is caught like a wrong `--set`)."""
    for key, annotation in config_fields(type(config)).items():
        try:
            convert(key, getattr(config, key), annotation)
        except BadInput as error:
            raise BadInput(f"{what}: {error}" if what else str(error)) from None
    return config


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`["a=1", "b=x"]` -> `{"a": "1", "b": "x"}` (values stay strings until a field's type converts them)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"bad --set '{pair}': expected key=value")
        out[key.strip()] = value.strip()
    return out


# -- what the user asks for --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """One training run as asked for; `None` means "the dataset's or method's default".

    Fields marked `recipe` are what a recipe YAML (and so `config.yaml`) may set; the others say where a
    run is recorded and how it is shown, and come from flags only.
    """

    method: str = field(metadata={"recipe": True})
    dataset: str = field(metadata={"recipe": True})
    arch: str | None = field(default=None, metadata={"recipe": True})  # None = the dataset's (paper: method's)
    mode: Mode = field(default="fair", metadata={"recipe": True})
    epochs: PositiveInt | None = field(default=None, metadata={"recipe": True})  # upper bound with early stopping
    batch_size: PositiveInt | None = field(default=None, metadata={"recipe": True})  # images per optimizer step
    image_size: ImageSize | None = field(default=None, metadata={"recipe": True})  # input side in pixels (square)
    seed: Seed = field(default=0, metadata={"recipe": True})
    precision: Precision = field(default="32", metadata={"recipe": True})  # Lightning's precision plugin
    compile: bool = field(default=False, metadata={"recipe": True})  # torch.compile the network
    data_dir: str = field(default="data", metadata={"recipe": True})  # where dataset files live
    experiment: str | None = field(default=None, metadata={"recipe": True})  # MLflow experiment; None = dataset
    run_name: str | None = None  # MLflow run name; None = method-dataset-arch-mode-sSEED
    method_overrides: dict[str, Any] = field(default_factory=dict)  # method config fields (`set:`, --set)
    tracking_uri: str | None = None  # MLflow URI; None = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    checkpoint_dir: str | None = None  # None = `checkpoints/` beside a SQLite store, else ./checkpoints
    accelerator: str = "auto"  # Lightning accelerator: auto, cpu, gpu
    devices: PositiveInt = 1  # processes (one device each) per machine; the batch is split between all of them
    num_nodes: PositiveInt = 1  # machines
    strategy: str = "auto"  # Lightning strategy: auto (ddp for several processes), ddp, fsdp, ...
    progress: Progress = "bar"  # on stderr: a bar (one line per epoch when stderr is no terminal), lines, none
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags (suite, tuning)
    wandb: bool = False  # also mirror the run to Weights & Biases (MLflow stays the record)

    def __post_init__(self):
        validate(self)


RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("recipe"))


def _yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; malformed YAML is one line naming the file and line."""
    import yaml

    if not path.is_file():
        raise BadInput(f"{what} file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        context, opened = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and opened is not None:
            problem += f" ({context} that starts at line {opened.line + 1})"
        raise BadInput(f"{what} '{path}{where}' is not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{what} '{path}' must be a mapping of keys to values")
    return data


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe YAML: RunConfig recipe keys at the top level and method config fields under `set:`."""
    path = Path(path)
    data = _yaml_mapping(path, "recipe")
    unknown = [k for k in data if k not in RECIPE_KEYS + ("set",)]
    if unknown:
        raise unknown_choice(f"recipe key in '{path}'", unknown[0], sorted(RECIPE_KEYS + ("set",)))
    if not isinstance(data.get("set") or {}, dict):
        raise BadInput(f"recipe '{path}': 'set' must be a mapping of method config fields")
    return data


def run_config(recipe: dict[str, Any], flags: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """The user's layers merged: a recipe's values, then the flags that were given, then `--set` values."""
    values = {k: v for k, v in recipe.items() if k != "set"}
    values.update({k: v for k, v in flags.items() if v is not None})
    method_overrides = {**(recipe.get("set") or {}), **overrides}
    for key in ("method", "dataset"):
        if not values.get(key):
            raise BadInput(f"--{key} is required (or a recipe that names it)")
    fields = config_fields(RunConfig)
    unknown = [k for k in values if k not in fields or k == "method_overrides"]
    if unknown:
        raise unknown_choice("run setting", unknown[0], sorted(RECIPE_KEYS))
    typed = {k: convert(k, v, fields[k]) for k, v in values.items()}
    return RunConfig(**typed, method_overrides=method_overrides)


# -- what runs ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperRecipe:
    """A method's paper-mode budget (`paper_recipe` of its class), checked like a recipe."""

    arch: str | None = None
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    image_size: ImageSize | None = None


def _trains(**kwargs):
    return field(metadata={"trains": True}, **kwargs)


@dataclass(frozen=True)
class ResolvedRun:
    """A run with every default filled in: what trains, and where it is recorded.

    Fields marked `trains` change what is trained; the configuration identity digests all of them but
    the seed (`bnnbench.identity`). The rest say where the run is recorded and how it is shown.
    """

    method: str = _trains()
    dataset: str = _trains()
    arch: str = _trains()
    mode: Mode = _trains()
    epochs: int = _trains()
    batch_size: int = _trains()
    image_size: int = _trains()
    precision: Precision = _trains()
    compile: bool = _trains()
    seed: int = _trains()
    method_config: MethodConfig = _trains()
    run_name: str = ""
    experiment: str = ""
    data_dir: str = "data"
    tracking_uri: str | None = None
    checkpoint_dir: str | None = None
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    progress: Progress = "bar"
    wandb: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def method_cls(self) -> type:
        from bnnbench.registry import METHODS

        return METHODS.get(self.method)

    @property
    def dataset_cls(self) -> type:
        from bnnbench.registry import DATASETS

        return DATASETS.get(self.dataset)

    def params(self) -> dict[str, Any]:
        """What trains, flat: the run fields and every method config field (MLflow params)."""
        run = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.metadata.get("trains") and f.name != "method_config"}
        return {**run, **dataclasses.asdict(self.method_config)}

    def recipe(self) -> dict[str, Any]:
        """A recipe that `bnnbench run --recipe` turns back into this very run (`config.yaml`)."""
        run = {k: getattr(self, k) for k in RECIPE_KEYS}
        method = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.method_config).items()}
        return {**run, "set": method}

    @property
    def config_id(self) -> str:
        from bnnbench.identity import config_id

        return config_id(self.params())


def resolve(cfg: RunConfig) -> ResolvedRun:
    """Fill every default (dataset < method paper recipe < explicit) and validate names, types and ranges."""
    from bnnbench import archs
    from bnnbench.registry import DATASETS, METHODS

    method_cls = METHODS.get(cfg.method)
    dataset_cls = DATASETS.get(cfg.dataset)
    recipe = (apply_overrides(PaperRecipe(), method_cls.paper_recipe, what=f"paper_recipe key of method "
                                                                           f"'{cfg.method}'")
              if cfg.mode == "paper" else PaperRecipe())
    arch = cfg.arch or recipe.arch or dataset_cls.default_arch
    if arch not in archs.ARCHS:
        raise unknown_choice("architecture", arch, sorted(archs.ARCHS))
    method_config = apply_overrides(method_cls.default_config(cfg.mode), cfg.method_overrides,
                                    what=f"--set key for method '{cfg.method}'")
    epochs = cfg.epochs or recipe.epochs or dataset_cls.default_epochs
    image_size = cfg.image_size or recipe.image_size or dataset_cls.image_size
    name = cfg.run_name or f"{cfg.method}-{cfg.dataset}-{arch}-{cfg.mode}-s{cfg.seed}"
    return ResolvedRun(
        method=cfg.method, dataset=cfg.dataset, arch=arch, mode=cfg.mode, epochs=epochs,
        batch_size=cfg.batch_size or recipe.batch_size or dataset_cls.default_batch_size, image_size=image_size,
        precision=cfg.precision, compile=cfg.compile, seed=cfg.seed, method_config=method_config, run_name=name,
        experiment=cfg.experiment or cfg.dataset, data_dir=cfg.data_dir, tracking_uri=cfg.tracking_uri,
        checkpoint_dir=cfg.checkpoint_dir, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=cfg.strategy, progress=cfg.progress,
        wandb=cfg.wandb, tags=dict(cfg.tags))
