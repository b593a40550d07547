"""Typed run configuration: frozen dataclasses, YAML recipes and `key=value` overrides.

Precedence, lowest first: dataset defaults < the method's paper recipe (paper mode only) < recipe
YAML < command-line flags and `--set key=value` < an Optuna trial. Every value is converted to the
field's declared type; unknown keys and values of the wrong type are `BadInput` errors that name the
bad key or value and list the valid ones. No Hydra, no `**kwargs` bags.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bnnbench.errors import BadInput
from bnnbench.registry import unknown_choice

Mode = Literal["fair", "paper"]
MODES: tuple[str, ...] = typing.get_args(Mode)
Precision = Literal["32", "bf16-mixed", "16-mixed"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null", ""}


@dataclass(frozen=True)
class MethodConfig:
    """Fields every method has: the optimizer and the learning-rate schedule.

    Each method subclasses this with its own fields and its paper's defaults. Units are in the
    comments: "per step" quantities are what the optimizer applies once per batch.
    """

    lr: float = 1e-3  # learning rate (per optimizer step)
    weight_decay: float = 0.0  # L2 penalty coefficient, as torch optimizers apply it (dimensionless)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = 0.9  # SGD momentum (dimensionless); unused by Adam
    scheduler: Literal["cosine", "linear", "plateau", "none"] = "cosine"  # per-epoch LR schedule
    lr_min: float = 0.0  # floor of the cosine/linear/plateau schedule (learning rate)
    plateau_factor: float = 0.5  # ReduceLROnPlateau multiplier (dimensionless)
    plateau_patience_epochs: int = 5  # epochs without improvement before the LR is reduced
    monitor: Literal["train/loss", "val/loss", "val/acc"] = "val/loss"  # what plateau and early stopping watch
    early_stopping_patience_epochs: int = 0  # epochs without improvement before stopping; 0 = never stop early
    early_stopping_min_delta: float = 0.001  # smallest change of `monitor` that counts as improvement


def config_fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def convert(key: str, value: Any, annotation: Any) -> Any:
    """Convert a string (from `--set` or YAML) or a typed value to `annotation`, or raise BadInput."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
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
    raise TypeError(f"config field '{key}' has unsupported type {annotation!r}")


def apply_overrides(config: Any, overrides: dict[str, Any], what: str = "key") -> Any:
    """`dataclasses.replace` with type conversion; an unknown key lists every valid key."""
    fields = config_fields(type(config))
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        raise unknown_choice(what, unknown[0], sorted(fields))
    return dataclasses.replace(config, **{k: convert(k, v, fields[k]) for k, v in overrides.items()})


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`["a=1", "b=x"]` -> `{"a": "1", "b": "x"}` (values stay strings until a field's type converts them)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"bad --set '{pair}': expected key=value")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run; `None` means "the dataset's or method's default"."""

    method: str
    dataset: str
    arch: str | None = None  # backbone name; None = the dataset's default (paper mode: the method's)
    mode: Mode = "fair"
    epochs: int | None = None  # training epochs (upper bound when early stopping is on)
    batch_size: int | None = None  # images per optimizer step
    image_size: int | None = None  # input side length in pixels (images are square)
    seed: int = 0
    data_dir: str = "data"  # where dataset files live or are downloaded to
    tracking_uri: str | None = None  # MLflow URI; None = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    experiment: str | None = None  # MLflow experiment; None = the dataset's name
    method_overrides: dict[str, Any] = field(default_factory=dict)  # method config fields (--set)
    accelerator: str = "auto"  # Lightning accelerator: auto, cpu, gpu
    progress_bar: bool = True
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags (e.g. from tuning)
    wandb: bool = False  # also mirror the run to Weights & Biases (MLflow stays the record)
    compile: bool = False  # torch.compile the network (the first step's time, compilation included, is logged)
    precision: Precision = "32"  # Lightning's precision plugin; bf16-mixed is for GPUs

    def __post_init__(self):
        if self.mode not in MODES:
            raise unknown_choice("mode", str(self.mode), list(MODES))
        if self.precision not in PRECISIONS:
            raise unknown_choice("precision", str(self.precision), list(PRECISIONS))
        for name in ("epochs", "batch_size", "image_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise BadInput(f"bad {name.replace('_', '-')} {value!r}: must be a positive integer")


RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name != "method_overrides")


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe YAML: RunConfig keys at the top level and method config fields under `set:`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"recipe file '{path}' does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise BadInput(f"recipe '{path}' must be a mapping of keys to values")
    unknown = [k for k in data if k not in RUN_KEYS + ("set",)]
    if unknown:
        raise unknown_choice(f"recipe key in '{path}'", unknown[0], sorted(RUN_KEYS + ("set",)))
    if not isinstance(data.get("set", {}), dict):
        raise BadInput(f"recipe '{path}': 'set' must be a mapping of method config fields")
    return data
