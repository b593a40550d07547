"""`bnn`: BinaryNet (Hubara, Courbariaux, Soudry, El-Yaniv & Bengio, NeurIPS 2016, arXiv:1602.02830).

Binary weights *and* activations (W1A1). Forward: w = sign(θ) and every binary layer's input is
sign(x), with sign(0) = +1. Backward: the straight-through estimator gated to the linear region of
hardtanh for both, ℓ'·1[|θ| ≤ 1] into the latent weight and ℓ'·1[|x| ≤ 1] into the activation
(quantizer `bnn` for both). The latent weights are clipped to [−1, 1] after every optimizer step, as
in the paper's Algorithm 1 (so the weight gate is always open: the latents never leave [−1, 1]). The
input layer (first conv) and the classifier stay full precision, as in the shared backbone. On the
shared backbones each binary conv sees sign(hardtanh(BN(x))): BinaryNet's block order conv → BN →
hardtanh, with the sign taken by the next layer's input quantizer (`activation=hardtanh`; `identity`
gives the same forward, since sign(hardtanh(x)) = sign(x), and the same gradient).

Released code. BinaryNet's own (itayhubara/BinaryNet.pytorch): `models/binarized_modules.py`
(`Binarize`: forward `sign`, backward the identity; `BinarizeConv2d` binarizes its weight and, unless it
is the 3-channel image, its input), the activation gate coming from the Hardtanh before each binary
layer, the latent weights clipped to [−1, 1] after each step (`main_binary_hinge.py`, `main_mnist.py`);
fair mode computes the same update. Its VGG-like CIFAR-10 network and schedules are not the comparison
bnnbench makes. The BNEW comparison (Paren &
Poudel, "Training Binarized Neural Networks the Easy Way", BMVC 2022; released code Alasdair-P/bnew) has
no BinaryNet row: its STE baseline (`ste`'s paper mode) is BinaryConnect's clipped update with binary
activations, and its supplement's ablation replaces the ApproxSign gradient of the activations by the
"classic STE", BinaryNet's gate (`models/ste.py`, model `stebrn`: backward 1[−1 ≤ x < 1]). Paper mode is
that: BNEW's STE baseline with BinaryNet's gradients, in the BNEW recipe of `reproduce/cifar100/
100ste.py` and `phase_1_100.py` (see `ste`): `bnew_resnet20` (`archs.BnewResNet20`), batch 128, 400
epochs of which `phase1_epochs` (None: half the run) 200 are the two-phase start of `BinaryMethod`
(`clamp_before_step`), Adam lr 0.01 linear per step (`lr_interval=step`) restarted at phase 2, 1×1
shortcut convs full precision. No published number without distillation matches it exactly; the closest
is the ablation's "Classic STE" row for the STE optimiser (supplement Table 2, 56.5 ± 0.3, with
distillation, 200 epochs). Fair mode: BinaryNet's update on the shared backbone with the shared cosine
schedule per epoch, no phase 1.

Deviations:
- sign(0): BinaryNet's and BNEW's released code map an exact 0 to 0 with `torch.sign` (weights and
  activations; exact zeros do occur, e.g. BatchNorm outputs after integer-valued binary convs); here
  sign(0) = +1. The activation gate here is 1[|x| ≤ 1] (the classic STE of BNEW's `stebrn` is
  1[−1 ≤ x < 1]; they differ only at x = 1).
- Paper mode: phase 1's best state is chosen by `val/acc` of the hard binary network, not of the
  real-weight network as in the released code, and the run's best epoch over both phases is tested; both
  phases share one run; bnnbench's data pipeline; no distillation.
- BinaryNet's own CIFAR-10 recipe (its VGG-like net with 1024-unit hidden FC layers, square hinge
  loss, exponentially decaying LR, Glorot-scaled per-layer learning rates, batch 50, 500 epochs) is
  not reproduced; cross-entropy is used in both modes.
- The paper binarizes the weights of the first and last layers too (only the first layer's input
  stays real, 8-bit); here both layers are full precision, as in every method's shared backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bnnbench.config import MethodConfig, NonNegativeFloat, NonNegativeInt, PositiveFloat
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class BnnConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 because decay pulls latent weights to the sign boundary
    clip_latent: bool = True  # clip latent weights to [−1, 1] after each optimizer step (Algorithm 1)
    activation: Literal["hardtanh", "identity"] = "hardtanh"  # what BN's output passes before the sign
    fp_shortcuts: bool = False  # keep 1×1 shortcut convs full precision (the BNEW comparison's network)
    phase1_epochs: NonNegativeInt | None = 0  # two-phase start: epochs of real weights first (None = half the run)
    clamp_before_step: bool = False  # phase 1 clamps after backward, before the optimizer step (released)
    lr_interval: Literal["epoch", "step"] = "epoch"  # LR schedule per epoch or per optimizer step (released)


@METHODS.register("bnn")
class BnnMethod(BinaryMethod):
    Config = BnnConfig
    paper_recipe = {"arch": "bnew_resnet20", "epochs": 400, "batch_size": 128}
    paper_config = {"lr": 0.01, "scheduler": "linear", "lr_interval": "step", "fp_shortcuts": True,
                    "phase1_epochs": None, "clamp_before_step": True}

    def make_weight_quantizer(self, layer):
        return get_quantizer("bnn")

    def make_input_quantizer(self, layer):
        return get_quantizer("bnn")


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-4, log=True)}
