"""Predict against a million stored examples: time and peak memory of every retrieval estimator.

Each estimator stores ``N_STORED`` examples (1e6 rows of a 16-feature, 10-class Gaussian mixture)
and predicts ``N_QUERIES`` new rows. A dense queries x memory matrix of float32 distances would
take ``N_QUERIES * N_STORED * 4`` bytes (40 GB at full size); the benchmark reports the resident
memory the ``predict`` call added at its peak (sampled every 5 ms from ``/proc/self/status`` by a
thread) next to that figure, and the time of the call.

How each estimator comes to hold the examples (defaults otherwise, ``index="exact"``: the blocked
exact search whose memory the library controls; pynndescent's graph is its own matter):

- SemiparametricClassifier: fitted on the first 10,000 rows, then ``set_memory`` with all of them;
- MbPAClassifier: fitted on all of them (its memory stores every training row's key);
- NNGKClassifier and ImpostorClassifier: fitted on all of them, with ``candidates`` set (training
  against sampled rows, no search), every row a centre.

The last three train 1 epoch in batches of ``STORE_BATCH`` rows: only what they store matters here,
and the Impostor Network's AdamW steps update every centre (today a dense O(N d) step each).

Each estimator runs in its own process, so one's peak does not hide another's.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import numpy as np

N_STORED, N_QUERIES = 1_000_000, 10_000
QUICK_STORED, QUICK_QUERIES = 100_000, 2_000
N_FEATURES, N_CLASSES = 16, 10
STORE_BATCH = 10_000
ESTIMATORS = ("SemiparametricClassifier", "MbPAClassifier", "NNGKClassifier", "ImpostorClassifier")


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _PeakRSS:
    """Highest resident memory seen while the block runs, sampled by a thread."""

    def __enter__(self):
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _data(n_stored: int, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((N_CLASSES, N_FEATURES)) * 2.0
    y = rng.integers(0, N_CLASSES, n_stored + n_queries)
    X = (centres[y] + rng.standard_normal((y.size, N_FEATURES))).astype(np.float32)
    return X[:n_stored], y[:n_stored], X[n_stored:]


def _one(name: str, n_stored: int, n_queries: int, queue) -> None:
    """In a child process: store the examples, predict, report seconds and memory."""
    import torch

    import sksemiparam

    torch.manual_seed(0)
    X, y, queries = _data(n_stored, n_queries)
    common = {"index": "exact", "max_epochs": 1, "device": "cpu", "random_state": 0}
    start = time.perf_counter()
    if name == "SemiparametricClassifier":
        model = sksemiparam.SemiparametricClassifier(**common).fit(X[:10_000], y[:10_000])
        model.set_memory(X, y)
    elif name == "MbPAClassifier":
        model = sksemiparam.MbPAClassifier(batch_size=STORE_BATCH, **common).fit(X, y)
    else:
        model = getattr(sksemiparam, name)(candidates=128, batch_size=STORE_BATCH, **common).fit(X, y)
    model.predict(queries[:10])  # anything built on first use (Semiparametric's index) is built here
    store_s = time.perf_counter() - start
    with _PeakRSS() as rss:
        start = time.perf_counter()
        model.predict(queries)
        predict_s = time.perf_counter() - start
    queue.put(
        {
            "estimator": name,
            "n_stored": int(n_stored),
            "n_queries": int(n_queries),
            "store_seconds": round(store_s, 2),
            "predict_seconds": round(predict_s, 2),
            "rss_before_mb": round(rss.start / 2**20, 1),
            "predict_peak_added_mb": round((rss.peak - rss.start) / 2**20, 1),
            "dense_matrix_mb": round(n_queries * n_stored * 4 / 2**20, 1),
        }
    )


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """One child process per estimator; ``data_dir`` is unused (the data are generated)."""
    n_stored, n_queries = (QUICK_STORED, QUICK_QUERIES) if quick else (N_STORED, N_QUERIES)
    context = multiprocessing.get_context("spawn")
    rows = []
    for name in ESTIMATORS:
        queue = context.Queue()
        child = context.Process(target=_one, args=(name, n_stored, n_queries, queue))
        child.start()
        row = queue.get()
        child.join()
        rows.append(row)
        print(
            f"  {name:<26} stored {row['n_stored']:,} in {row['store_seconds']:6.1f} s; predict "
            f"{row['n_queries']:,} in {row['predict_seconds']:6.1f} s, "
            f"peak +{row['predict_peak_added_mb']:.0f} MB "
            f"(a dense distance matrix: {row['dense_matrix_mb']:.0f} MB)",
            flush=True,
        )
    summary: dict[str, Any] = {"n_stored": n_stored, "n_queries": n_queries}
    for row in rows:
        summary[f"predict_peak_added_mb.{row['estimator']}"] = row["predict_peak_added_mb"]
        summary[f"predict_seconds.{row['estimator']}"] = row["predict_seconds"]
    summary["dense_matrix_mb"] = rows[0]["dense_matrix_mb"]
    return {"results": rows, "summary": summary}
