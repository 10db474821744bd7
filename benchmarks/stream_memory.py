"""Long streams: 1000 partial_fit calls of 10 MNIST rows each; does process memory stay flat?

Each estimator runs in a fresh process (memory is per process). It receives 10,000 MNIST training
images as 1000 ``partial_fit`` calls of 10 rows (300 calls under ``--quick``). After calls 100,
500 (150 quick) and the last, the benchmark records the process's resident memory (RSS, from
``/proc/self/statm``; ``rss_trimmed_mb`` after glibc's ``malloc_trim(0)`` hands the freed heap
back: memories that grow by concatenation free the old copy every call, and glibc keeps such
blocks), the Python heap traced by ``tracemalloc`` (torch tensors are allocated outside it, so it
shows Python-side leaks such as growing lists or dicts) and the bytes the estimator is meant to
hold: its stored examples, embeddings, network and optimizer state (``stored_mb``).

Bounded memories (MbPA with ``memory_size=1000``, the Impostor Network with ``max_centers=500``,
Meta-Neighborhoods' fixed dictionary) should hold RSS flat after warm-up; memories that keep every
example (SemiparametricClassifier, NNGK) grow by what they store. ``summary``: per estimator
``<name>.rss_growth_mb`` (trimmed RSS after the last call minus after call 100;
``rss_untrimmed_growth_mb`` without the trim), ``<name>.stored_growth_mb`` (growth of what it is
meant to store over the same calls), ``<name>.unexplained_growth_mb`` (the difference),
``<name>.tracemalloc_growth_mb`` and ``<name>.seconds_per_call``; and ``rss_growth_mb`` (the
largest unexplained growth over the estimators).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

CALLS, ROWS = 1000, 10
ESTIMATORS = {
    "semiparametric": ("SemiparametricClassifier", {}),
    "mbpa": ("MbPAClassifier", {"memory_size": 1000}),
    "meta-neighborhoods": ("MetaNeighborhoodsClassifier", {"n_entries": 100}),
    "nngk": ("NNGKClassifier", {"n_neighbors": 8}),
    "impostor": ("ImpostorClassifier", {"n_neighbors": 8, "n_add": 5, "max_centers": 500}),
}


def _rss_mb(trim: bool = False) -> float:
    """Resident memory of this process; with ``trim``, after glibc returns the free heap to the system.

    Memories that grow by concatenation free the old copy each call; glibc keeps freed blocks for
    reuse, so raw RSS overstates what is live. ``malloc_trim(0)`` separates the two.
    """
    if trim:
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc
            pass
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _stored_mb(est) -> float:
    """Bytes of every tensor the estimator holds (examples, embeddings, network, optimizer).

    Measured from outside, by walking the estimator's attributes (``vars``, whatever their names)
    down through dicts, lists, torch modules, optimizers (their ``state_dict()["state"]``: Adam's
    moments) and sksemiparam's own objects, and counting each tensor reached once.
    """
    import torch

    seen: set[int] = set()
    total = 0

    def visit(obj, depth=0):
        nonlocal total
        if depth > 4 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            total += obj.untyped_storage().nbytes()
        elif isinstance(obj, torch.nn.Module):
            for t in obj.state_dict(keep_vars=True).values():
                visit(t, depth + 1)
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v, depth + 1)
        elif isinstance(obj, torch.optim.Optimizer):
            visit(obj.state_dict()["state"], depth + 1)
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("sksemiparam"):
            visit(vars(obj), depth + 1)

    visit(vars(est))
    return total / 2**20


def _stream(name: str, calls: int, data_dir: str | None) -> dict[str, Any]:
    import time
    import tracemalloc
    import warnings

    import torch

    import sksemiparam
    from benchmarks._images import load_images

    torch.set_num_threads(1)
    X, y, _, _ = load_images("mnist", data_dir)
    X, y = X[: calls * ROWS], y[: calls * ROWS]
    cls_name, params = ESTIMATORS[name]
    est = getattr(sksemiparam, cls_name)(random_state=0, device="cpu", **params)
    checkpoints = {100, calls // 2, calls}
    rows = []
    tracemalloc.start()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for call in range(1, calls + 1):
            s = slice((call - 1) * ROWS, call * ROWS)
            est.partial_fit(X[s], y[s], classes=np.arange(10))
            if call in checkpoints:
                rows.append(
                    {
                        "estimator": name,
                        "call": call,
                        "rss_mb": round(_rss_mb(), 2),
                        "rss_trimmed_mb": round(_rss_mb(trim=True), 2),
                        "tracemalloc_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 3),
                        "stored_mb": round(_stored_mb(est), 3),
                        "seconds": round(time.perf_counter() - start, 2),
                    }
                )
    tracemalloc.stop()
    # The fitted model still predicts (it is not just memory we kept flat).
    rows[-1]["train_accuracy_last_1000"] = round(float(est.score(X[-1000:], y[-1000:])), 4)
    return {"rows": rows}


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Each estimator's stream in a fresh process, one after another."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    calls = 300 if quick else CALLS
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"calls": calls, "rows_per_call": ROWS}
    worst = 0.0
    for name in ESTIMATORS:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = pool.submit(_stream, name, calls, data_dir).result()["rows"]
        results.extend(rows)
        first, last = rows[0], rows[-1]
        rss = last["rss_trimmed_mb"] - first["rss_trimmed_mb"]
        stored = last["stored_mb"] - first["stored_mb"]
        summary[f"{name}.rss_growth_mb"] = round(rss, 2)
        summary[f"{name}.rss_untrimmed_growth_mb"] = round(last["rss_mb"] - first["rss_mb"], 2)
        summary[f"{name}.stored_growth_mb"] = round(stored, 2)
        summary[f"{name}.unexplained_growth_mb"] = round(rss - stored, 2)
        summary[f"{name}.tracemalloc_growth_mb"] = round(last["tracemalloc_mb"] - first["tracemalloc_mb"], 3)
        summary[f"{name}.seconds_per_call"] = round(last["seconds"] / calls, 4)
        worst = max(worst, rss - stored)
        print(
            f"  {name:<20} RSS +{rss:.1f} MB (stored +{stored:.1f} MB), "
            f"{last['seconds'] / calls * 1000:.1f} ms/call",
            flush=True,
        )
    summary["rss_growth_mb"] = round(worst, 2)
    return {"results": results, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """RSS and stored bytes against the number of partial_fit calls, per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for i, name in enumerate(ESTIMATORS):
        sel = [r for r in rows if r["estimator"] == name]
        calls = [r["call"] for r in sel]
        ax.plot(calls, [r["rss_mb"] for r in sel], "-o", color=f"C{i}", label=f"{name}: process RSS")
        ax.plot(
            calls, [sel[0]["rss_mb"] + r["stored_mb"] - sel[0]["stored_mb"] for r in sel], ":", color=f"C{i}"
        )
    ax.set_xlabel("partial_fit calls (10 rows each)")
    ax.set_ylabel("MB (dotted: RSS at call 100 + growth of what the model stores)")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
