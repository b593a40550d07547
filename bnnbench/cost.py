"""What a network costs at inference for one image at its input size: MACs, BOPs, OPs, parameters, size.

Every conv and linear layer is classified by whether its weight is binary (a `BinaryLayer`) and whether
its input is binary (the layer has an `input_quantizer`), and its multiply-accumulates go to one bucket:

- `fp_macs`: real weight × real input (the full-precision stem and classifier, every layer of `fp`);
- `bwn_macs`: binary weight × real input (BWN/W1A32: each MAC is an addition or subtraction);
- `bops`: binary weight × binary input (W1A1: XNOR + popcount).

Attention (`archs.Attention`) adds two activation × activation products per block, q·kᵀ and attn·v, each
heads × tokens² × head_dim MACs per image. They have no weight: their bucket follows their operands, as a
layer's follows its weight and input, from the module's `binary_operands()`: `bops` when both operands
are binary, `bwn_macs` when one is (additions of a real value), `fp_macs` when neither is. In bnnbench's
`vit_tiny` neither is (q, k, v are real outputs of the qkv layer, the attention probabilities real softmax
outputs), so they are `fp_macs` whatever the method; a binary-attention variant reports BOPs by setting
the module's operand quantizers. They appear in the per-layer table as `<attention path>.q@k` and
`.attn@v`, with no parameters.

`ops = fp_macs + bwn_macs + bops / 64` is the OPs convention of Bi-Real Net and ReActNet (64 BOPs per
operation, one 64-bit XNOR-popcount word). Those papers have no binary-weight-only layers; here BWN
MACs count at full cost, because an addition of a real activation costs about what a MAC costs on the
hardware the benchmark runs on, so a BWN network is *not* cheap in OPs. These are MACs, not FLOPs
(one MAC = one multiply + one add = 2 FLOPs); the bias of a conv or linear layer is not counted.

Parameters: `params_binary` are the weights of binary layers (1 bit each); `params_real` is everything
else (full-precision layers, BatchNorm, LayerNorm, PReLU, position embeddings, and a binary layer's bias
and quantizer parameters such as DRA's α), 32 bits each. `size_kib` = (params_binary + 32·params_real) / 8
/ 1024; buffers (BatchNorm running statistics) are not counted, as they fold into the affine parameters at
inference.

`thop_legacy` reproduces how the DRA paper counted with `thop`: full-precision conv/linear MACs, binary
layers zero (thop finds no hook for them), BatchNorm 4 operations per element (2 without affine
parameters), PReLU 1 per element, adaptive average pooling (k + 1) per output element with k the
pooled window, average pooling 1 per output element, everything else (ReLU, max-pool, LayerNorm, the
attention products, which thop's module hooks never see, ...) zero. It is neither MACs nor OPs: it exists
so that rows compare with the paper's Tables I–II (237,634,048 for the `dra` paper-mode network at
3×224×224).

The forward pass is run by ptflops (`get_model_complexity_info`, pytorch backend) with custom hooks
for every conv, linear, normalisation, PReLU, pooling and attention type in the model: ptflops maps hooks
by exact type, so without them a `BinaryConv2d` would count as zero. The pass runs on a copy of the model
on the `meta` device (shapes only, instant at 224 px) and falls back to the CPU when the forward needs
real values. A layer that owns parameters and that no hook counts raises `UncountedLayerError`; it is
never counted as zero silently.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import threading
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnnbench.layers import BinaryLayer

KEYS: tuple[str, ...] = ("fp_macs", "bwn_macs", "bops", "ops", "params_binary", "params_real", "size_kib",
                         "thop_legacy")
BOPS_PER_OP = 64  # Bi-Real Net / ReActNet: one 64-bit XNOR-popcount word per operation

_AVERAGE_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVERAGE_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_PTFLOPS_LOCK = threading.Lock()  # ptflops keeps the custom hooks in a module-level global


class UncountedLayerError(TypeError):
    """A layer owns parameters but no cost hook counts it (or it never ran): a gap in `cost.py`."""


class ForwardError(RuntimeError):
    """The model's forward pass fails at the requested input size."""


