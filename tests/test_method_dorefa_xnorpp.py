"""`dorefa` and `xnorpp`: their quantizers and XNOR-Net++'s learned output scale Γ against hand-computed
values, what each method builds (scales, recipes, costs), and one learning run each on real data that a
wrong gradient fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bnnbench import cost
from bnnbench.config import RunConfig
from bnnbench.errors import BadInput
from bnnbench.methods.dorefa import DorefaWeight, ZeroOneActivation
from bnnbench.methods.xnorpp import OutputScale, ScaledBinary
from bnnbench.runner import build_method, resolve, run

THETA = torch.tensor([[-2.0, -0.5, 0.0], [0.25, 1.0, 1.75]])  # two output channels of three weights
GRAD = torch.tensor([[0.5, -1.0, 2.0], [3.0, -4.0, 0.25]])  # ℓ' = ∂L/∂w handed to the quantizer


def make(method: str, mode: str = "fair", arch: str = "tiny", **overrides):
    resolved = resolve(RunConfig(method=method, dataset="fake", arch=arch, image_size=8, mode=mode,
                                 method_overrides=overrides))
    return build_method(resolved)


def forward_backward(module, x, grad):
    x = x.clone().requires_grad_(True)
    out = module(x)
    out.backward(grad)
    return out.detach(), x.grad


# -- dorefa -----------------------------------------------------------------------------------------------
def test_dorefa_weights_scale_by_the_layer_mean_and_pass_the_gradient_straight_through():
    w, g = forward_backward(DorefaWeight(), THETA, GRAD)
    # E = mean |θ| over the layer = (2 + 0.5 + 0 + 0.25 + 1 + 1.75)/6 = 11/12; sign(0) = +1
    e = 11 / 12
    assert w.flatten().tolist() == pytest.approx([-e, -e, e, e, e, e])
    # the released rule: dy ↦ dy, E a constant. Differentiating E would add sign(θ)·Σ(ℓ'·sign θ)/6 =
    # ±1.75/6 to every entry; a gate would zero θ = −2 and θ = 1.75.
    assert torch.equal(g, GRAD)


def test_dorefa_bibench_weights_scale_per_channel_and_gate_at_abs_one():
    theta = THETA.reshape(2, 3, 1, 1)  # a conv weight: α_c over dims 1..3
    w, g = forward_backward(DorefaWeight(per_channel=True, gated=True), theta, GRAD.reshape(2, 3, 1, 1))
    # α = (2 + 0.5 + 0)/3 = 5/6 and (0.25 + 1 + 1.75)/3 = 1
    assert w.flatten().tolist() == pytest.approx([-5 / 6, -5 / 6, 5 / 6, 1.0, 1.0, 1.0])
    # ℓ'·1[|θ| ≤ 1], no α factor: θ = −2 and 1.75 are cut, θ = 1 passes
    assert g.flatten().tolist() == [0.0, -1.0, 2.0, 3.0, -4.0, 0.0]


def test_dorefa_zero_one_activation_is_the_released_one_bit_rule():
    x = torch.tensor([-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    a, g = forward_backward(ZeroOneActivation(), x, torch.arange(1.0, 8.0))
    assert a.tolist() == [0, 0, 0, 0, 1, 1, 1]  # round(clip(x, 0, 1)), half to even: ½ ↦ 0
    assert g.tolist() == [0, 2, 3, 4, 5, 6, 0]  # clip's gradient on the closed interval [0, 1]


def test_dorefa_fair_mode_has_one_scale_per_layer_and_sign_inputs():
    method = make("dorefa")
    for _, layer in method.binary_layers():
        w = layer.effective_weight().detach()
        assert torch.allclose(w.abs(), layer.weight.detach().abs().mean().expand_as(w))  # one E per layer
        a, g = forward_backward(layer.input_quantizer, torch.tensor([-1.5, -1.0, 0.0, 0.5, 1.0, 1.5]),
                                torch.ones(6))
        assert a.tolist() == [-1, -1, 1, 1, 1, 1] and g.tolist() == [0, 1, 1, 1, 1, 0]  # sign, 1[|x| ≤ 1]
    zero_one = make("dorefa", activation_levels="zero_one")
    for _, layer in zero_one.binary_layers():
        assert isinstance(layer.input_quantizer, ZeroOneActivation)


def test_dorefa_paper_mode_is_bibench_cifar10_resnet20():
    resolved = resolve(RunConfig(method="dorefa", dataset="cifar10", mode="paper"))
    assert (resolved.arch, resolved.epochs, resolved.batch_size) == ("resnet20", 400, 128)
    c = resolved.method_config
    assert (c.optimizer, c.lr, c.scheduler, c.lr_min, c.weight_decay) == ("adam", 1e-3, "cosine", 0.0, 0.0)
    method = make("dorefa", mode="paper", arch="resnet20")
    shortcuts = [type(m).__name__ for m in method.model.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    assert shortcuts == ["Conv2d", "Conv2d"]  # BiBench's downsampling convs stay full precision
    for _, layer in method.binary_layers():
        w = layer.effective_weight().detach().flatten(1)
        alpha = layer.weight.detach().flatten(1).abs().mean(dim=1, keepdim=True)
        assert torch.allclose(w.abs(), alpha.expand_as(w))  # α_c per output channel
        assert layer.weight_quantizer.gated


# -- xnorpp -----------------------------------------------------------------------------------------------
def test_xnorpp_factorised_scale_forward_and_backward_on_worked_values():
    scale = OutputScale(1, 2, 2)
    with torch.no_grad():
        scale.alpha.copy_(torch.tensor([2.0]))
        scale.beta.copy_(torch.tensor([1.0, -1.0]))
        scale.gamma.copy_(torch.tensor([0.5, 3.0]))
    y = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    grad = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    out, g = forward_backward(scale, y, grad)
    # Γ_hw = α·β_h·γ_w = [[1, 6], [−1, −6]]; out = y ⊙ Γ
    assert out.flatten().tolist() == [1.0, 12.0, -3.0, -24.0]
    assert g.flatten().tolist() == [1.0, 0.0, 0.0, -6.0]  # ∂L/∂y = ℓ' ⊙ Γ
    # ∂α = Σ ℓ'·y·β·γ = 1·1·1·0.5 + 1·4·(−1)·3; ∂β_h = Σ_w ℓ'·y·α·γ_w; ∂γ_w = Σ_h ℓ'·y·α·β_h
    assert scale.alpha.grad.tolist() == [-11.5]
    assert scale.beta.grad.tolist() == [1.0, 24.0]
    assert scale.gamma.grad.tolist() == [2.0, -8.0]


def test_xnorpp_channel_scale_multiplies_each_output_feature():
    scale = OutputScale(2)
    with torch.no_grad():
        scale.alpha.copy_(torch.tensor([2.0, -1.0]))
    y = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # (batch 2, features 2), as a linear layer's output
    out, g = forward_backward(scale, y, torch.tensor([[1.0, 1.0], [0.5, 2.0]]))
    assert out.tolist() == [[2.0, -2.0], [6.0, -4.0]]
    assert g.tolist() == [[2.0, -1.0], [1.0, -2.0]]
    assert scale.alpha.grad.tolist() == [1 * 1 + 0.5 * 3, 1 * 2 + 2 * 4]  # Σ_n ℓ'·y per feature


def test_xnorpp_sizes_gamma_to_each_binary_conv_output_and_scales_its_output_not_its_weight():
    method = make("xnorpp").eval()
    wrapped = {name: m for name, m in method.model.named_modules() if isinstance(m, ScaledBinary)}
    assert sorted(wrapped) == ["features.3", "features.7"]
    # tiny at 8 px: the second conv runs at 8×8, the third after a 2×2 max-pool at 4×4; 64 channels each
    shapes = {name: (m.scale.alpha.numel(), m.scale.beta.numel(), m.scale.gamma.numel()) for name, m in wrapped.items()}
    assert shapes == {"features.3": (64, 8, 8), "features.7": (64, 4, 4)}
    scaled = wrapped["features.3"]
    with torch.no_grad():
        for p in scaled.scale.parameters():
            p.uniform_(-2, 2)
        x = torch.randn(2, 32, 8, 8)
        w = scaled.layer.effective_weight()
        assert set(w.unique().tolist()) == {-1.0, 1.0}  # no weight scale: sign(θ) itself
        expected = F.conv2d(torch.where(x >= 0, 1.0, -1.0), w, padding=1) * scaled.scale.factor()
        torch.testing.assert_close(scaled(x), expected)
    channel = make("xnorpp", scale="channel")
    assert all(m.beta is None and m.gamma is None for m in channel.output_scales())


def test_xnorpp_counts_gamma_as_real_parameters_and_no_macs():
    c = cost.count(make("xnorpp").model, (3, 8, 8))
    # the tiny network W1A1 (test_cost's hand derivation): BOPs 32·64·9·64 + 64·64·9·16, FP stem and classifier
    assert (c.fp_macs, c.bwn_macs, c.bops) == (3 * 32 * 9 * 64 + 64 * 4, 0, 32 * 64 * 9 * 64 + 64 * 64 * 9 * 16)
    # real: stem 864 + BatchNorms 2·(32 + 64 + 64) + classifier 260 = 1,444, plus Γ (64+8+8) + (64+4+4)
    assert c.params_binary == 32 * 64 * 9 + 64 * 64 * 9
    assert c.params_real == 1444 + 80 + 72


def test_xnorpp_gamma_is_optimized_with_the_weights():
    """β and γ vary within a channel, so they change what the following BatchNorm passes on; α is a
    per-channel factor right before a training-mode BatchNorm, which normalises it away (BN(α_c·y) =
    sign(α_c)·BN(y)): its gradient is zero up to rounding, on the shared backbones as on BiBench's."""
    method = make("xnorpp", lr=0.01)
    optimizer = method.make_optimizer()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    scales = method.output_scales()
    assert len(scales) == 2 and {id(p) for s in scales for p in s.parameters()} <= optimized
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    method.loss(method(x), y).backward()
    optimizer.step()
    for s in scales:
        spatial = torch.cat([s.beta.grad, s.gamma.grad]).abs().max()
        assert spatial > 1e-3 and s.alpha.grad.abs().max() < 1e-4 * spatial
        assert not torch.equal(s.beta.detach(), torch.ones_like(s.beta))
        assert not torch.equal(s.gamma.detach(), torch.ones_like(s.gamma))


