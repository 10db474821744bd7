"""NeighborIndex at scale: build, add 10%, 10k queries, recall@10 and bytes per key, up to 1e6 keys.

Keys and queries are drawn from one Gaussian mixture in d = 64 (clustered, like learned embeddings);
the queries are fresh draws, not keys. Backends: exact (torch), exact with float16 keys, approximate
(pynndescent), faiss HNSW and faiss HNSW with float16 keys, each with NeighborIndex's defaults and
every thread torch, numba and faiss are given. Recall@10 is against exact search with float32 keys
over the same keys. "add" appends 10% more keys and is timed together with the first query after
it (1,000 queries), because a backend may defer work to that query (pynndescent rebuilds its graph
there); the recall after the add is measured on those queries. pynndescent's numba compilation is
paid once, on a warm-up problem, before any timing. The summary checks the ``"auto"`` rule: at each
size, the backend auto picks against the fastest backend with recall@10 >= 0.95, for a fit (build
+ 10k queries) and for a predict on a built index (10k queries).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._common import timed
from .index import CLUSTER_STD, SEED, K, _mixture
from .index import _warm_up as _index_warm_up

# 1e3 and 3e3 besides the 1e4-1e6: the "auto" rule is checked at every size, small ones too.
SIZES = [1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000]
QUICK_SIZES = [1_000, 3_000, 10_000, 30_000, 100_000, 200_000]
DIM = 64
N_QUERIES = 10_000
N_QUERIES_AFTER_ADD = 1_000
ADD_FRACTION = 0.1
N_CLUSTERS = 100
# CLUSTER_STD (0.5) as in the index benchmark: centres ~ N(0, I), clusters ~11 apart, ~4 wide in d = 64
MIN_RECALL = 0.95
WITHIN = 1.2  # the "auto" rule must stay within this factor of the fastest adequate backend
FAISS_FROM = 10_000  # the faiss alternative to "auto": exact below, faiss up to AUTO_THRESHOLD
DATA = f"gaussian mixture: {N_CLUSTERS} equal clusters, centres N(0, I), within-cluster std {CLUSTER_STD}"
# name -> NeighborIndex arguments
CONFIGS = {
    "exact": {"method": "exact"},
    "exact-float16": {"method": "exact", "key_dtype": "float16"},
    "approximate": {"method": "approximate"},
    "faiss": {"method": "faiss"},
    "faiss-float16": {"method": "faiss", "key_dtype": "float16"},
}
WARMUP_KEYS = 10_000  # > pynndescent's 1 MiB breadth-first forest threshold (4096 rows at d = 64)


def _recall(ids: torch.Tensor, true_ids: torch.Tensor) -> float:
    """Mean over queries of |returned ∩ true| / k."""
    return float((ids[:, :, None] == true_ids[:, None, :]).any(2).float().mean())


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _warm_up(centres: np.ndarray, rng: np.random.Generator) -> float:
    """Seconds of numba compilation (as in the ``index`` benchmark), then faiss imported untimed."""
    from sksemiparam.index import NeighborIndex

    jit = _index_warm_up(centres, rng, WARMUP_KEYS)
    if _faiss_available():  # its import (a second or so) is not part of the first faiss build either
        NeighborIndex("faiss").build(_mixture(1000, centres, rng)).query(_mixture(10, centres, rng), K)
    return jit


def _measure(name: str, n: int, all_keys, queries, truth, truth_after_add) -> tuple[dict[str, Any], Any, Any]:
    from sksemiparam.index import NeighborIndex

    keys = all_keys[:n]
    added = all_keys[n : n + int(ADD_FRACTION * n)]
    make = lambda: NeighborIndex(random_state=SEED, **CONFIGS[name]).build(keys)  # noqa: E731
    build_s, index = timed(make, repeat_below=0.0, repeats=1)
    memory = index.memory_bytes()
    query_s, (_, ids) = timed(lambda: index.query(queries, K))
    after = queries[:N_QUERIES_AFTER_ADD]
    add_s, _ = timed(lambda: index.add(added), repeat_below=0.0, repeats=1)
    first_query_s, (_, ids_after) = timed(lambda: index.query(after, K), repeat_below=0.0, repeats=1)
    return (
        {
            "n": n,
            "d": DIM,
            "n_queries": N_QUERIES,
            "backend": name,
            "data": DATA,
            "build_s": round(build_s, 4),
            "query_s": round(query_s, 4),
            "recall_at_10": round(_recall(ids, truth), 4) if truth is not None else 1.0,
            "add_s": round(add_s, 4),
            "first_query_after_add_s": round(first_query_s, 4),
            "add_total_s": round(add_s + first_query_s, 4),
            "recall_at_10_after_add": (
                round(_recall(ids_after, truth_after_add), 4) if truth_after_add is not None else 1.0
            ),
            "bytes_per_key": round(memory["total"] / n, 1),
            "key_bytes_per_key": round(memory["keys"] / n, 1),
            "graph_bytes_per_key": round(memory["graph"] / n, 1),
        },
        ids,
        ids_after,
    )


SCENARIOS = {
    # an estimator builds its index once per fit, then predicts: the least querying it can do
    "fit": lambda r, jit: r["build_s"] + r["query_s"],
    # the same as the first use in a new process, which pays numba's compilation for pynndescent
    "fit_new_process": lambda r, jit: (
        r["build_s"] + r["query_s"] + (jit if r["backend"] == "approximate" else 0)
    ),
    # a predict on an index built earlier
    "predict": lambda r, jit: r["query_s"],
}


def _auto_rules() -> dict[str, Any]:
    """n -> the backend picked, for the library's "auto" rule (exact or pynndescent, whatever is
    installed) and for the alternative it was weighed against: faiss between FAISS_FROM keys and
    AUTO_THRESHOLD (not adopted: faiss's HNSW build is not reproducible; see docs/neighbor-index.md)."""
    from sksemiparam.index import AUTO_THRESHOLD

    return {
        "auto": lambda n: "exact" if n < AUTO_THRESHOLD else "approximate",
        "faiss_alternative": lambda n: (
            "exact" if n < FAISS_FROM else "faiss" if n < AUTO_THRESHOLD else "approximate"
        ),
    }


def _auto_check(rows: list[dict[str, Any]], sizes: list[int], jit: float) -> list[dict[str, Any]]:
    """Per size, scenario and rule: the fastest float32 backend with recall >= MIN_RECALL (among those
    the rule may pick) and the time of the rule's pick over it."""
    checks = []
    for rule, pick in _auto_rules().items():
        allowed = ("exact", "approximate") + (("faiss",) if rule == "faiss_alternative" else ())
        for n in sizes:
            mine = {r["backend"]: r for r in rows if r["n"] == n and r["backend"] in allowed}
            auto = pick(n)
            for scenario, cost in SCENARIOS.items():
                adequate = {b: cost(r, jit) for b, r in mine.items() if r["recall_at_10"] >= MIN_RECALL}
                fastest = min(adequate, key=adequate.get)
                checks.append(
                    {
                        "rule": rule,
                        "n": n,
                        "scenario": scenario,
                        "fastest": fastest,
                        "auto": auto,
                        "auto_ratio": (
                            round(cost(mine[auto], jit) / adequate[fastest], 2)
                            if auto in adequate
                            else None  # auto's backend missing or below the recall floor
                        ),
                    }
                )
    return checks


def _worst_ratio(times: dict[int, dict[str, float]], approx: str, threshold: int | None) -> float:
    """Worst, over the sizes, of the rule's pick's time over the faster of exact and ``approx``."""
    picks = [
        (t["exact" if threshold is None or n < threshold else approx], min(t.values()))
        for n, t in times.items()
    ]
    return max(pick / best for pick, best in picks)


def _best_thresholds(rows: list[dict[str, Any]], sizes: list[int], jit: float) -> dict[str, Any]:
    """Per approximate backend and scenario: the threshold (a measured size, or None for "never")
    whose rule "exact below it, the approximate backend from it on" keeps the worst ratio to the
    faster of the two smallest (a backend under the recall floor counts as infinitely slow), the
    larger threshold on a tie."""
    out = {}
    for approx in ("faiss", "approximate"):
        for scenario, cost in SCENARIOS.items():
            times = {}
            for n in sizes:
                mine = [r for r in rows if r["n"] == n and r["backend"] in ("exact", approx)]
                times[n] = {
                    r["backend"]: cost(r, jit) if r["recall_at_10"] >= MIN_RECALL else float("inf")
                    for r in mine
                }
            # on a tie the larger threshold: exact search where it costs nothing
            best = min(
                [*sizes, None],
                key=lambda t: (_worst_ratio(times, approx, t), -(t or float("inf"))),  # noqa: B023
            )
            out[f"best_threshold.{approx}.{scenario}"] = best
            out[f"best_threshold_worst_ratio.{approx}.{scenario}"] = round(
                _worst_ratio(times, approx, best), 2
            )
    return out


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Time every backend at each size; ``data_dir`` is unused (the data are synthetic).

    Returns
    -------
    dict
        ``results``: one row per (n, backend) with ``build_s``, ``query_s`` (10k queries, k = 10),
        ``recall_at_10``, ``add_s`` (10% more keys), ``first_query_after_add_s`` (1k queries,
        including any deferred rebuild), ``recall_at_10_after_add`` and bytes per key (keys, graph,
        total) and an ``auto`` check per size; ``summary``: ``query_speedup_at_1e6`` (exact query
        time over the best approximate one with recall >= 0.95), ``recall_at_1e6`` (that backend's
        recall), the same at the largest size, JIT time and whether "auto" stayed within 1.2x.
    """
    sizes = QUICK_SIZES if quick else SIZES
    names = [n for n in CONFIGS if _faiss_available() or not n.startswith("faiss")]
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((N_CLUSTERS, DIM), dtype=np.float32)
    all_keys = _mixture(int(max(sizes) * (1 + ADD_FRACTION)), centres, rng)
    queries = _mixture(N_QUERIES, centres, rng)

    print(f"  warming up pynndescent ({WARMUP_KEYS} keys)...", flush=True)
    jit_seconds = _warm_up(centres, rng)
    print(f"  numba compilation: {jit_seconds:.1f} s", flush=True)

    rows: list[dict[str, Any]] = []
    for n in sizes:
        truth = truth_after_add = None
        for name in names:
            row, ids, ids_after = _measure(name, n, all_keys, queries, truth, truth_after_add)
            if name == "exact":
                truth, truth_after_add = ids, ids_after
            rows.append(row)
            print(
                f"  n={n:>8} {name:<14} build {row['build_s']:8.2f} s  query {row['query_s']:8.2f} s  "
                f"recall@10 {row['recall_at_10']:.4f}  add {row['add_s']:7.2f} s + first query "
                f"{row['first_query_after_add_s']:7.2f} s (recall {row['recall_at_10_after_add']:.4f})  "
                f"{row['bytes_per_key']:7.1f} B/key",
                flush=True,
            )

    return {"results": rows, "summary": summarize(rows, jit_seconds)}


def summarize(rows: list[dict[str, Any]], jit_seconds: float) -> dict[str, Any]:
    """The summary of ``rows``; separate from ``run`` so that a saved report's auto check can be
    recomputed against a changed rule without timing everything again."""
    from sksemiparam.index import AUTO_THRESHOLD, NeighborIndex

    sizes = sorted({r["n"] for r in rows})
    largest = max(sizes)
    at = {r["backend"]: r for r in rows if r["n"] == largest}
    adequate = {b: r for b, r in at.items() if not b.startswith("exact") and r["recall_at_10"] >= MIN_RECALL}
    candidates = adequate or {b: r for b, r in at.items() if not b.startswith("exact")}
    best = min(candidates, key=lambda b: candidates[b]["query_s"])
    speedup = round(at["exact"]["query_s"] / at[best]["query_s"], 2)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in _auto_check(rows, sizes, jit_seconds):
        groups.setdefault((c["rule"], c["scenario"]), []).append(c)
    defaults = NeighborIndex()
    summary = {
        "largest_n": largest,
        "best_approximate_at_largest_n": best,
        "query_speedup_at_largest_n": speedup,
        "recall_at_largest_n": at[best]["recall_at_10"],
        "query_speedup_at_1e6": speedup if largest == 1_000_000 else None,
        "recall_at_1e6": at[best]["recall_at_10"] if largest == 1_000_000 else None,
        "recall_at_10_by_backend_at_largest_n": {b: r["recall_at_10"] for b, r in at.items()},
        "bytes_per_key_by_backend_at_largest_n": {b: r["bytes_per_key"] for b, r in at.items()},
        "approximate_jit_seconds": round(jit_seconds, 2),
        "auto_threshold": AUTO_THRESHOLD,
        "faiss_alternative_from": FAISS_FROM,
        # Per rule ("auto": the library's, among exact and pynndescent; "faiss_alternative": faiss from
        # FAISS_FROM keys, among all three), scenario and n: the fastest backend with recall >= 0.95,
        # the one the rule picks, and its time over the fastest one's (None: below the recall floor).
        **{
            f"{key}.{rule}.{scenario}": {str(c["n"]): c[key] for c in mine}
            for (rule, scenario), mine in groups.items()
            for key in ("fastest", "auto", "auto_ratio")
        },
        **_best_thresholds(rows, sizes, jit_seconds),
        "auto_within_1_2x_everywhere": {
            f"{rule}.{scenario}": all(c["auto_ratio"] is not None and c["auto_ratio"] <= WITHIN for c in mine)
            for (rule, scenario), mine in groups.items()
        },
        "faiss_hnsw_m": defaults.hnsw_m,
        "faiss_ef_construction": defaults.ef_construction,
        "faiss_ef_search": defaults.ef_search,
        "graph_degree": defaults.graph_degree,
        "epsilon": defaults.epsilon,
    }
    return summary


def plot(report: dict[str, Any], path: str) -> None:
    """Query time, build time, recall@10 and bytes per key against n, one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, summary = report["results"], report["summary"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
    panels = [
        ("query_s", f"{N_QUERIES:,} queries, k = {K} (s)", True),
        ("build_s", "build (s); dotted: add 10% + first 1k queries", True),
        ("recall_at_10", "recall@10 against exact", False),
        ("bytes_per_key", "bytes per key (keys + graph)", True),
    ]
    styles = {
        "exact": ("tab:blue", "o", "-"),
        "exact-float16": ("tab:blue", "o", "--"),
        "approximate": ("tab:orange", "s", "-"),
        "faiss": ("tab:green", "^", "-"),
        "faiss-float16": ("tab:green", "^", "--"),
    }
    for ax, (field, label, log_y) in zip(axes.flat, panels):
        for backend, (color, marker, line) in styles.items():
            mine = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["n"])
            if not mine:
                continue
            n = [r["n"] for r in mine]
            name = "approximate (pynndescent)" if backend == "approximate" else backend
            if not (field == "build_s" and backend.startswith("exact")):  # exact build: a copy, ~0
                ax.plot(n, [r[field] for r in mine], marker=marker, color=color, linestyle=line, label=name)
            if field == "build_s":
                ax.plot(
                    n,
                    [r["add_total_s"] for r in mine],
                    marker=marker,
                    color=color,
                    linestyle=":",
                    mfc="none",
                )
        ax.axvline(summary["auto_threshold"], color="tab:orange", linestyle=":", linewidth=1)
        ax.axvline(summary["faiss_alternative_from"], color="tab:green", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("stored keys n")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[1, 0].axhline(MIN_RECALL, color="tab:red", linestyle="--", linewidth=1)
    axes[0, 0].legend(fontsize=8)
    env = report["environment"]
    fig.suptitle(
        f"NeighborIndex at scale, d = {DIM}, clustered keys — {env['cpu']}, {env['torch_threads']} threads\n"
        f"query speed-up at n = {summary['largest_n']:,}: {summary['query_speedup_at_largest_n']}x "
        f"({summary['best_approximate_at_largest_n']}, recall {summary['recall_at_largest_n']}); "
        "dotted: AUTO_THRESHOLD (orange), the faiss alternative's start (green)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
