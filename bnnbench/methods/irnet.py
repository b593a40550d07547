"""`irnet`: IR-Net, information retention (Qin, Gong, Liu, Shen, Wei, Yu & Song, CVPR 2020, arXiv:1909.10788).

Paper: "Forward and Backward Information Retention for Accurate Binary Neural Networks" by Haotong Qin,
Ruihao Gong, Xianglong Liu, Mingzhu Shen, Ziran Wei, Fengwei Yu and Jingkuan Song, CVPR 2020.

What it computes (W1A1), in both modes:
- Libra-PB weights (quantizer `LibraWeight`, function `_LibraPB`): per output channel c the latent θ is
  balanced and standardised, ŵ = (θ − μ_c)/σ_c (μ_c the mean, σ_c the unbiased standard deviation over
  the channel's n = C_in·k·k elements), then w = s_c·sign(ŵ) with the integer power-of-two scale
  s_c = 2^round(log2(mean |ŵ|)) (a bit shift at inference; it carries no gradient, as released). The
  balancing maximises the entropy of the binary weights (half +1, half −1 per channel); the
  standardisation makes w independent of θ's scale, so s_c is 1 for almost every channel (mean |ŵ| is
  0.80 for Gaussian, 0.87 for uniform θ; s_c = 1/2 needs mean |ŵ| < 2^−0.5 ≈ 0.707).
- The EDE gradient (error decay estimator) for weights and activations alike: sign's derivative is
  replaced by k·t·(1 − tanh²(t·x)), with t growing over training from T_min to T_max and k = max(1/t, 1)
  (so k·t = 1 while t < 1: an identity-like STE that becomes ever more sign-like, up to a peak of t at
  0). The weight gradient then passes through the standardisation exactly (autograd of the released
  code, written out here):  g = s_c·ℓ'·EDE(ŵ);  ∂θ = (1/σ_c)·(g − ŵ·Σ_c(g·ŵ)/(n − 1)), centred over c
  (∂θ − its channel mean). Saved for backward: θ (the Parameter itself) and three numbers per channel.
- Every binary layer's input is sign(x) with the same EDE gradient (quantizer `EdeSign`), in front of
  which the shared backbone puts BatchNorm → hardtanh (`activation`, the released blocks' F.hardtanh).
- The schedule, once per epoch from Lightning's `on_train_epoch_start` (so a resumed run continues it):
  epoch e of E trains with t_e = 10^(log10 T_min + (log10 T_max − log10 T_min)·e/E) and k_e = 1/t_e while
  t_e < 1, else 1 (the last epoch has t = T_min·(T_max/T_min)^((E−1)/E), just below T_max, as released).
  t and k are logged as `train/ede_t` and `train/ede_k`.

Released code: htqin/IR-Net. `CIFAR-10/ResNet20/1w1a/modules/binaryfunction.py` (`BinaryQuantize`:
forward torch.sign, backward k·t·(1 − tanh²(t·x))·ℓ'), `CIFAR-10/ResNet20/1w1a/modules/ir_1w1a.py`
(`IRConv2d`: the per-channel balance/standardise with `.std()`, the detached scale
2^round(log(mean|ŵ|)/log 2), the same `BinaryQuantize` on weights and inputs), `CIFAR-10/ResNet20/1w1a/
resnet.py` (`resnet20_1w1a`: full-precision first conv and classifier, Bi-Real-style blocks with a
shortcut around each binary conv, F.hardtanh as activation, option-A shortcuts without parameters, a
BatchNorm1d before the classifier, Kaiming-normal initialisation of every conv and linear weight) and
`CIFAR-10/ResNet20/1w1a/trainer.py` (SGD lr 0.1, momentum 0.9, weight decay 1e-4 on every parameter,
batch 128, 400 epochs, CosineAnnealingLR(T_max = 400, η_min = 0) stepped after each epoch; `Log_UP` and
the k rule above with T_min = 1e-3, T_max = 10, set before each epoch). The VGG-Small script
(`CIFAR-10/VGG-Small/main.py`) uses T_min = 0.1, the paper's value. README: ResNet-20 W1A1 86.5 %.

Paper mode reproduces the ResNet-20 trainer as far as bnnbench can express it: `resnet20` (archs.py),
400 epochs, batch 128, SGD 0.1 / 0.9 / 1e-4 with the per-epoch cosine to 0, T_min = 1e-3, T_max = 10,
torch.sign's 0 ↦ 0 for weights and activations (`zero_sign`), Kaiming-normal initialisation
(`kaiming_init`), 1×1 shortcut convs full precision (`fp_shortcuts`, standing in for the released
parameter-free shortcuts). Running it needs CIFAR-10 and 400 epochs on a GPU; it is not done here.
Fair mode: the paper's equations (T_min = 0.1, T_max = 10, sign(0) = +1) with the shared recipe (Adam
1e-3, cosine, no weight decay, the dataset's backbone, epochs and batch).

Deviations:
- Network (paper mode): the shared `resnet20` has the standard block (conv → BN → hardtanh → conv → BN,
  + shortcut, hardtanh) with full-precision 1×1-conv shortcuts where the released network has a
  shortcut around every binary conv (out = hardtanh(BN(conv(x)) + x), twice per block) and option-A
  shortcuts (subsample and zero-pad, no parameters); there is no BatchNorm1d before the classifier.
- Data: bnnbench's CIFAR-10 module (stratified 45,000/5,000 split, CIFAR statistics); the released
  trainer normalises with ImageNet's mean/std, drops the last partial batch, and reports the best test
  accuracy over epochs where bnnbench tests the best-validation checkpoint.
- Fair mode maps 0 to +1 (sign(0) = +1, bnnbench's convention); paper mode keeps torch.sign's 0.
- A channel whose latent weights are all equal has σ_c = 0 and gives NaN, as released (no ε).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat
from bnnbench.errors import BadInput
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import sign, sign_with_zero
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class IrnetConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # learning rate (per step); the shared fair-mode Adam rate (paper mode: SGD 0.1)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient on every parameter (paper mode: 1e-4, as released)
    t_min: PositiveFloat = 0.1  # EDE steepness t in epoch 0 (per unit of ŵ or x); paper 0.1, ResNet-20 code 1e-3
    t_max: PositiveFloat = 10.0  # t at progress e/E = 1 (the last epoch gets slightly less); paper and code 10
    activation: Literal["hardtanh", "identity"] = "hardtanh"  # what BN's output passes before the sign (released)
    fp_shortcuts: bool = False  # keep 1×1 shortcut convs full precision (the released shortcuts have no weights)
    kaiming_init: bool = False  # every conv and linear weight ~ Kaiming normal (fan_in, gain √2), as released
    zero_sign: bool = False  # torch.sign's 0 ↦ 0 for weights and activations (released); false: sign(0) = +1

    def __post_init__(self):
        super().__post_init__()
        if not self.t_min <= self.t_max:
            raise BadInput(f"bad values t_min={self.t_min!r}, t_max={self.t_max!r} for method 'irnet': "
                           "need t_min <= t_max")


def ede_schedule(progress: float, t_min: float, t_max: float) -> tuple[float, float]:
    """(t, k) at training progress e/E: t = 10^(log10 T_min + (log10 T_max − log10 T_min)·e/E), k = 1/t while
    t < 1, else 1 — `trainer.py`'s `Log_UP` and the rule after it, logarithms taken as there."""
    low, high = math.log(t_min) / math.log(10), math.log(t_max) / math.log(10)
    t = math.pow(10, low + (high - low) * progress)
    return t, (1 / t if t < 1 else 1.0)


