"""Quantizers: modules that map latent weights (or activations) to what the forward pass uses.

Each quantizer is a `torch.nn.Module` whose forward is the method's forward map and whose backward
is the method's surrogate gradient, written as a `torch.autograd.Function` so the effective values
are exactly ±1 (or ±α): the common trick `x + (sign(x) - x).detach()` is not exact in floating point.
`sign(0) = +1` (docs/methods.md, conventions); `torch.sign` maps 0 to 0 and is used only by the
`*_released` quantizers at the end, which reproduce released code that relies on it (`sign_with_zero`).
Saved tensors are kept small (boolean masks, not copies of the input) unless a fused kernel on the input is
much faster (`unit_gate_backward`).

`get_quantizer(name, **params)` is the public entry point; methods build their layers with it.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from bnnbench.errors import BadInput
from bnnbench.registry import unknown_choice


def sign(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1 (−0.0 included), so the result is exactly ±1.

    Eager: copysign(1, x + 0.0); adding +0.0 turns −0.0 into +0.0 (IEEE round-to-nearest), so every
    zero maps to +1 like `torch.where(x >= 0, 1, -1)`, at a sixth of its cost on the CPU (eager `where`
    with scalar operands is not vectorized: 4.0 vs 0.4 ms on 2M elements). Under `torch.compile` the
    `where` form is used instead: Inductor folds x + 0.0 into x, which would send −0.0 to −1, and it
    fuses the `where` into the neighbouring kernel anyway.
    """
    if torch.compiler.is_compiling():
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    s = x.detach() + 0.0  # the one new tensor; sign has no gradient of its own (surrogates are Functions)
    return torch.copysign(s.new_ones(()), s, out=s)


class _SignIdentity(torch.autograd.Function):
    """Forward sign(x); backward passes ℓ' unchanged (BinaryConnect's straight-through estimator)."""

    @staticmethod
    def forward(ctx, x):
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _unit_gate(x: torch.Tensor) -> torch.Tensor:
    """1[|x| ≤ 1] in x's dtype from min/max arithmetic, without a comparison, for compiled graphs.

    Inductor's CPU code stores bool tensors ~60× slower than float ones (8 vs 0.12 ms per 2M
    elements, torch 2.14), and its partitioner saves the 1-byte result of a comparison for the
    backward pass whenever it can: that made compiled `bnn` 1.8× the FP step. Exact: 1 − |x| is 0
    at |x| = 1 and at least one ulp (eps) away from 0 elsewhere, so scaled by 1/eps and shifted by 1
    it is ≥ 1 inside and ≤ 0 outside, and the clamp gives exactly 1 or 0 (−inf outside too).
    """
    return ((1 - x.abs()) / torch.finfo(x.dtype).eps + 1).clamp(0, 1)


def unit_gate_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad·1[|x| ≤ 1] in one fused pass, eager: PyTorch's hardtanh backward kernel passes grad where
    lo < x < hi, and with lo, hi = ∓(1 + eps), the neighbours of ∓1 in x's dtype, that is exactly |x| ≤ 1
    (a NaN x passes grad, as hardtanh's own gradient does). A bool mask (`abs`, `le` in the forward,
    `where` in the backward) took 32 of `bnn`'s 54 extra ms a resnet20 step; this takes 4–8 ms, at the
    price of saving x (4 bytes an element, not 1)."""
    bound = 1 + torch.finfo(x.dtype).eps  # the next value above 1 (exact in every float dtype)
    return torch.ops.aten.hardtanh_backward(grad, x, -bound, bound)


class _SignClipped(torch.autograd.Function):
    """Forward sign(x); backward ℓ'·1[|x| ≤ 1] (BinaryNet, Hubara et al. 2016).

    Saves x. Eager gates with `unit_gate_backward`; compiled recomputes the gate with `_unit_gate`, which
    Inductor fuses (see there why not a bool).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if torch.compiler.is_compiling():
            return grad * _unit_gate(x)
        return unit_gate_backward(grad, x)


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


