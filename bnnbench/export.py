"""A trained network for use outside bnnbench: the MLflow model of a run, bit-packed, and as ONNX.

Why. A run's point is a network whose binary weights cost 1 bit each (`cost/size_kib`). Its MLflow model
(`tracking.RecordedRun.log_model`, logged at the end of every FINISHED run) is the trained
LightningModule's network in evaluation form: latent float weights and their quantizers, 32 bits per
weight, loadable only with bnnbench. `bnnbench export RUN_ID --out FILE` turns it into

- FILE: the network with every binary weight stored as one bit, so the file is as large as
  `cost/size_kib` promises plus a header of a few hundred bytes, and `load_packed(FILE)` unpacks it into
  a torch network computing the same outputs;
- FILE with suffix `.onnx`: the same inference network for ONNX runtimes (float32 weights, ±α values).

The inference network (`inference_network`) is what evaluation computes, with nothing left to train:
each binary layer becomes a plain conv / linear layer whose weight is its effective weight in eval mode
(hard ±1, or ±α for DRA's learned α and XNOR's per-channel α_c), preceded by the sign of its input where
the layer binarizes it (sign(0) = +1, or torch.sign's 0 ↦ 0 for XNOR's released code); each BatchNorm is
folded into a per-channel scale and shift, y = x·s + t with s = γ/√(var + ε) and t = β − mean·s (so its
running statistics cost nothing, as `cost.py` counts them); bnnbench's faster PReLU becomes `nn.PReLU`
(the same forward kernel); forward hooks a method put on a layer stay. Inputs are images normalised as
the dataset does, ((x / 255) − mean) / std, with mean and std in the file's header.

The packed format (little-endian): the 8 bytes `BNNBPACK`, a uint32 header length, a UTF-8 JSON
header, then the sign bits of each binary layer in header order (`numpy.packbits` of w ≥ 0 over the
flattened weight, big-endian bit order, each layer padded to a whole byte), then float32 values: the
scales (one per `l` layer, C per `c` layer), then every other parameter of the inference network in
`named_parameters()` order. The header holds the format version, what builds the network — method,
dataset, mode, arch, image size and the method settings that differ from the mode's defaults, so the
loader builds it as training did, with whatever the method adds to the backbone — the normalisation,
the run id, and per binary layer its module path, its input sign (0 none, 1 sign, 2 torch.sign) and its
scale kind: `n` none (±1), `l` one α per layer, `c` one α per output channel. Two things weigh more
than `cost/size_kib` counts: a scale per channel (XNOR computes α_c from the latent weights, which are
not parameters), 4 bytes per output channel of each binary layer; and a BatchNorm without affine
parameters (AdaSTE's paper mode), whose folded scale and shift are 2 values per channel.

Libraries: numpy packs and unpacks the bits; `mlflow.pytorch` loads the run's model; ONNX export is
`torch.onnx.export` with its `torch.export`-based exporter, which needs the `onnx` and `onnxscript`
packages (`pip install 'bnnbench[export]'`); onnxruntime, if installed, runs the file.
"""

from __future__ import annotations

import copy
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnnbench.errors import BadInput
from bnnbench.layers import BinaryLayer

MAGIC = b"BNNBPACK"
FORMAT_VERSION = 1
ONNX_SUFFIX = ".onnx"


# -- the network a run evaluated, for MLflow ---------------------------------------------------------------
def evaluation_network(method, checkpoint_path: str | os.PathLike | None = None) -> nn.Module:
    """The LightningModule's network, unwrapped from `torch.compile`, copied to the CPU in eval mode, with
    the weights of `checkpoint_path` (the best validation epoch) if given, else as they are: after
    `trainer.test(ckpt_path=best)` they are the best epoch's as the test evaluated them (a method may edit
    them in place at the start of an evaluation, as XNOR's port centres θ)."""
    network = getattr(method.model, "_orig_mod", method.model)  # torch.compile wraps it in an OptimizedModule
    network = copy.deepcopy(network).cpu()
    if checkpoint_path:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
        prefixes = ("model._orig_mod.", "model.")
        weights = {}
        for key, value in state.items():
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            if prefix is not None:
                weights[key[len(prefix):]] = value
        network.load_state_dict(weights)
    return network.eval()


