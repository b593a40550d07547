"""`adaste`: AdaSTE, the adaptive straight-through estimator (Le, Høier, Lin & Zach, CVPR 2022).

Paper: "AdaSTE: An Adaptive Straight-Through Estimator to Train Binary Neural Networks"
(shared/papers/001_186048eae1a08f0c.txt, arXiv:2112.02880; released code intellhave/AdaSTE).

What is reproduced: binary weights, real activations (BWN). The forward map is the proximal
quantizer w* = s_μ(θ) = clip((θ + μ(1+α)·sgn θ)/(1+μ), −1, 1) (eq. 32), which is exactly sign(θ)
once μα ≥ 1; the backward pass is the perturbed chain rule g = (w* − ŵ)/β with ŵ = s_μ(θ − β·ℓ')
(eqs. 20–23) and the per-element β of eq. 38, which the paper uses in all experiments, also while
μα < 1. In the binary regime this is g = ℓ' for |θ| < 2, ℓ'/|θ| for |θ| ≥ 2 and 0 where the
step would not move θ towards a sign flip (quantizer `adaste`, see `quantizers._AdaSTE`).

Annealing (`anneal=true`, the paper's better setting): μ grows geometrically, once per epoch, from
`mu_start` at the first epoch to 1/α at epoch round(anneal_fraction × epochs) and stays there:
μ_e = min(mu_start · γ^e, 1/α) with γ = (1/(α·mu_start))^(1/round(anneal_fraction × epochs)).
The paper starts at μ = 1 and reaches 1/α after about 200 of 500 epochs (`anneal_fraction` 0.4); the
released code's μ₀ = 0.01 × 1.05 per epoch is about `mu_start=0.01 anneal_fraction=0.38` at 500
epochs. Tying the schedule to the run's length keeps it meaningful at any budget. Without annealing
μ = 1/α from the start. μ is logged as `train/mu`; while μα < 1 the training weights are soft and
`train/binary_gap` says how far from ±1. Validation and test always use sign(θ).

Behaviour to expect with the shared recipe (Adam, default initialisation): in the binary regime g is
nonzero only where the step moves θ towards 0, so nothing pushes a latent weight away from 0 again;
|θ| ratchets down (digits: mean |θ| 0.023 → 1e-4 within 30 epochs) and each weight then flips whenever
the sign of its gradient changes (`train/flip_rate` ≈ 0.45 per epoch), and validation accuracy
jumps from epoch to epoch. The released code's ±10 initialisation and its own optimizer behave
differently; they are not reproduced (see Deviations).

Paper mode: the paper's CIFAR ResNet-18 setting — ResNet-18, batch 128, 500 epochs, lr 3e-4 with
cosine decay, α = 0.01, annealing from μ = 1 over the first 40 % of training; CIFAR-10's 10 %
validation split is the dataset's own (CIFAR10DataModule). Table 1: CIFAR-10 ResNet-18
94.11 ± 0.08 (annealing) / 93.96 ± 0.14 (without).

Deviations:
- Adam (first and second moments) instead of the released code's optimizer (first moment only, a
  θ-decay term, gradients scaled by N²); no weight decay.
- Latent weights keep PyTorch's default initialisation, not the released code's ±10.
- Only conv/linear weights are binarized, the first conv and the classifier stay full precision
  (the shared backbone), BatchNorm keeps its affine parameters; the released code binarizes every
  parameter including the classifier bias and uses BatchNorm without affine parameters.
- The released code's extra gradient scale min(0.5, 1/|θ|) in the binary regime is not applied:
  the paper's eq. 38 is.
- θ = 0 is treated as +0 in eq. 38 (sgn(θ)·ℓ' > 0, matching sgn(0) = +1 in the forward), and at
  θ̃ = 0 ŵ is the mean 0 of the two minimizers ±s_μ(0); both keep |g| ≤ |ℓ'| (eq. 37).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from bnnbench.config import MethodConfig, NonNegativeFloat, OpenFraction, PositiveFloat, Range
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class AdasteConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step); the shared fair-mode rate (paper mode: 3e-4)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 because decay pulls latent weights to the sign boundary
    alpha: OpenFraction = 0.01  # α of eq. 32, in (0, 1) (dimensionless); s_μ is exactly sign once μ ≥ 1/α
    anneal: bool = True  # grow μ from mu_start to 1/α (homotopy); false: μ = 1/α, binary from the start
    mu_start: PositiveFloat = 1.0  # μ during the first epoch when annealing (dimensionless; released code: 0.01)
    # fraction of the run's epochs after which μ = 1/α, in (0, 1] (paper: 200 of 500)
    anneal_fraction: Annotated[float, Range(0.0, 1.0, low_open=True)] = 0.4


def annealed_mu(epoch: int, epochs: int, config: AdasteConfig) -> float:
    """μ for 0-based `epoch` of a run of `epochs` epochs (see the module docstring)."""
    mu_binary = 1.0 / config.alpha
    anneal_epochs = max(1, round(config.anneal_fraction * epochs))
    if not config.anneal or epoch >= anneal_epochs or config.mu_start >= mu_binary:
        return mu_binary
    growth = (mu_binary / config.mu_start) ** (1.0 / anneal_epochs)
    return min(config.mu_start * growth**epoch, mu_binary)


@METHODS.register("adaste")
class AdasteMethod(BinaryMethod):
    Config = AdasteConfig
    paper_recipe = {"arch": "resnet18", "epochs": 500, "batch_size": 128}
    paper_config = {"lr": 3e-4, "scheduler": "cosine", "anneal": True, "mu_start": 1.0, "anneal_fraction": 0.4}

    @property
    def soft_weights(self) -> bool:
        return self.config.anneal

    def make_weight_quantizer(self):
        return get_quantizer("adaste", mu=annealed_mu(0, self.epochs, self.config), alpha=self.config.alpha)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        mu = annealed_mu(self.current_epoch, self.epochs, self.config)
        self.set_quantizer_param("mu", mu)
        self.log("train/mu", mu)


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "anneal": trial.suggest_categorical("anneal", [True, False]),
            "mu_start": trial.suggest_float("mu_start", 0.01, 10.0, log=True),
            "anneal_fraction": trial.suggest_float("anneal_fraction", 0.1, 0.8)}
