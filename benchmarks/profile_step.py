"""Where a method's training step spends the time the `fp` step does not: torch.profiler over the steps
`bnnbench bench-step` times (the same Lightning-driven `bnnbench.speed.SteppedMethod`), op by op, each
method against `fp` (in rounds, a few steps of every method in turn, as bench-step times them, so drift
of the machine lands on every method alike), and the memory-traffic floor of the elementwise work a binary
method adds.

    python benchmarks/profile_step.py --arch resnet18 --methods ste bnn bnew --steps 3
    python benchmarks/profile_step.py --arch resnet20 --methods all --steps 10 --compile

Per method it prints the profiled ms per step, the difference from fp, and the ops whose self CPU time
per step differs most from fp's (a method's own kernels, or fp's where the method runs fewer), and the
difference without the convolution kernels: what the method adds by its own (elementwise, optimizer)
work. The floor: a binary layer's sign must read its input and write the sign (forward), and its gradient
factor read the incoming gradient and write the gated one (backward); its latent weights are passed over
by the quantizer, its gradient and the optimizer. One such pass is timed here as a copy (`Tensor.copy_`: read
n floats, write n) over as many elements as the binary layers' inputs (per step, at this batch) and their
latent weights, so "2 input passes + 3 weight passes" is about the least elementwise time a W1A1 method
can add on this machine, and "3 weight passes" what a BWN method can add.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import defaultdict

import torch

from bnnbench import memory
from bnnbench.layers import binary_layers
from bnnbench.registry import METHODS
from bnnbench.speed import SteppedMethod, round_chunks


def copy_ms(elements: int, repeats: int = 7) -> float:
    """Median ms of one read-n-write-n pass over `elements` float32 values."""
    if not elements:
        return 0.0
    source, target = torch.randn(elements), torch.empty(elements)
    target.copy_(source)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def binary_sizes(entry: SteppedMethod) -> tuple[int, int]:
    """Elements of the binary layers' inputs (those with an input quantizer) in one forward pass of the
    batch, and of their latent weights."""
    seen = []
    layers = binary_layers(entry.module.model)
    hooks = [layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].numel()))
             for _, layer in layers if layer.binary_input]
    with torch.no_grad():
        entry.module.model.eval()(entry.x)
    entry.module.model.train()
    for hook in hooks:
        hook.remove()
    return sum(seen), sum(layer.weight.numel() for _, layer in layers)


def profile(entry: SteppedMethod, steps: int, per_op: dict[str, float]) -> int:
    """Add the self CPU ms of every op over `steps` profiled steps to `per_op`; returns the batches run."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        entry.fit(steps)
    for event in prof.key_averages():
        per_op[event.key] += event.self_cpu_time_total / 1000
    return steps + 1  # fit(n) runs n + 1 batches (the last one's start ends the last timed step)


def profile_in_rounds(entries: dict[str, SteppedMethod], steps: int, rounds: int) -> dict[str, dict[str, float]]:
    """ms per step of each op, per method, profiled in `rounds` rounds of a few steps of every method in turn
    (as `speed.bench_step` times them), so drift of the machine lands on every method alike."""
    per_op = {name: defaultdict(float) for name in entries}
    batches = dict.fromkeys(entries, 0)
    for chunk in round_chunks(steps, rounds):
        for name, entry in entries.items():
            batches[name] += profile(entry, chunk, per_op[name])
    return {name: {k: v / batches[name] for k, v in ops.items()} for name, ops in per_op.items()}


def _convolution(op: str) -> bool:
    """The convolution kernels (forward, backward and their autograd nodes): the same work in every method
    (a binary layer convolves its ±1 tensors with the same kernel), whose time still differs between
    methods by several percent on this CPU, in both directions (on resnet20, −27 to +34 ms of fp's 259)."""
    return "convolution" in op.lower()


def _without_convolutions(ops: dict[str, float]) -> float:
    return sum(ms for op, ms in ops.items() if not _convolution(op))


def main() -> None:
    memory.keep_freed_memory()  # as the CLI does
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--methods", nargs="+", default=["ste", "bnn"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--top", type=int, default=6)
    args = parser.parse_args()
    methods = [m for m in METHODS.names() if m != "fp"] if args.methods == ["all"] else args.methods
    if args.compile:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * (len(methods) + 1))
    warnings.filterwarnings("ignore")
    device = torch.device("cpu")
    entries = {}
    for method in ["fp", *methods]:
        entries[method] = SteppedMethod(method, args.dataset, args.arch, args.batch_size, None, device, False,
                                        "32-true", args.compile)
        entries[method].fit(2)  # warm-up (compilation)
    inputs, weights = max(binary_sizes(e) for e in entries.values())
    input_pass, weight_pass = copy_ms(inputs), copy_ms(weights)
    print(f"{args.arch}, batch {args.batch_size}, {'compiled' if args.compile else 'eager'}, "
          f"{torch.get_num_threads()} threads: binary-layer inputs {inputs / 1e6:.1f} M elements "
          f"(one copy pass {input_pass:.1f} ms), latent weights {weights / 1e6:.2f} M ({weight_pass:.1f} ms)")
    profiled = profile_in_rounds(entries, args.steps, args.rounds)
    fp_ops = profiled["fp"]
    fp_ms = sum(fp_ops.values())
    print(f"fp: {fp_ms:.1f} ms per step (profiled)")
    for method in methods:
        ops = profiled[method]
        ms = sum(ops.values())
        inputs_here, weights_here = binary_sizes(entries[method])
        floor = (2 * input_pass if inputs_here else 0.0) + (3 * weight_pass if weights_here else 0.0)
        own = _without_convolutions(ops) - _without_convolutions(fp_ops)
        print(f"\n{method}: {ms:.1f} ms ({ms / fp_ms:.3f} × fp, {ms - fp_ms:+.1f} ms); elementwise floor "
              f"{floor:.1f} ms ({(fp_ms + floor) / fp_ms:.3f} × fp); all but the convolutions {own:+.1f} ms "
              f"({(fp_ms + own) / fp_ms:.3f} × fp)")
        differences = sorted(((ops.get(k, 0.0) - fp_ops.get(k, 0.0), k) for k in set(ops) | set(fp_ops)),
                             key=lambda d: -abs(d[0]))
        for difference, key in differences[:args.top]:
            print(f"  {difference:+8.1f} ms  {key}  ({ops.get(key, 0.0):.1f} vs fp {fp_ops.get(key, 0.0):.1f})")


if __name__ == "__main__":
    main()
