"""Step-time benchmark: every method's training step on one architecture, side by side, in one process.

Binarizing weights is elementwise work, tiny next to the convolutions, so the physical limit of a
binary training step is the full-precision step; this measures how close each method gets. Each
method is built exactly as `bnnbench run` builds it (`runner.resolve` + `runner.build_method`) and
stepped by Lightning's own training loop (`Trainer.fit` on synthetic tensors of the dataset's shape, no
data files, no logger, no validation), so every hook a real run calls runs in the same order: the
method's `on_train_batch_start` (mirror descent's β, Bop's and XNOR-Net's updates), `training_step`
with its logging, `on_before_optimizer_step` (BNEW's proximal step), the optimizer,
`on_train_batch_end` (`after_optimizer_step`: clipping). A step's time runs from the start of one
batch to the start of the next (`StepTimes`), so it includes the module's `on_train_batch_end`, which
Lightning calls after the callbacks'. Epoch hooks (sign snapshots, schedules) run once per epoch in a
run, so they are outside the timed steps.

The methods are timed in rounds, a few steps of each in turn, so drift of the machine (thermal, other
processes) hits every method alike; warm-up steps (with `--compile`, the compilation) are excluded, and
the median, min and max of the timed steps are reported with the ratios of medians and of minimums to `fp`.
`noise_warnings` says when the spread of the timings is larger than the differences they report.

Memory: on CUDA the peak allocated memory of a step (`torch.cuda.max_memory_allocated`); on the CPU
the bytes autograd saves for the backward pass of one step (a `saved_tensors_hooks` tally), which is
what a method adds over FP (masks, copies) and what limits the batch size.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field

import lightning.pytorch as pl
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


class StepTimes(pl.Callback):
    """Seconds from the start of each training batch to the start of the next (CUDA synchronised); with
    `count_saved`, the bytes autograd saves for backward in the first step."""

    def __init__(self, device: torch.device, count_saved: bool = False):
        self.device, self.count_saved = device, count_saved
        self.starts: list[float] = []
        self.saved_bytes = 0
        self._hooks = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.starts.append(time.perf_counter())
        if self._hooks is not None:  # the first step is over
            self._hooks.__exit__(None, None, None)
            self._hooks = None
        elif self.count_saved and len(self.starts) == 1:
            def pack(tensor):
                self.saved_bytes += tensor.numel() * tensor.element_size()
                return tensor

            self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            self._hooks.__enter__()

    def intervals_ms(self) -> list[float]:
        return [(b - a) * 1000 for a, b in zip(self.starts, self.starts[1:])]


class _Synthetic(torch.utils.data.Dataset):
    """The same random batch `batches` times: one epoch (a batch is a tensor pair already: no collation)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batches: int):
        self.x, self.y, self.batches = x, y, batches

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int):
        return self.x, self.y