def normalise(dataset, images: torch.Tensor) -> torch.Tensor:
    """uint8 images as the network sees them: ((x / 255) − mean) / std, as `on_after_batch_transfer` does."""
    x = images.float().div_(255)
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    return (x - mean) / std


def example_images(datamodule, count: int = 4) -> torch.Tensor:
    """The first `count` test images (validation images without a test split), normalised: the model's
    input example in MLflow."""
    split = "test" if "test" in datamodule.splits else "val"
    return normalise(datamodule, datamodule.splits[split][0][:count])


# -- the inference network -----------------------------------------------------------------------------------
def sign(x: torch.Tensor) -> torch.Tensor:
    """±1 with sign(0) = +1, as `quantizers.sign`, written as one `where` (an ONNX Where)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


# What a binary layer does to its input, as the packed header numbers it: nothing, sign with sign(0) = +1
# (every bnnbench activation quantizer), torch.sign with 0 ↦ 0 (XNOR-Net's released code, paper mode).
INPUT_FUNCTIONS = {0: None, 1: sign, 2: torch.sign}


class InferenceConv2d(nn.Conv2d):
    """A binary conv at inference: fixed ±α weights, and the sign of its input first where the layer
    binarizes it (`input_sign`, a key of `INPUT_FUNCTIONS`)."""

    input_sign: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(INPUT_FUNCTIONS[self.input_sign](x) if self.input_sign else x, self.weight,
                                  self.bias)


class InferenceLinear(nn.Linear):
    """A binary linear layer at inference: fixed ±α weights, and the sign of its input first (`input_sign`)."""

    input_sign: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(INPUT_FUNCTIONS[self.input_sign](x) if self.input_sign else x, self.weight,
                                    self.bias)


class FoldedBatchNorm(nn.Module):
    """A BatchNorm in eval mode folded into y = x·weight + bias per channel (weight = γ/√(var + ε),
    bias = β − mean·weight): two values per channel, what `cost.py` counts for an affine BatchNorm."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(channels), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


def _input_sign(name: str, quantizer: nn.Module | None) -> int:
    """Which of `INPUT_FUNCTIONS` an activation quantizer computes in eval mode (checked on probe values)."""
    if quantizer is None:
        return 0
    probe = torch.tensor([-2.0, -1.0, -0.5, -1e-9, -0.0, 0.0, 1e-9, 0.5, 1.0, 2.0])
    with torch.no_grad():
        out = quantizer.eval()(probe)
    for key, function in INPUT_FUNCTIONS.items():
        if function is not None and torch.equal(out, function(probe)):
            return key
    raise ValueError(f"layer {name}: its input quantizer {type(quantizer).__name__} computes neither sign nor "
                     f"torch.sign in eval mode, and the export knows only these")


def _inference_layer(layer: nn.Module, input_sign: int) -> nn.Module:
    """A plain `InferenceConv2d`/`InferenceLinear` with `layer`'s hyperparameters and its effective weight."""
    if isinstance(layer, nn.Conv2d):
        new = InferenceConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                              layer.padding, layer.dilation, layer.groups, bias=layer.bias is not None,
                              padding_mode=layer.padding_mode)
    elif isinstance(layer, nn.Linear):
        new = InferenceLinear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    else:
        raise ValueError(f"no inference form for a binary {type(layer).__name__}")
    new.input_sign = input_sign
    with torch.no_grad():
        new.weight.copy_(layer.effective_weight())
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new


def _folded(name: str, norm: _BatchNorm) -> FoldedBatchNorm:
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError(f"layer {name}: a BatchNorm without running statistics normalises with each batch's "
                         f"own, which no fixed network computes")
    new = FoldedBatchNorm(norm.num_features)
    with torch.no_grad():
        variance, mean = norm.running_var.double(), norm.running_mean.double()
        gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(variance)
        beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
        scale = gamma / torch.sqrt(variance + norm.eps)
        new.weight.copy_(scale.float())
        new.bias.copy_((beta - mean * scale).float())
    return new


_HOOKS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
          "_forward_hooks_always_called")


