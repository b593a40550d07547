"""`bnnbench.memory.keep_freed_memory`: large tensors freed and allocated again reuse the process's memory
(no new page faults) instead of being mapped afresh each time, and a user's own glibc setting wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bnnbench.memory import users_own_setting

pytestmark = pytest.mark.skipif(not hasattr(os, "confstr") or "CS_GNU_LIBC_VERSION" not in os.confstr_names,
                                reason="glibc only")

# Rounds of a 64 MiB tensor allocated, written and freed, as training steps do with their activations: the
# minor page faults of the last 9 of 19 (glibc's heap takes a few rounds to settle), and whether the setting
# was applied.
ROUNDS = """
import json, resource, sys, torch
from bnnbench.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
for _ in range(10):
    torch.empty(16 * 2**20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    torch.empty(16 * 2**20).fill_(1.0)
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "applied": applied}))
"""


def rounds(mode: str, **env) -> dict:
    environment = {k: v for k, v in os.environ.items() if not users_own_setting({k: v})}
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True,
                         env={**environment, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_large_tensors_are_reused_without_new_page_faults():
    plain, kept = rounds("plain"), rounds("keep")
    assert kept["applied"] is True
    assert plain["faults"] > 9 * 32  # every round faulted its 64 MiB in again (even in 2 MiB huge pages)
    assert kept["faults"] * 10 < plain["faults"]


def test_a_users_own_malloc_setting_is_left_alone():
    assert rounds("keep", MALLOC_MMAP_MAX_="65536")["applied"] is False
    assert rounds("keep", MALLOC_ARENA_MAX="2")["applied"] is False
    assert rounds("keep", GLIBC_TUNABLES="glibc.malloc.trim_threshold=0")["applied"] is False
