"""Forward and backward of the quantizers against the papers' equations (docs/methods.md)."""

from __future__ import annotations

import pytest
import torch

from bnnbench.errors import BadInput
from bnnbench.quantizers import get_quantizer

THETA = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.4, 1.0, 1.5])
GRAD = torch.tensor([0.5, -1.0, 2.0, 3.0, -4.0, 0.25, 1.0])  # ℓ' = ∂L/∂w handed to the quantizer


def forward_backward(quantizer, theta=THETA, grad=GRAD):
    theta = theta.clone().requires_grad_(True)
    w = quantizer(theta)
    w.backward(grad)
    return w.detach(), theta.grad


def test_ste_sign_forward_identity_backward():
    w, g = forward_backward(get_quantizer("ste"))
    assert w.tolist() == [-1, -1, -1, 1, 1, 1, 1]  # sign(0) = +1
    assert torch.equal(g, GRAD)


def test_bnn_backward_is_gated_at_abs_one():
    w, g = forward_backward(get_quantizer("bnn"))
    assert w.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    assert g.tolist() == [0.0, -1.0, 2.0, 3.0, -4.0, 0.25, 0.0]  # |θ| ≤ 1 passes, 1 included


def test_dra_forward_alpha_sign_and_eq4_gradients():
    q = get_quantizer("dra")
    assert q.alpha.item() == 0.5  # paper: α initialised to 0.5
    w, g = forward_backward(q)
    assert w.tolist() == [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5, 0.5]
    assert torch.equal(g, GRAD)  # θ receives ℓ' unchanged: no α factor, no clipping
    signs = torch.tensor([-1.0, -1, -1, 1, 1, 1, 1])
    assert q.alpha.grad.item() == pytest.approx((GRAD * signs).sum().item())  # eq. 4


def test_dra_mean_center_binarizes_around_the_mean():
    w, _ = forward_backward(get_quantizer("dra", alpha=1.0, mean_center=True), torch.tensor([1.0, 2.0, 3.0, 6.0]),
                            torch.ones(4))
    assert w.tolist() == [-1, -1, 1, 1]  # θ − mean(θ) = [−2, −1, 0, 3], and sign(0) = +1


def test_unknown_quantizer_and_parameter_list_valid_choices():
    with pytest.raises(BadInput, match=r"unknown quantizer: 'stee'.*did you mean 'ste'.*valid: .*dra"):
        get_quantizer("stee")
    with pytest.raises(BadInput, match=r"unknown parameter 'beta' for quantizer 'dra'; valid: alpha, mean_center"):
        get_quantizer("dra", beta=1)


def test_quantizers_are_modules_with_fresh_parameters():
    a, b = get_quantizer("dra"), get_quantizer("dra")
    assert isinstance(a, torch.nn.Module) and a.alpha is not b.alpha


@pytest.mark.parametrize("slope", [0.25, 0.7, -0.3])
def test_fast_prelu_matches_pytorch_values_and_gradients(slope):
    from bnnbench.archs import PReLU

    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 4.0], requires_grad=True)
    grad = torch.tensor([1.0, -2.0, 3.0, 0.5, 1.5])
    fast, reference = PReLU(init=slope), torch.nn.PReLU(init=slope)
    y = fast(x)
    y.backward(grad)
    fast_x, fast_slope = x.grad.clone(), fast.weight.grad.clone()
    x.grad = None
    assert torch.equal(y, reference(x))
    reference(x).backward(grad)
    assert torch.equal(fast_x, x.grad)  # including x = 0, which takes the slope
    assert torch.allclose(fast_slope, reference.weight.grad)


def test_fast_prelu_per_channel_matches_pytorch_values_and_gradients():
    from bnnbench.archs import RPReLU

    x = torch.randn(4, 3, 5, 5)
    x[0, 0, 0, :3] = 0.0  # x = 0 takes the slope
    x.requires_grad_(True)
    grad = torch.randn(4, 3, 5, 5)
    fast, reference = RPReLU(3), torch.nn.PReLU(num_parameters=3)
    with torch.no_grad():
        fast.weight.copy_(torch.tensor([0.25, -0.4, 0.9]))
        reference.weight.copy_(fast.weight)
    y = fast(x)  # shifts 0: PReLU itself
    y.backward(grad)
    fast_x, fast_slope = x.grad.clone(), fast.weight.grad.clone()
    x.grad = None
    assert torch.equal(y, reference(x))
    reference(x).backward(grad)
    assert torch.equal(fast_x, x.grad)
    torch.testing.assert_close(fast_slope, reference.weight.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_bnn_gate_is_closed_at_abs_one_in_every_float_dtype(dtype):
    """The eager gate is a fused kernel with open bounds just beyond ±1: ±1 must pass, their neighbours not."""
    one, eps = torch.tensor(1.0, dtype=dtype), torch.finfo(dtype).eps
    theta = torch.stack([-one - eps, -one, -one + eps / 2, -0.0 * one, one - eps, one, one + eps])
    _, g = forward_backward(get_quantizer("bnn"), theta, torch.full_like(theta, 2.0))
    assert g.dtype == dtype
    assert g.tolist() == [0.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.0]


def test_sign_of_negative_zero_is_plus_one_eager_and_compiled():
    """Inductor folds x + 0.0 into x, so the eager trick alone would send −0.0 to −1 under --compile."""
    from bnnbench.quantizers import sign

    x = torch.tensor([-0.0, 0.0, -1e-30, 2.0, -3.0])
    expected = [1.0, 1.0, -1.0, 1.0, -1.0]
    assert sign(x).tolist() == expected
    assert torch.compile(sign, fullgraph=True)(x).tolist() == expected


def test_compiled_quantizers_match_eager_values_and_gradients():
    """`bnnbench run --compile` trains with the same forward and surrogate gradient as eager."""
    theta = torch.tensor([-2.0, -1.0, -0.3, -0.0, 0.0, 0.4, 1.0, 1.5])
    grad = torch.linspace(-2.0, 3.0, theta.numel())
    for name in ("bnn", "approx_sign"):
        quantizer = get_quantizer(name)
        eager_w, eager_g = forward_backward(quantizer, theta, grad)
        compiled_w, compiled_g = forward_backward(torch.compile(quantizer, fullgraph=True), theta, grad)
        assert torch.equal(compiled_w, eager_w), name
        assert torch.equal(compiled_g, eager_g), name
