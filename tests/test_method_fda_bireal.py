"""`fda` (FDA-BNN) and `bireal` (Bi-Real Net): their quantizers against hand-computed values, their schedules,
the Bi-Real network, and one learning run each on real data that a wrong gradient fails.

Worked values of FDA's gradient G_m(x) = (4ω/π)·Σ_{i<m} cos((2i+1)ωx) on |x| ≤ 1 (0 outside), ω = 0.1,
summed term by term (not with the closed form the code uses):
    x        0          ±0.25      0.3        ±0.5       0.75       ±1
    m = 10   1.2732395  1.2209743  1.1983883  1.0718407  0.8474943  0.5798426
    m = 18   2.2918312  1.9949334  1.8718534  1.2404581  0.3631116  −0.2821873
(G_m(0) = 4ωm/π exactly.)
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bnnbench import archs, cost, export
from bnnbench.config import RunConfig
from bnnbench.errors import BadInput
from bnnbench.layers import BinaryConv2d
from bnnbench.methods.bireal import MagnitudeAwareSign
from bnnbench.methods.fda import (
    FourierActivation,
    FourierWeight,
    NoiseAdaptation,
    fourier_sign_grad,
    noise_weight_at,
    terms_at,
)
from bnnbench.runner import build_method, resolve, run

G10 = {0.0: 1.2732395, 0.25: 1.2209743, 0.3: 1.1983883, 0.5: 1.0718407, 0.75: 0.8474943, 1.0: 0.5798426}
G18 = {0.0: 2.2918312, 0.25: 1.9949334, 0.3: 1.8718534, 0.5: 1.2404581, 0.75: 0.3631116, 1.0: -0.2821873}


def make(method: str, mode: str = "fair", arch: str = "tiny", image_size: int = 8, epochs: int = 2, **overrides):
    resolved = resolve(RunConfig(method=method, dataset="fake", mode=mode, arch=arch, image_size=image_size,
                                 epochs=epochs, method_overrides=overrides))
    return build_method(resolved)


# -- fda: the Fourier gradient ------------------------------------------------------------------------------
@pytest.mark.parametrize(("terms", "table"), [(10, G10), (18, G18)])
def test_fda_gradient_is_the_truncated_fourier_series_of_the_square_wave(terms, table):
    x = torch.tensor([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0], requires_grad=True)
    quantizer = FourierActivation(omega=0.1, terms=terms)
    b = quantizer(x)
    assert b.tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1]  # exact ±1, sign(0) = +1
    b.backward(torch.ones_like(x))
    expected = [0.0, table[1.0], table[0.5], table[0.25], table[0.0], table[0.25], table[0.3], table[0.5],
                table[0.75], table[1.0], 0.0]  # even in x; zero beyond ±1 (the released gate keeps ±1)
    assert x.grad.tolist() == pytest.approx(expected, abs=1e-6)
    assert table[0.0] == pytest.approx(4 * 0.1 * terms / math.pi)


def test_fda_closed_form_is_exact_near_zero_and_scales_the_incoming_gradient():
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-20, 1e-7, 3e-3])
    direct = [4 * 0.1 / math.pi * sum(math.cos((2 * i + 1) * 0.1 * v) for i in range(12)) for v in x.tolist()]
    assert fourier_sign_grad(x, 0.1, 12).tolist() == pytest.approx(direct, rel=1e-6)
    y = torch.tensor([0.5, -0.5], requires_grad=True)
    FourierActivation(0.1, 10)(y).backward(torch.tensor([2.0, -3.0]))
    assert y.grad.tolist() == pytest.approx([2 * G10[0.5], -3 * G10[0.5]], abs=1e-6)


def test_fda_weights_are_scaled_per_channel_and_the_gradient_carries_the_scale():
    # channel 0: α = (0.5 + 0.25 + 0 + 0.75)/4 = 0.375; channel 1: α = (2 + 1 + 0.5 + 0.5)/4 = 1
    theta = torch.tensor([[0.5, -0.25, 0.0, 0.75], [-2.0, 1.0, 0.5, 0.5]], requires_grad=True)
    quantizer = FourierWeight(omega=0.1, terms=10)
    w = quantizer(theta)
    assert w.tolist() == [[0.375, -0.375, 0.375, 0.375], [-1.0, 1.0, 1.0, 1.0]]
    w.backward(torch.ones_like(w))
    # ℓ'·α_c·G(θ): α_c is detached (no term through the mean), and θ = −2 lies outside the gate
    expected = [[0.375 * G10[0.5], 0.375 * G10[0.25], 0.375 * G10[0.0], 0.375 * G10[0.75]],
                [0.0, G10[1.0], G10[0.5], G10[0.5]]]
    assert theta.grad.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]


def test_fda_noise_adaptation_adds_its_correction_while_training_only():
    """e(θ) = W₂·ReLU(W₁·θ) + 0.1·sin θ on a filter row; with W₁ = [[1,0,0,0],[0,−1,0,0]] and
    W₂ = [[1,0],[0,1],[1,1],[0,0]]: W₁θ = [0.5, 0.25] (both pass the ReLU), W₂·that = [0.5, 0.25, 0.75, 0],
    0.1·sin θ = [0.0479426, −0.0247404, 0, 0.0681639]. The Jacobian's column sums are those of W₂W₁,
    [2, −2, 0, 0], plus 0.1·cos θ = [0.0877583, 0.0968912, 0.1, 0.0731689]."""
    theta = torch.tensor([[0.5, -0.25, 0.0, 0.75]], requires_grad=True)
    noise = NoiseAdaptation(features=4, reduction=2, sine=0.1, rows=True)
    with torch.no_grad():
        noise.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, -1.0, 0, 0]]))
        noise.fc2.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [1.0, 1.0], [0, 0]]))
    e = [0.5479426, 0.2252596, 0.75, 0.0681639]
    assert noise(theta.detach()).flatten().tolist() == pytest.approx(e, abs=1e-6)
    quantizer = FourierWeight(omega=0.1, terms=10)
    quantizer.attach(noise)
    quantizer.noise_weight = 0.5
    w = quantizer(theta)  # α·(sign θ + η·e(θ)), α = 0.375, η = 0.5
    assert w.flatten().tolist() == pytest.approx([0.375 * (s + 0.5 * v) for s, v in zip([1, -1, 1, 1], e)], abs=1e-6)
    w.sum().backward()
    jacobian_sums = [2.0877583, -1.9031088, 0.1, 0.0731689]
    grads = [G10[0.5], G10[0.25], G10[0.0], G10[0.75]]
    expected = [0.375 * (g + 0.5 * j) for g, j in zip(grads, jacobian_sums)]
    assert theta.grad.flatten().tolist() == pytest.approx(expected, abs=1e-6)
    assert noise.fc1.weight.grad is not None and noise.fc1.weight.grad.abs().sum() > 0  # the module learns
    quantizer.eval()  # evaluation: hard ±α, no noise
    assert quantizer(theta).flatten().tolist() == [0.375, -0.375, 0.375, 0.375]


def test_fda_noise_on_fewer_features_than_the_reduction_is_the_sine_term_alone():
    x = torch.tensor([[0.5, -1.0, 2.0]]).reshape(1, 3, 1, 1)  # 3 channels < k = 64: hidden width 0
    noise = NoiseAdaptation(features=3, reduction=64, sine=0.1, rows=False)
    assert list(noise.parameters()) == []
    assert noise(x).flatten().tolist() == pytest.approx([0.1 * math.sin(v) for v in (0.5, -1.0, 2.0)])


def test_fda_schedules_follow_the_released_hook():
    """BiBench's `model_params_update` before every epoch e of E: n + 1 = 10 + int(9e/E) terms and the noise
    weight 0.05·(1 + cos(π(e+1)/E)), which is 0 in the last epoch."""
    assert [terms_at(e, 400, 10, 9) for e in (0, 44, 45, 200, 399)] == [10, 10, 11, 14, 18]
    assert [noise_weight_at(e, 400, 0.1) for e in (0, 199, 399)] == pytest.approx(
        [0.05 * (1 + math.cos(math.pi / 400)), 0.05, 0.0], abs=1e-12)
    method = make("fda", epochs=400)
    method.set_schedule(399)
    for _, layer in method.binary_layers():
        for quantizer in (layer.weight_quantizer, layer.input_quantizer):
            assert (quantizer.terms, quantizer.noise_weight) == (18, 0.0)


def test_fda_noise_modules_train_beside_the_network_and_cost_nothing_at_inference():
    fair, paper = make("fda"), make("fda", mode="paper")
    for method in (fair, paper):
        noise_ids = {id(p) for p in method.noise_modules.parameters()}
        assert noise_ids and not noise_ids & {id(p) for p in method.model.parameters()}
        c = cost.count(method.model, (3, 8, 8))
        assert c.params_binary + c.params_real == sum(p.numel() for p in method.model.parameters())
    optimized = {id(p) for group in fair.make_optimizer().param_groups for p in group["params"]}
    assert {id(p) for p in fair.noise_modules.parameters()} <= optimized
    # paper mode: the activation noise is frozen at its random initialisation (BiBench builds it after the
    # optimizer); the weight noise trains
    optimized = {id(p) for group in paper.make_optimizer().param_groups for p in group["params"]}
    for key, module in paper.noise_modules.items():
        for p in module.parameters():
            assert (id(p) in optimized) == key.endswith("-weight"), key


def test_fda_training_forward_is_soft_and_evaluation_is_binary():
    method = make("fda")
    method.set_schedule(0)
    x = torch.randn(4, 3, 8, 8)
    method.train()
    assert method.binary_gap() > 0  # the noise term moves the training weights off ±α
    method.eval()
    for _, layer in method.binary_layers():
        w = layer.effective_weight().detach().flatten(1)
        assert torch.equal(w.abs(), w.abs()[:, :1].expand_as(w))
    with torch.no_grad():
        assert torch.equal(export.inference_network(method.model)(x), method(x))


# -- bireal: the magnitude-aware weights --------------------------------------------------------------------
THETA = [[0.5, -1.5, 0.0, 1.0], [-0.2, 0.4, -0.6, 0.2]]  # α = 3/4 = 0.75 and 1.4/4 = 0.35
GRAD = [[1.0, 2.0, -1.0, 3.0], [0.5, -1.0, 2.0, 4.0]]


@pytest.mark.parametrize(("rule", "expected"), [
    # eq. 10: ℓ'·α_c·1[|θ| < 1] (−1.5 and 1.0 lie outside)
    ("paper", [[0.75, 0.0, -0.75, 0.0], [0.175, -0.35, 0.7, 1.4]]),
    # released: ℓ'·1[|θ| < 1], no α_c
    ("released", [[1.0, 0.0, -1.0, 0.0], [0.5, -1.0, 2.0, 4.0]]),
])
def test_bireal_weights_are_mean_abs_times_sign_with_the_magnitude_aware_gradient(rule, expected):
    theta = torch.tensor(THETA, requires_grad=True)
    w = MagnitudeAwareSign(rule)(theta)
    assert w.flatten().tolist() == pytest.approx([0.75, -0.75, 0.75, 0.75, -0.35, 0.35, -0.35, 0.35])  # sign(0) = +1
    w.backward(torch.tensor(GRAD))
    assert theta.grad.tolist() == [pytest.approx(row) for row in expected]


def test_bireal_released_gradient_equals_the_released_clamp_trick():
    """birealnet.py's HardBinaryConv: (α·sign θ).detach() − clamp(θ).detach() + clamp(θ), autograd's gradient."""
    theta = torch.tensor(THETA, requires_grad=True)
    clipped = torch.clamp(theta, -1.0, 1.0)
    alpha = theta.abs().mean(dim=1, keepdim=True).detach()
    (((alpha * torch.sign(theta)).detach() - clipped.detach() + clipped) * torch.tensor(GRAD)).sum().backward()
    released = theta.grad.clone()
    theta.grad = None
    MagnitudeAwareSign("released")(theta).backward(torch.tensor(GRAD))
    assert torch.equal(theta.grad, released)


def test_bireal_activations_take_the_approx_sign_gradient():
    method = make("bireal")
    x = torch.tensor([-1.5, -0.5, 0.0, 0.25, 1.0], requires_grad=True)
    _, layer = method.binary_layers()[0]
    layer.input_quantizer(x).backward(torch.ones_like(x))
    assert x.grad.tolist() == pytest.approx([0.0, 1.0, 2.0, 1.5, 0.0])  # (2 − 2|x|)·1[|x| < 1]


def test_bireal_paper_recipe_schedule_loss_and_init():
    method = make("bireal", mode="paper", epochs=4)
    for _, layer in method.binary_layers():  # released init U[0, 0.001): every latent +, every sign +1
        assert 0 <= layer.weight.min() and layer.weight.max() < 1e-3
    # LambdaLR(1 − t/E) stepped before each epoch: epoch e trains at lr·(1 − (e+1)/E)
    scheduler = method.configure_optimizers()["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(4):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([7.5e-4, 5e-4, 2.5e-4, 0.0])
    # label smoothing 0.1: logits [2, 0], target 0, p = [0.8808, 0.1192]: 0.95·0.126928 + 0.05·2.126928
    logits, target = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    assert method.loss(logits, target).item() == pytest.approx(0.226928, abs=1e-5)
    assert make("bireal").loss(logits, target).item() == pytest.approx(0.126928, abs=1e-5)
    with pytest.raises(BadInput, match="lr_step_first=true with scheduler='plateau'"):
        make("bireal", lr_step_first=True, scheduler="plateau")


# -- the Bi-Real network --------------------------------------------------------------------------------
def test_bireal_resnet18_has_a_real_shortcut_around_every_binary_conv():
    method = make("bireal", mode="paper", arch="bireal_resnet18", image_size=28)
    blocks = [m for m in method.model.modules() if isinstance(m, archs.BiRealBlock)]
    binary = [name for name, _ in method.binary_layers()]
    assert len(blocks) == 16 and binary == [f"layers.{i}.conv" for i in range(16)]
    downsampling = [b.shortcut for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(downsampling) == 3
    for shortcut in downsampling:  # average pool → 1×1 conv → BN, real valued
        assert [type(m) for m in shortcut] == [nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d]
    # 28 px: the last stage's 7-px input pools to 4 px, the size of the strided conv's output
    assert method(torch.randn(2, 3, 28, 28)).shape == (2, 4)
    block = blocks[4].eval()  # the first downsampling block: out = BN(conv(sign x)) + shortcut(x)
    x = torch.randn(2, 64, 7, 7)
    with torch.no_grad():
        assert torch.allclose(block(x), block.bn(block.conv(x)) + block.shortcut(x))
        assert block.shortcut(x).shape == (2, 128, 4, 4)


def test_bireal_resnet20_costs_what_the_hand_count_says():
    """3×32×32, 10 classes. Binary 3×3 convs: 6 × 16·16·9·32² + (16·32·9 + 5 × 32·32·9)·16² +
    (32·64·9 + 5 × 64·64·9)·8² = 40,108,032; full precision: stem 3·16·9·32² = 442,368, shortcuts
    16·32·16² + 32·64·8² = 262,144, classifier 640."""
    resolved = resolve(RunConfig(method="bireal", dataset="cifar10", mode="paper", arch="bireal_resnet20"))
    c = cost.count(build_method(resolved).model, (3, 32, 32))
    assert (c.bops, c.bwn_macs, c.fp_macs) == (40_108_032, 0, 442_368 + 262_144 + 640)


def test_bireal_paper_network_packs_to_one_bit_per_weight_and_computes_the_same():
    method = make("bireal", mode="paper", arch="bireal_resnet20")
    model = method.model.eval()
    network = export.inference_network(model)
    header = {"method": "bireal", "dataset": "fake", "mode": "paper", "arch": "bireal_resnet20", "image_size": 8,
              "set": {}}
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(network(x), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        assert torch.equal(export.unpack(export.pack(network, header))(x), network(x))
    assert all(isinstance(m, BinaryConv2d) for _, m in method.binary_layers())


def test_bireal_paper_mode_trains_on_its_own_network(tracking_uri):
    result = run(RunConfig(method="bireal", dataset="fake", mode="paper", arch="bireal_resnet20", epochs=2,
                           batch_size=16, image_size=8, tracking_uri=tracking_uri, progress="none"))
    assert math.isfinite(result.metrics["train/loss"]) and math.isfinite(result.metrics["test/acc"])


# -- learning on real data --------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "floor"), [("fda", 0.75), ("bireal", 0.75)])
def test_method_learns_digits(method, floor, tracking_uri):
    """W1A1 on 8×8 digits, 8 epochs, fair mode, `tiny`: measured test accuracy 0.94 (fda) and 0.96 (bireal),
    chance 0.1. With FDA's gradient set to 0 (noise modules off) it measured 0.36, negated 0.12; with
    ApproxSign's gradient negated, Bi-Real measured 0.23."""
    result = run(RunConfig(method=method, dataset="digits", epochs=8, tracking_uri=tracking_uri, progress="none"))
    assert result.metrics["test/acc"] > floor
