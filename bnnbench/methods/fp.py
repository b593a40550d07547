"""`fp`: the full-precision reference on the same backbone, recipe and budget as the binary methods.

No paper and no released code: it is the upper bound every binary method is compared with, the shared
Adam recipe (lr 1e-3, weight decay 1e-4) on the same backbone with nothing binarized. Paper mode equals
fair mode.

Deviations: none; it reproduces no publication. The full-precision figures the papers quote (e.g. the
DRA paper's ResNet-18 on Garbage, 91.62 %) come from their own recipes, not from this one.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat
from bnnbench.methods.base import BinaryMethod
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class FpConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step)
    weight_decay: NonNegativeFloat = 1e-4  # L2 coefficient


@METHODS.register("fp")
class FpMethod(BinaryMethod):
    Config = FpConfig


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)}
