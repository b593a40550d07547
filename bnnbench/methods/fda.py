"""`fda`: FDA-BNN, frequency domain approximation of the sign's gradient (Xu, Han, Xu, Tang, Xu & Wang,
NeurIPS 2021, arXiv:2103.00841).

Paper: "Learning Frequency Domain Approximation for Binary Neural Networks" by Yixing Xu, Kai Han, Chang Xu,
Yehui Tang, Chunjing Xu and Yunhe Wang, NeurIPS 2021.

Idea. sign(x) is the square wave sign(sin(ωx)) on |x| < π/ω, whose Fourier series is
(4/π)·Σ_{i≥0} sin((2i+1)ωx)/(2i+1). Its first m terms are smooth, so their derivative
(4ω/π)·Σ_{i<m} cos((2i+1)ωx) is FDA's gradient of the sign: the low frequencies, which hold most of the
square wave's energy, are kept, the rest dropped. A noise-adaptation module, a small residual network
e(x) = W₂·ReLU(W₁·x) + 0.1·sin(x) added with a decaying weight η during training (b = sign(x) + η·e(x)),
learns to correct the error of the truncation. W1A1, weights and activations alike.

What bnnbench computes (both modes), see `_FourierSign` and `NoiseAdaptation`:
- forward sign(x), sign(0) = +1; backward ℓ'·(4ω/π)·Σ_{i<m} cos((2i+1)ωx)·1[|x| ≤ 1], evaluated in the
  closed form (2ω/π)·sin(2mωx)/sin(ωx) (the Dirichlet sum; its limit (4ω/π)·m at x = 0): one pass over
  the tensor instead of m cosine tensors. ω = 0.1 (`omega`); m = 10 terms in epoch 0, growing to
  10 + ⌊9e/E⌋ in 0-based epoch e of E (`terms_start`, `terms_added`): 18 in the last epoch. At x = 0 the
  gradient is (4ω/π)·m = 1.27 (m = 10) to 2.29 (m = 18): a Dirichlet-kernel bump, taller and narrower as m
  grows, positive for |x| < π/(2mω) (all of [−1, 1] while m ≤ 15) and slightly negative near ±1 beyond
  (−0.28 at ±1 for m = 18, where descent pushes such an input away from the sign flip, as released).
- weights: w = α_c·(sign(θ) + η·e_w(θ)) with α_c = mean |θ| over output channel c, detached (`weight_scale`);
  e_w works on each output channel's flattened filter of d = C_in·k·k values, d → d/64 → d (`noise_reduction`).
- activations: b = sign(x) + η·e_a(x), e_a over the channels at each position, C_in → C_in/64 → C_in; where
  d/64 or C_in/64 is 0 (fewer than 64 features) e is the sine term alone, as the released code's 0-wide
  linear layers compute.
- η = 0.05·(1 + cos(π(e+1)/E)) in epoch e (`noise_scale` 0.1): from just under 0.1 to exactly 0 in the
  last epoch, so the network trained last is the binary one evaluated.
- evaluation (validation, test, export, cost): α_c·sign(θ) and sign(x), without the noise terms: the
  noise modules are training-only and are not part of the inference network.

Released code. The authors' own release (mindspore-ai/models `research/cv/FDA-BNN`, MindSpore) is an
evaluation script with a CIFAR-10 ResNet-20 checkpoint (86.6 % top-1): `src/quan.py` binarizes with an
identity backward and one α per layer, `src/resnet.py` is a ResNet-20 with option-A shortcuts and PReLU, and
there is no training code, no Fourier gradient and no noise module in it. The training rule followed here is
BiBench's (htqin/BiBench, Qin et al., ICML 2023): `bibench/models/layers/fda.py` (`FDA_BinaryQuantize`: the
backward above with ω = 0.1, n + 1 terms for the buffer n, zeroed beyond ±1; `NoiseAdaption` for weights
and `NoiseAdaption_a` for activations, bias-free linears with k = 64, plus 0.1·sin(x); `FDAConv2d`: the
scale, the noise terms weighted by the buffer `alpha`, and `model_params_update`, which sets
alpha = 0.05·(1 + cos(π(e+1)/E)) and n = 9 + int(9e/E)), called before every training epoch by
`bibench/core/hook/model_params_update_hook.py`; the recipe `configs/acc_cifar10/bireal18_fda_adam_1e-3_
cosinelr.py` (the Bi-Real-style ResNet-18 with Hardtanh after each sum, Adam lr 1e-3 with cosine decay to 0
per epoch over 400 epochs, batch 128 per GPU, from a pretrained real-valued checkpoint). Paper mode
reproduces that as far as bnnbench can: `bireal_resnet18` (a shortcut per binary conv, `archs.BiRealResNet`)
with `activation=hardtanh`, 400 epochs, batch 128, Adam lr 1e-3 cosine per epoch, 1×1 shortcut convs real
(`fp_shortcuts`), and the activation noise modules frozen at their random initialisation
(`activation_noise=frozen`): BiBench builds them lazily in the first forward, after the optimizer has been
built, so they are never updated (they still shape the activations' gradient through their Jacobian).
Running it to compare needs CIFAR-10 and 400 ResNet-18 epochs on a GPU: not done here. Fair mode: the same
gradient, noise modules (both trained, as the paper describes) and schedules on the shared backbone with the
shared recipe (Adam, cosine per epoch), `activation=hardtanh` (BiBench's: the sign sees BatchNorm's output
clipped to [−1, 1], the support of the gradient, so the forward is the same as without it).

Deviations:
- sign(0) = +1 (BiBench's torch.sign maps 0 to 0).
- Validation and test use the hard binary network; BiBench evaluates with the noise terms (η > 0 before the
  last epoch), so its intermediate validation accuracies are of a non-binary network. The last epoch, where
  η = 0, is the same.
- Not from a pretrained real-valued network (BiBench loads `data/pretrained/bireal18_cifar10.pth`); PyTorch's
  default initialisation.
- Paper mode's network: BiBench's bireal18 downsamples its shortcut with a strided 1×1 conv + BN, here
  average pool → 1×1 conv → BN (Bi-Real Net's released form); the stem's Hardtanh is the same.
- The terms schedule is computed in integers, ⌊9e/E⌋ (BiBench's int(e/E·9) in floating point can round
  one below at exact multiples).
- The noise modules are held by the method beside the network, not inside it (`bnnbench.cost` counts every
  parameter of the network as inference cost, and the export packs the network): they train and are
  checkpointed with the run but are absent from copies of the network (the MLflow model, the export, cost).
- The paper's own hyperparameters (its CIFAR and ImageNet recipes) are not in the released code and are not
  reproduced; the MindSpore checkpoint's ResNet-20 (PReLU, option-A shortcuts, one α per layer) neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bnnbench.config import MethodConfig, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range
from bnnbench.layers import binary_layers
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import sign, unit_gate_backward
from bnnbench.registry import METHODS

# ω|x| is raised to at least this in the closed form, where sin(2mωx)/sin(ωx) equals its limit 2m at x = 0
# to float precision (the two differ by a relative (2mωx)²/6 < 1e-20)
_TINY = 1e-12


def _dirichlet(x: torch.Tensor, omega: float, terms: int) -> torch.Tensor:
    """(2ω/π)·sin(2mω|x|)/sin(ω|x|), m = `terms`, for every x (not gated), in one new tensor: in-place steps
    after the first, as this runs over every binary layer's input each step (6.1 against 13.4 ms on 2 M
    elements for a form with a temporary per step and two `where`)."""
    angle = x.abs().mul_(omega).clamp_min_(_TINY)  # even in x; > 0, so the denominator never vanishes
    denominator = torch.sin(angle)
    return angle.mul_(2 * terms).sin_().div_(denominator).mul_(2 * omega / math.pi)


def fourier_sign_grad(x: torch.Tensor, omega: float, terms: int) -> torch.Tensor:
    """(4ω/π)·Σ_{i<terms} cos((2i+1)ωx) where |x| ≤ 1, else 0: the derivative of the square wave's Fourier
    series truncated to `terms` terms, as FDA's gradient of sign.

    Closed form: Σ_{i<m} cos((2i+1)t) = sin(2mt)/(2 sin t) (multiply by 2 sin t and telescope
    2 sin t cos((2i+1)t) = sin((2i+2)t) − sin(2it)), so the value is (2ω/π)·sin(2mωx)/sin(ωx), with the
    limit (4ω/π)·m at x = 0. With 0 < ω < π, sin(ωx) vanishes on [−1, 1] only at x = 0.
    """
    return unit_gate_backward(_dirichlet(x, omega, terms), x)


class _FourierSign(torch.autograd.Function):
    """Forward sign(x) (sign(0) = +1); backward ℓ'·`fourier_sign_grad`(x), the product taken before the
    gate so that the gate is the one fused pass. Saves x (for weights, the Parameter itself)."""

    @staticmethod
    def forward(ctx, x, omega: float, terms: int):
        ctx.save_for_backward(x)
        ctx.omega, ctx.terms = omega, terms
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return unit_gate_backward(_dirichlet(x, ctx.omega, ctx.terms).mul_(grad), x), None, None


class _ContiguousGrad(torch.autograd.Function):
    """Identity forward; the gradient made contiguous. What comes back through `movedim` is channels-last
    strided, and summed with x's other gradients it made the BatchNorm backward before x take a strided path:
    362 vs 46 ms per resnet18 step for fp's (eager, profiled)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


