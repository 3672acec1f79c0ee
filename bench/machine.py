"""The machine a number was measured on: CPU, cores, torch and its threads, the commit, the load that other
processes put on the cores while an epoch was timed, and the measured fp32 matmul peak (the yardstick of the
fraction-of-peak columns: 2 n^3 flops for an n x n product, the best repetition per size)."""
from __future__ import annotations

import datetime
import functools
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import REPO_ROOT

__all__ = ["cpu_model", "machine_info", "CpuSnapshot", "cpu_snapshot", "other_load", "matmul_gflops_by_size",
           "matmul_peak_gflops", "measure_peak", "best_seconds_per_call"]


def cpu_model() -> str:
    """The CPU's ``model name`` from /proc/cpuinfo (Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

def _git_state() -> dict[str, Any]:
    """The commit and whether src/ differs from it, so a number can be traced to the code that gave it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "--short", "HEAD"), "src_modified": bool(git("status", "--porcelain",
                                                                                        "--", "src"))}
    except (OSError, subprocess.SubprocessError):
        return {}

def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch version and thread count, the date: stored beside every result."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable, "machine": platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None, **_git_state()}

@dataclass
class CpuSnapshot:
    """Busy CPU ticks of the whole machine and of this process (Linux /proc), and the wall clock."""

    machine_busy: int
    steal: int
    own: int
    wall: float

def cpu_snapshot() -> CpuSnapshot | None:
    """Take a snapshot for ``other_load``; None where /proc is not available."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return CpuSnapshot(user + nice + system + irq + softirq, steal, int(own[11]) + int(own[12]),
                       time.perf_counter())  # utime + stime of all our threads

def other_load(before: CpuSnapshot | None, after: CpuSnapshot | None) -> float | None:
    """Cores kept busy by other processes (and stolen by the hypervisor) between two snapshots, on average.

    On a small shared machine, another process that wants the cores while torch's threads spin-wait for each
    other can slow a small-matrix training loop down tenfold; epochs with ``other_load`` above ~0.2 are suspect."""
    if before is None or after is None or after.wall <= before.wall:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    others = (after.machine_busy - before.machine_busy) - (after.own - before.own) + (after.steal - before.steal)
    return max(0.0, others / ticks / (after.wall - before.wall))

def best_seconds_per_call(fn: Callable[[], None], seconds: float, block: int = 20) -> float:
    """The seconds of one ``fn()`` call: after a warm-up block, blocks of ``block`` calls for about ``seconds``
    (at least one), the best block's mean -- the fastest the machine gave (the matmul peak is its best single
    product; a step's floor built from it is the most generous one)."""
    for _ in range(block):
        fn()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        for _ in range(block):
            fn()
        best = min(best, (time.perf_counter() - start) / block)
        if time.perf_counter() >= deadline:
            return best

def matmul_gflops_by_size(seconds: float = 3.0, sizes: Iterable[int] = (512, 1024, 2048),
                          dtype: torch.dtype = torch.float32) -> dict[int, float]:
    """GFLOP/s of ``torch.mm`` on n x n matrices of ``dtype`` (default fp32) at the current thread count, the best
    repetition per size.

    ``seconds`` is the whole budget, shared equally between the sizes (each gets at least one warm-up and one
    timed product)."""
    sizes = list(sizes)
    out: dict[int, float] = {}
    gen = torch.Generator().manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(dtype)
        b = torch.randn(n, n, generator=gen).to(dtype)
        c = torch.empty(n, n, dtype=dtype)
        # one product as the warm-up (allocation, thread pool, caches), then the best single product
        best = best_seconds_per_call(functools.partial(torch.mm, a, b, out=c), seconds / len(sizes), block=1)
        out[n] = 2 * n ** 3 / best / 1e9
    return out

def matmul_peak_gflops(seconds: float = 3.0, sizes: Iterable[int] = (512, 1024, 2048)) -> float:
    """The measured fp32 matmul peak of this machine (GFLOP/s) at ``torch.get_num_threads()`` threads: the best
    of a few square sizes. What a dense layer could reach at best; the yardstick for ``fraction_of_peak``."""
    return max(matmul_gflops_by_size(seconds, sizes).values())

def measure_peak(data_name: str, n_train: int, n_test: int, seconds: float) -> tuple[dict[str, Any], int,
                                                                                       dict[int, float], float]:
    """At the start of a run: the machine (its load average is the other processes'), the thread count, the
    matmul peak by size and its best; prints them."""
    machine = machine_info()
    threads = torch.get_num_threads()
    print(f"{data_name}: {n_train} training and {n_test} test images; torch {torch.__version__}, "
          f"{threads} threads, {cpu_model()}", flush=True)
    by_size = matmul_gflops_by_size(seconds)
    peak = max(by_size.values())
    print("matmul peak " + ", ".join(f"{n}: {g:.0f}" for n, g in by_size.items()) + f" GFLOP/s -> {peak:.0f}",
          flush=True)
    return machine, threads, by_size, peak
