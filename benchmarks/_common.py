"""Helpers shared by the benchmarks and their runner: discovery, environment, timing."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def available_benchmarks() -> dict[str, str]:
    """Benchmark names (with ``-``) mapped to their module names (with ``_``), sorted by name.

    Every module of this package whose name does not start with ``_`` is a benchmark.
    """
    modules = sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if not p.stem.startswith("_"))
    return {m.replace("_", "-"): m for m in modules}


def default_data_dir() -> str | None:
    """``../shared/data`` beside the repository root when it exists, else None."""
    path = (REPO_ROOT / ".." / "shared" / "data").resolve()
    return str(path) if path.is_dir() else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(quick: bool) -> dict[str, Any]:
    """Versions, device and CPU the benchmark ran on.

    Versions come from package metadata, so optional dependencies (pynndescent, numba) are not
    imported here: importing them would start numba's compilation in every process.
    """
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "python": platform.python_version(),
        "sksemiparam": _version("sksemiparam"),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "sklearn": _version("scikit-learn"),
        "pynndescent": _version("pynndescent"),
        "numba": _version("numba"),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "cpu_count": _cpu_count(),
        # Other processes on the machine slow every timing: note how busy it was.
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "quick": quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_count() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def timed(fn: Callable[[], Any], *, repeat_below: float = 1.0, repeats: int = 3) -> tuple[float, Any]:
    """Wall-clock seconds of ``fn()`` and its result.

    A call faster than ``repeat_below`` seconds is run ``repeats`` times in all and the fastest
    time is kept (short timings are noisy); slower calls are run once.

    Returns
    -------
    seconds : float
    result : the value of the first call
    """
    start = time.perf_counter()
    result = fn()
    best = time.perf_counter() - start
    if best < repeat_below:
        for _ in range(repeats - 1):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    return best, result
