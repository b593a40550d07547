"""Several processes, one training run: an external launcher starts them, Lightning's strategy trains,
rank 0 records.

Multi-device training goes through Lightning's strategies (`--devices N`, `--strategy ddp`,
`--num-nodes M`). Every process of a run runs the whole command from its first line, started by
torchrun (`torch.distributed.run`) or by SLURM's `srun`; `bnnbench run --devices N` on a plain command
line starts itself again under torchrun with N processes (`relaunch`). Lightning's cluster
environments (`TorchElasticEnvironment`, `SLURMEnvironment`) say which process is which; `start`
opens the process group at once — Lightning's strategy then uses it as its own — so that before each
run rank 0 can hand the others what it decided (`share`: the run id, the suite cell, the config to
resume). Rank 0 alone talks to MLflow and Optuna.
"""

from __future__ import annotations

import datetime
import os
import sys

RELAUNCHED = "BNNBENCH_RELAUNCHED"  # set in the environment of the processes `relaunch` starts
TIMEOUT = datetime.timedelta(hours=24)  # a follower waits this long for rank 0 (a suite may wait on others)
_objects = None  # the process group `share` broadcasts over (gloo: Python objects travel on the CPU)


def environment():
    """Lightning's cluster environment of this process, or None for a single process."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for kind in (TorchElasticEnvironment, SLURMEnvironment):
        if kind.detect():
            env = kind()
            return env if env.world_size() > 1 else None
    return None


def rank() -> int:
    env = environment()
    return env.global_rank() if env else 0


def is_main() -> bool:
    return rank() == 0


def relaunch(devices: int, argv: list[str]):
    """Run this command again as `devices` processes under torchrun (one machine); does not return."""
    os.environ[RELAUNCHED] = "1"
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc-per-node={devices}", "-m", "bnnbench", *argv])


def start(backend: str) -> None:
    """Open the process group of a multi-process run (a no-op for one process, or when it is open)."""
    global _objects
    import torch.distributed as dist

    env = environment()
    if env is None or dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", env.main_address)
    os.environ.setdefault("MASTER_PORT", str(env.main_port))
    dist.init_process_group(backend, rank=env.global_rank(), world_size=env.world_size(), timeout=TIMEOUT)
    _objects = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend != "gloo" else None


def stop() -> None:
    """Close the process group at the end of a command. A process that exits with it open may abort in the
    communication library's destructors ("terminate called without an active exception", SIGABRT) after
    all its work is done, which the launcher reports as a failed command."""
    global _objects
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _objects = None


def share(value=None):
    """Rank 0's `value`, on every process of the run (`value` itself with one process)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_objects)
    return box[0]


def follow() -> None:
    """Another process than rank 0 of a suite or a study: train each (config, resume id, callbacks)
    that rank 0 shares before it trains it, until it shares None. A run that fails or is pruned stops
    on rank 0 too, which goes on to the next."""
    import optuna

    from bnnbench import runner

    while (order := share()) is not None:
        cfg, resume, callbacks = order
        try:
            runner.run(cfg, callbacks=callbacks, resume=resume)
        except (runner.RunFailed, optuna.TrialPruned):
            pass