@dataclass(frozen=True)
class LayerCost:
    name: str  # module path, e.g. "layers.3.body.0"; an attention product: "blocks.0.attn.q@k"
    kind: str  # fp (real × real), bwn (binary weight × real input) or binary (W1A1)
    shape: str  # e.g. "conv 3x3 64->128 /2 out 16x16"
    macs: int  # multiply-accumulates per image (BOPs for a binary layer)
    params_binary: int  # 1-bit weights
    params_real: int  # bias and quantizer parameters (32-bit); all parameters of an fp layer

    @property
    def params(self) -> int:
        return self.params_binary + self.params_real


@dataclass(frozen=True)
class ModelCost:
    input_size: tuple[int, ...]  # (channels, height, width) of one image
    layers: tuple[LayerCost, ...]
    fp_macs: int
    bwn_macs: int
    bops: int
    params_binary: int
    params_real: int
    thop_legacy: int

    @property
    def ops(self) -> float:
        return self.fp_macs + self.bwn_macs + self.bops / BOPS_PER_OP

    @property
    def size_kib(self) -> float:
        return (self.params_binary + 32 * self.params_real) / 8 / 1024

    def totals(self) -> dict[str, float]:
        """The figures under their `KEYS` names (counts as int, `ops` and `size_kib` as float)."""
        return {key: getattr(self, key) for key in KEYS}

    def metrics(self) -> dict[str, float]:
        """The totals as run metrics: `cost/fp_macs`, ..., `cost/thop_legacy`."""
        return {f"cost/{key}": float(value) for key, value in self.totals().items()}

    def csv(self) -> str:
        """One row per conv/linear layer and attention product: the per-layer table as data."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["layer", "kind", "shape", "macs", "params_binary", "params_real"])
        for layer in self.layers:
            writer.writerow([layer.name, layer.kind, layer.shape, layer.macs, layer.params_binary,
                             layer.params_real])
        return out.getvalue()

    def table(self) -> str:
        """The per-layer table (name, kind, shape, MACs, parameters) followed by the totals."""
        rows = [("layer", "kind", "shape", "MACs", "params")]
        rows += [(la.name, la.kind, la.shape, f"{la.macs:,}", f"{la.params:,}") for la in self.layers]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(row[i].ljust(widths[i]) if i < 3 else row[i].rjust(widths[i]) for i in range(5))
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        notes = {"fp_macs": "real weight x real input", "bwn_macs": "binary weight x real input",
                 "bops": "binary weight x binary input", "ops": f"fp_macs + bwn_macs + bops/{BOPS_PER_OP}",
                 "params_binary": "1 bit each", "params_real": "32 bit each", "size_kib": "",
                 "thop_legacy": "as the DRA paper counted (not MACs, not OPs)"}
        lines.append("")
        for key, value in self.totals().items():
            text = f"{value:,.2f}" if key == "size_kib" else f"{value:,.0f}" if key == "ops" else f"{value:,}"
            lines.append(f"{key:<14} {text:>16}  {notes[key]}".rstrip())
        return "\n".join(lines)


def count(model: nn.Module, input_size: tuple[int, ...]) -> ModelCost:
    """Costs of `model` for one input of `input_size` (C, H, W), without touching `model` itself.

    Raises `UncountedLayerError` naming the layer when a parameterised layer is of a type no hook
    counts, or a conv/linear layer does not run; `ForwardError` when the forward pass fails.
    """
    from bnnbench.archs import Attention

    input_size = tuple(int(v) for v in input_size)
    _check_every_parameter_is_counted(model)
    for device in ("meta", "cpu"):
        try:
            seen, products, legacy = _run_ptflops(copy.deepcopy(model).to(device), input_size)
            break
        except ForwardError as error:
            failure = error
    else:
        raise failure

    layers = []
    for name, module in model.named_modules():
        if isinstance(module, Attention):
            layers += _attention_products(name, module, products, input_size)
            continue
        if not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        if name not in seen:
            raise UncountedLayerError(
                f"cost: layer '{name}' ({type(module).__name__}) did not run in the forward pass at input "
                f"{_size_text(input_size)}, so its MACs cannot be counted")
        macs, shape = seen[name]
        binary_weight = isinstance(module, BinaryLayer)
        kind = ("binary" if module.binary_input else "bwn") if binary_weight else "fp"
        weight_bits = module.weight.numel() if binary_weight else 0
        real = sum(p.numel() for p in module.parameters()) - weight_bits
        layers.append(LayerCost(name, kind, shape, macs, weight_bits, real))
    by_kind = {kind: sum(la.macs for la in layers if la.kind == kind) for kind in ("fp", "bwn", "binary")}
    # thop's module hooks see conv and linear layers, never the functional products of an attention
    fp_layers = sum(la.macs for la in layers if la.kind == "fp" and la.name in seen)
    params_binary = sum(la.params_binary for la in layers)
    params_all = sum(p.numel() for p in model.parameters())
    return ModelCost(input_size=input_size, layers=tuple(layers), fp_macs=by_kind["fp"],
                     bwn_macs=by_kind["bwn"], bops=by_kind["binary"], params_binary=params_binary,
                     params_real=params_all - params_binary, thop_legacy=fp_layers + legacy)


# an attention product's bucket by its number of binary operands, as a layer's by its weight and input
_PRODUCT_KINDS = {0: "fp", 1: "bwn", 2: "binary"}


def _attention_products(name: str, module: nn.Module, products: dict[str, tuple[int, dict[str, str]]],
                        input_size: tuple[int, ...]) -> list[LayerCost]:
    """The per-layer rows of one attention's two activation × activation products (no parameters)."""
    if name not in products:
        raise UncountedLayerError(
            f"cost: attention '{name}' did not run in the forward pass at input {_size_text(input_size)}, so its "
            f"products' MACs cannot be counted")
    macs, shapes = products[name]
    operands = module.binary_operands()
    return [LayerCost(f"{name}.{product}", _PRODUCT_KINDS[operands[product]], shapes[product], macs, 0, 0)
            for product in ("q@k", "attn@v")]


