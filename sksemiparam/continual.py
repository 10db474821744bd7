"""Task streams and continual-learning metrics.

A continual-learning benchmark trains one model on a sequence of tasks, each seen once, and asks how
much it still knows about the earlier tasks at the end. This module builds such sequences from an
ordinary train/test split and runs the protocol on any estimator with ``partial_fit``::

    tasks = split_tasks(X_train, y_train, X_test, y_test, n_tasks=5)   # list[Task]
    result = evaluate_stream(estimator, tasks, epochs=3, random_state=0)
    result.accuracy            # R[i, j]: accuracy on task j's test set after training task i
    result.backward_transfer   # < 0: forgetting
    plot_accuracy_matrix(result)

Three builders:

- :func:`permuted_tasks`: every task is the whole problem under its own fixed permutation of the
  feature columns (permuted MNIST, Goodfellow et al. 2013; Kirkpatrick et al. 2017);
- :func:`split_tasks`: every task holds a disjoint subset of the classes (split MNIST, Zenke et al.
  2017), labels keep their values;
- :func:`class_incremental_tasks`: the same training tasks, with test sets that accumulate every
  class seen so far.

The module depends on numpy and scikit-learn only (matplotlib inside :func:`plot_accuracy_matrix`) and
on no sksemiparam estimator: anything with ``partial_fit`` and ``predict`` can be evaluated.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, column_or_1d

__all__ = [
    "StreamResult",
    "Task",
    "class_incremental_tasks",
    "evaluate_stream",
    "permuted_tasks",
    "plot_accuracy_matrix",
    "split_tasks",
]


# ============================================================================================ tasks
@dataclass(frozen=True, eq=False)
class Task:
    """One task of a stream: its training rows, its test rows and a name.

    Frozen: the fields cannot be reassigned (the arrays are not copied, so do not write into them).
    Tasks compare by identity.

    Parameters
    ----------
    X_train : ndarray of shape (n_train, n_features)
        Training inputs of the task.
    y_train : ndarray of shape (n_train,)
        Training labels of the task.
    X_test : ndarray of shape (n_test, n_features)
        Test inputs of the task; same number of features as ``X_train``.
    y_test : ndarray of shape (n_test,)
        Test labels of the task.
    name : str
        Short label, used for the rows and columns of :func:`plot_accuracy_matrix`.

    See Also
    --------
    permuted_tasks, split_tasks, class_incremental_tasks : Build a list of tasks from one dataset.
    evaluate_stream : Train an estimator on a list of tasks and measure forgetting.

    Examples
    --------
    >>> import numpy as np
    >>> from sksemiparam.continual import Task
    >>> task = Task(np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.ones((2, 2)), np.array([0, 1]), "toy")
    >>> task
    Task(name='toy', n_train=4, n_test=2, n_features=2, classes=[0, 1])
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"`name` must be a str, got {type(self.name).__name__}")
        arrays = {}
        for attr in ("X_train", "y_train", "X_test", "y_test"):
            value = np.asarray(getattr(self, attr))
            want = 2 if attr.startswith("X") else 1
            if value.ndim != want:
                raise ValueError(
                    f"`{attr}` of task {self.name!r} must be {want}-D, got an array of shape {value.shape}"
                )
            arrays[attr] = value
        for part in ("train", "test"):
            n_x, n_y = arrays[f"X_{part}"].shape[0], arrays[f"y_{part}"].shape[0]
            if n_x != n_y:
                raise ValueError(
                    f"`X_{part}` has {n_x} rows but `y_{part}` has {n_y} labels in task {self.name!r}; "
                    "pass one label per row"
                )
            if n_x == 0:
                raise ValueError(f"task {self.name!r} has no {part} rows; every task needs at least one")
        if arrays["X_train"].shape[1] != arrays["X_test"].shape[1]:
            raise ValueError(
                f"`X_train` has {arrays['X_train'].shape[1]} features but `X_test` has "
                f"{arrays['X_test'].shape[1]} in task {self.name!r}; they must have the same columns"
            )
        for attr, value in arrays.items():
            object.__setattr__(self, attr, value)

    def __repr__(self) -> str:
        classes = np.unique(np.concatenate([self.y_train, self.y_test])).tolist()
        return (
            f"Task(name={self.name!r}, n_train={len(self.y_train)}, n_test={len(self.y_test)}, "
            f"n_features={self.X_train.shape[1]}, classes={classes})"
        )