def inference_network(model: nn.Module) -> nn.Module:
    """The inference form of a network (see the module docstring): a copy on the CPU, in eval mode, with
    each binary layer, BatchNorm and bnnbench PReLU replaced (keeping the forward hooks a method put on
    them); ValueError if a layer has no such form."""
    from bnnbench.archs import PReLU

    model = copy.deepcopy(getattr(model, "_orig_mod", model)).cpu().eval()
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        if not name or any(name.startswith(f"{done}.") for done in replaced):
            continue
        if isinstance(module, BinaryLayer):
            new = _inference_layer(module, _input_sign(name, module.input_quantizer))
        elif isinstance(module, _BatchNorm):
            new = _folded(name, module)
        elif isinstance(module, PReLU):
            new = nn.PReLU(module.num_parameters)
            with torch.no_grad():
                new.weight.copy_(module.weight)
        else:
            continue
        for hooks in _HOOKS:  # what a method hooked onto the layer (XNOR's port: a ReLU on each binary conv)
            getattr(new, hooks).update(getattr(module, hooks))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, new)
        replaced.append(name)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


# -- packing -------------------------------------------------------------------------------------------------
def _binary_scale(name: str, weight: torch.Tensor) -> tuple[str, np.ndarray]:
    """The scale kind of an effective weight (every value ±m, m per layer or per output channel) and m."""
    magnitude = weight.abs().reshape(weight.shape[0], -1)
    per_channel = magnitude[:, :1]
    if not torch.equal(magnitude, per_channel.expand_as(magnitude)):
        raise ValueError(f"layer {name}: its eval-mode weights are not ±α (a value per layer or per output "
                         f"channel), so they cannot be stored as 1 bit each")
    if bool((per_channel == 1).all()):
        return "n", np.zeros(0, dtype="<f4")
    if bool((per_channel == per_channel[0]).all()):
        return "l", per_channel[0].numpy().astype("<f4")
    return "c", per_channel[:, 0].numpy().astype("<f4")


def _layout(network: nn.Module, binary_names) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, nn.Parameter]]]:
    """The binary layers (in module order) and every other parameter (in `named_parameters` order)."""
    names = set(binary_names)
    binary = [(name, m) for name, m in network.named_modules() if name in names]
    packed = {id(m.weight) for _, m in binary}
    return binary, [(name, p) for name, p in network.named_parameters() if id(p) not in packed]


def pack(network: nn.Module, header: dict[str, Any]) -> bytes:
    """The packed file of an inference network; `header` gives the architecture to rebuild it with."""
    binary_names = [name for name, m in network.named_modules()
                    if isinstance(m, InferenceConv2d | InferenceLinear)]
    binary, real = _layout(network, binary_names)
    bits, scales, entries = [], [], []
    for name, layer in binary:
        weight = layer.weight.detach()
        kind, scale = _binary_scale(name, weight)
        bits.append(np.packbits((weight >= 0).flatten().numpy()).tobytes())
        scales.append(scale)
        entries.append([name, layer.input_sign, kind])
    values = [p.detach().flatten().numpy().astype("<f4") for _, p in real]
    full = {"format": "bnnbench.packed", "version": FORMAT_VERSION, **header, "binary": entries}
    text = json.dumps(full, separators=(",", ":")).encode()
    floats = np.concatenate([*scales, *values]) if scales or values else np.zeros(0, dtype="<f4")
    return MAGIC + struct.pack("<I", len(text)) + text + b"".join(bits) + floats.astype("<f4").tobytes()