class _ChannelScaledSign(torch.autograd.Function):
    """XNOR-Net (Rastegari et al. 2016): w = α_c·sign(θ), α_c = mean |θ| over output channel c (dim 0).

    Backward, the derivative of α_c·sign(θ) with sign's straight-through gate (docs/methods.md, `xnor`):
    g = ℓ'·α_c·1[|θ| ≤ 1] + (1/n)·sign(θ)·Σ_c(ℓ'·sign(θ)), n = elements per output channel. The
    second term is α_c's own dependence on θ (∂α_c/∂θ_j = sign(θ_j)/n).
    """

    @staticmethod
    def forward(ctx, theta):
        flat = theta.reshape(theta.shape[0], -1)
        alpha = flat.abs().mean(dim=1, keepdim=True)
        ctx.save_for_backward(theta.abs() <= 1, theta >= 0, alpha)
        return (alpha * sign(flat)).reshape(theta.shape)

    @staticmethod
    def backward(ctx, grad):
        inside, positive, alpha = ctx.saved_tensors
        flat = grad.reshape(grad.shape[0], -1)
        s = torch.where(positive, 1.0, -1.0).to(grad.dtype).reshape(flat.shape)
        n = flat.shape[1]
        through_sign = flat * alpha * inside.reshape(flat.shape)
        through_alpha = s * (flat * s).sum(dim=1, keepdim=True) / n
        return (through_sign + through_alpha).reshape(grad.shape)


@quantizer("xnor")
class ChannelScaledSign(nn.Module):
    """`xnor`: α_c·sign(θ) with α_c = mean |θ| per output channel; see `_ChannelScaledSign`."""

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _ChannelScaledSign.apply(theta)


@quantizer("direct")
class DirectWeight(nn.Module):
    """`direct`: the stored weight is the optimisation variable itself (BNEW keeps it in [−1, 1], Bop
    stores ±1): training forward is w unchanged and ℓ' reaches it unchanged; in eval mode the forward
    is sign(w), so validation and test always run on hard binary weights (docs/methods.md, conventions).
    For Bop's ±1 weights the two coincide.
    """

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w if self.training else _SignIdentity.apply(w)


# -- soft and annealed weight quantizers: AdaSTE, ProxConnect, BNN+, BNN++, mirror descent ---------------
# Their parameter (μ or β) is a plain float attribute that the method re-sets at each epoch (or step).
# In eval mode they all return sign(θ): validation and test run on hard binary weights (docs/methods.md).
# Each Function saves only θ, which is the latent weight itself (a Parameter), so nothing is copied.


def prox_sign(theta: torch.Tensor, mu: float, alpha: float) -> torch.Tensor:
    """AdaSTE's s_μ(θ) = clip((θ + μ(1+α)·sgn θ)/(1+μ), −1, 1) (eq. 32), with sgn(0) = +1.

    Written as sgn(θ)·min(1, (|θ| + μ(1+α))/(1+μ)) so it is odd; once μα ≥ 1 it is exactly sign(θ)
    (eq. 33), returned directly because rounding could leave 1 − ε where the maths gives 1.
    """
    s = sign(theta)
    if mu * alpha >= 1:
        return s
    return s * ((theta.abs() + mu * (1 + alpha)) / (1 + mu)).clamp(max=1.0)