# ================================================================================ input checking
def _check_data(X_train, y_train, X_test, y_test):
    """Validate a train/test split; return numpy arrays (labels keep their dtype)."""
    out = []
    for X_name, X, y_name, y in (
        ("X_train", X_train, "y_train", y_train),
        ("X_test", X_test, "y_test", y_test),
    ):
        X = check_array(X, dtype="numeric", ensure_all_finite=False, input_name=X_name)
        try:
            y = column_or_1d(y, warn=True)
        except ValueError as exc:
            raise ValueError(f"`{y_name}` must be 1-D, one label per row: {exc}") from None
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"`{X_name}` has {X.shape[0]} rows but `{y_name}` has {y.shape[0]} labels")
        out += [X, y]
    if out[0].shape[1] != out[2].shape[1]:
        raise ValueError(
            f"`X_train` has {out[0].shape[1]} features but `X_test` has {out[2].shape[1]}; "
            "pass a train/test split of the same columns"
        )
    return out


def _check_int(name, value, low, high=None, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        kind = "an int or None" if allow_none else "an int"
        raise TypeError(f"`{name}` must be {kind}, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"{low} <= {name} <= {high}" if high is not None else f"{name} >= {low}"
        raise ValueError(f"`{name}`={value} is out of range; pass {bound}")
    return int(value)


# ========================================================================== permuted tasks
def permuted_tasks(
    X_train,
    y_train,
    X_test,
    y_test,
    n_tasks,
    *,
    n_train_per_task=None,
    n_test_per_task=None,
    random_state=None,
):
    """Tasks that are the same problem under different fixed permutations of the features.

    Task ``t`` applies one random permutation ``perm_t`` of the feature columns to its training
    and test rows alike (``X[:, perm_t]``). By convention task 0 uses the identity permutation, so
    it is the original problem, as in the permuted-MNIST benchmark. All tasks share the same
    classes; only the input distribution changes (a domain-incremental stream).

    Parameters
    ----------
    X_train : array-like of shape (n_train, n_features)
        Training inputs.
    y_train : array-like of shape (n_train,)
        Training labels.
    X_test : array-like of shape (n_test, n_features)
        Test inputs, with the same columns as ``X_train``.
    y_test : array-like of shape (n_test,)
        Test labels.
    n_tasks : int
        Number of tasks (>= 1).
    n_train_per_task : int, default=None
        Number of training rows per task, drawn at random without replacement, independently for
        each task (so tasks see different rows). None keeps all rows.
    n_test_per_task : int, default=None
        Number of test rows per task, drawn like ``n_train_per_task``. None keeps all rows.
    random_state : int, RandomState instance or None, default=None
        Draws the permutations and the row subsets. The permutations are drawn first, so they do
        not depend on ``n_train_per_task`` and ``n_test_per_task``.

    Returns
    -------
    tasks : list of Task
        ``n_tasks`` tasks named ``"permutation 0"``, ``"permutation 1"``, ... Rows keep their
        original relative order.

    See Also
    --------
    split_tasks : Tasks with disjoint classes.
    evaluate_stream : Train an estimator on the tasks and measure forgetting.

    References
    ----------
    .. [1] I. Goodfellow, M. Mirza, D. Xiao, A. Courville and Y. Bengio, "An Empirical
       Investigation of Catastrophic Forgetting in Gradient-Based Neural Networks", ICLR 2014.
    .. [2] J. Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from sksemiparam.continual import permuted_tasks
    >>> X = np.arange(12.0).reshape(4, 3)
    >>> y = np.array([0, 1, 0, 1])
    >>> tasks = permuted_tasks(X, y, X, y, n_tasks=3, n_train_per_task=2, random_state=0)
    >>> [t.name for t in tasks]
    ['permutation 0', 'permutation 1', 'permutation 2']
    >>> tasks[0].X_test[0]  # task 0: the identity permutation
    array([0., 1., 2.])
    >>> tasks[0].X_train.shape
    (2, 3)
    """
    X_train, y_train, X_test, y_test = _check_data(X_train, y_train, X_test, y_test)
    n_tasks = _check_int("n_tasks", n_tasks, 1)
    n_train_per_task = _check_int("n_train_per_task", n_train_per_task, 1, len(y_train), allow_none=True)
    n_test_per_task = _check_int("n_test_per_task", n_test_per_task, 1, len(y_test), allow_none=True)
    rng = check_random_state(random_state)

    n_features = X_train.shape[1]
    perms = [np.arange(n_features)] + [rng.permutation(n_features) for _ in range(n_tasks - 1)]

    def rows(n_total, n_keep):
        if n_keep is None:
            return np.arange(n_total)
        return np.sort(rng.choice(n_total, size=n_keep, replace=False))

    tasks = []
    for t, perm in enumerate(perms):
        train, test = rows(len(y_train), n_train_per_task), rows(len(y_test), n_test_per_task)
        tasks.append(
            Task(
                X_train=X_train[np.ix_(train, perm)],
                y_train=y_train[train],
                X_test=X_test[np.ix_(test, perm)],
                y_test=y_test[test],
                name=f"permutation {t}",
            )
        )
    return tasks


# ============================================================================== split tasks
def _class_groups(y_train, y_test, n_tasks, class_groups):
    """Resolve ``n_tasks`` / ``class_groups`` into a list of label arrays (validated)."""
    if (n_tasks is None) == (class_groups is None):
        raise ValueError(
            "pass exactly one of `n_tasks` (split the sorted classes evenly) and `class_groups` "
            f"(explicit lists of labels); got n_tasks={n_tasks!r}, class_groups={class_groups!r}"
        )
    train_classes = np.unique(y_train)
    if n_tasks is not None:
        n_tasks = _check_int("n_tasks", n_tasks, 1)
        if n_tasks > len(train_classes):
            raise ValueError(
                f"`n_tasks`={n_tasks} is larger than the {len(train_classes)} classes in `y_train`; "
                f"pass n_tasks <= {len(train_classes)}"
            )
        unseen = np.setdiff1d(np.unique(y_test), train_classes)
        if len(unseen):
            raise ValueError(
                f"`y_test` has labels {unseen.tolist()} that never occur in `y_train`, so no task would "
                "train on them; drop those test rows or pass `class_groups` explicitly"
            )
        return [g.tolist() for g in np.array_split(train_classes, n_tasks)]

    if isinstance(class_groups, (str, bytes)) or not isinstance(class_groups, (Sequence, np.ndarray)):
        raise TypeError(
            f"`class_groups` must be a list of lists of labels, got {type(class_groups).__name__}"
        )
    if len(class_groups) == 0:
        raise ValueError("`class_groups` is empty; pass at least one group of labels, e.g. [[0, 1], [2, 3]]")
    present = set(train_classes.tolist())
    owner = {}
    groups = []
    for g, group in enumerate(class_groups):
        if isinstance(group, (str, bytes)) or not isinstance(group, (Sequence, np.ndarray)):
            raise TypeError(
                f"`class_groups[{g}]` must be a list of labels, got {group!r}; "
                "write a single-class group as [label]"
            )
        if len(group) == 0:
            raise ValueError(f"`class_groups[{g}]` is empty; every task needs at least one class")
        for label in np.asarray(group).tolist():
            if label in owner:
                where = f"class_groups[{owner[label]}]" + (
                    f" and class_groups[{g}]" if owner[label] != g else ""
                )
                raise ValueError(
                    f"label {label!r} appears more than once (in {where}); the groups of `class_groups` "
                    "must be disjoint"
                )
            if label not in present:
                raise ValueError(
                    f"label {label!r} in `class_groups[{g}]` does not occur in `y_train`; "
                    f"the training labels are {sorted(present)}"
                )
            owner[label] = g
        groups.append(list(np.asarray(group).tolist()))
    return groups


def _group_name(group, prefix="classes "):
    labels = [str(c) for c in group]
    if len(labels) > 4:
        labels = labels[:2] + ["...", labels[-1]]
    return prefix + ",".join(labels)


def _split(X_train, y_train, X_test, y_test, n_tasks, class_groups, cumulative_test):
    X_train, y_train, X_test, y_test = _check_data(X_train, y_train, X_test, y_test)
    groups = _class_groups(y_train, y_test, n_tasks, class_groups)
    tasks = []
    seen = []
    for t, group in enumerate(groups):
        seen += group
        train = np.isin(y_train, group)
        test = np.isin(y_test, seen if cumulative_test else group)
        if not np.isin(y_test, group).any():
            raise ValueError(
                f"no row of `y_test` has a label of task {t} (classes {group}); every task needs test "
                "rows: choose `class_groups` among the labels of both `y_train` and `y_test`"
            )
        name = _group_name(group, prefix="+ classes " if cumulative_test and t > 0 else "classes ")
        tasks.append(Task(X_train[train], y_train[train], X_test[test], y_test[test], name))
    return tasks


def split_tasks(X_train, y_train, X_test, y_test, n_tasks=None, *, class_groups=None):
    """Tasks with disjoint subsets of the classes (split MNIST and the like).

    Task ``t`` holds the training and test rows whose label is in its group of classes. Labels keep
    their original values: the estimator is told every class up front (:func:`evaluate_stream`
    passes ``classes=`` on its first ``partial_fit``) and predicts among all of them, so accuracy on
    an old task falls when the model starts to predict only the new classes. This is the
    single-head, class-incremental reading of split MNIST; for a per-task ("multi-head") reading,
    relabel each task's classes yourself.

    Parameters
    ----------
    X_train : array-like of shape (n_train, n_features)
        Training inputs.
    y_train : array-like of shape (n_train,)
        Training labels.
    X_test : array-like of shape (n_test, n_features)
        Test inputs, with the same columns as ``X_train``.
    y_test : array-like of shape (n_test,)
        Test labels.
    n_tasks : int, default=None
        Split the classes of ``y_train``, in sorted order, into this many contiguous groups whose
        sizes differ by at most one (the first groups get the extra class), e.g. 10 classes and 5
        tasks give {0, 1}, {2, 3}, ..., {8, 9}. Every label of ``y_test`` must occur in ``y_train``.
    class_groups : list of lists of labels, default=None
        Explicit groups, one task each, in this order, e.g. ``[[0, 1], [2, 3]]``. They must be
        disjoint and every label must occur in ``y_train``; classes in no group are left out of
        the stream (their rows are dropped). Give exactly one of ``n_tasks`` and ``class_groups``.

    Returns
    -------
    tasks : list of Task
        One task per group, named after its classes (``"classes 0,1"``). Rows keep their original
        relative order.

    Raises
    ------
    ValueError
        If both or neither of ``n_tasks`` and ``class_groups`` are given, ``n_tasks`` exceeds the
        number of classes, groups overlap, a label is absent from ``y_train`` or a group has no
        test rows.

    See Also
    --------
    class_incremental_tasks : The same tasks, with test sets that accumulate the classes seen so far.
    permuted_tasks : Tasks that share the classes and permute the features.

    References
    ----------
    .. [1] F. Zenke, B. Poole and S. Ganguli, "Continual Learning Through Synaptic Intelligence",
       ICML 2017.
    .. [2] G. M. van de Ven and A. S. Tolias, "Three scenarios for continual learning",
       arXiv:1904.07734, 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from sksemiparam.continual import split_tasks
    >>> X, y = np.arange(12.0).reshape(6, 2), np.array([0, 1, 2, 3, 4, 0])
    >>> [t.name for t in split_tasks(X, y, X, y, n_tasks=2)]
    ['classes 0,1,2', 'classes 3,4']
    >>> tasks = split_tasks(X, y, X, y, class_groups=[[4], [0, 2]])
    >>> [t.y_train.tolist() for t in tasks]
    [[4], [0, 2, 0]]
    """
    return _split(X_train, y_train, X_test, y_test, n_tasks, class_groups, cumulative_test=False)


def class_incremental_tasks(X_train, y_train, X_test, y_test, n_tasks=None, *, class_groups=None):
    """Split tasks whose test sets accumulate all classes seen so far.

    The classes are grouped exactly as in :func:`split_tasks` (same ``n_tasks`` / ``class_groups``)
    and the training rows of task ``t`` are those of group ``t``, as there. The test set of task
    ``t`` holds the test rows of groups ``0, ..., t`` (in their original order), so it measures
    everything the model should know after training task ``t``.

    Under :func:`evaluate_stream`, the accuracy matrix ``R`` then reads:

    - ``R[i, i]``: accuracy on all classes seen so far, just after training task ``i``: the
      class-incremental learning curve. Its mean is the *average incremental accuracy* of iCaRL
      (Rebuffi et al. 2017), and ``R[-1, -1]`` is the final accuracy on every class of the stream.
      These are the numbers to report for this stream.
    - ``R[i, j]``, ``j < i``: accuracy on the classes of tasks ``0, ..., j`` after training task
      ``i``. ``backward_transfer`` compares these at the end with their values just after task
      ``j``.
    - ``R[i, j]``, ``j > i``: includes classes not trained yet, which a model can hardly predict;
      read it as a lower bound, not as forward transfer.

    The test sets are nested, so ``average_accuracy`` (the mean of the last row) counts the first
    groups' test rows more often than the last ones'; prefer ``R[-1, -1]`` and the diagonal. With
    :func:`split_tasks` instead, every test row counts once: its last row holds the final accuracy
    on each group separately, and with groups of equal test size its mean is the final accuracy on
    all classes.

    Parameters
    ----------
    X_train : array-like of shape (n_train, n_features)
        Training inputs.
    y_train : array-like of shape (n_train,)
        Training labels.
    X_test : array-like of shape (n_test, n_features)
        Test inputs, with the same columns as ``X_train``.
    y_test : array-like of shape (n_test,)
        Test labels.
    n_tasks : int, default=None
        Split the sorted classes of ``y_train`` into this many groups whose sizes differ by at most
        one, as in :func:`split_tasks`.
    class_groups : list of lists of labels, default=None
        Explicit disjoint groups, as in :func:`split_tasks`. Give exactly one of ``n_tasks`` and
        ``class_groups``.

    Returns
    -------
    tasks : list of Task
        One task per group. Task 0 is named after its classes (``"classes 0,1"``), later ones with a
        ``+`` (``"+ classes 2,3"``) because their test set also holds every earlier class.

    See Also
    --------
    split_tasks : The same training tasks, each tested on its own classes only.
    evaluate_stream : Train an estimator on the tasks and measure forgetting.

    References
    ----------
    .. [1] S.-A. Rebuffi, A. Kolesnikov, G. Sperl and C. H. Lampert, "iCaRL: Incremental
       Classifier and Representation Learning", CVPR 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from sksemiparam.continual import class_incremental_tasks
    >>> X, y = np.arange(12.0).reshape(6, 2), np.array([0, 1, 2, 3, 4, 5])
    >>> tasks = class_incremental_tasks(X, y, X, y, n_tasks=3)
    >>> [t.name for t in tasks]
    ['classes 0,1', '+ classes 2,3', '+ classes 4,5']
    >>> [t.y_train.tolist() for t in tasks]
    [[0, 1], [2, 3], [4, 5]]
    >>> [t.y_test.tolist() for t in tasks]
    [[0, 1], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5]]
    """
    return _split(X_train, y_train, X_test, y_test, n_tasks, class_groups, cumulative_test=True)


# ================================================================================ evaluation
@dataclass(frozen=True)
class StreamResult:
    """Accuracy matrix of a task stream and the metrics derived from it.

    Returned by :func:`evaluate_stream`; it can also be built from any accuracy matrix, and the
    metrics are computed from it.

    Parameters
    ----------
    accuracy : array-like of shape (n_tasks, n_tasks)
        The matrix ``R``: ``R[i, j]`` is the accuracy on task ``j``'s test set after training
        tasks ``0, ..., i``. Stored as a read-only float array.
    task_names : list of str, default=None
        Names of the tasks; None names them ``"task 0"``, ``"task 1"``, ...
    fit_seconds : float, default=0.0
        Wall-clock time spent in ``partial_fit`` and ``end_task`` (not in ``predict``).

    Attributes
    ----------
    average_accuracy : float
        Mean accuracy over all tasks after the last one, ``ACC = 1/T sum_j R[T-1, j]``.
    backward_transfer : float
        ``BWT = 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])``: how accuracy on each task changed
        between just after learning it and the end of the stream; negative values are forgetting.
        0.0 when there is a single task.
    n_tasks : int
        Number of tasks ``T``.

    Notes
    -----
    Lopez-Paz and Ranzato also define forward transfer, ``1/(T-1) sum_{j>0} (R[j-1, j] - b_j)``,
    against the accuracy ``b_j`` of an untrained model on task ``j``. ``partial_fit`` is an
    estimator's first contact with the data, so there is no untrained model to score and no
    forward transfer here; ``R[j-1, j]`` is in the matrix for a caller who has a baseline.

    References
    ----------
    .. [1] D. Lopez-Paz and M. Ranzato, "Gradient Episodic Memory for Continual Learning",
       NeurIPS 2017.

    Examples
    --------
    >>> from sksemiparam.continual import StreamResult
    >>> result = StreamResult([[0.9, 0.1], [0.5, 0.8]], task_names=["A", "B"])
    >>> round(result.average_accuracy, 3), round(result.backward_transfer, 3)
    (0.65, -0.4)
    """

    accuracy: np.ndarray
    task_names: list[str] | None = None
    fit_seconds: float = 0.0
    average_accuracy: float = field(init=False)
    backward_transfer: float = field(init=False)
    n_tasks: int = field(init=False)

    def __post_init__(self) -> None:
        R = np.array(self.accuracy, dtype=float)  # a copy we own
        if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
            raise ValueError(
                f"`accuracy` must be a non-empty square matrix (n_tasks, n_tasks), got shape {R.shape}"
            )
        R.flags.writeable = False
        T = R.shape[0]
        names = [f"task {j}" for j in range(T)] if self.task_names is None else list(self.task_names)
        if len(names) != T or not all(isinstance(n, str) for n in names):
            raise ValueError(f"`task_names` must be {T} strings, one per task, got {self.task_names!r}")
        last = R[-1]
        bwt = float(np.mean(last[:-1] - np.diag(R)[:-1])) if T > 1 else 0.0
        for attr, value in (
            ("accuracy", R),
            ("task_names", names),
            ("fit_seconds", float(self.fit_seconds)),
            ("average_accuracy", float(last.mean())),
            ("backward_transfer", bwt),
            ("n_tasks", T),
        ):
            object.__setattr__(self, attr, value)


def evaluate_stream(estimator, tasks, *, classes=None, epochs=1, batch_size=None, random_state=None):
    """Train an estimator on a stream of tasks and measure accuracy on every task after each.

    The protocol, for each task ``i`` in order:

    1. ``epochs`` passes over the task's training rows, each pass in a new random order, in
       mini-batches of ``batch_size`` rows, each batch one call to
       ``estimator.partial_fit(X, y)``. The very first call of the stream also passes
       ``classes=classes`` (as ``SGDClassifier`` requires); later calls do not.
    2. ``estimator.end_task(X_train, y_train)`` with the task's training rows, if the estimator
       has such a method (e.g. to estimate an EWC penalty for what it just learned).
    3. ``R[i, j] = accuracy_score(y_test_j, estimator.predict(X_test_j))`` for every task ``j``,
       trained or not.

    The estimator is trained in place and never cloned or refit: pass a fresh, unfitted one, and
    it holds the model after the last task when this returns. Only ``partial_fit``, ``end_task``
    and ``predict`` are called; the estimator's own ``fit`` settings (e.g. ``max_epochs``) play no
    part.

    Parameters
    ----------
    estimator : object
        An estimator with ``partial_fit(X, y, classes=...)`` and ``predict(X)``, unfitted.
    tasks : list of Task
        The stream, in training order (see :func:`permuted_tasks`, :func:`split_tasks`,
        :func:`class_incremental_tasks`). All tasks must have the same number of features.
    classes : array-like, default=None
        All labels the estimator will ever see, passed on the first ``partial_fit`` call. None
        takes the union of the labels of every task's training and test sets. Every label of the
        stream must be in it.
    epochs : int, default=1
        Passes over each task's training rows.
    batch_size : int, default=None
        Rows per ``partial_fit`` call; the last batch of a pass may be smaller. None passes the
        whole task (in shuffled order) in one call per epoch.
    random_state : int, RandomState instance or None, default=None
        Shuffles the rows of every pass. Does not seed the estimator: set its own
        ``random_state`` for a reproducible run.

    Returns
    -------
    result : StreamResult
        The accuracy matrix ``accuracy`` (``R``, of shape ``(n_tasks, n_tasks)``),
        ``average_accuracy``, ``backward_transfer``, ``task_names`` and ``fit_seconds``.

    See Also
    --------
    StreamResult : The metrics and their formulas.
    plot_accuracy_matrix : Draw ``R`` as a heat map.

    References
    ----------
    .. [1] D. Lopez-Paz and M. Ranzato, "Gradient Episodic Memory for Continual Learning",
       NeurIPS 2017.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import SGDClassifier
    >>> from sklearn.model_selection import train_test_split
    >>> from sksemiparam.continual import evaluate_stream, split_tasks
    >>> X, y = load_digits(return_X_y=True)
    >>> X_train, X_test, y_train, y_test = train_test_split(X / 16, y, stratify=y, random_state=0)
    >>> tasks = split_tasks(X_train, y_train, X_test, y_test, n_tasks=5)
    >>> result = evaluate_stream(SGDClassifier(random_state=0), tasks, epochs=3, random_state=0)
    >>> result.accuracy.shape
    (5, 5)
    >>> bool(result.backward_transfer < 0)  # a linear model trained on {8, 9} forgets {0, 1}
    True
    """
    for method in ("partial_fit", "predict"):
        if not callable(getattr(estimator, method, None)):
            raise TypeError(
                f"`estimator` must have a `{method}` method; {type(estimator).__name__} has none. "
                "Pass an incremental estimator such as sklearn's SGDClassifier"
            )
    if isinstance(tasks, Task) or not isinstance(tasks, Sequence):
        raise TypeError(f"`tasks` must be a list of Task, got {type(tasks).__name__}")
    if len(tasks) == 0:
        raise ValueError("`tasks` is empty; pass at least one Task")
    for j, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise TypeError(
                f"`tasks[{j}]` must be a Task, got {type(task).__name__}; build tasks with "
                "permuted_tasks, split_tasks or Task(X_train, y_train, X_test, y_test, name)"
            )
    n_features = tasks[0].X_train.shape[1]
    for j, task in enumerate(tasks):
        if task.X_train.shape[1] != n_features:
            raise ValueError(
                f"task {j} ({task.name!r}) has {task.X_train.shape[1]} features but task 0 has {n_features}; "
                "all tasks of a stream must have the same columns"
            )
    epochs = _check_int("epochs", epochs, 1)
    batch_size = _check_int("batch_size", batch_size, 1, allow_none=True)

    labels = np.unique(np.concatenate([np.concatenate([t.y_train, t.y_test]) for t in tasks]))
    if classes is None:
        classes = labels
    else:
        classes = column_or_1d(classes)
        missing = np.setdiff1d(labels, classes)
        if len(missing):
            raise ValueError(
                f"the tasks have labels {missing.tolist()} that are not in `classes`; pass classes that "
                "include every label of the stream, or classes=None to take them from the tasks"
            )
    rng = check_random_state(random_state)

    T = len(tasks)
    R = np.empty((T, T))
    fit_seconds = 0.0
    first_call = True
    for i, task in enumerate(tasks):
        n = len(task.y_train)
        step = n if batch_size is None else batch_size
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, step):
                batch = order[start : start + step]
                kwargs = {"classes": classes} if first_call else {}
                tic = time.perf_counter()
                estimator.partial_fit(task.X_train[batch], task.y_train[batch], **kwargs)
                fit_seconds += time.perf_counter() - tic
                first_call = False
        if callable(getattr(estimator, "end_task", None)):
            tic = time.perf_counter()
            estimator.end_task(task.X_train, task.y_train)
            fit_seconds += time.perf_counter() - tic
        for j, other in enumerate(tasks):
            R[i, j] = accuracy_score(other.y_test, estimator.predict(other.X_test))
    return StreamResult(R, task_names=[t.name for t in tasks], fit_seconds=fit_seconds)


# ================================================================================== plotting
def plot_accuracy_matrix(result, ax=None, title=None):
    """Draw the accuracy matrix of a stream as a heat map with the values in the cells.

    Rows are "after training task" ``i``, columns "accuracy on task" ``j``, both labelled with the
    task names; the colour scale runs from 0 to 1. Cells below the diagonal show what was
    retained, the diagonal what was just learned.

    Parameters
    ----------
    result : StreamResult
        The output of :func:`evaluate_stream`.
    ax : matplotlib Axes, default=None
        Axes to draw on; None creates a new figure sized to the number of tasks.
    title : str, default=None
        Title of the plot. None writes the average accuracy and the backward transfer; pass ``""``
        for no title.

    Returns
    -------
    ax : matplotlib Axes
        The Axes drawn on, with one text annotation per cell (``ax.texts``).

    See Also
    --------
    evaluate_stream : Produces the result.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sksemiparam.continual import StreamResult, plot_accuracy_matrix
    >>> ax = plot_accuracy_matrix(StreamResult([[0.9, 0.1], [0.5, 0.8]], task_names=["A", "B"]))
    >>> len(ax.texts)
    4
    """
    import matplotlib.pyplot as plt

    if not isinstance(result, StreamResult):
        raise TypeError(
            f"`result` must be a StreamResult, got {type(result).__name__}; "
            "pass the output of evaluate_stream"
        )
    R, T = result.accuracy, result.n_tasks
    if ax is None:
        side = max(3.5, 0.6 * T + 1.8)
        _, ax = plt.subplots(figsize=(side + 1.0, side))
    cmap = plt.get_cmap("viridis")
    image = ax.imshow(R, vmin=0.0, vmax=1.0, cmap=cmap, aspect="equal")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
    # Size the numbers to the cells: "0.00" is about 2.5 font sizes wide.
    box = ax.get_position()
    width_in, height_in = ax.figure.get_size_inches()
    cell_points = 72.0 * min(box.width * width_in, box.height * height_in) / T
    fontsize = float(np.clip(cell_points / 3.0, 4.0, 10.0))
    for i in range(T):
        for j in range(T):
            value = R[i, j]
            # Dark text on the bright (yellow-green) end of viridis, light text on the dark end.
            color = "black" if np.isfinite(value) and value > 0.6 else "white"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=color, fontsize=fontsize)
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.set_xticklabels(result.task_names, rotation=45 if T > 3 else 0, ha="right" if T > 3 else "center")
    ax.set_yticklabels(result.task_names)
    ax.set_xlabel("accuracy on task")
    ax.set_ylabel("after training task")
    if title is None:
        title = (
            f"average accuracy {result.average_accuracy:.3f}, "
            f"backward transfer {result.backward_transfer:+.3f}"
        )
    if title:
        ax.set_title(title)
    return ax
