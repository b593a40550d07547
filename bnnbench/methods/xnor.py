"""`xnor`: XNOR-Net (Rastegari, Ordonez, Redmon & Farhadi, ECCV 2016, arXiv:1603.05279).

Paper: "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks" by Mohammad
Rastegari, Vicente Ordonez, Joseph Redmon and Ali Farhadi, ECCV 2016.

Fair mode: the paper's equations. Binary weights scaled per output channel and binary activations
(W1A1). Forward: w = α_c·sign(θ) with α_c = mean |θ| over output channel c, recomputed from θ at every
forward (quantizer `xnor`); every binary layer's input is sign(x). Backward: θ receives
ℓ'·α_c·1[|θ| ≤ 1] + (1/n)·sign(θ)·Σ_c(ℓ'·sign(θ)), n = elements per output channel, i.e. the
derivative of α_c·sign(θ) with sign's gated straight-through estimator; activations receive
ℓ'·1[|x| ≤ 1] (quantizer `bnn`). sign(0) = +1 throughout. First conv and classifier stay full
precision (the paper keeps first and last layer real).

Block order: XNOR-Net's binary block is BN → sign → binary conv → (pool). On the shared backbone
(conv → BN → activation → [pool] → next conv, whose input quantizer takes the sign) that order is
obtained with `activation=identity`: the sign sees BN's output directly. `hardtanh` is the option
closest to BinaryNet; both give the same forward, since sign(hardtanh(x)) = sign(x).

Released code. The authors' release (allenai/XNOR-Net, Lua Torch) covers ImageNet AlexNet/ResNet-18
only; the paper reports no CIFAR-10 number. Paper mode follows the CIFAR-10 code of the widely used
PyTorch port jiecaoyu/XNOR-Net-PyTorch (`CIFAR_10/main.py`, `CIFAR_10/util.py` class `BinOp`,
`CIFAR_10/models/nin.py`; it reports 86.28 % with its NIN), as far as bnnbench can express it:
- weights (`rule=released`, quantizer `xnor_released`): before every forward, training and evaluation
  alike, θ is mean-centred over the input-channel dimension and clamped to [−1, 1], *in place*
  (`BinOp.meancenterConvParams`, `clampConvParams`; here `mean_center` + `clip_latent`, applied at the
  start of each training batch and of each evaluation); w = α_c·torch.sign(θ) (`binarizeConvParams`);
  θ's gradient is the formula above with torch.sign and multiplied by n·(1 − 1/C_in)
  (`updateBinaryGradWeight`, C_in = input channels); its gate never closes, θ being clamped;
- activations (quantizer `xnor_input_released`, `nin.py:BinActive`): torch.sign(x) (0 ↦ 0), gradient
  ℓ'·1[|x| < 1] (zero at |x| = 1); the activation scale K it computes is never used there either;
- the block conv (with bias) → ReLU after every binary conv (`nin.py:BinConv2d`), reproduced by a
  forward hook on each binary conv (`relu_after_binary_conv`) and a zero-initialised bias on it
  (`binary_conv_bias`): the shared blocks then run binary conv → ReLU → BN → [pool] → sign;
- every conv (and here the linear classifier, the released net's last conv) initialised N(0, 0.05),
  biases 0 (`main.py`, `init_std`); BatchNorm eps 1e-4 (`bn_eps`); BatchNorm weights clamped to ≥ 0.01
  at the start of every forward (`nin.py:Net.forward`; here `bn_weight_min`, with the θ clamp);
- Adam lr 0.01, weight decay 1e-5 on every parameter, batch 128; `range(1, 320)` = 319 epochs; the
  LR ×0.1 before the 1-based epochs 120, 200, 240 and 280 (`adjust_learning_rate`), i.e. from the
  0-based epochs 119/199/239/279 (`scheduler=multistep`, `lr_milestones`, `lr_decay_factor`).
Running paper mode to compare needs CIFAR-10 and 319 epochs on a GPU; it is not done here.

Deviations:
- Paper mode runs on `vgg_small` (the shared backbone), not the port's NIN (conv 5×5 192 → 1×1 convs
  160/96 → max-pool → 5×5 192 with dropout 0.5 → 1×1 192/192 → avg-pool → 3×3 192 with dropout 0.5
  → 1×1 192 → BN → 1×1 conv 192→10 → ReLU → 8×8 avg-pool): no dropout, a max-pool where NIN has an
  average pool, and the order inside a block is binary conv → ReLU → BN → max-pool → sign, where NIN
  pools before its BN (with the clamped γ > 0 an eval-mode BN is increasing per channel and commutes
  with the max-pool; batch statistics in training differ). NIN's first block is conv → BN (non-affine)
  → ReLU → BN → sign, here conv → BN → sign; the port's BatchNorms after the first conv and before the
  last are non-affine, here affine; the port applies ReLU to its logits, here none.
- Data: the port trains on preprocessed CIFAR-10 arrays from its own download (no augmentation in its
  loader) and tests on the 10,000 test images every epoch, reporting the best test accuracy; bnnbench
  uses its CIFAR-10 module (crop + flip, 45,000/5,000 split) and tests the best-validation checkpoint.
- Fair mode: the activation scale K (mean |x| over channels, convolved with a k×k box filter) is not
  computed: inputs are binarized to ±1 without a scale. BN follows every binary conv, so a per-layer
  scale is absorbed; K's per-position variation is lost. sign(0) = +1 (the port's torch.sign gives 0).
- The paper's ImageNet recipe (AlexNet, its own data pipeline) is not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnnbench.config import MethodConfig, NonNegativeFloat, NonNegativeInt, OpenFraction, PositiveFloat
from bnnbench.layers import BinaryConv2d, binary_layers
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class XnorConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient
    # per-epoch LR schedule; multistep: ×lr_decay_factor from each epoch in lr_milestones on
    scheduler: Literal["cosine", "linear", "plateau", "none", "multistep"] = "cosine"
    lr_milestones: tuple[NonNegativeInt, ...] = (119, 199, 239, 279)  # 0-based epochs (multistep only)
    lr_decay_factor: OpenFraction = 0.1  # LR multiplier at each milestone, in (0, 1) (dimensionless)
    clip_latent: bool = False  # clip latent weights to [−1, 1] (the paper does not; the port does)
    activation: Literal["identity", "hardtanh"] = "identity"  # identity = XNOR's BN → sign order
    rule: Literal["paper", "released"] = "paper"  # released: quantizers `xnor_released`, `xnor_input_released`
    mean_center: bool = False  # before every forward, θ ← θ − mean over input channels (then the clip), in place
    bn_weight_min: PositiveFloat | None = None  # clamp BatchNorm γ to ≥ this before every forward; None = off
    bn_eps: PositiveFloat = 1e-5  # ε of every BatchNorm (variance units)
    relu_after_binary_conv: bool = False  # ReLU on every binary conv's output (the port's BinConv2d)
    binary_conv_bias: bool = False  # a learnable bias, initialised 0, on every binary conv
    init_std: PositiveFloat | None = None  # conv and linear weights ~ N(0, init_std²), biases 0; None = default


def _relu_output(module, inputs, output):
    return F.relu(output)


@METHODS.register("xnor")
class XnorMethod(BinaryMethod):
    Config = XnorConfig
    paper_recipe = {"arch": "vgg_small", "epochs": 319, "batch_size": 128}
    paper_config = {
        "optimizer": "adam", "lr": 0.01, "weight_decay": 1e-5, "scheduler": "multistep",
        "lr_milestones": (119, 199, 239, 279), "lr_decay_factor": 0.1, "clip_latent": True, "rule": "released",
        "mean_center": True, "bn_weight_min": 0.01, "bn_eps": 1e-4, "relu_after_binary_conv": True,
        "binary_conv_bias": True, "init_std": 0.05,
    }

    def make_weight_quantizer(self, layer):
        return get_quantizer("xnor_released" if self.config.rule == "released" else "xnor")

    def make_input_quantizer(self, layer):
        return get_quantizer("xnor_input_released" if self.config.rule == "released" else "bnn")

    def build_model(self, arch, num_classes, in_channels, image_size):
        model = super().build_model(arch, num_classes, in_channels, image_size)
        c = self.config
        with torch.no_grad():
            for _, layer in binary_layers(model):
                if isinstance(layer, BinaryConv2d):
                    if c.binary_conv_bias and layer.bias is None:
                        layer.bias = nn.Parameter(torch.zeros(layer.out_channels, device=layer.weight.device))
                    if c.relu_after_binary_conv:
                        layer.register_forward_hook(_relu_output)
            for module in model.modules():
                if isinstance(module, _BatchNorm):
                    module.eps = c.bn_eps
                if c.init_std is not None and isinstance(module, nn.Conv2d | nn.Linear):
                    module.weight.normal_(0.0, c.init_std)
                    if module.bias is not None:
                        module.bias.zero_()
        return model

    @torch.no_grad()
    def prepare_forward(self) -> None:
        """What the port does at the start of every forward: θ ← clamp(θ − mean over input channels, −1, 1)
        (`mean_center`, with `clip_latent`), BatchNorm γ ≥ `bn_weight_min`."""
        c = self.config
        if c.mean_center:
            for _, layer in self.binary_layers():
                theta = layer.weight
                theta.sub_(theta.mean(dim=1, keepdim=True))
                if c.clip_latent:
                    theta.clamp_(-1.0, 1.0)
        if c.bn_weight_min is not None:
            for module in self.modules():
                if isinstance(module, _BatchNorm) and module.weight is not None:
                    module.weight.clamp_(min=c.bn_weight_min)

    @torch.no_grad()
    def after_optimizer_step(self):
        if not self.config.mean_center:  # with mean_center the clip follows the centring in prepare_forward
            super().after_optimizer_step()

    def on_train_batch_start(self, batch, batch_idx):
        self.prepare_forward()

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self.prepare_forward()

    def on_test_epoch_start(self):
        super().on_test_epoch_start()
        self.prepare_forward()

    def configure_optimizers(self):
        c = self.config
        if c.scheduler != "multistep":
            return super().configure_optimizers()
        optimizer = self.make_optimizer()
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(c.lr_milestones),
                                                         gamma=c.lr_decay_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-4, log=True),
            "clip_latent": trial.suggest_categorical("clip_latent", [False, True])}
