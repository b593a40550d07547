"""Quantizers: modules that map latent weights (or activations) to what the forward pass uses.

Each quantizer is a `torch.nn.Module` whose forward is the method's forward map and whose backward
is the method's surrogate gradient, written as a `torch.autograd.Function` so the effective values
are exactly ±1 (or ±α): the common trick `x + (sign(x) - x).detach()` is not exact in floating point.
`sign(0) = +1` everywhere (METHODS.md conventions); `torch.sign` maps 0 to 0 and is never used bare.
Saved tensors are kept small (boolean masks, not copies of the input).

`get_quantizer(name, **params)` is the public entry point; methods build their layers with it.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from bnnbench.errors import BadInput
from bnnbench.registry import unknown_choice


def sign(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, so the result is exactly ±1."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class _SignIdentity(torch.autograd.Function):
    """Forward sign(x); backward passes ℓ' unchanged (BinaryConnect's straight-through estimator)."""

    @staticmethod
    def forward(ctx, x):
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _SignClipped(torch.autograd.Function):
    """Forward sign(x); backward ℓ'·1[|x| ≤ 1] (BinaryNet, Hubara et al. 2016)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x.abs() <= 1)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside


class _AlphaSign(torch.autograd.Function):
    """DRA-BNN (Pham & Nakajo), eqs. 3–4, as the released code computes them.

    Forward w = α·sign(θ). Backward: θ receives ℓ' unchanged (no α factor, no clipping) and α receives
    Σ ℓ'·sign(θ) (eq. 4). Autograd of α·ste(θ) would instead give θ the gradient α·ℓ'.
    """

    @staticmethod
    def forward(ctx, theta, alpha):
        s = sign(theta)
        ctx.save_for_backward(theta >= 0)
        return alpha * s

    @staticmethod
    def backward(ctx, grad):
        (positive,) = ctx.saved_tensors
        grad_alpha = torch.where(positive, grad, -grad).sum().reshape(1)
        return grad, grad_alpha


QUANTIZERS: dict[str, type[nn.Module]] = {}


def quantizer(name: str):
    """Register a quantizer module class under `name` for `get_quantizer`."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in QUANTIZERS:
            raise ValueError(f"quantizer '{name}' is already registered")
        QUANTIZERS[name] = cls
        return cls

    return decorator


def get_quantizer(name: str, **params) -> nn.Module:
    """A fresh quantizer module by name; unknown names or parameters list the valid ones."""
    if name not in QUANTIZERS:
        raise unknown_choice("quantizer", name, sorted(QUANTIZERS))
    cls = QUANTIZERS[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in params:
        if key not in valid:
            raise BadInput(f"unknown parameter '{key}' for quantizer '{name}'; valid: {', '.join(valid) or 'none'}")
    return cls(**params)


@quantizer("ste")
class SignSTE(nn.Module):
    """`ste`: sign forward, identity backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SignIdentity.apply(x)


@quantizer("bnn")
class SignClipped(nn.Module):
    """`bnn`: sign forward, gradient gated to |x| ≤ 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SignClipped.apply(x)


@quantizer("dra")
class AlphaSign(nn.Module):
    """`dra`: α·sign(θ) with one learnable α per layer (init 0.5); see `_AlphaSign`.

    `mean_center` binarizes θ − mean(θ) instead of θ (a variant from the paper's text); the centering
    is treated as identity in the backward pass, like the sign.
    """

    def __init__(self, alpha: float = 0.5, mean_center: bool = False):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([float(alpha)]))
        self.mean_center = mean_center

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        if self.mean_center:
            theta = theta - theta.mean().detach()
        return _AlphaSign.apply(theta, self.alpha.to(theta.dtype))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha.item():.4g}, mean_center={self.mean_center}"
