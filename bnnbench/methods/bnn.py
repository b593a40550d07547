"""`bnn`: BinaryNet (Hubara, Courbariaux, Soudry, El-Yaniv & Bengio, NeurIPS 2016, arXiv:1602.02830).

Binary weights *and* activations (W1A1). Forward: w = sign(θ) and every binary layer's input is
sign(x), with sign(0) = +1. Backward: the straight-through estimator gated to the linear region of
hardtanh for both, ℓ'·1[|θ| ≤ 1] into the latent weight and ℓ'·1[|x| ≤ 1] into the activation
(quantizer `bnn` for both). The latent weights are clipped to [−1, 1] after every optimizer step, as
in the paper's Algorithm 1. The input layer (first conv) and the classifier stay full precision, as
in the shared backbone. Each binary conv sees sign(hardtanh(BN(x))): BinaryNet's block order
conv → BN → hardtanh, with the sign taken by the next layer's input quantizer (`activation=hardtanh`;
`identity` gives the same forward, since sign(hardtanh(x)) = sign(x), and the same gradient).

Paper mode follows the BNEW comparison's setting (Paren & Poudel, BMVC 2022, supplement Table 1;
released code Alasdair-P/bnew), whose STE baseline is BinaryNet's scheme (sign weights with clipped
latents and gated gradient, binary activations): ResNet-20, Adam lr 0.01 with linear decay, batch 128,
200 epochs, so `ste`, `bnn`, `bop` and `bnew` in paper mode share one recipe and one published table.

Deviations:
- BinaryNet's own CIFAR-10 recipe (its VGG-like net with 1024-unit hidden FC layers, square hinge
  loss, exponentially decaying LR, Glorot-scaled per-layer learning rates, batch 50, 500 epochs) is
  not reproduced; cross-entropy is used in both modes.
- In paper mode the BNEW comparison's ReActNet-style ResNet-20 (learnable biases, PReLU, per-channel
  scales, ApproxSign activation gradient, average-pool shortcuts) is replaced by our `resnet20`, the
  activation gradient is BinaryNet's gate, not ApproxSign, and the 1×1 shortcut convs are binary (the
  comparison kept them real).
- The paper binarizes the weights of the first and last layers too (only the first layer's input
  stays real, 8-bit); here both layers are full precision, as in every method's shared backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class BnnConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 because decay pulls latent weights to the sign boundary
    clip_latent: bool = True  # clip latent weights to [−1, 1] after each optimizer step (Algorithm 1)
    activation: Literal["hardtanh", "identity"] = "hardtanh"  # what BN's output passes before the sign


@METHODS.register("bnn")
class BnnMethod(BinaryMethod):
    Config = BnnConfig
    paper_recipe = {"arch": "resnet20", "epochs": 200, "batch_size": 128}
    paper_config = {"lr": 0.01, "scheduler": "linear"}

    def make_weight_quantizer(self):
        return get_quantizer("bnn")

    def make_input_quantizer(self):
        return get_quantizer("bnn")


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-4, log=True)}
