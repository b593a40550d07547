"""Keep freed CPU memory in the process for reuse, through glibc's `mallopt` (the C library's own knob).

PyTorch's CPU allocator has no cache: every tensor is a fresh `malloc`. glibc serves requests of 32 MiB
and more (and, once its threshold has adapted, many smaller ones) with a new `mmap` and returns them with
`munmap` on free, so every large activation or gradient of every step is faulted in page by page again and
zeroed by the kernel. On a CIFAR ResNet-18 at batch 128 a feature map of 64 channels is exactly 32 MiB, and a
binary method allocates more of them than fp (the sign, the gate's output): measured with
`bnnbench bench-step --arch resnet18 --methods fp,bnn,fda --steps 3` on 2 cores, the steps took fp 1672,
bnn 3110 and fda 5809 ms with 16.3 M minor page faults in the whole run, and fp 1635, bnn 1674, fda 3796 ms
with 1.4 M after `keep_freed_memory()` (peak RSS 4.9 → 6.2 GB). jemalloc through `LD_PRELOAD`, with its
defaults, was slower than either.

`keep_freed_memory` turns off glibc's use of `mmap` (M_MMAP_MAX = 0) and raises the threshold above which
it trims the heap's free top back to the system (M_TRIM_THRESHOLD) to 2 GiB, the most `mallopt` takes, so
freed blocks stay mapped and are reused. It leaves the allocator alone when the user set any of glibc's
malloc parameters (a `MALLOC_*` variable or `GLIBC_TUNABLES`), and off glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>


def users_own_setting(environ: dict[str, str]) -> bool:
    """Whether the environment sets glibc's malloc itself (then it is the user's choice, kept)."""
    return "GLIBC_TUNABLES" in environ or any(name.startswith("MALLOC_") for name in environ)


def keep_freed_memory() -> bool:
    """Make glibc keep and reuse freed memory; True when the setting was applied."""
    if users_own_setting(os.environ):
        return False
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (ValueError, OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