class NoiseAdaptation(nn.Module):
    """FDA's noise-adaptation module: e(x) = W₂·ReLU(W₁·x) + s·sin(x) along the feature dimension, bias-free,
    hidden width features // reduction (none if that is 0: then e is the sine term alone).

    `rows=True` (weights): each output channel's flattened filter is one input vector (BiBench
    `NoiseAdaption`); `rows=False` (activations): the channel vector at each position (dim 1; `NoiseAdaption_a`).
    """

    def __init__(self, features: int, reduction: int, sine: float, rows: bool, features_last: bool = False):
        super().__init__()
        self.features_last = features_last  # activations of a linear layer: features on the last dim
        hidden = features // reduction
        self.fc1 = nn.Linear(features, hidden, bias=False) if hidden else None
        self.fc2 = nn.Linear(hidden, features, bias=False) if hidden else None
        self.sine = sine
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.sin(x).mul_(self.sine)  # in place: sin's backward needs x, not its output
        if self.fc1 is None:
            return out
        if self.rows:
            mlp = self.fc2(F.relu(self.fc1(x.reshape(x.shape[0], -1)))).reshape(x.shape)
        elif self.features_last:
            mlp = self.fc2(F.relu(self.fc1(x)))
        else:
            # contiguous both ways: the strided (channels-last) result of `movedim`, and the gradient it sends
            # back to x, slowed the sums and the BatchNorm backward after them (see `_ContiguousGrad`)
            mlp = self.fc2(F.relu(self.fc1(_ContiguousGrad.apply(x).movedim(1, -1)))).movedim(-1, 1).contiguous()
        return out.add_(mlp)

    def extra_repr(self) -> str:
        return f"sine={self.sine:g}, rows={self.rows}"


