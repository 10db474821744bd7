"""NeighborIndex, exact vs approximate: build time, query time and recall@10 against the number of keys.

Keys and queries are drawn from one Gaussian mixture in d = 32 (clustered, like learned embeddings);
the queries are fresh draws, not keys. Recall@10 of the approximate backend is the fraction of the
true 10 nearest keys (from the exact backend) that it returns. pynndescent's numba compilation is
paid once, on a warm-up problem, before any timing, and reported as ``approximate_jit_seconds``.
Both backends use NeighborIndex's defaults (graph_degree, epsilon, search_tree_leaf_budget) and
every thread torch and numba are given. Exact search's arithmetic rate (2 n d flops per query, in
GFLOP/s) is reported beside a plain ``torch.mm`` of the same shapes (blocks of 1024 queries x 2048
keys, the blocks exact search multiplies on the CPU) timed in the same run: ``exact_mm_fraction``
is the first over the second; both are the best of 5 runs taken in turns (approximate queries: of
3). The numba compilation of exact search's filter is paid before any timing too (a first query on
the warm-up problem).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._common import timed

SIZES = [1_000, 3_000, 10_000, 30_000, 100_000, 200_000]
QUICK_SIZES = [1_000, 10_000, 100_000, 200_000]
DIM = 32
N_QUERIES = 10_000
K = 10
N_CLUSTERS = 100
CLUSTER_STD = 0.5  # centres ~ N(0, I): clusters ~8 apart, ~2.8 wide in d = 32
SEED = 0
DATA = f"gaussian mixture: {N_CLUSTERS} equal clusters, centres N(0, I), within-cluster std {CLUSTER_STD}"

# pynndescent builds its random-projection forest breadth-first (its own numba code) only for nodes
# over 1 MiB of rows (8192 rows at d = 32): the warm-up must be larger than that to compile it.
WARMUP_KEYS = 10_000
WARMUP_QUERIES = 1_000
# The product shapes exact search computes on the CPU (queries x keys per block; its private
# _EXACT_QUERY_BLOCK and _COMPILED_KEY_BLOCK, equal by a test), for the torch.mm reference.
MM_QUERY_BLOCK, MM_KEY_BLOCK = 1024, 2048


def _mixture(n: int, centres: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    labels = rng.integers(0, centres.shape[0], n)
    points = centres[labels] + CLUSTER_STD * rng.standard_normal((n, centres.shape[1]), dtype=np.float32)
    return torch.from_numpy(points.astype(np.float32, copy=False))


def _recall(approx_ids: torch.Tensor, true_ids: torch.Tensor) -> tuple[float, float]:
    """Recall@k (mean over queries of |approximate ∩ true| / k) and the fraction of queries with none.

    Queries that find none of their true neighbours are the approximate graph search stuck in a
    wrong cluster (a clustered kNN graph falls apart into one component per cluster): raising
    ``epsilon`` or ``graph_degree`` does not bring them back.
    """
    hits = (approx_ids[:, :, None] == true_ids[:, None, :]).any(2).float().mean(1)
    return float(hits.mean()), float((hits == 0).float().mean())


def _warm_up(centres: np.ndarray, rng: np.random.Generator, warmup_keys: int = WARMUP_KEYS) -> float:
    """Seconds of numba compilation: a first approximate build+query minus an identical second one."""
    from sksemiparam.index import NeighborIndex

    keys = _mixture(warmup_keys, centres, rng)
    queries = _mixture(WARMUP_QUERIES, centres, rng)

    def once() -> None:
        NeighborIndex("approximate", random_state=SEED).build(keys).query(queries, K)

    first, _ = timed(once, repeat_below=0.0, repeats=1)
    steady, _ = timed(once, repeat_below=0.0, repeats=1)
    return max(first - steady, 0.0)


def _mm_seconds(queries: torch.Tensor, keys: torch.Tensor) -> float:
    """Seconds of plain ``torch.mm`` products of every query block with every key block, in the
    shapes exact search multiplies on the CPU."""

    def products() -> None:
        for qs in range(0, queries.shape[0], MM_QUERY_BLOCK):
            q = queries[qs : qs + MM_QUERY_BLOCK]
            for ks in range(0, keys.shape[0], MM_KEY_BLOCK):
                torch.mm(q, keys[ks : ks + MM_KEY_BLOCK].T)

    seconds, _ = timed(products, repeat_below=0.0, repeats=1)
    return seconds


def _exact_and_mm_seconds(index, queries: torch.Tensor, keys: torch.Tensor, rounds: int = 5):
    """Best-of-``rounds`` seconds of the exact queries and of the plain products, timed in turns
    (query, products, query, ...) so that both see the same moments of a shared machine; and the
    first query's ids."""
    query_s, (_, ids) = timed(lambda: index.query(queries, K), repeat_below=0.0, repeats=1)
    mm_s = _mm_seconds(queries, keys)
    for _ in range(rounds - 1):
        query_s = min(query_s, timed(lambda: index.query(queries, K), repeat_below=0.0, repeats=1)[0])
        mm_s = min(mm_s, _mm_seconds(queries, keys))
    return query_s, ids, mm_s


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Time both backends at each size; ``data_dir`` is unused (the data are synthetic).

    Returns
    -------
    dict
        ``results``: one row per (n, method) with ``build_s``, ``query_s`` (10k queries, k = 10) and
        ``recall_at_10`` (and ``zero_recall_fraction``, the queries that found none of their 10);
        ``summary``: JIT time, minimum approximate recall, the measured crossover
        and the speed-up at the largest size.
    """
    from sksemiparam.index import AUTO_THRESHOLD, NeighborIndex

    sizes = QUICK_SIZES if quick else SIZES
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((N_CLUSTERS, DIM), dtype=np.float32)
    all_keys = _mixture(max(sizes), centres, rng)
    queries = _mixture(N_QUERIES, centres, rng)

    print(f"  warming up pynndescent ({WARMUP_KEYS} keys)...", flush=True)
    jit_seconds = _warm_up(centres, rng)
    print(f"  numba compilation: {jit_seconds:.1f} s", flush=True)
    # Exact search's compiled filter too, before any timing (cached on disk after the first run).
    NeighborIndex("exact").build(_mixture(WARMUP_KEYS, centres, rng)).query(queries[:WARMUP_QUERIES], K)

    defaults = NeighborIndex()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        keys = all_keys[:n]
        true_ids = None
        for method in ("exact", "approximate"):
            build_s, index = timed(lambda: NeighborIndex(method, random_state=SEED).build(keys))  # noqa: B023
            # Best of several runs at every size: one run of a few seconds varies by a third on a
            # shared machine.
            if method == "exact":
                query_s, ids, mm_s = _exact_and_mm_seconds(index, queries, keys)
                true_ids = ids
            else:
                query_s, (_, ids) = timed(lambda: index.query(queries, K), repeat_below=float("inf"))  # noqa: B023
            recall, zero_recall = _recall(ids, true_ids)
            row = {
                "n": n,
                "d": DIM,
                "n_queries": N_QUERIES,
                "method": method,
                "data": DATA,
                "build_s": round(build_s, 4),
                "query_s": round(query_s, 4),
                "recall_at_10": round(recall, 4),
                "zero_recall_fraction": round(zero_recall, 4),
            }
            if method == "exact":
                gflop = 2 * n * DIM * N_QUERIES / 1e9
                row["gflops"] = round(gflop / query_s, 2)
                row["mm_gflops"] = round(gflop / mm_s, 2)
                row["mm_fraction"] = round(mm_s / query_s, 3)
            rows.append(row)
            print(
                f"  n={n:>7} {method:<11} build {build_s:8.3f} s  query {query_s:8.3f} s  "
                f"recall@10 {recall:.4f}  no true neighbour {zero_recall:.2%}",
                flush=True,
            )

    def by(method: str) -> dict[int, dict[str, Any]]:
        return {r["n"]: r for r in rows if r["method"] == method}

    exact, approx = by("exact"), by("approximate")
    largest = max(sizes)
    summary = {
        # Exact search's GFLOP/s over torch.mm's on the same shapes, at every size and the smallest.
        "exact_mm_fraction": {str(n): exact[n]["mm_fraction"] for n in sizes},
        "min_exact_mm_fraction": min(exact[n]["mm_fraction"] for n in sizes),
        "exact_gflops_at_largest_n": exact[largest]["gflops"],
        "mm_gflops_at_largest_n": exact[largest]["mm_gflops"],
        "approximate_jit_seconds": round(jit_seconds, 2),
        "min_recall_at_10_approximate": min(r["recall_at_10"] for r in approx.values()),
        "auto_threshold": AUTO_THRESHOLD,
        "graph_degree": defaults.graph_degree,
        "epsilon": defaults.epsilon,
        "search_tree_leaf_budget": defaults.search_tree_leaf_budget,
        "query_speedup_at_largest_n": round(exact[largest]["query_s"] / approx[largest]["query_s"], 2),
        # Smallest n at which the approximate backend answers the 10k queries faster than exact ...
        "measured_crossover_n": next((n for n in sizes if approx[n]["query_s"] < exact[n]["query_s"]), None),
        # ... and at which its build plus those queries is faster (numba compilation excluded).
        "measured_crossover_n_build_plus_query": next(
            (
                n
                for n in sizes
                if approx[n]["build_s"] + approx[n]["query_s"] < exact[n]["build_s"] + exact[n]["query_s"]
            ),
            None,
        ),
    }
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """Query (and build) time against n for both backends, and approximate recall@10 against n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, summary = report["results"], report["summary"]
    fig, (ax_time, ax_recall) = plt.subplots(1, 2, figsize=(11, 4.3), constrained_layout=True)
    styles = {"exact": ("tab:blue", "o"), "approximate": ("tab:orange", "s")}
    for method, (color, marker) in styles.items():
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
        n = [r["n"] for r in mine]
        ax_time.plot(n, [r["query_s"] for r in mine], marker=marker, color=color, label=f"{method}: query")
        if method == "approximate":
            ax_time.plot(
                n,
                [r["build_s"] for r in mine],
                marker=marker,
                color=color,
                linestyle="--",
                mfc="none",
                label=f"{method}: build",
            )
            ax_recall.plot(n, [r["recall_at_10"] for r in mine], marker=marker, color=color, label=method)
            for r in mine:  # queries that found none of their true neighbours (wrong cluster)
                if r.get("zero_recall_fraction"):
                    ax_recall.annotate(
                        f"{r['zero_recall_fraction']:.1%}",
                        (r["n"], r["recall_at_10"]),
                        textcoords="offset points",
                        xytext=(0, -13),
                        ha="center",
                        fontsize=8,
                        color=color,
                    )
    first = rows[0]
    for ax in (ax_time, ax_recall):
        ax.axvline(summary["auto_threshold"], color="grey", linestyle=":", label="AUTO_THRESHOLD")
        ax.set_xscale("log")
        ax.set_xlabel("stored keys n")
        ax.grid(True, which="both", alpha=0.3)
    ax_time.set_yscale("log")
    ax_time.set_ylabel("seconds")
    ax_time.set_title(f"{first['n_queries']:,} queries, k = {K}, d = {first['d']} (exact build ≈ 0)")
    ax_time.legend()
    ax_recall.axhline(0.95, color="tab:red", linestyle="--", linewidth=1, label="0.95")
    ax_recall.set_ylabel("recall@10")
    ax_recall.set_ylim(min(0.9, min(r["recall_at_10"] for r in rows) - 0.02), 1.005)
    ax_recall.set_xlim(min(r["n"] for r in rows) / 1.6, max(r["n"] for r in rows) * 1.6)
    ax_recall.text(
        0.98,
        0.02,
        "% under points: queries that found\nnone of their true 10 (wrong cluster)",
        transform=ax_recall.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
    )
    ax_recall.set_title(
        f"approximate recall (graph_degree={summary['graph_degree']}, epsilon={summary['epsilon']})"
    )
    ax_recall.legend(loc="lower left")
    env = report["environment"]
    fig.suptitle(
        f"NeighborIndex: exact (torch) vs approximate (pynndescent) — {env['cpu']}, "
        f"{env['torch_threads']} threads, numba JIT {summary['approximate_jit_seconds']:.0f} s excluded",
        fontsize=10,
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)