def _size_text(input_size: tuple[int, ...]) -> str:
    return "x".join(map(str, input_size))


def _check_every_parameter_is_counted(model: nn.Module) -> None:
    """Raise for a module that owns parameters directly and is of no type the hooks count.

    Counted: conv and linear layers (MACs), BatchNorm and PReLU (thop_legacy), LayerNorm and position
    embeddings (real parameters, no MACs: a normalisation or an addition per element, as BatchNorm's
    folded scale and shift), and the quantizers of binary layers and attention operands (their
    parameters, such as DRA's α, count as real parameters and cost no MACs).
    """
    from bnnbench.archs import Attention, PositionEmbedding
    from bnnbench.quantizers import QUANTIZERS

    def quantizers(module):
        if isinstance(module, BinaryLayer):
            return module.weight_quantizer, module.input_quantizer
        if isinstance(module, Attention):
            return module.q_quantizer, module.k_quantizer, module.attn_quantizer, module.v_quantizer
        return ()

    quantizer_parts = {id(part) for module in model.modules() for quantizer in quantizers(module)
                       if quantizer is not None for part in quantizer.modules()}
    counted = (nn.Conv2d, nn.Linear, _BatchNorm, nn.LayerNorm, nn.PReLU, PositionEmbedding, *QUANTIZERS.values())
    for name, module in model.named_modules():
        own = [key for key, _ in module.named_parameters(recurse=False)]
        if own and not isinstance(module, counted) and id(module) not in quantizer_parts:
            raise UncountedLayerError(
                f"cost: layer '{name or '<root>'}' ({type(module).__name__}) owns parameters "
                f"({', '.join(own)}) that no cost hook counts; counted are Conv2d, Linear, BatchNorm, LayerNorm, "
                f"PReLU, PositionEmbedding and binary-layer quantizers: add a hook for {type(module).__name__} "
                f"in bnnbench/cost.py")


