"""AdaSTE, ProxConnect, BNN+, BNN++ and mirror descent: quantizers against their equations (values
worked out by hand), their μ/β schedules, `train/binary_gap`, and a learning check on digits that a
wrong gradient fails."""

from __future__ import annotations

import math

import mlflow
import pytest
import torch

from bnnbench.config import RunConfig
from bnnbench.errors import BadInput
from bnnbench.methods.adaste import AdasteConfig, annealed_mu
from bnnbench.methods.bmd import BmdConfig, scheduled_beta
from bnnbench.methods.pc import linear_mu
from bnnbench.quantizers import get_quantizer, sign_swish, sign_swish_grad
from bnnbench.runner import build_method, resolve, run


def forward_backward(quantizer, theta, grad_out):
    """(w, g): the quantizer's output and what its backward writes into θ for ℓ' = grad_out."""
    theta = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    w = quantizer(theta)
    w.backward(torch.tensor(grad_out, dtype=torch.float64))
    return w.detach(), theta.grad


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=1e-12, atol=1e-12)


# -- AdaSTE ----------------------------------------------------------------------------------------------

def test_adaste_binary_regime_matches_eqs_23_and_38():
    """μα ≥ 1: w = sign(θ) with sign(0) = +1; g = ℓ' for |θ| < 2, ℓ'/|θ| for |θ| ≥ 2, 0 where sgn(θ)·ℓ' ≤ 0."""
    q = get_quantizer("adaste", mu=100.0, alpha=0.01)
    theta = [0.5, 0.5, -0.5, -0.5, 3.0, -4.0, 2.0, 0.0, 0.0, 1.0]
    grad = [0.2, -0.2, -0.3, 0.3, 0.6, -0.8, 0.5, 0.1, -0.1, 0.0]
    w, g = forward_backward(q, theta, grad)
    close(w, [1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0])
    # 0.5·0.2 > 0: β = 2/0.2 = 10, ŵ = sign(0.5 − 2) = −1, g = (1 + 1)/10 = 0.2.
    # 3·0.6 > 0: β = 3/0.6 = 5, θ̃ = 0, ŵ = 0, g = 1/5 = 0.2.  θ = 2: β = 4, g = 1/4.
    # θ = 0 counts as +0: ℓ' = 0.1 flips it (g = ℓ'), ℓ' = −0.1 does not (g = 0).
    close(g, [0.2, 0.0, -0.3, 0.0, 0.2, -0.2, 0.25, 0.1, 0.0, 0.0])


