"""`ste`: BinaryConnect (Courbariaux, Bengio & David, NeurIPS 2015, arXiv:1511.00363).

Forward w = sign(θ) with sign(0) = +1; backward: the straight-through estimator hands ℓ' to θ
unchanged (`backward=identity`) or gated to |θ| ≤ 1 (`backward=clip`, BinaryNet's variant). The
latent weights are clipped to [−1, 1] after every optimizer step, as BinaryConnect does, so they
cannot drift away from the region where a sign flip is reachable. Activations stay real (BWN).

Paper mode follows the STE baseline of the BNEW paper's comparison (Paren & Poudel, BMVC 2022,
supplement Table 1; released code Alasdair-P/bnew): ResNet-20, Adam lr 0.01 with linear decay,
batch 128, 200 epochs, because that is the published table bnnbench compares against.

Deviations: BinaryConnect's own recipe (square hinge loss, exponentially decaying LR, Glorot-scaled
per-layer learning rates, batch 50) is not reproduced; cross-entropy is used in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class SteConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 because decay pulls latent weights to the sign boundary
    backward: Literal["identity", "clip"] = "identity"  # identity: ℓ'; clip: ℓ'·1[|θ| ≤ 1]
    clip_latent: bool = True  # clip latent weights to [−1, 1] after each optimizer step


@METHODS.register("ste")
class SteMethod(BinaryMethod):
    Config = SteConfig
    paper_recipe = {"arch": "resnet20", "epochs": 200, "batch_size": 128}
    paper_config = {"lr": 0.01, "scheduler": "linear"}

    def make_weight_quantizer(self):
        return get_quantizer("ste" if self.config.backward == "identity" else "bnn")


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-4, log=True),
            "backward": trial.suggest_categorical("backward", ["identity", "clip"])}