def _sigmoids(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """σ(z) and σ(−z), each computed directly so neither loses precision as 1 − σ would."""
    return torch.sigmoid(z), torch.sigmoid(-z)


def sign_swish(x: torch.Tensor, beta: float) -> torch.Tensor:
    """SS_β(x) = 2σ(βx)·[1 + βx·(1 − σ(βx))] − 1, written as tanh(βx/2) + 2βx·σ(βx)σ(−βx) (same value,
    no cancellation near 0, no overflow for large |βx|)."""
    z = beta * x
    p, q = _sigmoids(z)
    return torch.tanh(z / 2) + 2 * z * p * q


def sign_swish_grad(x: torch.Tensor, beta: float) -> torch.Tensor:
    """SS'_β(x) = β·(2 − βx·tanh(βx/2)) / (1 + cosh(βx)), with 1/(1 + cosh z) = 2σ(z)σ(−z): cosh
    overflows for |βx| > 89 in float32, the sigmoids underflow harmlessly to 0."""
    z = beta * x
    p, q = _sigmoids(z)
    return 2 * beta * p * q * (2 - z * torch.tanh(z / 2))


class _AdaSTE(torch.autograd.Function):
    """AdaSTE (Le et al., CVPR 2022): forward w* = s_μ(θ) (eq. 32); backward g = (w* − ŵ)/β (eq. 23) with
    ŵ = s_μ(θ̃), θ̃ = θ − β·ℓ' and per-element β from eq. 38.

    Where sgn(θ)·ℓ' > 0, β = max(2, |θ|)/|ℓ'|, so β·ℓ' = sgn(θ)·max(2, |θ|) and θ̃ is taken in closed form,
    sgn(θ)·(|θ| − max(2, |θ|)): evaluating θ − β·ℓ' in floating point lands on ±tiny instead of 0 for
    |θ| ≥ 2 and flips ŵ at random. At θ̃ = 0 the inner problem E(·; 0) has the two minimizers ±s_μ(0);
    ŵ takes their mean, 0, so the update is ℓ'/|θ| whatever the sign of θ (AdaSTE eq. 23). Elsewhere
    β = 1 and θ̃ = θ − ℓ' lies on θ's own side of 0 (no cancellation), so in the binary regime g = 0 there.
    θ = 0 counts as +0, as in the forward (sgn(0) = +1): the test is sgn(θ)·ℓ' > 0, not θ·ℓ' > 0, which
    keeps |g| ≤ |ℓ'| (eq. 37) at θ = 0 where the literal rule would give β = 1 and g = s_μ(0) − s_μ(−ℓ').
    Binary regime (μα ≥ 1): g = ℓ' for |θ| < 2, ℓ'/|θ| for |θ| ≥ 2, 0 where sgn(θ)·ℓ' ≤ 0.
    """

    @staticmethod
    def forward(ctx, theta, mu: float, alpha: float):
        ctx.save_for_backward(theta)
        ctx.mu, ctx.alpha = mu, alpha
        return prox_sign(theta, mu, alpha)

    @staticmethod
    def backward(ctx, grad):
        (theta,) = ctx.saved_tensors
        mu, alpha = ctx.mu, ctx.alpha
        toward_zero = torch.where(theta >= 0, grad > 0, grad < 0)  # sgn(θ)·ℓ' > 0: descent flips the sign
        magnitude = theta.abs()
        if mu * alpha >= 1:  # the closed form of the binary regime (docstring): 2.4 vs 8.1 ms on resnet20
            return torch.where(toward_zero, grad / torch.where(magnitude >= 2, magnitude, 1.0), 0.0), None, None
        reach = magnitude.clamp(min=2.0)  # max(2, |θ|) = β·|ℓ'| where `toward_zero`
        theta_tilde = torch.where(toward_zero, sign(theta) * (magnitude - reach), theta - grad)
        w_hat = torch.where(toward_zero & (magnitude >= 2), 0.0, prox_sign(theta_tilde, mu, alpha))
        inverse_beta = torch.where(toward_zero, grad.abs() / reach, 1.0)
        return (prox_sign(theta, mu, alpha) - w_hat) * inverse_beta, None, None


class _ProxSignIdentity(torch.autograd.Function):
    """ProxConnect: forward s_μ(θ), backward ℓ' unchanged (PC++ with F = P_μ, B' = 1)."""

    @staticmethod
    def forward(ctx, theta, mu: float, alpha: float):
        return prox_sign(theta, mu, alpha)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


class _SignSwishBackward(torch.autograd.Function):
    """BNN+: forward sign(θ), backward SS'_β(θ)·ℓ' (PC++ with F = sign, B = SS_β)."""

    @staticmethod
    def forward(ctx, theta, beta: float):
        ctx.save_for_backward(theta)
        ctx.beta = beta
        return sign(theta)

    @staticmethod
    def backward(ctx, grad):
        (theta,) = ctx.saved_tensors
        return grad * sign_swish_grad(theta, ctx.beta), None


class _SignSwish(torch.autograd.Function):
    """BNN++: forward SS_μ(θ), backward SS'_μ(θ)·ℓ' (PC++ with F = B = SS_μ), without autograd's
    intermediate tensors."""

    @staticmethod
    def forward(ctx, theta, mu: float):
        ctx.save_for_backward(theta)
        ctx.mu = mu
        return sign_swish(theta, mu)

    @staticmethod
    def backward(ctx, grad):
        (theta,) = ctx.saved_tensors
        return grad * sign_swish_grad(theta, ctx.mu), None


class _TanhIdentity(torch.autograd.Function):
    """Mirror descent MD-tanh-S: forward tanh(β·θ), backward ℓ' unchanged, i.e. the dual-space update
    θ ← θ − η·ℓ'(w) with mirror map w = tanh(β·θ)."""

    @staticmethod
    def forward(ctx, theta, beta: float):
        return torch.tanh(beta * theta)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ApproxSign(torch.autograd.Function):
    """Bi-Real Net's ApproxSign (Liu et al. 2018): forward sign(x), backward ℓ'·(2 − 2|x|)·1[|x| < 1], the
    derivative of the piecewise quadratic that approximates sign. Saves x: the factor needs |x|."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return x.abs().mul_(-2).add_(2).clamp_(min=0.0).mul_(grad)  # one new tensor, not five


def _check_positive(name: str, value: float, quantizer_name: str) -> float:
    if not value > 0:
        raise BadInput(f"bad {name} {value!r} for quantizer '{quantizer_name}': must be > 0")
    return float(value)


def _check_alpha(alpha: float, quantizer_name: str) -> float:
    if not 0 < alpha < 1:
        raise BadInput(f"bad alpha {alpha!r} for quantizer '{quantizer_name}': must lie in (0, 1)")
    return float(alpha)


@quantizer("adaste")
class AdaSTE(nn.Module):
    """`adaste`: forward s_μ(θ), backward AdaSTE's adaptive finite difference; see `_AdaSTE`.

    `mu` is re-set by the method as it anneals (μ = 1/α: exactly binary from the start).
    """

    def __init__(self, mu: float = 100.0, alpha: float = 0.01):
        super().__init__()
        self.mu = _check_positive("mu", mu, "adaste")
        self.alpha = _check_alpha(alpha, "adaste")

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _AdaSTE.apply(theta, self.mu, self.alpha) if self.training else sign(theta)

    def extra_repr(self) -> str:
        return f"mu={self.mu:.4g}, alpha={self.alpha:.4g}"


@quantizer("pc")
class ProxConnect(nn.Module):
    """`pc`: forward s_μ(θ) (AdaSTE's proximal quantizer as ProxConnect's P_μ), identity backward."""

    def __init__(self, mu: float = 1.0, alpha: float = 0.1):
        super().__init__()
        self.mu = _check_positive("mu", mu, "pc")
        self.alpha = _check_alpha(alpha, "pc")

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _ProxSignIdentity.apply(theta, self.mu, self.alpha) if self.training else sign(theta)

    def extra_repr(self) -> str:
        return f"mu={self.mu:.4g}, alpha={self.alpha:.4g}"


@quantizer("bnn_plus")
class SignSwishGrad(nn.Module):
    """`bnn_plus`: forward sign(θ), backward SS'_β(θ)·ℓ' (BNN+, Darabi et al. 2018), β fixed."""

    def __init__(self, beta: float = 5.0):
        super().__init__()
        self.beta = _check_positive("beta", beta, "bnn_plus")

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _SignSwishBackward.apply(theta, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta:.4g}"


@quantizer("bnnpp")
class SignSwish(nn.Module):
    """`bnnpp`: forward SS_μ(θ) while training and sign(θ) in eval, backward SS'_μ(θ)·ℓ' (BNN++)."""

    def __init__(self, mu: float = 1.0):
        super().__init__()
        self.mu = _check_positive("mu", mu, "bnnpp")

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _SignSwish.apply(theta, self.mu) if self.training else sign(theta)

    def extra_repr(self) -> str:
        return f"mu={self.mu:.4g}"


@quantizer("bmd")
class MirrorTanh(nn.Module):
    """`bmd`: forward tanh(β·θ) while training and sign(θ) in eval, identity backward (MD-tanh-S)."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = _check_positive("beta", beta, "bmd")

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _TanhIdentity.apply(theta, self.beta) if self.training else sign(theta)

    def extra_repr(self) -> str:
        return f"beta={self.beta:.4g}"


@quantizer("approx_sign")
class ApproxSign(nn.Module):
    """`approx_sign`: activations sign(x) with Bi-Real Net's piecewise-quadratic gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ApproxSign.apply(x)


# -- released-code variants: what an author's released code computes, for paper mode -------------------------
# They keep `torch.sign`'s 0 ↦ 0 where the released code uses it (`sign_with_zero`); every other quantizer
# maps 0 to +1 (`sign`). Exact zeros are rare for latent weights but not impossible.


def sign_with_zero(x: torch.Tensor) -> torch.Tensor:
    """`torch.sign`: −1, 0 or +1 (0 ↦ 0), as the released codes that paper mode reproduces compute it."""
    return torch.sign(x.detach())


def adaste_released_forward(theta: torch.Tensor, mu: float, alpha: float) -> torch.Tensor:
    """w* of the released AdaSTE code: hardtanh((θ + μ(1+α)·torch.sign(θ))/(1+μ)), so θ = 0 gives 0.

    Evaluated in the released order: the scalar μ(1+α) first, then the tensor arithmetic. Unlike
    `prox_sign` there is no exact-sign shortcut at μα ≥ 1: the clip already yields ±1 there (and 0 at 0).
    """
    return torch.clamp((theta + mu * (1 + alpha) * sign_with_zero(theta)) / (1 + mu), -1.0, 1.0)


def adaste_released_scale(theta: torch.Tensor, grad: torch.Tensor, mu: float, alpha: float) -> torch.Tensor:
    """The factor the released AdaSTE code multiplies into ℓ' (its optimizer's gradient step), per element.

    Only elements with |ℓ'| > 1e-3 are touched; every other element keeps the default factor. With
    c = μα and "toward" meaning sgn(θ) = sgn(ℓ') (descent moves θ towards 0):
    - binary regime (c ≥ 1), default 1; where |θ| > 1e-3: toward → min(0.5, 1/|θ|), away → 0;
    - soft regime (c < 1), default 1/(1+μ); with θ beyond ±max(1e-6, 1 − c) (saturated): toward →
      min(0.5, (1 + 2μ + μα)/((1+μ)·|θ|)), away → 0; with 1e-6 < |θ| < 1 − c: toward →
      clamp((2μ(1+α) − θ)/((1+μ)·|θ|), 0, 0.5) (θ, not |θ|, in the numerator: the rule is not odd),
      away → the default.
    """
    positive_grad, negative_grad = grad > 1e-3, grad < -1e-3
    magnitude = theta.abs()
    if mu * alpha < 1:
        c = mu * alpha
        positive_far, negative_far = theta > max(1e-6, 1 - c), theta < min(-1e-6, -1 + c)
        positive_mid = (theta > 1e-6) & (theta < 1 - c)
        negative_mid = (theta > -1 + c) & (theta < -1e-6)
        far_toward = (positive_far & positive_grad) | (negative_far & negative_grad)
        mid_toward = (positive_mid & positive_grad) | (negative_mid & negative_grad)
        far_away = (positive_far & negative_grad) | (negative_far & positive_grad)
        scale = torch.full_like(theta, 1 / (1 + mu))
        scale = torch.where(far_toward, ((1 + 2 * mu + mu * alpha) / (1 + mu) / magnitude).clamp(0, 0.5), scale)
        scale = torch.where(mid_toward, ((2 * mu * (1 + alpha) - theta) / (1 + mu) / magnitude).clamp(0, 0.5), scale)
        return torch.where(far_away, 0.0, scale)
    positive, negative = theta > 1e-3, theta < -1e-3
    toward = (positive & positive_grad) | (negative & negative_grad)
    away = (positive & negative_grad) | (negative & positive_grad)
    scale = torch.where(toward, (1.0 / magnitude).clamp(0, 0.5), torch.ones_like(theta))
    return torch.where(away, 0.0, scale)


class _AdasteReleased(torch.autograd.Function):
    """Forward `adaste_released_forward`, backward ℓ'·`adaste_released_scale` (intellhave/AdaSTE)."""

    @staticmethod
    def forward(ctx, theta, mu: float, alpha: float):
        ctx.save_for_backward(theta)
        ctx.mu, ctx.alpha = mu, alpha
        return adaste_released_forward(theta, mu, alpha)

    @staticmethod
    def backward(ctx, grad):
        (theta,) = ctx.saved_tensors
        return grad * adaste_released_scale(theta, grad, ctx.mu, ctx.alpha), None, None


@quantizer("adaste_released")
class AdasteReleased(nn.Module):
    """`adaste_released`: AdaSTE as its released code computes it (see `adaste_released_scale`); eval
    forward torch.sign(θ), as the released evaluation. `mu` is re-set by the method each epoch."""

    def __init__(self, mu: float = 0.01, alpha: float = 0.01):
        super().__init__()
        self.mu = _check_positive("mu", mu, "adaste_released")
        self.alpha = _check_alpha(alpha, "adaste_released")

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _AdasteReleased.apply(theta, self.mu, self.alpha) if self.training else sign_with_zero(theta)

    def extra_repr(self) -> str:
        return f"mu={self.mu:.4g}, alpha={self.alpha:.4g}"


class _XnorReleased(torch.autograd.Function):
    """XNOR-Net as the jiecaoyu/XNOR-Net-PyTorch CIFAR code computes it: w = α_c·torch.sign(θ) with
    α_c = mean |θ| over output channel c; θ receives
    (α_c·ℓ'·1[|θ| ≤ 1] + torch.sign(θ)·(1/n)·Σ_c ℓ'·torch.sign(θ))·n·(1 − 1/C_in),
    n = elements per output channel, C_in = dim 1 of the weight. Saves θ (the Parameter) and α."""

    @staticmethod
    def forward(ctx, theta):
        flat = theta.reshape(theta.shape[0], -1)
        alpha = flat.abs().mean(dim=1, keepdim=True)
        ctx.save_for_backward(theta, alpha)
        return (alpha * sign_with_zero(flat)).reshape(theta.shape)

    @staticmethod
    def backward(ctx, grad):
        theta, alpha = ctx.saved_tensors
        flat_theta = theta.reshape(theta.shape[0], -1)
        flat = grad.reshape(flat_theta.shape)
        s = sign_with_zero(flat_theta).to(grad.dtype)
        n = flat.shape[1]
        through_sign = flat * alpha * (flat_theta.abs() <= 1)
        through_alpha = s * (flat * s).sum(dim=1, keepdim=True) / n
        return ((through_sign + through_alpha) * (n * (1.0 - 1.0 / theta.shape[1]))).reshape(grad.shape)


@quantizer("xnor_released")
class XnorReleased(nn.Module):
    """`xnor_released`: XNOR weights as the XNOR-Net-PyTorch CIFAR code; see `_XnorReleased`."""

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _XnorReleased.apply(theta)


class _BinActiveReleased(torch.autograd.Function):
    """Activations as the XNOR-Net-PyTorch CIFAR code's BinActive: forward torch.sign(x) (0 ↦ 0),
    backward ℓ'·1[|x| < 1] (zero at |x| = 1, where `bnn` passes the gradient)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x.abs() < 1)
        return sign_with_zero(x)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside


@quantizer("xnor_input_released")
class BinActiveReleased(nn.Module):
    """`xnor_input_released`: torch.sign activations with the strict gate 1[|x| < 1]; see `_BinActiveReleased`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BinActiveReleased.apply(x)
