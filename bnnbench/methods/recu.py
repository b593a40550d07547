"""`recu`: ReCU, the rectified clamp unit (Xu, Lin, Liu, Chen, Shao, Gao, Tian & Ji, ICCV 2021, arXiv:2103.12369).

Paper: "ReCU: Reviving the Dead Weights in Binary Neural Networks" by Zihan Xu, Mingbao Lin, Jianzhuang
Liu, Jie Chen, Ling Shao, Yue Gao, Yonghong Tian and Rongrong Ji, ICCV 2021.

What it computes (W1A1), in both modes:
- Weights (quantizer `RecuWeight`, function `_Recu`): per output channel c the latent θ is balanced and
  standardised to a standard deviation of 2√2, w₁ = (θ − μ_c)/d_c with d_c = √(var_c(θ − μ_c) + 1e-5)/(2√2)
  (var unbiased, over the channel's n elements); the rectified clamp unit clamps w₁ to [−Q(τ), Q(τ)],
  Q(τ) = −b̂·ln(2 − 2τ) the τ-quantile of a Laplace(0, b̂) distribution whose scale b̂ = mean |w₁| is
  estimated over the *whole layer* (all channels), detached; then w = α_c·sign(clamp(w₁)) with one
  learnable α_c per output channel (initialised uniform in [0, 1), as released; the released code
  multiplies the conv's output by α, which is the same). For τ > 1/2, Q > 0, so sign(clamp(w₁)) =
  sign(w₁): the clamp never changes the forward. It acts on the gradient only: with the identity
  straight-through estimator through sign, ℓ' reaches w₁ as α_c·ℓ' inside [−Q, Q] (ends included, as
  torch.clamp's derivative) and 0 outside, so the "dead" weights beyond the quantiles get no loss
  gradient. Then the exact derivative of the standardisation (the released autograd, written out):
  g₁ = α_c·ℓ'·1[|w₁| ≤ Q];  ∂θ = (1/d_c)·(g₁ − w₁·Σ_c(g₁·w₁)/(8(n − 1))), centred over c. α_c receives
  Σ_c ℓ'·sign(w₁). Saved for backward: θ (the Parameter itself), μ_c, d_c and Q.
- Activations (quantizer `RecuInput`, function `_RecuInput`): forward sign(x). In training the released
  code first divides each sample by its own standard deviation, x₀ = x/√(var(x) + 1e-5) (var unbiased
  over all of a sample's channels and positions), which leaves the sign unchanged and so changes only
  the gradient: Bi-Real Net's ApproxSign derivative max(0, 2 − 2|x₀|) at x₀, then back through the
  division (var included): ∂x = (g₀ − (x − x̄)·Σ(g₀·x)/((n − 1)·s²))/s with s = √(var + 1e-5),
  g₀ = ℓ'·max(0, 2 − 2|x₀|). In evaluation the released code skips the division (same forward).
- τ, once per epoch from Lightning's `on_train_epoch_start` (a resumed run continues it): epoch e of E
  trains with τ_e = A·e^(e/E) + B, A = (τ_max − τ_min)/(e − 1), B = τ_min − A, i.e. τ_min at the first
  epoch, rising exponentially towards τ_max at progress 1 (the last epoch gets slightly less), as the
  released `cpt_tau`; logged as `train/tau`.

Released code: z-hXu/ReCU (its README: "Pytorch implementation of ReCU in ICCV 2021", by the first
author; no z-hunter/ReCU could be found). `cifar/modules/
binarized_modules.py` (`BinarizeConv2d`: the standardisation, Q_tau, clamp, the in-training activation
division, `BinaryQuantize` = torch.sign with identity backward for weights, `BinaryQuantize_a` =
torch.sign with the ApproxSign backward for activations, the output × α), `cifar/main.py` (`cpt_tau`
set before each epoch; SGD over all parameters with weight decay; `--warm_up`: epochs 0–4 at
lr·(e+1)/5, then CosineAnnealingLR(T_max = epochs − 4, η_min 0) stepped after each epoch from epoch 4
on, so epoch e ≥ 4 trains at lr·(1 + cos(π(e − 4)/(E − 4)))/2), `cifar/utils/options.py` (defaults),
`cifar/run.sh` (the CIFAR-10 command: `resnet18_1w1a`, 600 epochs, lr 0.1, momentum 0.9, batch 256,
`--lr_type cos --warm_up`, weight decay 5e-4, τ 0.85 → 0.99), `cifar/models_cifar/resnet2.py`
(`resnet18_1w1a`: full-precision first conv (BN, no activation after it) and classifier, every other
conv binary, F.hardtanh after each BN, parameter-free shortcuts (2×2 average pool and zero-padding of
the channels), BatchNorm1d before the classifier, Kaiming-normal initialisation of every conv).
README: CIFAR-10 ResNet-18 92.8 % ("vanilla"), ResNet-20 87.5 %, VGG-Small 92.2 %. htqin/BiBench's
`bibench/models/layers/recu.py` (`ReCUConv2d`, its `model_params_update` for τ) computes the same.

Paper mode reproduces `run.sh` as far as bnnbench can express it: `resnet18` (archs.py), 600 epochs,
batch 256, SGD 0.1 / 0.9 / 5e-4 with the 5-epoch warm-up and cosine (`warmup_epochs`), τ 0.85 → 0.99,
torch.sign's 0 ↦ 0 (`zero_sign`), Kaiming-normal conv initialisation (`kaiming_init`), 1×1 shortcut
convs full precision (`fp_shortcuts`, standing in for the parameter-free shortcuts). Running it needs
CIFAR-10 and 600 ResNet-18 epochs on a GPU; it is not done here. Fair mode: the same rule (sign(0) = +1)
with the shared recipe (Adam 1e-3, cosine, no weight decay, the dataset's backbone, epochs and batch).

Deviations:
- Network (paper mode): the shared `resnet18` puts hardtanh after the stem's BN, where the released
  network has none (the sign of the first binary conv's input is the same; its gradient is gated to
  |x| ≤ 1 here); full-precision 1×1-conv shortcuts where the released ones are parameter-free; no
  BatchNorm1d before the classifier.
- Data: bnnbench's CIFAR-10 module (stratified 45,000/5,000 split, CIFAR statistics); the released code
  normalises with ImageNet's mean/std, evaluates on the test set every epoch and reports its best;
  bnnbench tests the best-validation checkpoint.
- Q(τ) is kept as a tensor (the released code moves it to the host with `.item()`, a sync per layer);
  τ is computed in float64 (released: float32).
- Fair mode maps 0 to +1 (sign(0) = +1, bnnbench's convention); paper mode keeps torch.sign's 0.
- The knowledge-distillation and two-stage ImageNet recipes (`imagenet_two-stage/`) are not reproduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import nn

from bnnbench.config import MethodConfig, NonNegativeFloat, NonNegativeInt, PositiveFloat, Range
from bnnbench.errors import BadInput
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import sign, sign_with_zero
from bnnbench.registry import METHODS

EPS = 1e-5  # the released ε under both square roots (variance units)
Tau = Annotated[float, Range(0.5, 1.0, low_open=True, high_open=True)]  # Q(τ) > 0 needs τ > 1/2; τ = 1 is Q = ∞


@dataclass(frozen=True)
class RecuConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # learning rate (per step); the shared fair-mode Adam rate (paper mode: SGD 0.1)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient on every parameter, α included (paper mode: 5e-4)
    tau_min: Tau = 0.85  # τ of the first epoch: the quantile beyond which weights are clamped (dimensionless)
    tau_max: Tau = 0.99  # τ at progress e/E = 1 (the last epoch gets slightly less), dimensionless
    activation: Literal["hardtanh", "identity"] = "hardtanh"  # what BN's output passes before the sign (released)
    fp_shortcuts: bool = False  # keep 1×1 shortcut convs full precision (the released shortcuts have no weights)
    kaiming_init: bool = False  # every conv weight ~ Kaiming normal (fan_in, gain √2), as released
    zero_sign: bool = False  # torch.sign's 0 ↦ 0 for weights and activations (released); false: sign(0) = +1
    # epochs of linear warm-up, lr·(e+1)/W, before the cosine, which then runs over E − W + 1 epochs (released
    # --warm_up: 5); 0 = the shared schedule
    warmup_epochs: NonNegativeInt = 0

    def __post_init__(self):
        super().__post_init__()
        if not self.tau_min <= self.tau_max:
            raise BadInput(f"bad values tau_min={self.tau_min!r}, tau_max={self.tau_max!r} for method 'recu': "
                           "need tau_min <= tau_max")


def tau_schedule(progress: float, tau_min: float, tau_max: float) -> float:
    """τ at training progress e/E: A·e^(e/E) + B with A = (τ_max − τ_min)/(e − 1), B = τ_min − A (`cpt_tau`)."""
    a = (tau_max - tau_min) / (math.e - 1)
    return a * math.exp(progress) + tau_min - a


def _sign(x: torch.Tensor, zero_sign: bool) -> torch.Tensor:
    return sign_with_zero(x) if zero_sign else sign(x)


def recu_standardize(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w₁ = (θ − μ_c)/d_c per row of a (C, n) view, d_c = √(var_c + ε)/(2√2); returns w₁, μ_c, d_c ((C, 1))."""
    mean = flat.mean(dim=1, keepdim=True)
    centred = flat - mean
    divisor = torch.sqrt(centred.var(dim=1, keepdim=True) + EPS) / 2 / math.sqrt(2)
    return centred / divisor, mean, divisor


