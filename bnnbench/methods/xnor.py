"""`xnor`: XNOR-Net (Rastegari, Ordonez, Redmon & Farhadi, ECCV 2016, arXiv:1603.05279).

Binary weights scaled per output channel and binary activations (W1A1). Forward: w = α_c·sign(θ)
with α_c = mean |θ| over output channel c, recomputed from θ at every forward (quantizer `xnor`);
every binary layer's input is sign(x). Backward (METHODS.md): θ receives
ℓ'·α_c·1[|θ| ≤ 1] + (1/n)·sign(θ)·Σ_c(ℓ'·sign(θ)), n = elements per output channel, i.e. the
derivative of α_c·sign(θ) with sign's gated straight-through estimator; activations receive
ℓ'·1[|x| ≤ 1] (quantizer `bnn`). First conv and classifier stay full precision (the paper keeps
first and last layer real).

Block order: XNOR-Net's binary block is BN → sign → binary conv → (pool). On the shared backbone
(conv → BN → activation → [pool] → next conv, whose input quantizer takes the sign) that order is
obtained with `activation=identity`: the sign sees BN's output directly. `hardtanh` is the option
closest to BinaryNet; both give the same forward, since sign(hardtanh(x)) = sign(x).

Paper mode. The paper reports ImageNet only (AlexNet, ResNet-18), so paper mode follows the CIFAR-10
recipe of the widely used PyTorch reimplementation (jiecaoyu/XNOR-Net-PyTorch) as far as bnnbench
can express it: Adam lr 0.01, weight decay 1e-5, batch 128, 320 epochs, latent weights clipped to
[−1, 1] after each step; on `vgg_small` with a cosine schedule.

Deviations:
- The activation scale K (mean |x| over channels, convolved with a k×k box filter) is not computed:
  inputs are binarized to ±1 without a scale. BN follows every binary conv, so a per-layer scale is
  absorbed; K's per-position variation is lost.
- Paper mode: VGG-Small instead of the reimplementation's NIN (not in `archs`), cosine instead of its
  step decay (×0.1 at epochs 120/200/240/280), no mean-centering of θ over input channels, and no
  extra gradient factor n·(1 − 1/C_in) that the reimplementation multiplies into θ's gradient.
- The paper's ImageNet recipe (AlexNet, its own data pipeline) is not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class XnorConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient
    clip_latent: bool = False  # clip latent weights to [−1, 1] after each step (the paper does not)
    activation: Literal["identity", "hardtanh"] = "identity"  # identity = XNOR's BN → sign order


@METHODS.register("xnor")
class XnorMethod(BinaryMethod):
    Config = XnorConfig
    paper_recipe = {"arch": "vgg_small", "epochs": 320, "batch_size": 128}
    paper_config = {"lr": 0.01, "weight_decay": 1e-5, "clip_latent": True}

    def make_weight_quantizer(self):
        return get_quantizer("xnor")

    def make_input_quantizer(self):
        return get_quantizer("bnn")


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-4, log=True),
            "clip_latent": trial.suggest_categorical("clip_latent", [False, True])}