def read_header(data: bytes, where: str = "packed network") -> tuple[dict[str, Any], int]:
    """A packed file's header and the offset of its sign bits; BadInput naming `where` if it is not one."""
    if data[:len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + 4:
        raise BadInput(f"{where} is not a packed bnnbench network (no '{MAGIC.decode()}' at its start)")
    (length,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start:start + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadInput(f"{where}: damaged header ({err})") from None
    if header.get("version") != FORMAT_VERSION:
        raise BadInput(f"{where}: format version {header.get('version')}, this bnnbench reads {FORMAT_VERSION}")
    return header, start + length


def skeleton(header: dict[str, Any]) -> nn.Module:
    """The inference network that a header describes, with untrained values: the run's method builds its
    network as for training (method, dataset, mode, arch, image size and the method settings that differ
    from the mode's defaults), so whatever a method adds to the backbone is there too."""
    from bnnbench.config import RunConfig, resolve
    from bnnbench.runner import build_method

    resolved = resolve(RunConfig(method=header["method"], dataset=header["dataset"], mode=header["mode"],
                                 arch=header["arch"], image_size=header["image_size"],
                                 method_overrides=header.get("set") or {}))
    return inference_network(build_method(resolved).model)


def unpack(data: bytes, where: str = "packed network") -> nn.Module:
    """The inference network of a packed file's bytes (see `load_packed`)."""
    header, offset = read_header(data, where)
    network = skeleton(header)
    entries = {name: (flag, kind) for name, flag, kind in header["binary"]}
    binary, real = _layout(network, entries)
    if [[name, layer.input_sign] for name, layer in binary] != [entry[:2] for entry in header["binary"]]:
        raise BadInput(f"{where}: its binary layers do not match the {header['method']} network on '{header['arch']}' "
                       f"that this bnnbench builds")
    sign_bits = []
    for _, layer in binary:
        count = layer.weight.numel()
        size = (count + 7) // 8
        sign_bits.append(np.unpackbits(np.frombuffer(data, np.uint8, size, offset), count=count).astype(bool))
        offset += size
    needed = sum({"n": 0, "l": 1, "c": layer.weight.shape[0]}[entries[name][1]] for name, layer in binary)
    needed += sum(p.numel() for _, p in real)
    if len(data) - offset != 4 * needed:
        raise BadInput(f"{where}: {len(data) - offset} bytes of float32 values, the header promises {4 * needed}")
    floats = torch.from_numpy(np.frombuffer(data, "<f4", needed, offset).astype(np.float32))
    position = 0
    with torch.no_grad():
        for (name, layer), positive in zip(binary, sign_bits):
            kind = entries[name][1]
            count = {"n": 0, "l": 1, "c": layer.weight.shape[0]}[kind]
            scale = floats[position:position + count]
            position += count
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            magnitude = torch.ones(()) if kind == "n" else scale.view(shape) if kind == "c" else scale[0]
            bits = torch.from_numpy(positive).view(layer.weight.shape)
            layer.weight.copy_(torch.where(bits, magnitude, -magnitude))
        for _, parameter in real:
            parameter.copy_(floats[position:position + parameter.numel()].view(parameter.shape))
            position += parameter.numel()
    network.normalisation = {"mean": header.get("mean"), "std": header.get("std")}
    return network.eval()


def load_packed(path: str | os.PathLike) -> nn.Module:
    """The inference network stored in a packed file, in eval mode: the same outputs as the exported one.

    Needs only bnnbench (to rebuild the architecture by name); no MLflow. Its input is normalised images
    (`network.normalisation` holds the mean and std).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BadInput(f"cannot read packed network {path}: {err.strerror or err}") from None
    return unpack(data, str(path))


# -- bnnbench export -------------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    packed: Path
    onnx: Path | None  # None with onnx=False
    packed_bytes: int
    size_kib: float  # the run's cost/size_kib: what the packed file should weigh
    onnx_bytes: int  # 0 without an ONNX file
    binary_weights: int  # 1-bit values in the file
    real_values: int  # float32 values in the file


def onnx_missing() -> str | None:
    """The packages `torch.onnx.export` needs and that are not installed, as a pip hint; None if all are."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    return f"the ONNX file needs {' and '.join(missing)}: pip install 'bnnbench[export]'" if missing else None


def _targets(out: str | os.PathLike, force: bool, with_onnx: bool) -> tuple[Path, Path]:
    packed = Path(out)
    onnx = packed.with_suffix(ONNX_SUFFIX)
    if packed.suffix == ONNX_SUFFIX:
        raise BadInput(f"--out {packed}: the ONNX file goes beside FILE with suffix .onnx; give FILE another "
                       f"suffix, e.g. {packed.with_suffix('.bnn')}")
    if not packed.parent.is_dir():
        raise BadInput(f"--out {packed}: folder '{packed.parent}' does not exist")
    for path in (packed, onnx) if with_onnx else (packed,):
        if path.is_dir():
            raise BadInput(f"--out {packed}: '{path}' is a folder")
        if path.exists() and not force:
            raise BadInput(f"'{path}' exists; give --force to overwrite it")
    return packed, onnx


def _write(path: Path, data: bytes) -> None:
    partial = path.with_name(f"{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def export_onnx(network: nn.Module, example: torch.Tensor, path: Path) -> None:
    """`network` as one ONNX file (weights inside, a dynamic batch dimension), checked with onnx.checker.

    The graph is saved as exported, without onnxscript's optimizer (`optimize=False`): on an untrained
    W1A1 network, whose BatchNorm layers all hold the same values, the optimized graph computed other
    logits (max difference 0.09 on logits of 0.4) while the unoptimized one matched to 1e-7; ONNX
    runtimes optimize the graph themselves when they load it.
    """
    import warnings

    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(network, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: "batch"},), optimize=False, verbose=False)
    proto = program.model_proto
    for node in proto.graph.node:  # the exporter's debugging notes (stack traces): a third of a small file
        del node.metadata_props[:]
    onnx.checker.check_model(proto)
    _write(path, proto.SerializeToString())


def _resolved(recipe: dict[str, Any]):
    """The ResolvedRun of a run's `config.yaml`, as `bnnbench run --recipe` would resolve it."""
    from bnnbench.config import RunConfig, resolve

    recipe = dict(recipe)
    overrides = recipe.pop("set", None) or {}
    return resolve(RunConfig(**recipe, method_overrides=overrides))


def _changed_settings(resolved) -> dict[str, Any]:
    """The method settings of a run that differ from its mode's defaults (usually none), JSON-ready."""
    import dataclasses

    defaults = resolved.method_cls.default_config(resolved.mode)
    changed = {}
    for field in dataclasses.fields(defaults):
        value = getattr(resolved.method_config, field.name)
        if value != getattr(defaults, field.name):
            changed[field.name] = list(value) if isinstance(value, tuple) else value
    return changed


def export_run(run_id: str, out: str | os.PathLike, tracking_uri: str | None = None, force: bool = False,
               onnx: bool = True) -> ExportResult:
    """Write a FINISHED run's network bit-packed to `out` and (`onnx`) as ONNX beside it; BadInput for bad
    input: an unknown run, a run that is not FINISHED or has no model, an existing file without `force`."""
    from bnnbench import tracking

    packed_path, onnx_path = _targets(out, force, onnx)
    missing = onnx_missing() if onnx else None
    if missing:
        raise BadInput(f"{missing}, or give --no-onnx")
    uri = tracking.check_store(tracking_uri)
    if not tracking.store_exists(uri):
        raise BadInput(f"no MLflow store at '{uri}': give --tracking-uri of the store the run is in")
    summary = tracking.run_summary(uri, run_id)
    if summary["status"] != "FINISHED":
        reason = summary["tags"].get("failure_reason")
        raise BadInput(f"run {run_id} is {summary['status']}{f' ({reason})' if reason else ''}: only a FINISHED "
                       f"run has a trained network to export")
    model = tracking.load_model(uri, run_id)
    info = tracking.run_info(uri, run_id)
    if not info["recipe"]:
        raise BadInput(f"run {run_id} has no config.yaml artifact: it was not recorded by this bnnbench")
    resolved = _resolved(info["recipe"])
    try:
        network = inference_network(model)
    except ValueError as err:
        raise BadInput(f"run {run_id} cannot be exported: {err}") from None
    dataset = resolved.dataset_cls
    header = {"method": resolved.method, "dataset": resolved.dataset, "mode": resolved.mode, "arch": resolved.arch,
              "image_size": resolved.image_size, "set": _changed_settings(resolved), "mean": list(dataset.mean),
              "std": list(dataset.std), "run_id": run_id}
    try:
        data = pack(network, header)
    except ValueError as err:
        raise BadInput(f"run {run_id} cannot be exported: {err}") from None
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, dataset.in_channels, resolved.image_size, resolved.image_size, generator=generator)
    with torch.no_grad():
        if not torch.equal(unpack(data)(example), network(example)):  # the file round-trips exactly
            raise RuntimeError(f"run {run_id}: the unpacked network differs from the exported one")
    _write(packed_path, data)
    if onnx:
        export_onnx(network, example, onnx_path)
    binary, real = _layout(network, [entry[0] for entry in read_header(data)[0]["binary"]])
    return ExportResult(packed=packed_path, onnx=onnx_path if onnx else None, packed_bytes=packed_path.stat().st_size,
                        size_kib=summary["metrics"].get("cost/size_kib", float("nan")),
                        onnx_bytes=onnx_path.stat().st_size if onnx else 0,
                        binary_weights=sum(m.weight.numel() for _, m in binary),
                        real_values=sum(p.numel() for _, p in real))
