"""The scikit-learn contract for a torch-backed estimator, and the one training loop.

An estimator subclasses ``TorchClassifierBase`` or ``TorchRegressorBase`` (with
``_memory.RetrievalMixin`` when it stores examples) and writes a few steps:

- ``_build_module(n_features, n_outputs) -> nn.Module``: the network, built inside ``fit``;
- ``_loss(X, y, ids) -> Tensor``: the training loss of one batch (``ids`` index the rows of the data
  passed to this ``fit``/``partial_fit`` call, for estimators that must exclude a row's own memory entry);
- ``_forward(X) -> Tensor``: the prediction of one batch in eval mode; for classifiers, log-probabilities;
- optionally ``_check_params``, ``_check_fit_data``, ``_n_epochs``, ``_before_epoch``,
  ``_after_step``, ``_after_epoch``, ``_before_validation``, ``_on_train_end``, ``_to_device`` and
  ``_upgrade_state``.

The base owns validation, label encoding, seeding, device, batching, the epoch loop (``_train`` and
its named steps), early stopping, progress and persistence. docs/contributing.md draws the whole house.
"""

from __future__ import annotations

import copy
import inspect
import math
import signal
import threading
import warnings
from contextlib import contextmanager, nullcontext
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from . import _docstrings
from .nn import make_embedding
from .persistence import register

__all__ = ["TorchClassifierBase", "TorchEstimatorBase", "TorchRegressorBase", "resolve_device"]

# Rows per forward pass at predict time. Any value gives the same predictions (batch invariance).
_PREDICT_CHUNK = 2048
# The autocast dtype of each ``precision`` (None: no autocast).
_PRECISION_DTYPES = {"float32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# The matrix products (convolutions are matrix products too) that _Float64Predictions runs in float64.
# NeighborIndex's exact search leaves the mode for its own products (``_exact_arithmetic``): it finds
# candidates in float32 and ranks them in float64 itself, so its answer is already batch-invariant
# (a float64 distance over every stored key cost +40-60% of the whole predict of the neighbour
# estimators).
_PRODUCTS = frozenset(
    {
        torch.matmul,
        torch.Tensor.matmul,
        torch.Tensor.__rmatmul__,
        torch.mm,
        torch.Tensor.mm,
        torch.bmm,
        torch.Tensor.bmm,
        torch.mv,
        torch.Tensor.mv,
        torch.dot,
        torch.Tensor.dot,
        torch.inner,
        torch.addmm,
        torch.Tensor.addmm,
        torch.addmv,
        torch.Tensor.addmv,
        torch.baddbmm,
        torch.Tensor.baddbmm,
        torch.addbmm,
        torch.Tensor.addbmm,
        torch.einsum,
        torch.tensordot,
        F.linear,
        F.bilinear,
        F.conv1d,
        F.conv2d,
        F.conv3d,
        F.conv_transpose1d,
        F.conv_transpose2d,
        F.conv_transpose3d,
    }
)

# Operators whose tensor arguments are identities, not values: autograd.grad differentiates with
# respect to the very tensors it is given (a widened copy is not in the graph: zero gradients).
_NOT_WIDENED = frozenset({torch.autograd.grad, torch.autograd.backward, torch.Tensor.backward})
# In-place operators written as dunders (``buffer += x``); the others end with "_" (``add_``).
_IN_PLACE_DUNDERS = frozenset(
    f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul")
)


def _cast(obj, to_float64: bool, dtype: torch.dtype = torch.float64):
    """``obj`` (a tensor, or a list or tuple of them) with its floating tensors that are not float64
    made float64 (``to_float64``), or its float64 tensors made ``dtype``."""
    if isinstance(obj, torch.Tensor):
        if to_float64:
            return obj.double() if obj.is_floating_point() and obj.dtype != torch.float64 else obj
        return obj.to(dtype) if obj.dtype == torch.float64 else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast(v, to_float64, dtype) for v in obj)
    return obj


def _has_float64(args) -> bool:
    for a in args:
        if isinstance(a, torch.Tensor):
            if a.dtype == torch.float64:
                return True
        elif isinstance(a, (list, tuple)) and _has_float64(a):
            return True
    return False