class _Fourier(nn.Module):
    """Shared by both FDA quantizers: ω, the number of terms m and the noise weight η are plain attributes the
    method re-sets every epoch. The noise module is attached with `attach` and held outside the module tree
    (not a submodule), so it is neither part of the network's parameters (cost, export) nor of its copies."""

    def __init__(self, omega: float, terms: int):
        super().__init__()
        self.omega = float(omega)
        self.terms = int(terms)
        self.noise_weight = 0.0  # η
        self.__dict__["noise"] = None

    def attach(self, noise: NoiseAdaptation | None) -> None:
        self.__dict__["noise"] = noise  # bypasses Module.__setattr__: not registered as a submodule

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["noise"] = None  # a copy or pickle of the network carries what inference uses
        return state

    def _with_noise(self, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        noise = self.__dict__["noise"]
        if self.training and noise is not None and self.noise_weight:
            return torch.add(b, noise(x), alpha=self.noise_weight)
        return b

    def extra_repr(self) -> str:
        return f"omega={self.omega:g}, terms={self.terms}, noise_weight={self.noise_weight:.4g}"


class FourierWeight(_Fourier):
    """FDA weights: α_c·(sign(θ) + η·e_w(θ)) while training, α_c·sign(θ) in eval; α_c = mean |θ| per output
    channel, detached (1 without `scale`)."""

    def __init__(self, omega: float, terms: int, scale: bool = True):
        super().__init__(omega, terms)
        self.scale = scale

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        b = self._with_noise(_FourierSign.apply(theta, self.omega, self.terms), theta)
        if not self.scale:
            return b
        alpha = theta.detach().reshape(theta.shape[0], -1).abs().mean(dim=1)
        return b * alpha.reshape((-1,) + (1,) * (theta.dim() - 1))


class FourierActivation(_Fourier):
    """FDA activations: sign(x) + η·e_a(x) while training, sign(x) in eval."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._with_noise(_FourierSign.apply(x, self.omega, self.terms), x)


def noise_weight_at(epoch: int, epochs: int, scale: float) -> float:
    """η of 0-based `epoch` of `epochs`: (scale/2)·(1 + cos(π(e+1)/E)), exactly 0 in the last epoch."""
    return scale / 2 * (1 + math.cos(math.pi * min(epoch + 1, epochs) / epochs))


def terms_at(epoch: int, epochs: int, start: int, added: int) -> int:
    """Fourier terms of 0-based `epoch` of `epochs`: start + ⌊added·e/E⌋."""
    return start + (added * epoch) // epochs



def _key(name: str, kind: str) -> str:
    """The `noise_modules` key of a binary layer's weight or input noise module (`torch.compile`'s
    `_orig_mod.` prefix dropped, so the key is the same with and without it)."""
    return f"{name.removeprefix('_orig_mod.').replace('.', '-')}-{kind}"

@dataclass(frozen=True)
class FdaConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step); BiBench's 1e-3 too
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 as BiBench's Adam
    # ω of the square wave sign(sin(ωx)), in (0, π) (radians per unit of x); released 0.1
    omega: Annotated[float, Range(0.0, math.pi, low_open=True, high_open=True)] = 0.1
    terms_start: PositiveInt = 10  # Fourier terms (harmonics 1, 3, 5, ...) in epoch 0; released n = 9, i.e. 10
    terms_added: NonNegativeInt = 9  # terms added over the run: epoch e of E has terms_start + ⌊added·e/E⌋
    weight_scale: bool = True  # binary weights ×α_c = mean |θ| per output channel, detached (released)
    weight_noise: bool = True  # noise-adaptation module on the weights (training only)
    # noise-adaptation module on the activations: trained, frozen at its random init (BiBench), or off
    activation_noise: Literal["trained", "frozen", "off"] = "trained"
    noise_scale: NonNegativeFloat = 0.1  # η's start: η_e = noise_scale·(1 + cos(π(e+1)/E))/2 (dimensionless)
    noise_reduction: PositiveInt = 64  # k: the noise network's hidden width is features // k (released 64)
    noise_sine: NonNegativeFloat = 0.1  # coefficient of the sin(x) term of e(x) (dimensionless; released 0.1)
    # what BatchNorm's output passes before the sign; hardtanh = BiBench's
    activation: Literal["hardtanh", "identity", "prelu"] = "hardtanh"
    fp_shortcuts: bool = False  # keep the 1×1 shortcut convs full precision (paper mode)


@METHODS.register("fda")
class FdaMethod(BinaryMethod):
    Config = FdaConfig
    paper_recipe = {"arch": "bireal_resnet18", "epochs": 400, "batch_size": 128}
    paper_config = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "cosine", "lr_min": 0.0,
                    "activation": "hardtanh", "fp_shortcuts": True, "activation_noise": "frozen"}

    @property
    def soft_weights(self) -> bool:
        return self.config.weight_noise and self.config.noise_scale > 0

    def make_weight_quantizer(self, layer):
        c = self.config
        return FourierWeight(c.omega, c.terms_start, scale=c.weight_scale)

    def make_input_quantizer(self, layer):
        return FourierActivation(self.config.omega, self.config.terms_start)

    def build_model(self, arch, num_classes, in_channels, image_size):
        """The binarized backbone; the noise modules, one or two per binary layer, go in `noise_modules` beside
        it (keyed by the layer's module path, `.` written `-`) and are attached to the layer's quantizers."""
        model = super().build_model(arch, num_classes, in_channels, image_size)
        c = self.config
        self.noise_modules = nn.ModuleDict()
        for name, layer in binary_layers(model):
            if c.weight_noise:
                self.noise_modules[_key(name, "weight")] = NoiseAdaptation(
                    layer.weight[0].numel(), c.noise_reduction, c.noise_sine, rows=True)
            if c.activation_noise != "off":
                linear = isinstance(layer, nn.Linear)
                features = layer.in_features if linear else layer.in_channels
                noise = NoiseAdaptation(features, c.noise_reduction, c.noise_sine, rows=False, features_last=linear)
                noise.requires_grad_(c.activation_noise == "trained")
                self.noise_modules[_key(name, "input")] = noise
        self.attach_noise(binary_layers(model))
        return model

    def attach_noise(self, layers) -> None:
        """Hand each binary layer's quantizers their noise modules (again at every epoch start, so that a copy
        of the whole method, whose quantizers drop the reference, trains with its own copies)."""
        for name, layer in layers:
            layer.weight_quantizer.attach(self.noise_modules[_key(name, "weight")]
                                          if _key(name, "weight") in self.noise_modules else None)
            layer.input_quantizer.attach(self.noise_modules[_key(name, "input")]
                                         if _key(name, "input") in self.noise_modules else None)

    def set_schedule(self, epoch: int) -> tuple[float, int]:
        """η and the number of terms of `epoch`, set in every binary layer's two quantizers."""
        c = self.config
        eta = noise_weight_at(epoch, self.epochs, c.noise_scale)
        terms = terms_at(epoch, self.epochs, c.terms_start, c.terms_added)
        self.attach_noise(self.binary_layers())
        self.set_quantizer_param("noise_weight", eta, inputs=True)
        self.set_quantizer_param("terms", terms, inputs=True)
        return eta, terms

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        eta, terms = self.set_schedule(self.current_epoch)
        self.log("train/noise_weight", eta)
        self.log("train/fourier_terms", float(terms))


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "omega": trial.suggest_float("omega", 0.05, 1.0, log=True),
            "terms_start": trial.suggest_int("terms_start", 1, 20),
            "noise_scale": trial.suggest_float("noise_scale", 0.0, 0.3)}