class SteppedMethod:
    """One method's LightningModule and synthetic batch; `fit(n)` runs n training steps through Lightning."""

    def __init__(self, method: str, dataset: str, arch: str | None, batch_size: int, image_size: int | None,
                 device: torch.device, channels_last: bool, precision: str, compile: bool):
        from bnnbench.runner import build_method, resolve

        resolved = resolve(RunConfig(method=method, dataset=dataset, arch=arch, image_size=image_size,
                                     batch_size=batch_size))
        torch.manual_seed(0)
        self.name, self.device, self.precision = method, device, precision
        self.module = build_method(resolved)
        d = resolved.dataset_cls
        self.x = torch.randn(batch_size, d.in_channels, resolved.image_size, resolved.image_size)
        self.y = torch.randint(0, d.num_classes, (batch_size,))
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        if compile:
            self.module.model = torch.compile(self.module.model)

    def fit(self, steps: int, count_saved: bool = False) -> StepTimes:
        """`steps` timed steps, as one epoch of `steps + 1` batches: the start of the last one ends the
        last timed step, and the epoch's hooks run before the first and after the last (untimed)."""
        times = StepTimes(self.device, count_saved)
        trainer = pl.Trainer(accelerator=self.device.type, devices=1, precision=self.precision, max_epochs=1,
                             limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[times])
        loader = torch.utils.data.DataLoader(_Synthetic(self.x, self.y, steps + 1), batch_size=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no validation", "few workers"
            trainer.fit(self.module, train_dataloaders=loader)
        return times


def round_chunks(steps: int, rounds: int) -> list[int]:
    """The steps of each round when `steps` are split into up to `rounds` rounds as evenly as they go."""
    rounds = max(1, min(rounds, steps))
    return [steps // rounds + (r < steps % rounds) for r in range(rounds)]


def bench_step(methods: list[str], dataset: str = "cifar10", arch: str | None = None, batch_size: int = 128,
               image_size: int | None = None, steps: int = 10, warmup: int = 2, compile: bool = False,
               channels_last: bool = False, precision: str = "32", device: str = "cpu",
               rounds: int = 5) -> list[StepTiming]:
    """Time `steps` training steps of each method (after `warmup`), in up to `rounds` rounds."""
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device is available here; valid here: cpu")
    if precision == "bf16-mixed" and device == "cpu":
        raise BadInput("--precision bf16-mixed is for --device cuda; on the CPU use 32")
    dev = torch.device(device)
    precision = "bf16-mixed" if precision == "bf16-mixed" else "32-true"
    if compile:  # all methods stay compiled side by side; past Dynamo's limit (8 per code) they'd run eager
        torch._dynamo.reset()
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(methods))
    built, timings = [], []
    for method in methods:
        entry = SteppedMethod(method, dataset, arch, batch_size, image_size, dev, channels_last, precision, compile)
        timing = StepTiming(method)
        started = time.perf_counter()
        if warmup:
            entry.fit(warmup)  # the first compiled step includes compilation
        timing.compile_s = time.perf_counter() - started if compile else 0.0
        built.append(entry)
        timings.append(timing)
    for chunk in round_chunks(steps, rounds):
        for entry, timing in zip(built, timings, strict=True):
            timing.times_ms += entry.fit(chunk).intervals_ms()
    # Memory after the timing: a step under saved-tensor hooks makes Dynamo compile another graph,
    # and the compiled models then ran ~30 % slower (measured on resnet20).
    for entry, timing in zip(built, timings, strict=True):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            entry.fit(1)
            timing.memory_mib = torch.cuda.max_memory_allocated(dev) / 2**20
        else:
            timing.memory_mib = entry.fit(1, count_saved=True).saved_bytes / 2**20
    return timings


def noise_warnings(timings: list[StepTiming]) -> list[str]:
    """One line per method whose timings (or fp's) spread wider than its difference from fp: then the
    ratio says less than it seems to."""
    reference = next((t for t in timings if t.method == "fp"), None)
    if reference is None:
        return []
    lines = []
    for t in timings:
        if t is reference:
            continue
        difference = abs(t.median_ms - reference.median_ms)
        spread = max(max(t.times_ms) - min(t.times_ms), max(reference.times_ms) - min(reference.times_ms))
        if spread > difference:
            lines.append(f"{t.method}: the timings spread over {spread:.1f} ms (min to max, it or fp), more than its "
                         f"{difference:.1f} ms difference from fp: more --steps or a quieter machine")
    return lines


def report(timings: list[StepTiming]) -> list[dict]:
    """Rows for printing or JSON: ms/step (median, min, max), ratio of medians to fp, ratio of minimums to fp
    (other processes only ever add time, so on a busy host the fastest step is the steadier estimate of a
    method's own cost), memory."""
    reference = next((t for t in timings if t.method == "fp"), None)

    def ratio(value: float, fp_value: float | None) -> float | None:
        return round(value / fp_value, 3) if fp_value else None

    return [{"method": t.method, "median_ms": round(t.median_ms, 2), "min_ms": round(min(t.times_ms), 2),
             "max_ms": round(max(t.times_ms), 2),
             "ratio_to_fp": ratio(t.median_ms, reference and reference.median_ms),
             "min_ratio_to_fp": ratio(min(t.times_ms), reference and min(reference.times_ms)),
             "memory_mib": round(t.memory_mib, 1), "compile_s": round(t.compile_s, 1)} for t in timings]