def test_xnorpp_refuses_an_input_of_another_size():
    method = make("xnorpp")
    with pytest.raises(BadInput, match=r"sized for outputs of 8×8, got 16×16"):
        method(torch.randn(2, 3, 16, 16))


def test_xnorpp_paper_mode_is_bibench_cifar10_resnet20():
    resolved = resolve(RunConfig(method="xnorpp", dataset="cifar10", mode="paper"))
    assert (resolved.arch, resolved.epochs, resolved.batch_size) == ("resnet20", 400, 128)
    method = make("xnorpp", mode="paper", arch="resnet20")
    assert not any(m.layer.kernel_size == (1, 1) for m in method.model.modules() if isinstance(m, ScaledBinary))
    assert len(method.output_scales()) == 18  # the 18 3×3 convs of the 9 blocks


# -- learning on real data --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dorefa", "xnorpp"])
def test_method_learns_digits(method, tracking_uri):
    """W1A1 on 8×8 digits, 8 epochs (2 CPU cores, seed 0): measured test accuracy dorefa 0.94, xnorpp 0.92
    (chance 0.1). With the sign's gradients (weights and activations) negated they measured 0.10 and 0.07;
    with them zeroed (only the real first conv, BNs, Γ and classifier learn) 0.36 and 0.38."""
    result = run(RunConfig(method=method, dataset="digits", epochs=8, tracking_uri=tracking_uri, progress="none"))
    assert result.metrics["test/acc"] > 0.75