def ede_backward(grad: torch.Tensor, x: torch.Tensor, t: float, k: float) -> torch.Tensor:
    """grad·k·t·(1 − tanh²(t·x)), EDE's derivative of sign applied to grad, evaluated as
    4kt·grad·σ(2tx)·(1 − σ(2tx)) (the same function: 1 − tanh²(z) = 4σ(2z)σ(−2z)) with PyTorch's fused
    sigmoid backward kernel on σ computed in place. It runs over every binary layer's input each step: on
    the CPU `tanh` costs 5× a `sigmoid`, and the written-out product made four new tensors, this two
    (2.5× faster on 2M elements, within 3e-7 relative of float64)."""
    return torch.ops.aten.sigmoid_backward(grad, torch.sigmoid_(x * (2 * t))).mul_(4 * k * t)


def _sign(x: torch.Tensor, zero_sign: bool) -> torch.Tensor:
    return sign_with_zero(x) if zero_sign else sign(x)


def libra_standardize(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ŵ = (θ − μ_c)/σ_c per row c of a (C, n) view, with μ_c, σ_c (unbiased) kept as (C, 1) columns."""
    mean = flat.mean(dim=1, keepdim=True)
    centred = flat - mean
    std = centred.std(dim=1, keepdim=True)
    return centred / std, mean, std


def power_of_two_scale(w_hat: torch.Tensor) -> torch.Tensor:
    """s_c = 2^round(log2(mean_c |ŵ|)) per row, the released `sw` (log2 as log/log 2, as there)."""
    return torch.pow(2.0, torch.round(torch.log(w_hat.abs().mean(dim=1, keepdim=True)) / math.log(2)))


class _LibraPB(torch.autograd.Function):
    """Forward s_c·sign((θ − μ_c)/σ_c); backward EDE through sign and the exact derivative of the
    standardisation (module docstring). Saves θ and (μ_c, σ_c, s_c); ŵ is recomputed in backward."""

    @staticmethod
    def forward(ctx, theta, t: float, k: float, zero_sign: bool):
        flat = theta.reshape(theta.shape[0], -1)
        w_hat, mean, std = libra_standardize(flat)
        scale = power_of_two_scale(w_hat)
        ctx.save_for_backward(theta, mean, std, scale)
        ctx.t, ctx.k = t, k
        return (scale * _sign(w_hat, zero_sign)).reshape(theta.shape)

    @staticmethod
    def backward(ctx, grad):
        theta, mean, std, scale = ctx.saved_tensors
        flat = theta.reshape(theta.shape[0], -1)
        w_hat = (flat - mean) / std
        g = ede_backward(grad.reshape(flat.shape) * scale, w_hat, ctx.t, ctx.k)
        n = flat.shape[1]
        g = (g - w_hat * (g * w_hat).sum(dim=1, keepdim=True) / (n - 1)) / std
        return (g - g.mean(dim=1, keepdim=True)).reshape(theta.shape), None, None, None


class _EdeSign(torch.autograd.Function):
    """Activations: forward sign(x), backward ℓ'·k·t·(1 − tanh²(t·x)). Saves x."""

    @staticmethod
    def forward(ctx, x, t: float, k: float, zero_sign: bool):
        ctx.save_for_backward(x)
        ctx.t, ctx.k = t, k
        return _sign(x, zero_sign)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return ede_backward(grad, x, ctx.t, ctx.k), None, None, None


class LibraWeight(nn.Module):
    """IR-Net's weight quantizer: Libra-PB forward, EDE backward; `t` and `k` are re-set every epoch."""

    def __init__(self, t: float = 0.1, k: float = 10.0, zero_sign: bool = False):
        super().__init__()
        self.t, self.k, self.zero_sign = float(t), float(k), zero_sign

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _LibraPB.apply(theta, self.t, self.k, self.zero_sign)

    def extra_repr(self) -> str:
        return f"t={self.t:.4g}, k={self.k:.4g}, zero_sign={self.zero_sign}"


class EdeSign(nn.Module):
    """IR-Net's activation quantizer: sign(x) with the EDE gradient; `t` and `k` are re-set every epoch."""

    def __init__(self, t: float = 0.1, k: float = 10.0, zero_sign: bool = False):
        super().__init__()
        self.t, self.k, self.zero_sign = float(t), float(k), zero_sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _EdeSign.apply(x, self.t, self.k, self.zero_sign)

    def extra_repr(self) -> str:
        return f"t={self.t:.4g}, k={self.k:.4g}, zero_sign={self.zero_sign}"


@METHODS.register("irnet")
class IrnetMethod(BinaryMethod):
    Config = IrnetConfig
    # htqin/IR-Net CIFAR-10/ResNet20/1w1a/trainer.py: resnet20_1w1a, --epochs 400, -b 128
    paper_recipe = {"arch": "resnet20", "epochs": 400, "batch_size": 128}
    # the same trainer: SGD lr 0.1 momentum 0.9 wd 1e-4, cosine (T_max = epochs, η_min 0), T_min 1e-3, T_max 10
    paper_config = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "scheduler": "cosine",
                    "lr_min": 0.0, "t_min": 1e-3, "t_max": 10.0, "fp_shortcuts": True, "kaiming_init": True,
                    "zero_sign": True}

    def _ede(self, epoch: int) -> tuple[float, float]:
        c = self.config
        return ede_schedule(self.phase_progress(epoch), c.t_min, c.t_max)

    def make_weight_quantizer(self, layer):
        t, k = self._ede(0)
        return LibraWeight(t, k, self.config.zero_sign)

    def make_input_quantizer(self, layer):
        t, k = self._ede(0)
        return EdeSign(t, k, self.config.zero_sign)

    def build_model(self, arch, num_classes, in_channels, image_size):
        model = super().build_model(arch, num_classes, in_channels, image_size)
        if self.config.kaiming_init:  # the released `_weights_init`: init.kaiming_normal on Conv2d and Linear
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, nn.Conv2d | nn.Linear):
                        nn.init.kaiming_normal_(module.weight)
        return model

    def apply_schedule(self) -> tuple[float, float]:
        """Set the current epoch's (t, k) in every binary layer's weight *and* input quantizer."""
        t, k = self._ede(self.current_epoch)
        self.set_quantizer_param("t", t, inputs=True)
        self.set_quantizer_param("k", k, inputs=True)
        return t, k

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        t, k = self.apply_schedule()
        self.log("train/ede_t", t)
        self.log("train/ede_k", k)


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "t_min": trial.suggest_float("t_min", 1e-3, 1.0, log=True),
            "t_max": trial.suggest_float("t_max", 1.0, 100.0, log=True)}