def test_adaste_uses_closed_form_perturbed_point_far_from_zero():
    """For |θ| ≥ 2, θ − β·ℓ' is exactly 0; computed in floating point it lands on ±tiny and ŵ flips at
    random. Every element must get exactly ℓ'/|θ|, whatever the magnitudes."""
    generator = torch.Generator().manual_seed(0)
    magnitude = 2 + 50 * torch.rand(4000, generator=generator, dtype=torch.float64)
    side = torch.where(torch.rand(4000, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
    theta = side * magnitude
    grad = side * 10 ** (-8 + 8 * torch.rand(4000, generator=generator, dtype=torch.float64))
    for dtype in (torch.float64, torch.float32):
        t = theta.to(dtype).detach().requires_grad_()
        get_quantizer("adaste", mu=100.0, alpha=0.01)(t).backward(grad.to(dtype))
        torch.testing.assert_close(t.grad, grad.to(dtype) / magnitude.to(dtype))


def test_adaste_annealing_regime_is_a_finite_difference_of_s_mu():
    """μ = 1, α = 0.01: s(θ) = clip((θ + 1.01·sgn θ)/2, −1, 1)."""
    q = get_quantizer("adaste", mu=1.0, alpha=0.01)
    theta = [0.5, 0.5, -0.5, 3.0, 0.0, 0.0, 0.2]
    grad = [0.2, -0.2, -0.3, 0.6, 0.1, -0.1, 0.0]
    w, g = forward_backward(q, theta, grad)
    close(w, [0.755, 0.755, -0.755, 1.0, 0.505, 0.505, 0.605])
    # θ = 0.5, ℓ' = 0.2: β = 10, θ̃ = −1.5, ŵ = clip(−2.51/2) = −1, g = (0.755 + 1)/10.
    # θ = 0.5, ℓ' = −0.2: β = 1, θ̃ = 0.7, ŵ = 0.855, g = 0.755 − 0.855 = ℓ'/(1 + μ).
    # θ = −0.5, ℓ' = −0.3: β = 2/0.3, θ̃ = 1.5, ŵ = 1, g = (−0.755 − 1)·0.3/2.
    # θ = 3: θ̃ = 0, ŵ = 0, g = 1·0.6/3.  θ = 0, ℓ' = 0.1: θ̃ = −2, ŵ = −1, g = (0.505 + 1)·0.1/2.
    # θ = 0, ℓ' = −0.1: β = 1, θ̃ = 0.1, ŵ = 0.555, g = −0.05.  ℓ' = 0: g = 0.
    close(g, [0.1755, -0.1, -0.26325, 0.2, 0.07525, -0.05, 0.0])


def test_soft_quantizers_are_hard_sign_in_eval_mode():
    theta = torch.tensor([-0.3, -1e-9, 0.0, 1e-9, 0.4, 5.0])
    quantizers = [get_quantizer("adaste", mu=1.0), get_quantizer("pc", mu=1.0), get_quantizer("bnnpp", mu=1.0),
                  get_quantizer("bmd", beta=1.0), get_quantizer("bnn_plus")]
    for q in quantizers:
        assert q.eval()(theta).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0], q


def test_bad_quantizer_and_config_values_are_rejected():
    with pytest.raises(BadInput, match="alpha"):
        get_quantizer("adaste", alpha=1.5)
    with pytest.raises(BadInput, match="anneal_fraction"):
        AdasteConfig(anneal_fraction=0.0)
    with pytest.raises(BadInput, match="mu_start"):
        resolve(RunConfig(method="bnnpp", dataset="fake", method_overrides={"mu_start": "2000"}))


# -- ProxConnect, BNN+, BNN++, mirror descent, ApproxSign ------------------------------------------------

def test_pc_forward_is_s_mu_and_backward_is_identity():
    w, g = forward_backward(get_quantizer("pc", mu=3.0, alpha=0.1), [0.4, -0.1, 0.0, 2.0], [0.3, -0.7, 0.2, 1.0])
    # (|θ| + 3.3)/4 clipped at 1: 0.925, 0.85, 0.825, 1.
    close(w, [0.925, -0.85, 0.825, 1.0])
    close(g, [0.3, -0.7, 0.2, 1.0])
    w, _ = forward_backward(get_quantizer("pc", mu=10.0, alpha=0.1), [0.01, -0.0, -3.0], [1.0, 1.0, 1.0])
    close(w, [1.0, 1.0, -1.0])  # μα = 1: exactly sign


def sign_swish_by_definition(x: float, beta: float) -> float:
    s = 1 / (1 + math.exp(-beta * x))
    return 2 * s * (1 + beta * x * (1 - s)) - 1


def test_sign_swish_and_its_derivative():
    x = torch.linspace(-2, 2, 41, dtype=torch.float64)
    for beta in (1.0, 5.0, 10.0):
        expected = torch.tensor([sign_swish_by_definition(v, beta) for v in x.tolist()], dtype=torch.float64)
        torch.testing.assert_close(sign_swish(x, beta), expected)
        h = 1e-6
        finite_difference = (sign_swish(x + h, beta) - sign_swish(x - h, beta)) / (2 * h)
        torch.testing.assert_close(sign_swish_grad(x, beta), finite_difference, rtol=1e-6, atol=1e-6)
    assert sign_swish_grad(torch.tensor([0.0]), 5.0).item() == pytest.approx(5.0)  # SS'_β(0) = β
    big = torch.tensor([-1e30, -1e3, 1e3, 1e30])  # float32: cosh(βx) overflows, the formula must not
    assert sign_swish(big, 5.0).tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert sign_swish_grad(big, 5.0).abs().max().item() == 0.0


def test_bnn_plus_forward_sign_backward_sign_swish_derivative():
    theta = [-0.7, -0.1, 0.0, 0.2, 1.5]
    grad = [1.0, -2.0, 0.5, 1.0, -1.0]
    w, g = forward_backward(get_quantizer("bnn_plus", beta=5.0), theta, grad)
    close(w, [-1.0, -1.0, 1.0, 1.0, 1.0])
    z = [5.0 * t for t in theta]
    expected = [gr * 5.0 * (2 - v * math.tanh(v / 2)) / (1 + math.cosh(v)) for v, gr in zip(z, grad, strict=True)]
    torch.testing.assert_close(g, torch.tensor(expected, dtype=torch.float64))


def test_bnnpp_forward_sign_swish_backward_its_derivative():
    theta = [-0.7, -0.1, 0.0, 0.2, 1.5]
    grad = [1.0, -2.0, 0.5, 1.0, -1.0]
    w, g = forward_backward(get_quantizer("bnnpp", mu=3.0), theta, grad)
    torch.testing.assert_close(w, torch.tensor([sign_swish_by_definition(t, 3.0) for t in theta], dtype=torch.float64))
    assert w[2].item() == 0.0
    h = 1e-6
    expected = [gr * (sign_swish_by_definition(t + h, 3.0) - sign_swish_by_definition(t - h, 3.0)) / (2 * h)
                for t, gr in zip(theta, grad, strict=True)]
    torch.testing.assert_close(g, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_bmd_forward_tanh_backward_identity_eval_sign():
    q = get_quantizer("bmd", beta=2.0)
    w, g = forward_backward(q, [-0.5, 0.0, 0.25], [0.3, -1.0, 2.0])
    close(w, [math.tanh(-1.0), 0.0, math.tanh(0.5)])
    close(g, [0.3, -1.0, 2.0])
    assert q.eval()(torch.tensor([-0.5, 0.0, 0.25])).tolist() == [-1.0, 1.0, 1.0]


def test_approx_sign_piecewise_quadratic_gradient():
    w, g = forward_backward(get_quantizer("approx_sign"), [-1.5, -0.5, 0.0, 0.25, 1.0], [1.0, 1.0, 1.0, 2.0, 1.0])
    close(w, [-1.0, -1.0, 1.0, 1.0, 1.0])
    close(g, [0.0, 1.0, 2.0, 3.0, 0.0])  # (2 − 2|x|)·ℓ' inside |x| < 1


# -- schedules ---------------------------------------------------------------------------------------

def test_schedule_formulas():
    config = AdasteConfig(alpha=0.01, mu_start=1.0, anneal_fraction=0.4)
    assert annealed_mu(0, 500, config) == 1.0
    assert annealed_mu(100, 500, config) == pytest.approx(10.0)  # halfway (in log) to 1/α at epoch 200
    assert annealed_mu(200, 500, config) == annealed_mu(499, 500, config) == 100.0
    assert annealed_mu(0, 500, AdasteConfig(anneal=False)) == 100.0
    assert [linear_mu(e, 4, 1.0, 10.0) for e in range(4)] == [1.0, 4.0, 7.0, 10.0]
    bnew = BmdConfig(beta_growth=1.01, beta_end=None)
    assert scheduled_beta(100, 0, bnew) == pytest.approx(1.01**100)  # BNEW's (paper mode)
    assert scheduled_beta(10, 0, BmdConfig(beta_end=None)) == pytest.approx(1.3**10)  # a fixed growth
    # fair mode's default: from beta_start in the first epoch to beta_end in the last, geometrically
    assert [scheduled_beta(e, 0, BmdConfig(), epochs=4) for e in range(4)] == pytest.approx([1, 10, 100, 1000])
    assert scheduled_beta(400, 0, BmdConfig(beta_end=None)) == 1e6  # capped instead of overflowing to inf
    md = BmdConfig(beta_growth=1.02, beta_period_steps=200)
    # step k trains with 1.02^ceil(k/200), as md-bnn multiplies β after steps 0, 200, 400, ...
    assert scheduled_beta(3, 200, md) == pytest.approx(1.02) and scheduled_beta(3, 201, md) == pytest.approx(1.02**2)


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[float]:
    return [m.value for m in mlflow.MlflowClient(tracking_uri).get_metric_history(run_id, key)]


def test_pc_ends_on_exact_sign_and_bmd_steps_beta_per_iteration(tracking_uri):
    """pc: μ linear 1 → 10 = 1/α, so the last epoch trains on sign(θ) (binary gap exactly 0). bmd with
    β × 1.5 every 2 steps: fake data has 4 steps per epoch, so β at the epochs' starts is 1.5^(0, 2, 4)."""
    result = run(RunConfig(method="pc", dataset="fake", epochs=3, tracking_uri=tracking_uri, progress="none"))
    assert metric_history(tracking_uri, result.run_id, "train/mu") == [1.0, 5.5, 10.0]
    gaps = metric_history(tracking_uri, result.run_id, "train/binary_gap")
    assert len(gaps) == 3 and gaps[0] > 0 and gaps[-1] == 0.0
    result = run(RunConfig(method="bmd", dataset="fake", epochs=3, tracking_uri=tracking_uri, progress="none",
                           method_overrides={"beta_growth": 1.5, "beta_period_steps": 2}))
    assert metric_history(tracking_uri, result.run_id, "train/beta") == pytest.approx([1.0, 1.5**2, 1.5**4])
    assert len(metric_history(tracking_uri, result.run_id, "train/binary_gap")) == 3


def test_adaste_without_annealing_is_binary_from_the_start():
    method = build_method(resolve(RunConfig(method="adaste", dataset="fake", method_overrides={"anneal": "false"})))
    assert not method.soft_weights and method.binary_gap() == 0.0
    assert all(layer.weight_quantizer.mu == 100.0 for _, layer in method.binary_layers())


# -- learning --------------------------------------------------------------------------------------

EPOCHS = 6


@pytest.mark.slow
@pytest.mark.parametrize(("method", "floor", "schedule"), [
    ("adaste", 0.75, [annealed_mu(e, EPOCHS, AdasteConfig()) for e in range(EPOCHS)]),
    ("bnnpp", 0.85, [linear_mu(e, EPOCHS, 1.0, 1000.0) for e in range(EPOCHS)]),
])
def test_learns_digits_with_the_documented_schedule(method, floor, schedule, tracking_uri):
    """Measured test accuracy at 6 epochs, seeds 0/1/2: adaste 0.93/0.94/0.80, bnnpp 0.97/0.96/0.94. With no
    gradient reaching the binary weights (only the full-precision first conv, BatchNorm and classifier
    learn) it is 0.55-0.67, with the gradient negated 0.00-0.09; chance is 0.1. μ follows the
    documented schedule, one value per epoch, and the distance from ±1 is recorded every epoch."""
    result = run(RunConfig(method=method, dataset="digits", epochs=EPOCHS, tracking_uri=tracking_uri,
                           progress="none"))
    assert result.metrics["test/acc"] > floor
    assert metric_history(tracking_uri, result.run_id, "train/mu") == pytest.approx(schedule)
    gaps = metric_history(tracking_uri, result.run_id, "train/binary_gap")
    assert len(gaps) == EPOCHS and all(0 <= gap < 1 for gap in gaps)