class _Float64Predictions(TorchFunctionMode):
    """Within the block (on this thread only: torch keeps its modes per thread), matrix products
    compute in float64, and so does every operator that receives a float64 tensor.

    Why: BLAS chooses its kernel by the shape of the whole product (a one-row product is a
    matrix-vector kernel, summing in another order than a matrix-matrix one), so in float32 a
    row's output moves by ~1e-7 (relative) with the other rows of its batch, and a prediction
    depends on the batch it is in (scikit-learn's ``check_methods_subset_invariance`` and
    ``check_methods_sample_order_invariance`` compare at rtol=1e-7). In float64 that noise is
    ~1e-16 and the outputs, kept in float64 to the end, agree to ~1e-15 whatever the batch.

    The first product makes a row's activations float64; the float32 parameters, stored keys and
    memories that the forward pass reads are widened where they meet them (elementwise operators
    promote by themselves, the others, such as ``layer_norm``, are widened here), so nothing
    stored changes and no float64 copy of the model is made. An in-place operator (or ``out=``)
    follows the tensor it writes: into a float64 one its other arguments are widened, into a
    float32 one its float64 arguments are rounded to float32, as the code that made that tensor
    expects. ``torch.autograd.grad`` is left alone (see ``_NOT_WIDENED``).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = kwargs.get("out")
        if (
            target is None
            and args
            and (name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.startswith("__")))
        ):
            target = args[0]
        if isinstance(target, torch.Tensor):  # written in place: its dtype decides
            widen = target.dtype == torch.float64
            if not widen and target.is_floating_point():
                args = _cast(args, False, target.dtype)
                kwargs = {k: v if k == "out" else _cast(v, False, target.dtype) for k, v in kwargs.items()}
        else:
            widen = func in _PRODUCTS or (
                func not in _NOT_WIDENED and not name.startswith("__") and _has_float64(args)
            )
        if widen:
            args, kwargs = _cast(args, True), {k: _cast(v, True) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn an estimator's ``device`` parameter into a ``torch.device``, checking it exists.

    ``"auto"`` is CUDA when ``torch.cuda.is_available()``, else the CPU. ``"cpu"``, ``"cuda"`` and
    ``"cuda:N"`` are taken as given; asking for CUDA without one is a ``ValueError``.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"`device`={device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"`device`={device!r} was requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use device='cpu' or device='auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"`device`={device!r} was requested but only {torch.cuda.device_count()} CUDA "
                f"device(s) exist; use 'cuda:0' .. 'cuda:{torch.cuda.device_count() - 1}'"
            )
        return dev
    raise ValueError(f"`device`={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def _check_num_threads(num_threads):
    """``num_threads`` as given when it is ``"auto"``, None or a positive int; a TypeError or
    ValueError naming it otherwise (also at predict time, after a ``set_params`` that ``fit`` has
    not validated)."""
    if num_threads is None or (isinstance(num_threads, str) and num_threads == "auto"):
        return num_threads
    if isinstance(num_threads, bool) or not isinstance(num_threads, Integral):
        raise TypeError(
            f"`num_threads` must be 'auto', a positive int or None, got {num_threads!r} of type "
            f"{type(num_threads).__name__}; pass e.g. num_threads=1, 'auto', or None to leave torch's "
            "setting alone"
        )
    if num_threads < 1:
        raise ValueError(
            f"`num_threads`={num_threads!r} must be at least 1; pass a positive int, 'auto', or None to "
            "leave torch's setting alone"
        )
    return int(num_threads)


# num_threads="auto": a model whose mini-batch takes under this many floating-point operations
# through the network and the stored examples it is compared with (forward pass, counted as
# torch.utils.flop_counter counts them: 2 per multiply-add) trains and predicts on one thread. Its
# steps are chains of small operators, each a parallel region whose start and join cost more than a
# second thread saves; when other processes share the cores, every join also waits for a
# descheduled thread. Measured here (2 cores, load 4-5, torch 2.13): a 6-32-32-2 MLP at batch 100
# (3e5 FLOPs a step) took 1.1 ms a step on one thread and 8.0 ms on two; a 784-512-512-10 MLP
# (1.3e8) 21 ms and 51 ms. 1e8 is about 5 ms of single-threaded work a step (forward and backward):
# where a second thread can save milliseconds on idle cores, torch keeps its setting. It covers the
# default networks on tables up to several thousand rows, NNGK's 64-wide keys over ~7,000 stored
# examples included; not NNGK over 60,000 MNIST images (8e8) nor the paper's image network (4e9).
_SMALL_WORK_FLOPS = 1e8


@contextmanager
def _torch_threads(estimator, new_rows: int = 0):
    """Run the block with torch's intra-op threads chosen by ``estimator.num_threads``.

    ``"auto"`` (the default): one thread when a mini-batch of the model is small work on the CPU
    (``TorchEstimatorBase._auto_num_threads``; ``new_rows``: the rows a training call adds to the
    memory), for training and prediction alike, else torch's setting is left alone. None leaves
    torch alone: ``torch.set_num_threads`` is not called at all, so a worker that already limited its threads
    (Dask and joblib's loky workers do) keeps them; "auto" never sets more threads than there are,
    so it keeps them too. An int is set for the duration of the block. What is set is restored
    afterwards, also when the block raises. Nested blocks (``predict`` -> ``predict_proba``) set
    and restore the same value. A ``with`` block rather than a decorator: a decorator would add a
    frame, and move where the ``stacklevel`` of the training warnings points.
    """
    # getattr: a model pickled before the parameter existed has no attribute.
    num_threads = _check_num_threads(getattr(estimator, "num_threads", None))
    if num_threads == "auto":
        num_threads = estimator._auto_num_threads(new_rows)
    with _set_torch_threads(num_threads):
        yield


@contextmanager
def _set_torch_threads(num_threads: int | None):
    """Torch's intra-op threads set to ``num_threads`` for the block and restored afterwards (also
    when it raises); None: ``torch.set_num_threads`` is not called."""
    previous = torch.get_num_threads() if num_threads is not None else None
    if num_threads is None or num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_precision(precision: str, device: torch.device) -> None:
    """Raise a ``ValueError`` when ``device`` cannot train in ``precision``.

    Both CUDA and the CPU autocast in float16 (on the CPU it trains, measured here, but ~5x slower
    than bfloat16); bfloat16 on CUDA needs a GPU that has it (Ampere or newer).
    """
    if precision not in _PRECISION_DTYPES:
        raise ValueError(f"`precision`={precision!r} is not one of 'float32', 'bf16', 'fp16'")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"`precision`='bf16' was requested on `device`={str(device)!r}, which has no bfloat16 support "
            "(torch.cuda.is_bf16_supported() is False); use precision='fp16' or 'float32'"
        )


def _adamw(params: list, **kwargs) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has it for these parameters (CPU since torch 2.4,
    CUDA), else torch's default implementation.

    The default on the CPU updates each parameter tensor with a dozen separate operators and reads
    the step count on the host once per tensor: for the small networks of tabular data that was
    the larger half of a training step (opt.step 1.2 ms of a 1.9 ms step, a 6-32-32-2 MLP at
    batch 100, one thread), the fused kernel 0.3 ms. Same update rule (Adam with decoupled weight
    decay), same state (``exp_avg``, ``exp_avg_sq``, ``step``)."""
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype (or this torch)
        return torch.optim.AdamW(params, **kwargs)


