"""SemiparametricClassifier fit time on all 60,000 MNIST training images: semiparametric vs parametric.

Protocol: the paper's MNIST network (embedding 784-32-32, one linear classifier layer), AdamW 1e-3,
``EPOCHS`` epochs (2 under ``--quick``), batch 100 and batch 1000 (the paper's MNIST and CIFAR batch
sizes), one process (after an untimed warm-up fit), the two modes fitted one after the other for
each batch size. The semiparametric fit includes what the mode adds: the B x B in-batch neighbour
estimate of every step and embedding and indexing the 60,000 stored examples (which the estimator
defers to the first prediction; the timing forces it with ``clf.index_``, so both modes are timed
up to a model ready to predict).
``summary``: ``fit_time_ratio_b100`` and ``fit_time_ratio_b1000`` (semiparametric over parametric
fit seconds), the fit seconds and the test accuracy of each.
"""

from __future__ import annotations

import time
from typing import Any

from ._images import load_images

EPOCHS = 10


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    """Fit seconds of both modes at batch 100 and 1000."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from sksemiparam import SemiparametricClassifier

    X_train, y_train, X_test, y_test = load_images("mnist", data_dir)
    epochs = 2 if quick else EPOCHS
    rows, summary = [], {"epochs": epochs, "n_train": int(X_train.shape[0])}
    with warnings.catch_warnings():  # warm-up, untimed: the first fit of a process pays torch's set-up
        warnings.simplefilter("ignore", ConvergenceWarning)
        for mode in ("parametric", "semiparametric"):
            SemiparametricClassifier(mode, max_epochs=1, device="cpu").fit(X_train[:2000], y_train[:2000])
    for batch in (100, 1000):
        seconds = {}
        for mode in ("parametric", "semiparametric"):
            clf = SemiparametricClassifier(
                mode, hidden_layer_sizes=(32,), embedding_dim=32, batch_size=batch, max_epochs=epochs,
                n_iter_no_change=10**6, device="cpu", random_state=0,
            )  # fmt: skip
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(X_train, y_train)
                clf.index_  # noqa: B018 (builds the index over the stored examples, if any)
            seconds[mode] = time.perf_counter() - start
            accuracy = float(clf.score(X_test, y_test))
            rows.append(
                {
                    "batch_size": batch,
                    "mode": mode,
                    "fit_seconds": round(seconds[mode], 2),
                    "test_accuracy": round(accuracy, 4),
                }
            )
            summary[f"b{batch}.{mode}.fit_seconds"] = round(seconds[mode], 2)
            summary[f"b{batch}.{mode}.test_accuracy"] = round(accuracy, 4)
            print(
                f"  batch {batch:<5} {mode:<15} fit {seconds[mode]:.1f} s  accuracy {accuracy:.4f}",
                flush=True,
            )
        summary[f"fit_time_ratio_b{batch}"] = round(seconds["semiparametric"] / seconds["parametric"], 2)
    return {"results": rows, "summary": summary}
