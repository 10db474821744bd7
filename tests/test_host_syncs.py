"""No hidden host round-trips: a training step and the neighbour search read nothing back per batch.

On a GPU, every value the host reads from the device (``float(t)``, ``bool(t)``, ``t.item()``,
``nonzero``, indexing with a boolean mask, ...) waits for all queued work to finish. There is no GPU
here, but those reads go through the same torch operators on the CPU, so a dispatch mode can count
them: a fit on twice as many rows (twice as many mini-batches) must not read more, except the one
read per query that exact search allows itself (it decides whether any row needs float64 scoring
against every key), and a predict on four times as many rows must not read more at all.
"""

import traceback

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch.utils._python_dispatch import TorchDispatchMode

from ._estimators import fast_estimators

aten = torch.ops.aten
# Operators whose result size or value the host needs: on CUDA each one synchronises.
_READS = {
    aten._local_scalar_dense.default,  # float(t), int(t), bool(t), t.item()
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
}
_MASK_INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default}


def _cpu_only(stack) -> bool:
    """Reads that only happen because the test runs on the CPU: Adam keeps its step counter in a CPU
    tensor on every device, and ``one_hot`` checks its labels' range by reading them only on the CPU
    (on CUDA it is a device-side assertion)."""
    if any("/torch/optim/" in frame.filename for frame in stack):
        return True
    ours = [frame for frame in stack if "/sksemiparam/" in frame.filename]
    return bool(ours) and "one_hot(" in (ours[-1].line or "")


class _CountReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        read = func in _READS or (
            func in _MASK_INDEXING and any(t is not None and t.dtype == torch.bool for t in args[1])
        )
        if read:
            stack = traceback.extract_stack()
            if not _cpu_only(stack):
                ours = [f for f in stack if "/sksemiparam/" in f.filename]
                self.reads.append(f"{func} at {ours[-1].filename}:{ours[-1].lineno}" if ours else str(func))
        return func(*args, **(kwargs or {}))


def _reads(call) -> list[str]:
    with _CountReads() as counter:
        call()
    return counter.reads


# Per mini-batch, the reads a training step may make: one exact-index query for the estimators
# that retrieve neighbours while training (NNGK and Impostor against their centres,
# Meta-Neighborhoods with n_neighbors against its dictionary); none for the others.
_ROSTER = {
    **fast_estimators(
        "semiparametric", "parametric", "mbpa", "meta-neighborhoods-classifier", "nngk", "impostor"
    ),
    **fast_estimators("meta-neighborhoods-classifier-knn", n_entries=32, n_neighbors=8),
}
_READS_PER_BATCH = {
    **dict.fromkeys(["semiparametric", "parametric", "mbpa", "meta-neighborhoods-classifier"], 0),
    **dict.fromkeys(["meta-neighborhoods-classifier-knn", "nngk", "impostor"], 1),
}


@pytest.mark.parametrize("name", sorted(_ROSTER))
def test_training_reads_nothing_back_per_batch(name, digits):
    X, _, y, _ = digits
    per_batch = _READS_PER_BATCH[name]
    estimator = clone(_ROSTER[name]).set_params(max_epochs=2, batch_size=50, random_state=0)
    small = _reads(lambda: estimator.fit(X[:200], y[:200]))
    large = _reads(lambda: estimator.fit(X[:400], y[:400]))
    extra_batches = 2 * (400 // 50 - 200 // 50)  # two epochs of 4 more mini-batches
    assert len(large) - len(small) <= per_batch * extra_batches, large


@pytest.mark.parametrize("name", sorted(_ROSTER))
def test_prediction_reads_do_not_grow_with_the_rows(name, digits):
    X, X_test, y, _ = digits
    estimator = clone(_ROSTER[name]).set_params(max_epochs=1, random_state=0).fit(X[:300], y[:300])
    few = _reads(lambda: estimator.predict_proba(X_test[:100]))
    many = _reads(lambda: estimator.predict_proba(np.tile(X_test[:100], (4, 1))))
    assert len(many) <= len(few), many


def test_the_counter_sees_a_read():
    # The test above would pass vacuously if the counter saw nothing: float() on a tensor and a
    # boolean mask are reads.
    t = torch.arange(4.0)
    assert len(_reads(lambda: float(t.sum()))) == 1
    assert len(_reads(lambda: t[t > 1])) == 1