def clamp_bound(w1: torch.Tensor, tau: float) -> torch.Tensor:
    """Q(τ) = −mean|w₁|·ln(2 − 2τ), the τ-quantile of the Laplace fit to the whole layer, detached."""
    return (-w1.detach().abs().mean() * math.log(2 - 2 * tau)).detach()


class _Recu(torch.autograd.Function):
    """Forward α_c·sign(clamp(w₁, −Q, Q)); backward identity STE through sign, clamp's gate, then the exact
    derivative of the standardisation (module docstring); α_c gets Σ_c ℓ'·sign(w₁)."""

    @staticmethod
    def forward(ctx, theta, alpha, tau: float, zero_sign: bool):
        flat = theta.reshape(theta.shape[0], -1)
        w1, mean, divisor = recu_standardize(flat)
        bound = clamp_bound(w1, tau)
        ctx.save_for_backward(theta, alpha, mean, divisor, bound)
        ctx.zero_sign = zero_sign
        return (alpha.reshape(-1, 1) * _sign(w1.clamp(-bound, bound), zero_sign)).reshape(theta.shape)

    @staticmethod
    def backward(ctx, grad):
        theta, alpha, mean, divisor, bound = ctx.saved_tensors
        flat = theta.reshape(theta.shape[0], -1)
        w1 = (flat - mean) / divisor
        upstream = grad.reshape(flat.shape)
        grad_alpha = (upstream * _sign(w1, ctx.zero_sign)).sum(dim=1).reshape(alpha.shape)
        g = upstream * alpha.reshape(-1, 1) * (w1.abs() <= bound)
        n = flat.shape[1]
        g = (g - w1 * (g * w1).sum(dim=1, keepdim=True) / (8 * (n - 1))) / divisor
        return (g - g.mean(dim=1, keepdim=True)).reshape(theta.shape), grad_alpha, None, None


