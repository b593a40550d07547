"""Step-time benchmark: every method's training step on one architecture, side by side, in one process.

Binarizing weights is elementwise work, tiny next to the convolutions, so the physical limit of a
binary training step is the full-precision step; this measures how close each method gets. Each
method is built exactly as `bnnbench run` builds it (`runner.resolve` + `runner.build_method`), fed
synthetic tensors of the dataset's shape (no data files), and stepped with its own optimizer and its
`after_optimizer_step` hook. Methods are timed round-robin, one step each in turn, so drift of the
machine (thermal, other processes) hits every method alike; warm-up steps are excluded, and the
median, min and max of the timed steps are reported with the ratio of medians to `fp`.

Memory: on CUDA the peak allocated memory of a step (`torch.cuda.max_memory_allocated`); on the CPU
the bytes autograd saves for the backward pass of one step (a `saved_tensors_hooks` tally), which is
what a method adds over FP (masks, copies) and what limits the batch size.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from bnnbench.config import RunConfig
from bnnbench.errors import BadInput


@dataclass
class StepTiming:
    method: str
    times_ms: list[float] = field(default_factory=list)
    memory_mib: float = 0.0
    compile_s: float = 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)


class _Stepper:
    """One method's model, optimizer and synthetic batch; `step()` runs one training step."""

    def __init__(self, method: str, dataset: str, arch: str | None, batch_size: int, image_size: int | None,
                 device: torch.device, channels_last: bool, precision: str, compile: bool):
        from bnnbench.runner import build_method, resolve

        resolved = resolve(RunConfig(method=method, dataset=dataset, arch=arch, image_size=image_size,
                                     batch_size=batch_size))
        torch.manual_seed(0)
        self.name = method
        self.module = build_method(resolved).to(device)
        optimizers = self.module.configure_optimizers()
        self.optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers
        d = resolved.dataset_cls
        self.x = torch.randn(batch_size, d.in_channels, resolved.image_size, resolved.image_size, device=device)
        self.y = torch.randint(0, d.num_classes, (batch_size,), device=device)
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.module.train()
        self.forward = torch.compile(self.module.model) if compile else self.module.model
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
        self.device = device

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            loss = self.module.loss(self.forward(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.module.after_optimizer_step()

    def saved_bytes(self) -> int:
        total = 0

        def pack(tensor):
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self.step()
        return total

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def bench_step(methods: list[str], dataset: str = "cifar10", arch: str | None = None, batch_size: int = 128,
               image_size: int | None = None, steps: int = 10, warmup: int = 2, compile: bool = False,
               channels_last: bool = False, precision: str = "32", device: str = "cpu") -> list[StepTiming]:
    """Time `steps` training steps of each method (after `warmup`), interleaved round-robin."""
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device is available here; valid here: cpu")
    if precision == "bf16-mixed" and device == "cpu":
        raise BadInput("--precision bf16-mixed is for --device cuda; on the CPU use 32")
    dev = torch.device(device)
    if compile:  # all methods stay compiled side by side; past Dynamo's limit (8 per code) they'd run eager
        torch._dynamo.reset()
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(methods))
    steppers, timings = [], []
    for method in methods:
        stepper = _Stepper(method, dataset, arch, batch_size, image_size, dev, channels_last, precision, compile)
        timing = StepTiming(method)
        started = time.perf_counter()
        for _ in range(warmup):  # the first compiled step includes compilation
            stepper.step()
        stepper.sync()
        timing.compile_s = time.perf_counter() - started if compile else 0.0
        steppers.append(stepper)
        timings.append(timing)
    for _ in range(steps):
        for stepper, timing in zip(steppers, timings, strict=True):
            stepper.sync()
            started = time.perf_counter()
            stepper.step()
            stepper.sync()
            timing.times_ms.append((time.perf_counter() - started) * 1000)
    # Memory after the timing: a step under saved-tensor hooks makes Dynamo compile another graph,
    # and the compiled models then ran ~30 % slower (measured on resnet20).
    for stepper, timing in zip(steppers, timings, strict=True):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            stepper.step()
            stepper.sync()
            timing.memory_mib = torch.cuda.max_memory_allocated(dev) / 2**20
        else:
            timing.memory_mib = stepper.saved_bytes() / 2**20
    return timings


def report(timings: list[StepTiming]) -> list[dict]:
    """Rows for printing or JSON: ms/step (median, min, max), ratio of medians to fp, memory."""
    reference = next((t.median_ms for t in timings if t.method == "fp"), None)
    return [{"method": t.method, "median_ms": round(t.median_ms, 2), "min_ms": round(min(t.times_ms), 2),
             "max_ms": round(max(t.times_ms), 2),
             "ratio_to_fp": round(t.median_ms / reference, 3) if reference else None,
             "memory_mib": round(t.memory_mib, 1), "compile_s": round(t.compile_s, 1)} for t in timings]
