"""`pc`: ProxConnect (Dockhorn et al., NeurIPS 2021), as a member of ProxConnect++ (Lu et al., NeurIPS 2023).

Papers: "Demystifying and Generalizing BinaryConnect" (Tim Dockhorn, Yaoliang Yu, Eyyüb Sari, Mahdi
Zolnouri & Vahid Partovi Nia, NeurIPS 2021, arXiv:2110.13220) and "Understanding Neural Network
Binarization with Forward and Backward Proximal Quantizers" (Yiwei Lu, Yaoliang Yu, Xinlin Li & Vahid
Partovi Nia, NeurIPS 2023, arXiv:2402.17710; only its abstract was at hand).

What is reproduced: PC++ with forward quantizer F = P_μ, a monotone proximal quantizer, and backward
B' = 1: w = P_μ(θ) while training and θ receives ℓ' unchanged (quantizer `pc`). P_μ is AdaSTE's
s_μ(θ) = clip((θ + μ(1+α)·sgn θ)/(1+μ), −1, 1) (AdaSTE eq. 32), which moves every weight towards ±1
and is exactly sign(θ) once μα ≥ 1. μ grows linearly, once per epoch, from
`mu_start` in the first epoch to `mu_end` in the last; with the default α = 0.1 = 1/mu_end the last
epoch trains on exactly sign(θ), so the final training forward is the one evaluation uses.
Binary weights, real activations (BWN). Validation and test always use sign(θ); `train/mu` and
`train/binary_gap` are logged each epoch.

Released code: none public that we could find, for either paper (searched the GitHub index by name
and topic; Papers with Code lists no implementation of ProxConnect). Paper mode therefore equals fair
mode: no released recipe or rule is known to reproduce.

Deviations: the μ schedule (linear 1 → 10 over the run), α and the optimizer (the shared Adam
recipe) are our choices, not the papers'; Dockhorn et al.'s P_μ family is represented by s_μ only.
sgn(0) = +1 in s_μ, so θ = 0 trains on +μ(1+α)/(1+μ) and evaluates on +1 (an implementation with
torch.sign would give 0 for both); no released code says which the authors used.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnnbench.config import MethodConfig, NonNegativeFloat, OpenFraction, PositiveFloat
from bnnbench.errors import BadInput
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class PcConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 because decay pulls latent weights to the sign boundary
    alpha: OpenFraction = 0.1  # α of s_μ, in (0, 1) (dimensionless); s_μ = sign once μ ≥ 1/α
    mu_start: PositiveFloat = 1.0  # μ in the first epoch (dimensionless)
    mu_end: PositiveFloat = 10.0  # μ in the last epoch (dimensionless); linear in between

    def __post_init__(self):
        super().__post_init__()
        if not self.mu_start <= self.mu_end:
            raise BadInput(f"bad values mu_start={self.mu_start!r}, mu_end={self.mu_end!r} for method 'pc': "
                           "need mu_start <= mu_end")


def linear_mu(epoch: int, epochs: int, mu_start: float, mu_end: float) -> float:
    """μ for 0-based `epoch`: mu_start in the first epoch, mu_end in the last (epochs − 1), linear between."""
    return mu_start + (mu_end - mu_start) * min(epoch / max(epochs - 1, 1), 1.0)


@METHODS.register("pc")
class PcMethod(BinaryMethod):
    Config = PcConfig
    soft_weights = True

    def make_weight_quantizer(self, layer):
        return get_quantizer("pc", mu=self.config.mu_start, alpha=self.config.alpha)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        mu = linear_mu(self.current_epoch, self.epochs, self.config.mu_start, self.config.mu_end)
        self.set_quantizer_param("mu", mu)
        self.log("train/mu", mu)


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "alpha": trial.suggest_float("alpha", 0.01, 0.5, log=True),
            "mu_end": trial.suggest_float("mu_end", 2.0, 100.0, log=True)}