def _tensor_to(obj, device):
    """Move every tensor in a nested structure of dicts, lists and tuples to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _tensor_to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tensor_to(v, device) for v in obj)
    return obj


class TorchEstimatorBase(BaseEstimator):
    """Shared parameters, training loop and persistence of the torch-backed estimators.

    Not used directly: subclasses define ``__init__`` with their full parameter list and the hooks
    named in the module docstring. The parameters and attributes every estimator shares are
    documented once, in ``_docstrings.SHARED``, and written into each subclass's docstring where it
    has a ``.. shared::`` line.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # The entries every estimator shares are written once, in _docstrings.SHARED.
        if "__doc__" in cls.__dict__:
            cls.__doc__ = _docstrings.fill(cls.__doc__)
        # Constraints are declared where the parameters are (this base, a mixin, the estimator) and
        # merged here, the most derived class last.
        merged = {}
        for klass in reversed(cls.__mro__):
            merged.update(klass.__dict__.get("_parameter_constraints", {}))
        cls._parameter_constraints = merged
        # persistence.load may create every estimator class, the library's or a user's own.
        register(cls)

    _parameter_constraints: dict = {
        "embedding": [StrOptions({"mlp", "conv", "identity"}), callable],
        "hidden_layer_sizes": ["array-like"],
        "embedding_dim": [Interval(Integral, 1, None, closed="left")],
        "image_shape": ["array-like", None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "ewc_lambda": [Interval(Real, 0, None, closed="left")],
        "device": [str, torch.device],
        "num_threads": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "precision": [StrOptions({"float32", "bf16", "fp16"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # The embedding network's last layer gets a ReLU (see nn.MLPEmbedding.final_activation).
    _embedding_final_activation = True
    # How validate_data checks y (classifiers: one label column of any type).
    _y_checks = {"y_numeric": False, "multi_output": False}

    def __init__(
        self,
        *,
        embedding="mlp",
        hidden_layer_sizes=(32,),
        embedding_dim=32,
        image_shape=None,
        max_epochs=100,
        batch_size=100,
        learning_rate=1e-3,
        weight_decay=0.0,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        warm_start=False,
        ewc_lambda=0.0,
        device="auto",
        num_threads="auto",
        precision="float32",
        random_state=None,
        verbose=0,
    ):
        self.embedding = embedding
        self.hidden_layer_sizes = hidden_layer_sizes
        self.embedding_dim = embedding_dim
        self.image_shape = image_shape
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.ewc_lambda = ewc_lambda
        self.device = device
        self.num_threads = num_threads
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ hooks
    def _build_module(self, n_features: int, n_outputs: int) -> nn.Module:
        raise NotImplementedError

    def _loss(self, X: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _after_step(self, X: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> None:
        """Called after each optimizer step with the batch (e.g. to write it to a memory)."""

    def _fisher_outputs(self, X: torch.Tensor) -> torch.Tensor:
        """Outputs of the model EWC protects (log-probabilities, or standardised predictions for a
        regressor), from which ``_row_log_likelihood`` takes log p(y | x). Default: ``_forward``."""
        return self._forward(X)

    def _row_log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y | x) of one row (x of shape (1, n_features)), for the EWC Fisher information."""
        raise NotImplementedError

    def _check_params(self) -> None:
        """Checks of parameter values beyond ``_parameter_constraints``, before any state changes."""

    def _check_fit_data(self, X: np.ndarray, y: np.ndarray, *, first_pass: bool, incremental: bool):
        """Data-dependent parameter checks, before any state changes. Raise ValueError."""

    def _n_epochs(self, incremental: bool) -> int:
        """Epochs of this call: ``max_epochs`` for ``fit``, one for ``partial_fit``."""
        return 1 if incremental else self.max_epochs

    # Parameters EWC leaves alone (e.g. per-memory-entry ones, which grow with the memory).
    _ewc_exclude: tuple[str, ...] = ()

    def _before_epoch(self, X: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        """Called at the start of every epoch with this call's training rows; ``epoch`` counts from
        0 within the call (a ``partial_fit`` is one epoch). E.g. to refresh stored embeddings."""

    def _after_epoch(self, X: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        """Called at the end of every epoch with this call's training rows (e.g. a diagnostic)."""

    def _before_validation(self, X: torch.Tensor, y: torch.Tensor) -> None:
        """Make the model ready to predict, given the training split (e.g. refresh a memory)."""

    def _on_train_end(self, X: torch.Tensor, y: torch.Tensor, *, incremental: bool) -> None:
        """Called after the last epoch with all rows of this call (e.g. to store them)."""

    def _to_device(self, device: torch.device) -> None:
        """Move the fitted state to ``device``. Subclasses extend it for their own tensors."""
        if self.device_ == device:
            return
        state = self._get_optimizer().state_dict()
        self.module_.to(device)
        self.ewc_state_ = _tensor_to(self.ewc_state_, device)
        self.device_ = device
        self._optimizer = None
        self._optimizer_state = state  # load_state_dict casts it to the parameters' device

    # Target handling: implemented by the classifier / regressor bases.
    def _validate_targets(self, y, classes, *, first_pass, incremental):
        """Check and encode y without changing the estimator; returns (y_encoded, n_outputs)."""
        raise NotImplementedError

    def _commit_targets(self) -> None:
        """Store what ``_validate_targets`` found (e.g. ``classes_``), once the call cannot fail."""

    def _score_tensors(self, X: torch.Tensor, y: torch.Tensor) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------ building parts
    def _make_embedding(self, n_features: int) -> nn.Module:
        """The embedding network chosen by ``embedding`` (shared by every estimator)."""
        return make_embedding(
            self.embedding,
            in_features=n_features,
            hidden_layer_sizes=tuple(self.hidden_layer_sizes),
            embedding_dim=self.embedding_dim,
            image_shape=None if self.image_shape is None else tuple(self.image_shape),
            final_activation=self._embedding_final_activation,
        )

    def _embedding_out_dim(self, n_features: int) -> int:
        return n_features if self.embedding == "identity" else self.embedding_dim

    # ------------------------------------------------------------ num_threads="auto"
    def _compared_keys(self, new_rows: int) -> int:
        """Stored keys a row is compared with in a forward pass, for ``num_threads="auto"``'s
        estimate of the work (2 * key width FLOPs each); ``new_rows``: rows this call adds.
        None here; the retrieval estimators count their memory (``RetrievalMixin``)."""
        return 0

    def _network_flops_per_row(self) -> float:
        """Forward FLOPs of one row through the network: the embedding counted by torch's
        ``FlopCounterMode`` on one row (eval mode, no autograd, torch's generators forked: nothing
        changes), the other parameters (a head, per-entry parameters) at 2 FLOPs each."""
        module = self.module_
        embedding = getattr(module, "embedding", None)
        inner = set() if embedding is None else {id(p) for p in embedding.parameters()}
        flops = 2.0 * sum(p.numel() for p in module.parameters() if id(p) not in inner)
        if embedding is None:
            return flops
        from torch.utils.flop_counter import FlopCounterMode

        was_training = embedding.training
        row = torch.zeros(1, self.n_features_in_, device=self.device_)
        try:
            embedding.eval()
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), torch.random.fork_rng(devices=[]), counter:
                embedding(row)
            flops += counter.get_total_flops()
        except Exception:  # an embedding FlopCounterMode cannot run: count its parameters
            flops += 2.0 * sum(p.numel() for p in embedding.parameters())
        finally:
            embedding.train(was_training)
        return flops

    def _auto_num_threads(self, new_rows: int = 0) -> int | None:
        """``num_threads="auto"``: 1 when a mini-batch (``batch_size`` rows, fewer when a training
        call has fewer, ``new_rows``) takes under ``_SMALL_WORK_FLOPS`` through the network and the
        stored keys each row is compared with, on the CPU; None (torch's setting) otherwise, on
        CUDA, and before the network exists. A prediction decides as training does: the same
        operators, in larger chunks of rows, and one thread made the prediction of 1,533 rows
        4-8x faster on a shared machine (SemiparametricClassifier 0.99 s -> 0.23 s, MbPA 2.4 s ->
        0.29 s, 3,067 stored rows)."""
        device = getattr(self, "device_", None)
        per_row = self.__dict__.get("_network_flops")
        if device is None or device.type != "cpu" or per_row is None:
            return None
        rows = min(self.batch_size, new_rows) if new_rows else self.batch_size
        key_width = self._embedding_out_dim(self.n_features_in_)
        work = rows * (per_row + 2.0 * key_width * self._compared_keys(new_rows))
        return 1 if work < _SMALL_WORK_FLOPS else None

    def _autocast(self):
        """Mixed precision for a training step or a forward pass on ``device_`` (``precision``)."""
        dtype = _PRECISION_DTYPES[self.precision]
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device_.type, dtype=dtype)

    def _inference_precision(self):
        """How a prediction computes (``_forward_all``, and ``_embed_rows`` of queries).

        ``precision="float32"`` on the CPU: in float64 (see ``_Float64Predictions``), so that a
        row's prediction does not depend on the rest of its batch. On CUDA (float64 is 2-64x
        slower there) and in bf16/fp16, as in training: ``_autocast``.
        """
        if self.precision == "float32" and self.device_.type == "cpu":
            return _Float64Predictions()
        return self._autocast()

    def _batch_to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of rows on ``device_``; host rows are page-locked on CUDA so the copy overlaps
        compute, rows already there (stored examples) are returned as they are."""
        if x.device == self.device_:
            return x
        if self.device_.type == "cuda":
            return x.pin_memory().to(self.device_, non_blocking=True)
        return x.to(self.device_)

    def _get_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the module's parameters; rebuilt lazily after unpickling or a device move."""
        if getattr(self, "_optimizer", None) is None:
            self._optimizer = _adamw(
                list(self.module_.parameters()), lr=self.learning_rate, weight_decay=self.weight_decay
            )
            # A saved state brings its own ``fused`` setting (load_state_dict keeps the saved
            # groups): a model trained before the fused kernel keeps training as it did.
            state = getattr(self, "_optimizer_state", None)
            if state is not None:
                self._optimizer.load_state_dict(state)
                self._optimizer_state = None
        for group in self._optimizer.param_groups:  # honour set_params between calls
            group["lr"] = self.learning_rate
            group["weight_decay"] = self.weight_decay
        return self._optimizer

    @contextmanager
    def _seeded(self, device: torch.device):
        """Draw a seed from the estimator's generator and run the block under it.

        Module initialisation and dropout use torch's global generators; this forks them, seeds the
        fork and restores them afterwards, so library code never changes the caller's RNG state.
        """
        seed = int(torch.randint(0, 2**62, (1,), generator=self._generator))
        cuda = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if (device.type == "cuda")
            else []
        )
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(cuda[0]):
                    torch.cuda.manual_seed(seed)
            yield

    # ------------------------------------------------------------------ fitting
    def _fit(self, X, y, *, incremental: bool, classes=None):
        _check_num_threads(self.num_threads)  # the message predict gives too, not _validate_params'
        self._validate_params()
        self._check_params()
        first_pass = not hasattr(self, "module_") or (not self.warm_start and not incremental)
        # A call that fails leaves the estimator as it was: a fitted one is restored from this
        # snapshot, an unfitted one stays unfitted. (KeyboardInterrupt during training is not a
        # failure: it stops training cleanly, see _train.)
        snapshot = self._snapshot(deep=hasattr(self, "module_") and not first_pass)
        try:
            X, y = validate_data(self, X, y, reset=first_pass, dtype=np.float32, **self._y_checks)
            y_enc, n_outputs = self._validate_targets(
                y, classes, first_pass=first_pass, incremental=incremental
            )
            self._check_fit_data(X, y_enc, first_pass=first_pass, incremental=incremental)
            device = resolve_device(self.device)
            check_precision(self.precision, device)
            self._commit_targets()
            self._start_training(
                X, y_enc, n_outputs, first_pass=first_pass, incremental=incremental, device=device
            )
        except BaseException:
            self._restore(snapshot)
            raise
        return self

    def _start_training(self, X, y_enc, n_outputs, *, first_pass, incremental, device):
        # An int holds while the network is built too (a factory's module is probed with two rows);
        # "auto" decides for the training below, once the network's operations are counted.
        setup_threads = _check_num_threads(self.num_threads)
        with _set_torch_threads(None if setup_threads == "auto" else setup_threads):
            self._prepare_training(X, n_outputs, first_pass=first_pass, device=device)
        X_t = torch.from_numpy(np.require(X, dtype=np.float32, requirements=["C", "W"]))
        y_t = torch.from_numpy(np.require(y_enc, requirements=["C", "W"]))
        self._incremental = incremental  # for hooks: is this call a partial_fit?
        with _torch_threads(self, new_rows=X.shape[0]), self._seeded(device):
            self._train(X_t, y_t, incremental=incremental, device=device)

    def _prepare_training(self, X, n_outputs, *, first_pass, device):
        """A new network and fresh fitted state on a first pass, else the model moved to ``device``;
        then the network's operations per row (for ``num_threads="auto"``)."""
        if first_pass:
            rng = check_random_state(self.random_state)
            self._generator = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
            self.device_ = device
            with self._seeded(device):
                self.module_ = self._build_module(X.shape[1], n_outputs).to(device)
            self._n_outputs = n_outputs  # to rebuild the network when loading a saved model
            self._optimizer = None
            self._optimizer_state = None
            self.n_iter_ = 0
            self.loss_curve_ = []
            self.best_loss_ = np.inf
            self._no_improvement_count = 0
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.ewc_state_ = []
        else:
            self._to_device(device)
        if first_pass or "_network_flops" not in self.__dict__:
            self._network_flops = self._network_flops_per_row()

    def _snapshot(self, *, deep: bool) -> dict:
        """The estimator's attributes, to restore after a failed call.

        A new fit replaces every fitted attribute, so a shallow copy keeps the old ones (and an unfitted
        estimator's attributes: only its parameters, or what a caller such as scikit-learn's callback
        machinery set on it, which must survive the failure). Continued
        training (``partial_fit``, warm start) changes the network, the optimizer and some fitted
        objects in place, so those are copied; top-level tensors (stored examples, labels) are
        only ever replaced, never written in place, and are shared rather than copied.
        """
        if not deep:
            return dict(self.__dict__)
        memo = {
            id(v): v
            for v in self.__dict__.values()
            if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter)
        }
        # The generator is kept as its state: deep-copying a torch.Generator leaks ~3 KB a copy
        # (torch 2.13; measured by the stream-memory benchmark), once per partial_fit call.
        generator = self.__dict__.get("_generator")
        if generator is not None:
            memo[id(generator)] = generator
        snapshot = copy.deepcopy(self.__dict__, memo)
        if generator is not None:
            snapshot["__generator_state__"] = generator.get_state()
        return snapshot

    def _restore(self, snapshot: dict) -> None:
        snapshot = dict(snapshot)
        generator_state = snapshot.pop("__generator_state__", None)
        self.__dict__.clear()
        self.__dict__.update(snapshot)
        if generator_state is not None:
            self._generator.set_state(generator_state)

    def _train(self, X: torch.Tensor, y: torch.Tensor, *, incremental: bool, device: torch.device):
        """The epochs of one ``fit``/``partial_fit`` call, stopping on convergence or Ctrl-C."""
        early_stopping = self.early_stopping and not incremental
        X_train, y_train, validation = X, y, None
        if early_stopping:
            X_train, y_train, validation = self._split_validation(X, y, device)
        # float16 gradients underflow without loss scaling; the scaler's state lasts across calls.
        scaler = None
        if self.precision == "fp16":
            scaler = torch.amp.GradScaler(device.type)
            if getattr(self, "_grad_scaler_state", None):
                scaler.load_state_dict(self._grad_scaler_state)
        epochs = self._n_epochs(incremental)
        progress = None
        if self.verbose == 1:
            from tqdm.auto import tqdm

            progress = tqdm(total=epochs, desc=type(self).__name__, unit="epoch", leave=False)
        best_state, converged, interrupted = None, False, False
        stop = _InterruptFlag()
        try:
            for epoch in range(epochs):
                if stop.raised:
                    break
                epoch_loss = self._run_epoch(X_train, y_train, epoch, scaler, stop)
                if epoch_loss is None:
                    interrupted = True
                    break
                score = None if validation is None else self._validation_score(X_train, y_train, *validation)
                if score is not None and score > self.best_validation_score_:
                    best_state = copy.deepcopy(self.module_.state_dict())
                self._update_no_improvement_count(epoch_loss, score)
                self._report_epoch(progress, epoch_loss, score)
                if not incremental and self._no_improvement_count > self.n_iter_no_change:
                    converged = True
                    break
        finally:
            stop.close()
            if progress is not None:
                progress.close()
            if scaler is not None:
                self._grad_scaler_state = scaler.state_dict()
        self._end_training(
            X, y, incremental=incremental, best_state=best_state, converged=converged, interrupted=interrupted
        )

    def _split_validation(self, X, y, device):
        """Hold out ``validation_fraction`` of the rows (stratified when every class allows it).

        Returns the training rows and the validation rows on ``device``; starts this call's
        ``validation_scores_``.
        """
        rows = np.arange(X.shape[0])
        split = {
            "test_size": self.validation_fraction,
            "random_state": int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator)),
        }
        try:
            stratify = y.numpy() if isinstance(self, ClassifierMixin) else None
            train_rows, val_rows = train_test_split(rows, stratify=stratify, **split)
        except ValueError:  # a class too small to stratify
            train_rows, val_rows = train_test_split(rows, **split)
        train_rows, val_rows = np.sort(train_rows), np.sort(val_rows)
        self.validation_scores_ = []  # of this fit call
        self.best_validation_score_ = -np.inf
        return X[train_rows], y[train_rows], (X[val_rows].to(device), y[val_rows].to(device))

    def _run_epoch(self, X, y, epoch, scaler, stop) -> float | None:
        """One pass over (X, y) in shuffled mini-batches: the epoch's mean loss, or None when a
        Ctrl-C stopped it at a batch boundary."""
        self.module_.train()
        self._before_epoch(X, y, epoch)
        n = X.shape[0]
        batch_size = min(self.batch_size, n)
        optimizer = self._get_optimizer()
        order = torch.randperm(n, generator=self._generator)
        # Summed on the device: reading each batch's loss on the host would wait for the GPU.
        total = torch.zeros((), dtype=torch.float64, device=self.device_)
        order_on_device = order.to(self.device_)  # one copy per epoch, not one per batch
        for start in range(0, n, batch_size):
            ids = order[start : start + batch_size]
            xb, yb = self._batch_to_device(X[ids]), self._batch_to_device(y[ids])
            loss = self._step(xb, yb, order_on_device[start : start + batch_size], optimizer, scaler)
            self._after_step(xb, yb, ids)
            total.add_(loss.detach(), alpha=ids.shape[0])  # float64 sum: one operator
            if stop.raised:  # Ctrl-C: stop here, at a batch boundary
                return None
        self.n_iter_ += 1
        epoch_loss = float(total) / n
        # The epoch's one read of the loss tells whether float32 overflowed. Not in fp16, where
        # a step whose loss overflows is skipped by the GradScaler (the parameters are checked
        # at the end of the call in every precision).
        if not math.isfinite(epoch_loss) and self.precision != "fp16":
            raise self._overflow_error("the training loss", X)
        self._after_epoch(X, y, epoch)
        self.loss_curve_.append(epoch_loss)
        return epoch_loss

    def _step(self, xb, yb, ids, optimizer, scaler) -> torch.Tensor:
        """One optimisation step on a batch (with the EWC penalty); returns its loss."""
        with self._autocast():
            loss = self._loss(xb, yb, ids)
        loss = loss.float()
        if self.ewc_lambda > 0 and self.ewc_state_:
            loss = loss + self._ewc_penalty()
        if loss.requires_grad:  # e.g. not for a one-row batch of in-batch neighbour votes
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        return loss

    def _validation_score(self, X_train, y_train, X_val, y_val) -> float:
        """The score on the held-out rows, the model made ready by ``_before_validation``."""
        self.module_.eval()
        self._before_validation(X_train, y_train)
        with self._autocast():
            score = self._score_tensors(X_val, y_val)
        self.validation_scores_.append(score)
        return score

    def _update_no_improvement_count(self, epoch_loss: float, score: float | None) -> None:
        """Count the epochs without improvement of the validation score (with early stopping) or of
        the training loss, by at least ``tol`` (as MLPClassifier's method of the same name)."""
        if score is not None:
            improved = score >= self.best_validation_score_ + self.tol
            self.best_validation_score_ = max(self.best_validation_score_, score)
        else:
            improved = epoch_loss <= self.best_loss_ - self.tol
        self.best_loss_ = min(self.best_loss_, epoch_loss)
        self._no_improvement_count = 0 if improved else self._no_improvement_count + 1

    def _report_epoch(self, progress, epoch_loss: float, score: float | None) -> None:
        message = f"loss {epoch_loss:.5f}"
        if score is not None:
            message += f", validation score {score:.5f}"
        if progress is not None:
            progress.set_postfix_str(message)
            progress.update(1)
        elif self.verbose >= 2:
            print(f"epoch {self.n_iter_}: {message}", flush=True)

    def _end_training(self, X, y, *, incremental, best_state, converged, interrupted) -> None:
        """Keep the best model (early stopping), warn, and hand every row of the call to
        ``_on_train_end``."""
        if best_state is not None:
            self.module_.load_state_dict(best_state)
        self._check_finite_parameters(X)
        # stacklevel 5 names the frame of fit/partial_fit (_end_training <- _train <-
        # _start_training <- _fit <- fit).
        if interrupted:
            warnings.warn(
                f"{type(self).__name__}: training interrupted (KeyboardInterrupt) during epoch "
                f"{self.n_iter_ + 1}; the model is usable and n_iter_={self.n_iter_} counts the "
                "completed epochs. Press Ctrl-C twice to abort instead.",
                UserWarning,
                stacklevel=5,
            )
        elif not incremental and not converged:
            warnings.warn(
                f"{type(self).__name__}: max_epochs={self.max_epochs} reached and the optimization "
                "has not converged yet.",
                ConvergenceWarning,
                stacklevel=5,
            )
        if not incremental:
            self._no_improvement_count = 0  # a later warm-started fit starts counting afresh
        self.module_.eval()
        self._on_train_end(X, y, incremental=incremental)

    # ------------------------------------------------------------------ overflow
    def _overflow_error(self, what: str, X=None) -> ValueError:
        """The error of a computation that overflowed float32 (NaN or infinity where the data were
        finite), with the largest |X| when X (array or tensor) is given: one message for every
        estimator and place (training loss, parameters, stored embeddings, predictions)."""
        scale = ""
        if X is not None and len(X):
            largest = float(X.abs().max()) if isinstance(X, torch.Tensor) else float(np.abs(X).max())
            scale = f" (the largest |X| is {largest:.3g})"
        return ValueError(
            f"{type(self).__name__}: {what} overflowed to NaN or infinity in float32: the values of X "
            f"are too large for the network{scale}. Scale X first, e.g. with "
            "sklearn.preprocessing.StandardScaler in a Pipeline (or lower learning_rate if X is scaled "
            "already)."
        )

    def _check_finite_parameters(self, X) -> None:
        """Raise ``_overflow_error`` when training left a parameter NaN or infinite (one read per
        call): the call then fails, and the model is restored as it was before it."""
        params = [p.detach() for p in self.module_.parameters() if p.is_floating_point()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise self._overflow_error("training", X)

    def _check_finite_keys(self, keys: torch.Tensor, X=None) -> torch.Tensor:
        """``keys`` (embeddings about to be stored or indexed), or ``_overflow_error`` when one is
        NaN or infinite: a clearer error than the neighbour index's own."""
        if not bool(torch.isfinite(keys).all()):
            raise self._overflow_error("the embeddings of the stored examples", X)
        return keys

    # ------------------------------------------------------------------------ EWC
    def _ewc_penalty(self) -> torch.Tensor:
        """sum over consolidated tasks t of (lambda / 2) sum_i F_t,i (theta_i - theta*_t,i)^2."""
        params = dict(self.module_.named_parameters())
        total = 0.0
        for anchor, fisher in self.ewc_state_:
            for name, theta_star in anchor.items():
                total = total + (fisher[name] * (params[name] - theta_star).square()).sum()
        return 0.5 * self.ewc_lambda * total

    def end_task(self, X, y, *, max_samples=1000):
        """Consolidate the task just learned, for elastic weight consolidation (EWC).

        Estimates the diagonal of the Fisher information F of the current parameters theta* on
        (X, y) and stores (theta*, F). Every later training step then adds the penalty
        (ewc_lambda / 2) sum_i F_i (theta_i - theta*_i)^2 for each consolidated task (Kirkpatrick
        et al., 2017), so weights important to earlier tasks move little. Call it after the last
        ``partial_fit`` of each task; ``sksemiparam.continual.evaluate_stream`` does. Does nothing
        when ``ewc_lambda`` is 0.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows of the task just learned.
        y : array-like of shape (n_samples,)
            Their labels (all in ``classes_``).
        max_samples : int, default=1000
            F is the mean squared gradient of log p(y | x) over at most this many rows of the task
            (the empirical Fisher), drawn at random when there are more.

        Returns
        -------
        self
        """
        check_is_fitted(self, "module_")
        if not (isinstance(max_samples, Integral) and max_samples >= 1):
            raise ValueError(f"`max_samples` must be a positive integer, got {max_samples!r}")
        if self.ewc_lambda == 0:
            return self
        X, y = validate_data(self, X, y, reset=False, dtype=np.float32)
        y_enc = self._encode_known_targets(y)
        device = resolve_device(self.device)
        self._to_device(device)
        rows = torch.randperm(X.shape[0], generator=self._generator)[:max_samples]
        X_t = torch.from_numpy(np.require(X, dtype=np.float32, requirements=["C", "W"]))[rows]
        y_t = torch.from_numpy(y_enc)[rows]
        params = {
            n: p for n, p in self.module_.named_parameters() if p.requires_grad and n not in self._ewc_exclude
        }
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        self.module_.eval()
        # Per-row gradients, one row at a time: the log-likelihood of a row must not depend on the
        # other rows (true of every estimator's prediction path), and rows are few.
        with _torch_threads(self):
            for x_i, y_i in zip(X_t, y_t):
                log_likelihood = self._row_log_likelihood(x_i[None].to(device), y_i.to(device))
                grads = torch.autograd.grad(log_likelihood, list(params.values()), allow_unused=True)
                for (n, _), g in zip(params.items(), grads):
                    if g is not None:
                        fisher[n] += g.square()
        fisher = {n: f / len(rows) for n, f in fisher.items()}
        anchor = {n: p.detach().clone() for n, p in params.items()}
        self.ewc_state_.append((anchor, fisher))
        return self

    # ---------------------------------------------------------------- predicting
    def _prepare_predict(self, X) -> torch.Tensor:
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        device = resolve_device(self.device)
        check_precision(self.precision, device)
        self._to_device(device)
        self.module_.eval()
        return torch.from_numpy(np.require(X, dtype=np.float32, requirements=["C", "W"]))

    def _embed_rows(
        self, X: torch.Tensor, network: nn.Module | None = None, *, queries: bool = False
    ) -> torch.Tensor:
        """Rows of X through ``network`` (default the module's ``embedding``) in chunks, in eval mode,
        without autograd; the result stays on the model's device, in float32 whatever ``precision``
        the network ran in. The network's mode is restored.

        ``queries``: the rows are a caller's (``transform``, ``explain``), so they are embedded as
        predictions are (``_inference_precision``: batch-invariant). Stored examples (keys refreshed
        during training, an index built after it) are embedded as training computes: they are
        embedded in the same fixed chunks whatever is predicted later.
        """
        network = self.module_.embedding if network is None else network
        was_training = network.training
        network.eval()
        precision = self._inference_precision() if queries else self._autocast()
        try:
            with torch.no_grad(), precision:
                out = [
                    network(self._batch_to_device(X[s : s + _PREDICT_CHUNK])).float()
                    for s in range(0, X.shape[0], _PREDICT_CHUNK)
                ]
        finally:
            network.train(was_training)
        return torch.cat(out) if out else torch.empty(0, 0, device=self.device_)

    def _forward_all(self, X: torch.Tensor) -> torch.Tensor:
        """Run ``_forward`` over ``X`` in chunks, in eval mode and without autograd; result on CPU,
        float64 where computed in float64 (``_inference_precision``), else float32. The chunks'
        outputs stay on the device until the end: one copy to the host."""
        outputs = []
        with torch.no_grad(), self._inference_precision():
            for start in range(0, X.shape[0], _PREDICT_CHUNK):
                xb = self._batch_to_device(X[start : start + _PREDICT_CHUNK])
                out = self._forward(xb)
                outputs.append(out if out.dtype == torch.float64 else out.float())
        return torch.cat(outputs).cpu()

    # --------------------------------------------------------------- persistence
    def __getstate__(self):
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        if "module_" in state:
            if getattr(self, "device_", torch.device("cpu")).type != "cpu":
                state["module_"] = copy.deepcopy(self.module_).cpu()
            state["device_"] = torch.device("cpu")
        for name, value in state.items():  # fitted tensors of the estimators (e.g. memory labels)
            if isinstance(value, torch.Tensor) and value.device.type != "cpu":
                state[name] = value.cpu()
        if state.get("ewc_state_"):
            state["ewc_state_"] = _tensor_to(self.ewc_state_, "cpu")
        if state.get("_optimizer") is not None:
            state["_optimizer_state"] = _tensor_to(self._optimizer.state_dict(), "cpu")
        state["_optimizer"] = None
        if state.get("_generator") is not None:
            state["_generator"] = self._generator.get_state()
        from . import __version__

        state["_sksemiparam_version"] = __version__
        return state

    def __setstate__(self, state):
        from . import __version__
        from .persistence import _check_not_newer

        saved = state.pop("_sksemiparam_version", None)
        if saved is not None:
            _check_not_newer(saved, __version__, f"this {type(self).__name__}")
        # A parameter added after the model was saved takes its default, which keeps the behaviour
        # the model was trained with (a new parameter's default is the procedure as it was).
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                state.setdefault(name, parameter.default)
        self._upgrade_state(state)
        generator_state = state.get("_generator")
        super().__setstate__(state)
        if isinstance(generator_state, torch.Tensor):
            self._generator = torch.Generator()
            self._generator.set_state(generator_state)

    def _upgrade_state(self, state: dict) -> None:
        """Convert, in place, fitted state saved by an older sksemiparam to today's attributes."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.non_deterministic = False
        return tags


class _InterruptFlag:
    """While training, the first Ctrl-C (SIGINT) sets ``raised`` instead of raising, so the loop stops
    at the next batch boundary with a usable model (as skorch does); a second Ctrl-C raises
    KeyboardInterrupt as usual. Only in the main thread, where Python delivers signals, and only
    when SIGINT has Python's default handler (a handler the user installed is left alone)."""

    def __init__(self):
        self.raised = False
        self._previous = None
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def close(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _encode_labels(y, classes) -> np.ndarray:
    """Indices of ``y`` in the sorted ``classes``; a label outside them is MLPClassifier's error."""
    unseen = np.setdiff1d(unique_labels(y), classes)
    if unseen.size:
        raise ValueError(
            f"`y` has classes not in `self.classes_`. `self.classes_` has {classes.tolist()}. "
            f"'y' has {unique_labels(y).tolist()}."
        )
    return np.searchsorted(classes, y).astype(np.int64)


class TorchClassifierBase(ClassifierMixin, TorchEstimatorBase):
    """Label encoding, ``partial_fit(classes=...)`` and probability outputs for classifiers.

    ``_forward`` returns log-probabilities (n, n_classes) in ``classes_`` order.
    """

    def fit(self, X, y):
        """Train on (X, y) for up to ``max_epochs`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels of any type (numbers, strings).

        Returns
        -------
        self
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """One pass over (X, y), keeping the optimizer state between calls.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            All classes that can appear in any call. Required on the first call (as in
            ``SGDClassifier``), optional and checked on later ones.

        Returns
        -------
        self
        """
        return self._fit(X, y, incremental=True, classes=classes)

    def _validate_targets(self, y, classes, *, first_pass, incremental):
        check_classification_targets(y)
        if incremental:
            known = getattr(self, "classes_", None)
            if known is None and classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            if classes is not None:
                if known is not None and not np.array_equal(known, unique_labels(classes)):
                    raise ValueError(
                        f"`classes={np.asarray(classes).tolist()!r}` is not the same as on last call "
                        f"to partial_fit, was: {known.tolist()!r}"
                    )
                new_classes = unique_labels(classes) if known is None else known
            else:
                new_classes = known
            if first_pass and len(new_classes) < 2:
                raise ValueError(
                    f"`classes` has {len(new_classes)} class; a classifier needs at least 2 classes"
                )
        elif first_pass:
            new_classes = unique_labels(y)
            if len(new_classes) < 2:
                raise ValueError(
                    f"`y` has only one class ({new_classes[0].item()!r}); a classifier needs at least 2 "
                    "classes"
                )
        else:  # warm start
            new_classes = self.classes_
        self._pending_classes = new_classes
        return _encode_labels(y, new_classes), len(new_classes)

    def _commit_targets(self):
        self.classes_ = self._pending_classes
        del self._pending_classes

    def _encode_known_targets(self, y):
        check_classification_targets(y)
        return _encode_labels(y, self.classes_)

    def _row_log_likelihood(self, x, y):
        return self._fisher_outputs(x)[0, y]

    def _score_tensors(self, X, y):
        with torch.no_grad():
            pred = self._forward(X).argmax(1)
        return float((pred == y).float().mean())

    def predict_log_proba(self, X):
        """Log of ``predict_proba``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float64
            Rows sum to 1; columns in ``classes_`` order.
        """
        with _torch_threads(self):
            X_t = self._prepare_predict(X)
            proba = self._forward_all(X_t).double().exp().numpy()
        with np.errstate(invalid="ignore"):
            proba = proba / proba.sum(axis=1, keepdims=True)
        if not np.isfinite(proba).all():
            raise self._overflow_error("the predicted probabilities", X_t)
        return proba

    def predict(self, X):
        """Predicted class labels (of the type given in ``y``)."""
        proba = self.predict_proba(X)  # before touching classes_: unfitted -> NotFittedError
        return self.classes_[np.argmax(proba, axis=1)]


class TorchRegressorBase(RegressorMixin, TorchEstimatorBase):
    """Target standardisation and predictions for regressors (one or several outputs).

    Targets are standardised with the mean and standard deviation of the first ``fit`` (or first
    ``partial_fit``) and predictions are mapped back; ``_forward`` returns standardised outputs
    (n, n_outputs).
    """

    _y_checks = {"y_numeric": True, "multi_output": True}

    def fit(self, X, y):
        """Train on (X, y) for up to ``max_epochs`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y):
        """One pass over (X, y), keeping the optimizer state between calls.

        The target standardisation is fixed by the first call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self
        """
        return self._fit(X, y, incremental=True)

    def _validate_targets(self, y, classes, *, first_pass, incremental):
        y = np.asarray(y, dtype=np.float64)
        one_d = y.ndim == 1
        y2 = y.reshape(y.shape[0], -1)
        if first_pass:
            mean, scale = y2.mean(0), y2.std(0)
            scale = np.where(scale > 1e-12 * np.maximum(np.abs(mean), 1.0), scale, 1.0)
        else:
            if y2.shape[1] != self.n_outputs_:
                raise ValueError(
                    f"`y` has {y2.shape[1]} output(s) but the model was fitted with {self.n_outputs_}"
                )
            mean, scale, one_d = self.y_mean_, self.y_scale_, self._y_one_d
        self._pending_targets = (mean, scale, one_d)
        return ((y2 - mean) / scale).astype(np.float32), y2.shape[1]

    def _commit_targets(self):
        self.y_mean_, self.y_scale_, self._y_one_d = self._pending_targets
        self.n_outputs_ = self.y_mean_.shape[0]
        del self._pending_targets

    def _encode_known_targets(self, y):
        y2 = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if y2.shape[1] != self.n_outputs_:
            raise ValueError(
                f"`y` has {y2.shape[1]} output(s) but the model was fitted with {self.n_outputs_}"
            )
        return ((y2 - self.y_mean_) / self.y_scale_).astype(np.float32)

    def _row_log_likelihood(self, x, y):
        # Gaussian with unit variance on the standardised scale, up to a constant.
        return -0.5 * (self._fisher_outputs(x)[0] - y).square().sum()

    def _score_tensors(self, X, y):
        with torch.no_grad():
            residual = ((self._forward(X) - y) ** 2).sum(0)
            total = ((y - y.mean(0)) ** 2).sum(0).clamp_min(1e-12)
        return float((1.0 - residual / total).mean())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X):
        """Predicted targets, shape (n_samples,) or (n_samples, n_outputs) as in ``y``."""
        with _torch_threads(self):
            X_t = self._prepare_predict(X)
            out = self._forward_all(X_t).double().numpy() * self.y_scale_ + self.y_mean_
        if not np.isfinite(out).all():
            raise self._overflow_error("the predictions", X_t)
        return out.ravel() if self._y_one_d else out