class _RecuInput(torch.autograd.Function):
    """Activations: forward sign(x); backward ApproxSign at x₀ = x/s (s = √(var + ε) per sample) and the
    exact derivative of that division (module docstring). Saves x, x̄ and s.

    The variance is taken in two passes, mean then Σ(x − x̄)² (as exact: 1e-7 relative on resnet20's inputs,
    float64 as reference): `Tensor.var`'s one-pass Welford kernel took 80 ms of a 360 ms resnet20 step on the
    CPU, the two passes 10× less; the backward works in place on its two temporaries.
    """

    @staticmethod
    def forward(ctx, x, zero_sign: bool):
        dims = tuple(range(1, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        squares = (x - mean).square_().sum(dim=dims, keepdim=True)
        spread = torch.sqrt(squares / (x[0].numel() - 1) + EPS)
        ctx.save_for_backward(x, mean, spread)
        return _sign(x, zero_sign)

    @staticmethod
    def backward(ctx, grad):
        x, mean, spread = ctx.saved_tensors
        dims = tuple(range(1, x.dim()))
        n = x[0].numel()
        g0 = (x / spread).abs_().mul_(-2).add_(2).clamp_(min=0).mul_(grad)  # ℓ'·max(0, 2 − 2|x₀|)
        coefficient = (g0 * x).sum(dim=dims, keepdim=True) / ((n - 1) * spread.square())
        return g0.sub_((x - mean).mul_(coefficient)).div_(spread), None


class RecuWeight(nn.Module):
    """ReCU's weight quantizer: α_c·sign of the clamped standardised θ; `tau` is re-set every epoch. α has one
    entry per output channel (`channels`, the layer's, which the method's factory receives)."""

    def __init__(self, channels: int = 1, tau: float = 0.85, zero_sign: bool = False):
        super().__init__()
        self.alpha = nn.Parameter(torch.rand(channels))
        self.tau, self.zero_sign = float(tau), zero_sign

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _Recu.apply(theta, self.alpha.to(theta.dtype), self.tau, self.zero_sign)

    def extra_repr(self) -> str:
        return f"channels={self.alpha.numel()}, tau={self.tau:.4g}, zero_sign={self.zero_sign}"


class RecuInput(nn.Module):
    """ReCU's activation quantizer: sign(x); training backward through the per-sample division (see `_RecuInput`),
    evaluation forward the plain sign, as released."""

    def __init__(self, zero_sign: bool = False):
        super().__init__()
        self.zero_sign = zero_sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RecuInput.apply(x, self.zero_sign) if self.training else _sign(x, self.zero_sign)

    def extra_repr(self) -> str:
        return f"zero_sign={self.zero_sign}"


@METHODS.register("recu")
class RecuMethod(BinaryMethod):
    Config = RecuConfig
    # z-hXu/ReCU cifar/run.sh: --model resnet18_1w1a --epochs 600 -b 256
    paper_recipe = {"arch": "resnet18", "epochs": 600, "batch_size": 256}
    # cifar/run.sh and cifar/main.py: SGD lr 0.1 momentum 0.9 wd 5e-4 on every parameter, --warm_up + cos, τ 0.85→0.99
    paper_config = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "scheduler": "cosine",
                    "lr_min": 0.0, "warmup_epochs": 5, "tau_min": 0.85, "tau_max": 0.99, "fp_shortcuts": True,
                    "kaiming_init": True, "zero_sign": True}

    def _tau(self, epoch: int) -> float:
        return tau_schedule(self.phase_progress(epoch), self.config.tau_min, self.config.tau_max)

    def make_weight_quantizer(self, layer):
        return RecuWeight(layer.weight.shape[0], self._tau(0), self.config.zero_sign)

    def make_input_quantizer(self, layer):
        return RecuInput(self.config.zero_sign)

    def build_model(self, arch, num_classes, in_channels, image_size):
        """The binarized backbone, with the released Kaiming-normal initialisation where asked for."""
        model = super().build_model(arch, num_classes, in_channels, image_size)
        if self.config.kaiming_init:
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, nn.Conv2d):  # released `_weights_init`
                        nn.init.kaiming_normal_(module.weight)
        return model

    def apply_schedule(self) -> float:
        """Set the current epoch's τ in every binary layer's weight quantizer."""
        tau = self._tau(self.current_epoch)
        self.set_quantizer_param("tau", tau)
        return tau

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.log("train/tau", self.apply_schedule())


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "tau_min": trial.suggest_float("tau_min", 0.6, 0.9),
            "tau_max": trial.suggest_float("tau_max", 0.95, 0.999)}