def _run_ptflops(model: nn.Module, input_size: tuple[int, ...]) -> tuple[dict[str, tuple[int, str]],
                                                                         dict[str, tuple[int, dict[str, str]]], int]:
    """One forward pass under ptflops with our hooks: {layer: (MACs, shape)}, {attention: (MACs of each of
    its two products, {product: shape})} and the thop-legacy extras.

    `model` is a throwaway copy (ptflops switches it to eval mode and decorates it). ptflops catches
    an exception of the forward pass, prints it and returns None; it is raised here as `ForwardError`.
    """
    from ptflops import get_model_complexity_info

    from bnnbench.archs import Attention, PositionEmbedding

    names = {id(m): name for name, m in model.named_modules()}
    seen: dict[str, tuple[int, str]] = {}
    products: dict[str, tuple[int, dict[str, str]]] = {}
    legacy = [0]

    def per_image(value: int, inputs) -> int:
        return value // max(int(inputs[0].shape[0]), 1)

    def conv_hook(module, inputs, output):
        # MACs = output elements × (input channels per group × kernel area); bias not counted.
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        macs = per_image(output.numel() * per_output, inputs)
        name = names[id(module)]
        kernel = "x".join(map(str, module.kernel_size))
        stride = "" if max(module.stride) == 1 else f" /{'x'.join(map(str, set(module.stride)))}"
        groups = "" if module.groups == 1 else f" g{module.groups}"
        shape = (f"conv {kernel} {module.in_channels}->{module.out_channels}{stride}{groups} "
                 f"out {'x'.join(map(str, output.shape[2:]))}")
        seen[name] = (seen.get(name, (0, ""))[0] + macs, shape)

    def linear_hook(module, inputs, output):
        macs = per_image(output.numel() * module.in_features, inputs)
        name = names[id(module)]
        shape = f"linear {module.in_features}->{module.out_features}"
        seen[name] = (seen.get(name, (0, ""))[0] + macs, shape)

    def batchnorm_hook(module, inputs, output):
        legacy[0] += per_image(inputs[0].numel() * (4 if module.affine else 2), inputs)

    def prelu_hook(module, inputs, output):
        legacy[0] += per_image(inputs[0].numel(), inputs)

    def adaptive_average_hook(module, inputs, output):
        window = math.prod(i / o for i, o in zip(inputs[0].shape[2:], output.shape[2:], strict=True))
        legacy[0] += per_image(int((window + 1) * output.numel()), inputs)

    def average_hook(module, inputs, output):
        legacy[0] += per_image(output.numel(), inputs)

    def attention_hook(module, inputs, output):
        # q·kᵀ: (tokens × head_dim) · (head_dim × tokens) per head; attn·v: (tokens × tokens) · (tokens × head_dim)
        # per head: heads × tokens² × head_dim MACs each, per image.
        tokens = int(inputs[0].shape[1])
        macs = module.heads * tokens * tokens * module.head_dim
        h, t, d = module.heads, tokens, module.head_dim
        shapes = {"q@k": f"matmul q.kT {h} heads {t}x{d}.{d}x{t}", "attn@v": f"matmul attn.v {h} heads {t}x{t}.{t}x{d}"}
        name = names[id(module)]
        products[name] = (products.get(name, (0, {}))[0] + macs, shapes)

    def uncounted_hook(module, inputs, output):  # LayerNorm, position embedding: parameters, no MACs
        pass

    hooks = {}
    for module in model.modules():
        for kinds, hook in ((nn.Conv2d, conv_hook), (nn.Linear, linear_hook), (_BatchNorm, batchnorm_hook),
                            (nn.PReLU, prelu_hook), (_ADAPTIVE_AVERAGE_POOLS, adaptive_average_hook),
                            (_AVERAGE_POOLS, average_hook), (Attention, attention_hook),
                            ((nn.LayerNorm, PositionEmbedding), uncounted_hook)):
            if isinstance(module, kinds):
                hooks[type(module)] = hook
                break

    device = next(model.parameters(), torch.empty(0)).device
    printed = io.StringIO()
    quiet = contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed)
    with _PTFLOPS_LOCK, torch.no_grad(), quiet[0], quiet[1]:
        total, _ = get_model_complexity_info(
            model, input_size, print_per_layer_stat=False, as_strings=False, backend="pytorch",
            input_constructor=lambda size: torch.zeros((1, *size), device=device),
            custom_modules_hooks=hooks, backend_specific_config={"count_functional": False})
    if total is None:
        lines = [line for line in printed.getvalue().splitlines() if line.strip()]
        raise ForwardError(f"the forward pass fails on {device.type} at input {_size_text(input_size)}: "
                           f"{lines[-1] if lines else 'unknown error'}")
    return seen, products, legacy[0]
