"""`bnn_plus`: BNN+ (Darabi, Belbahri, Courbariaux & Partovi Nia, 2018), as a ProxConnect++ member.

Papers: "BNN+: Improved Binary Network Training" (Sajad Darabi, Mouloud Belbahri, Matthieu Courbariaux &
Vahid Partovi Nia, arXiv:1812.11800) and, for its place in the family, "Understanding Neural Network
Binarization with Forward and Backward Proximal Quantizers" (Yiwei Lu, Yaoliang Yu, Xinlin Li & Vahid
Partovi Nia, NeurIPS 2023, arXiv:2402.17710; only its abstract was at hand).

What is reproduced: PC++ with forward F = sign and backward B = SS_β, the SignSwish
SS_β(x) = 2σ(βx)·[1 + βx·(1 − σ(βx))] − 1: w = sign(θ) with sign(0) = +1, and θ receives
SS'_β(θ)·ℓ' with SS'_β(x) = β·(2 − βx·tanh(βx/2))/(1 + cosh(βx)), β = 5 fixed (quantizer
`bnn_plus`). SS' peaks at β near θ = 0, turns slightly negative for |βθ| ≳ 2.4 and vanishes for
large |θ|, so it plays the role of BinaryNet's gradient gate without clipping the latent weights.
Binary weights, real activations (BWN). Training already runs on hard weights.

Released code: none public that we could find, for either paper (searched the GitHub index by name and
topic; Papers with Code lists no implementation of BNN+). Paper mode therefore equals fair
mode: neither BNN+'s recipe nor the PC++ paper's was at hand to reproduce.

Deviations: BNN+'s regularizer that pulls latent weights towards ±1 and its learnable scaling
factors are not reproduced (PC++ describes BNN+ by its quantizers only); activations are not
binarized; the optimizer is the shared Adam recipe. BNN+ applies SS'_β to the sign of activations;
here, as in PC++, it is the weights' backward quantizer. sign(0) = +1 in the forward (a torch.sign
implementation would give 0); no released code says which the authors used.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class BnnPlusConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 because decay pulls latent weights to the sign boundary
    beta: PositiveFloat = 5.0  # SignSwish steepness β (per unit of θ): SS'_β(0) = β, width of the gate ~2.4/β


@METHODS.register("bnn_plus")
class BnnPlusMethod(BinaryMethod):
    Config = BnnPlusConfig

    def make_weight_quantizer(self, layer):
        return get_quantizer("bnn_plus", beta=self.config.beta)


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "beta": trial.suggest_float("beta", 1.0, 50.0, log=True)}
