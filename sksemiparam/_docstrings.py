"""Docstring entries shared by every estimator, written once.

A line ``.. shared:: name name ...`` in an estimator's docstring stands for those entries of
``SHARED``, in that order, at the line's indentation; ``fill`` replaces it when the class is
created (``TorchEstimatorBase.__init_subclass__``), so ``help()``, numpydoc and the API reference
see the whole text. A parameter that reads differently in one estimator keeps its own entry there.
"""

from __future__ import annotations

import re

SHARED = {
    "n_neighbors": """\
n_neighbors : int, "auto" or None, default="auto"
    Stored examples retrieved per query. ``"auto"``: 32, or all of them while fewer are
    stored. None: all of them (dense, exact; its cost grows with the memory). An integer
    larger than the number of stored examples is an error.""",
    "index": """\
index : {"auto", "exact", "approximate", "faiss"}, default="auto"
    Nearest-neighbour search over the stored examples: exact (torch), an approximate
    pynndescent graph, a faiss HNSW graph (extra ``sksemiparam[faiss]``), or ``"auto"``:
    exact for small memories, a graph for large ones (see docs/neighbor-index.md).""",
    "index_params": """\
index_params : dict or None, default=None
    Further arguments of the neighbour index (``NeighborIndex``): ``auto_threshold`` (keys
    from which ``"auto"`` leaves exact search), ``key_dtype`` (``"float16"`` halves the
    index's keys), ``ef_search``, ``hnsw_m``, ``ef_construction`` (faiss), ``graph_degree``,
    ``epsilon``, ``search_tree_leaf_budget`` (pynndescent) and ``n_jobs``; see
    docs/neighbor-index.md. None: the defaults.""",
    "centers_X_": """\
centers_X_ : Tensor of shape (n_centers, n_features)
    ``memory_.X``: the stored inputs, in the order :meth:`explain` indexes them.""",
    "centers_y_": """\
centers_y_ : Tensor of shape (n_centers,)
    ``memory_.y``: their encoded labels (indices into ``classes_``).""",
    "max_epochs": """\
max_epochs : int, default=100
    Maximum passes over the data in ``fit``.""",
    "learning_rate": """\
learning_rate : float, default=1e-3
    AdamW step size.""",
    "weight_decay": """\
weight_decay : float, default=0.0
    AdamW decoupled weight decay.""",
    "validation_fraction": """\
validation_fraction : float, default=0.1
    Share of the training data held out with ``early_stopping``.""",
    "n_iter_no_change": """\
n_iter_no_change : int, default=10
    Epochs without improvement (of the training loss, or the validation score with early
    stopping) before ``fit`` stops.""",
    "tol": """\
tol : float, default=1e-4
    Smallest change of the training loss (or the validation score) that counts as an
    improvement.""",
    "warm_start": """\
warm_start : bool, default=False
    ``fit`` continues from the current weights instead of starting afresh.""",
    "device": """\
device : str, default="auto"
    ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.""",
    "num_threads": """\
num_threads : "auto", int or None, default="auto"
    Torch's intra-op threads (``torch.set_num_threads``) during ``fit``, ``partial_fit`` and
    prediction, restored afterwards. ``"auto"``: one thread on the CPU while a mini-batch is
    small work, under 1e8 floating-point operations through the network and the stored examples
    it searches, such as the default networks on tables of a few thousand rows, where more
    threads only add synchronisation (ruinously when other processes share the cores); torch's
    setting otherwise, and on CUDA. None leaves torch's setting alone
    (joblib and Dask workers already set one thread per task); an int is for a single process that
    should use fewer threads than cores.""",
    "precision": """\
precision : {"float32", "bf16", "fp16"}, default="float32"
    Arithmetic of the network in training steps and forward passes: ``"bf16"`` and ``"fp16"``
    run them under ``torch.autocast`` in bfloat16 or float16 (float16 with loss scaling).
    Outputs, losses, distances and stored embeddings stay float32. ``"bf16"`` on CUDA needs a
    GPU that supports it (``torch.cuda.is_bf16_supported()``); ``"fp16"`` on the CPU works but
    is slower than float32. With ``"float32"`` on the CPU, predictions compute in float64, so a
    row's prediction does not depend on the other rows of the call. See docs/training.md.""",
    "random_state": """\
random_state : int, RandomState instance or None, default=None
    Seeds the estimator's own torch generator (initialisation, shuffling, dropout); the same
    seed and data give identical predictions on the CPU. Global RNGs are never touched.""",
    "verbose": """\
verbose : int, default=0
    0 silent, 1 a progress bar over epochs, 2 one line per epoch.""",
    "classes_": """\
classes_ : ndarray of shape (n_classes,)
    Class labels.""",
    "n_features_in_": """\
n_features_in_ : int
    Number of features seen during ``fit``.""",
    "device_": """\
device_ : torch.device
    Device the module is on.""",
    "n_iter_": """\
n_iter_ : int
    Epochs run.""",
    "loss_curve_": """\
loss_curve_ : list of float
    Mean training loss of each epoch.""",
    "best_loss_": """\
best_loss_ : float
    Lowest training loss seen.""",
    "best_validation_score_": """\
best_validation_score_ : float or None
    Best of ``validation_scores_``.""",
    "ewc_state_": """\
ewc_state_ : list of (dict, dict)
    Per task consolidated by ``end_task``: the anchor parameters and their Fisher diagonal.""",
    "image_shape": """\
image_shape : tuple of int, default=None
    ``(channels, height, width)`` of the flattened images in X, for ``embedding="conv"``.""",
    "early_stopping": """\
early_stopping : bool, default=False
    Hold out ``validation_fraction`` of the data (stratified) and stop when its accuracy has not
    improved by ``tol`` for ``n_iter_no_change`` epochs; the best model is kept.""",
    "ewc_lambda": """\
ewc_lambda : float, default=0.0
    Strength of the elastic-weight-consolidation penalty that ``end_task`` sets up for
    continual learning with ``partial_fit``; 0 turns it off.""",
    "feature_names_in_": """\
feature_names_in_ : ndarray of shape (`n_features_in_`,)
    Names of the features seen during ``fit``; defined only when X has feature names that are
    all strings.""",
    "validation_scores_": """\
validation_scores_ : list of float or None
    Validation accuracy after each epoch of the last ``fit`` with ``early_stopping``.""",
}

_MARKER = re.compile(r"^(?P<indent>[ \t]*)\.\. shared:: (?P<names>[\w ]+?)[ \t]*$", re.MULTILINE)


def fill(doc: str | None) -> str | None:
    """``doc`` with each ``.. shared::`` line replaced by its entries (None stays None: python -OO)."""
    if doc is None:
        return None

    def entries(match: re.Match) -> str:
        indent = match["indent"]
        blocks = []
        for name in match["names"].split():
            if name not in SHARED:
                raise KeyError(f"no shared docstring entry {name!r}")
            blocks.append("\n".join(indent + line if line else line for line in SHARED[name].split("\n")))
        return "\n".join(blocks)

    return _MARKER.sub(entries, doc)
