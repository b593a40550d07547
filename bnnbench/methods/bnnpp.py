"""`bnnpp`: BNN++ (Lu, Yu, Li & Partovi Nia, NeurIPS 2023), the ProxConnect++ paper's own method.

Paper: "Understanding Neural Network Binarization with Forward and Backward Proximal Quantizers" by
Yiwei Lu, Yaoliang Yu, Xinlin Li and Vahid Partovi Nia, NeurIPS 2023, arXiv:2402.17710 (only its
abstract was at hand).

What is reproduced: PC++ with forward and backward quantizer both the SignSwish F = B = SS_μ,
SS_μ(x) = 2σ(μx)·[1 + μx·(1 − σ(μx))] − 1: while training w = SS_μ(θ) (soft) and θ receives
SS'_μ(θ)·ℓ' — the true derivative, so this is ordinary backpropagation through a smooth quantizer
(quantizer `bnnpp`) — with μ increasing so that SS_μ → sign. μ grows linearly, once per epoch,
from `mu_start` in the first epoch to `mu_end` in the last. Binary weights, real activations (BWN).
Validation and test always use sign(θ); `train/mu` and `train/binary_gap` are logged each epoch.

Why `mu_end` = 1000 and not 10: μ multiplies θ, and SS_μ(θ) is near ±1 only where μ·|θ| ≳ 3. Latent
weights keep PyTorch's default initialisation, mean |θ| ≈ 0.025 for a 3×3 conv with 32–64 input
channels (less in wider layers), and with BatchNorm after every binary conv they barely grow. With
μ ending at 10 training stays on soft weights (digits, 30 epochs: `train/binary_gap` 0.75 at the
end) and hard-sign evaluation reaches 0.55–0.66 test accuracy; ending at 300/1000/3000 gives
0.99/0.99/0.99 with gaps 0.12/0.04/0.01 (one seed).

Released code: none public that we could find (searched the GitHub index by name and topic). Paper
mode therefore equals fair mode: no published recipe or released rule is known to reproduce.

Deviations: the μ schedule (linear from `mu_start` to `mu_end`, default 1 → 1000 rather than the
1 → 10 of `pc`, see above) and the optimizer (the shared Adam recipe) are our choices,
not the paper's; activations are not binarized (the paper also covers W1A1). sign(0) does not arise
in training (SS_μ(0) = 0, as the formula gives); evaluation maps θ = 0 to +1.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat
from bnnbench.errors import BadInput
from bnnbench.methods.pc import PcMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class BnnppConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 because decay pulls latent weights to the sign boundary
    mu_start: PositiveFloat = 1.0  # SignSwish steepness μ in the first epoch (per unit of θ)
    mu_end: PositiveFloat = 1000.0  # μ in the last epoch (per unit of θ); linear in between

    def __post_init__(self):
        super().__post_init__()
        if not self.mu_start <= self.mu_end:
            raise BadInput(f"bad values mu_start={self.mu_start!r}, mu_end={self.mu_end!r} for method 'bnnpp': "
                           "need mu_start <= mu_end")


@METHODS.register("bnnpp")
class BnnppMethod(PcMethod):
    """ProxConnect's linear μ schedule (inherited) with SignSwish as forward and backward quantizer."""

    Config = BnnppConfig

    def make_weight_quantizer(self, layer):
        return get_quantizer("bnnpp", mu=self.config.mu_start)


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "mu_start": trial.suggest_float("mu_start", 0.5, 5.0, log=True),
            "mu_end": trial.suggest_float("mu_end", 10.0, 10000.0, log=True)}
