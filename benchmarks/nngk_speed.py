"""NNGK training cost at N = 60k: fit time vs the softmax network, and where NNGK's time goes.

Protocol: all 60,000 MNIST training images (20,000 under ``--quick``), ``EPOCHS`` epochs (1 under
``--quick``), batch 100, the MLP embedding 784-256-64, one process. Methods: ``softmax`` (the same
embedding with a linear softmax layer), ``nngk_exact`` and ``nngk_approximate`` (``NNGKClassifier``
with ``index="exact"`` / ``"approximate"``, k = 32, refresh every epoch, ``candidates=None``: the
paper's procedure, whose searches this benchmark takes apart; the default trains without search).
For NNGK the time inside the neighbour searches of the training steps (``search``) and inside the
centre refreshes (``refresh``: embedding every training image and building the index, at the start
of every epoch and at the end) is accumulated separately; the rest is the network's forward/backward
and the optimizer. pynndescent's one-off numba compilation is paid before the timings (an
approximate index over random points is built first) and reported as ``jit_seconds``. ``summary``:
``fit_time_ratio.<method>`` (fit seconds over the softmax network's), ``<method>.search_share``,
``<method>.refresh_share``, ``<method>.test_accuracy``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ._images import load_images, nngk_classifier, softmax_classifier

EPOCHS = 3


class _Stopwatch:
    """Accumulates the wall time of calls to a method, patched on its class for the run."""

    def __init__(self, cls, name):
        self.cls, self.name, self.seconds = cls, name, 0.0
        self.original = getattr(cls, name)

    def __enter__(self):
        original, watch = self.original, self

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                watch.seconds += time.perf_counter() - start

        setattr(self.cls, self.name, timed)
        return self

    def __exit__(self, *exc):
        setattr(self.cls, self.name, self.original)


class _RefreshStopwatch:
    """Accumulates the wall time an ``NNGKClassifier``'s ``fit`` spends refreshing its centres.

    Observed through public objects only. A refresh (every ``refresh_every`` epochs, and at the end
    of ``fit``) embeds every stored training row with the current network without autograd, then
    builds a new ``NeighborIndex`` over those embeddings (the next ``index_``); a training step runs
    the network with autograd. So a refresh is timed from the first autograd-free forward pass of
    ``model.module_.embedding`` after a training step to the end of the next
    ``NeighborIndex.build``. The centres stored at the start of ``fit``, embedded and indexed
    before the first training step, are not a refresh. Any other model counts 0 s.
    """

    def __init__(self, model, index_cls):
        from sksemiparam import NNGKClassifier

        self.model = model if isinstance(model, NNGKClassifier) else None
        self.index_cls, self.seconds = index_cls, 0.0
        self._trained, self._start = False, None

    def _before_forward(self, module, args):
        network = getattr(self.model, "module_", None)
        if network is None or module is not network.embedding:
            return
        if torch.is_grad_enabled():
            self._trained = True
        elif self._trained and self._start is None:
            self._start = time.perf_counter()

    def _stop(self):
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def __enter__(self):
        if self.model is None:
            return self
        self.original_build = build = self.index_cls.build

        def build_then_stop(*args, **kwargs):
            try:
                return build(*args, **kwargs)
            finally:
                self._stop()

        self.index_cls.build = build_then_stop
        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(self._before_forward)
        return self

    def __exit__(self, *exc):
        if self.model is not None:
            self._hook.remove()
            self.index_cls.build = self.original_build


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Fit time of each method and the share of NNGK's spent in search and refresh."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from sksemiparam.index import NeighborIndex

    X_train, y_train, X_test, y_test = load_images("mnist", data_dir)
    epochs = 1 if quick else EPOCHS
    if quick:
        X_train, y_train = X_train[:20_000], y_train[:20_000]
    start = time.perf_counter()
    NeighborIndex("approximate", random_state=0).build(torch.randn(2000, 64)).query(torch.randn(10, 64), 5)
    jit_seconds = time.perf_counter() - start
    train = {
        "max_epochs": epochs,
        "batch_size": 100,
        "n_iter_no_change": 10**6,
        "device": "cpu",
        "random_state": 0,
    }
    models = {
        "softmax": softmax_classifier("mnist", **train),
        # The paper's procedure (each step searches): the cost this benchmark takes apart. The
        # default, sampled candidates without search, is measured by `overhead`.
        "nngk_exact": nngk_classifier("mnist", index="exact", candidates=None, **train),
        "nngk_approximate": nngk_classifier("mnist", index="approximate", candidates=None, **train),
    }
    rows, summary = (
        [],
        {"jit_seconds": round(jit_seconds, 1), "n_train": int(X_train.shape[0]), "epochs": epochs},
    )
    for name, model in models.items():
        with _RefreshStopwatch(model, NeighborIndex) as refresh, _Stopwatch(NeighborIndex, "query") as search:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X_train, y_train)
            seconds = time.perf_counter() - start
        # Searches inside a refresh (none today) would be counted twice; refresh excludes them.
        accuracy = float(model.score(X_test, y_test))
        row = {
            "method": name,
            "fit_seconds": round(seconds, 2),
            "search_seconds": round(search.seconds, 2),
            "refresh_seconds": round(refresh.seconds, 2),
            "test_accuracy": round(accuracy, 4),
        }
        rows.append(row)
        summary[f"{name}.fit_seconds"] = row["fit_seconds"]
        summary[f"{name}.test_accuracy"] = row["test_accuracy"]
        if name != "softmax":
            summary[f"{name}.search_share"] = round(search.seconds / seconds, 3)
            summary[f"{name}.refresh_share"] = round(refresh.seconds / seconds, 3)
        print(
            f"  {name:<17} fit {seconds:.1f} s (search {search.seconds:.1f} s, "
            f"refresh {refresh.seconds:.1f} s) accuracy {accuracy:.4f}",
            flush=True,
        )
    for name in models:
        summary[f"fit_time_ratio.{name}"] = round(
            summary[f"{name}.fit_seconds"] / summary["softmax.fit_seconds"], 2
        )
    return {"results": rows, "summary": summary}


def plot(report: dict[str, Any], path: str) -> None:
    """Stacked fit time per method: search, refresh, the rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    names = [r["method"] for r in rows]
    search = np.array([r["search_seconds"] for r in rows])
    refresh = np.array([r["refresh_seconds"] for r in rows])
    rest = np.array([r["fit_seconds"] for r in rows]) - search - refresh
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.bar(names, rest, label="network + optimizer")
    ax.bar(names, search, bottom=rest, label="neighbour search")
    ax.bar(names, refresh, bottom=rest + search, label="centre refresh")
    ax.set_ylabel("fit seconds")
    s = report["summary"]
    ax.set_title(
        f"MNIST, N = {s['n_train']:,}, {s['epochs']} epoch(s); JIT {s['jit_seconds']} s not included"
    )
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
