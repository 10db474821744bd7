"""Task streams, the stream evaluator and its metrics."""

import dataclasses
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import SGDClassifier

from sksemiparam.continual import (
    StreamResult,
    Task,
    class_incremental_tasks,
    evaluate_stream,
    permuted_tasks,
    plot_accuracy_matrix,
    split_tasks,
)


# ------------------------------------------------------------------------------------ fixtures
def tagged(n_rows, n_features, offset=0):
    """X[i, j] = 1000 * (i + offset) + j: every value names its row and its column."""
    rows = np.arange(offset, offset + n_rows)[:, None]
    return (1000 * rows + np.arange(n_features)[None, :]).astype(float)


def columns_of(X):
    return (X % 1000).astype(int)


def rows_of(X):
    return (X[:, 0] // 1000).astype(int)


class Recorder:
    """Records every call; predicts the smallest label of the latest partial_fit batch."""

    def __init__(self, with_end_task=True):
        self.calls = []
        if with_end_task:
            self.end_task = self._end_task

    def partial_fit(self, X, y, **kwargs):
        self.calls.append(("partial_fit", X.copy(), y.copy(), kwargs))
        self.label_ = y.min()
        return self

    def _end_task(self, X, y):
        self.calls.append(("end_task", X.copy(), y.copy(), {}))

    def predict(self, X):
        self.calls.append(("predict", X.copy(), None, {}))
        return np.full(len(X), self.label_)


class Memorizer:
    """A perfect lookup memory: predicts the label stored for an exact training row, else -1."""

    def partial_fit(self, X, y, classes=None):
        self.memory_ = getattr(self, "memory_", {})
        self.memory_.update({row.tobytes(): label for row, label in zip(X, y)})
        return self

    def predict(self, X):
        return np.array([self.memory_.get(row.tobytes(), -1) for row in X])


# ------------------------------------------------------------------------------------ Task
def test_task_validates_and_is_frozen():
    task = Task(np.zeros((3, 2)), [0, 1, 0], np.zeros((2, 2)), [1, 1], "a")
    assert isinstance(task.y_train, np.ndarray)
    assert repr(task) == "Task(name='a', n_train=3, n_test=2, n_features=2, classes=[0, 1])"
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.name = "b"
    with pytest.raises(ValueError, match=r"`X_train` has 3 rows but `y_train` has 2 labels in task 'a'"):
        Task(np.zeros((3, 2)), [0, 1], np.zeros((2, 2)), [1, 1], "a")
    with pytest.raises(ValueError, match=r"`X_train` has 2 features but `X_test` has 3"):
        Task(np.zeros((3, 2)), [0, 1, 0], np.zeros((2, 3)), [1, 1], "a")
    with pytest.raises(ValueError, match=r"`X_test` of task 'a' must be 2-D"):
        Task(np.zeros((3, 2)), [0, 1, 0], np.zeros(2), [1, 1], "a")
    with pytest.raises(ValueError, match=r"task 'a' has no test rows"):
        Task(np.zeros((3, 2)), [0, 1, 0], np.zeros((0, 2)), [], "a")
    with pytest.raises(TypeError, match=r"`name` must be a str, got int"):
        Task(np.zeros((3, 2)), [0, 1, 0], np.zeros((2, 2)), [1, 1], 3)


# ------------------------------------------------------------------------------------ permuted
def test_permuted_tasks_apply_one_fixed_permutation_per_task():
    n_features = 7
    X_train, X_test = tagged(30, n_features), tagged(12, n_features, offset=500)
    y_train, y_test = np.arange(30) % 3, np.arange(12) % 3
    tasks = permuted_tasks(X_train, y_train, X_test, y_test, 4, random_state=0)
    assert [t.name for t in tasks] == [f"permutation {t}" for t in range(4)]
    perms = []
    for task in tasks:
        train_cols, test_cols = columns_of(task.X_train), columns_of(task.X_test)
        perm = train_cols[0]
        assert sorted(perm) == list(range(n_features))  # a permutation of the columns
        assert (train_cols == perm).all() and (test_cols == perm).all()  # the same for every row
        np.testing.assert_array_equal(task.X_train, X_train[:, perm])  # all rows, in order
        np.testing.assert_array_equal(task.X_test, X_test[:, perm])
        np.testing.assert_array_equal(task.y_train, y_train)
        np.testing.assert_array_equal(task.y_test, y_test)
        perms.append(tuple(perm))
    assert perms[0] == tuple(range(n_features))  # task 0: the identity
    assert len(set(perms)) == 4

    again = permuted_tasks(X_train, y_train, X_test, y_test, 4, random_state=0)
    assert all(np.array_equal(a.X_train, b.X_train) for a, b in zip(tasks, again))


def test_permuted_tasks_subsample_different_rows_per_task():
    X_train, X_test = tagged(50, 5), tagged(40, 5, offset=500)
    y_train, y_test = np.arange(50) % 2, np.arange(40) % 2
    tasks = permuted_tasks(
        X_train, y_train, X_test, y_test, 3, n_train_per_task=20, n_test_per_task=10, random_state=1
    )
    full = permuted_tasks(X_train, y_train, X_test, y_test, 3, random_state=1)
    for task, whole in zip(tasks, full):
        assert task.X_train.shape == (20, 5) and task.X_test.shape == (10, 5)
        train_rows, test_rows = rows_of(task.X_train), rows_of(task.X_test) - 500
        assert len(set(train_rows)) == 20 and (np.diff(train_rows) > 0).all()  # no repeats, in order
        np.testing.assert_array_equal(task.y_train, y_train[train_rows])  # labels follow their rows
        np.testing.assert_array_equal(task.y_test, y_test[test_rows])
        # subsampling does not change the permutations
        np.testing.assert_array_equal(columns_of(task.X_train)[0], columns_of(whole.X_train)[0])
    assert len({tuple(rows_of(t.X_train)) for t in tasks}) == 3


def test_permuted_tasks_errors():
    X, y = np.zeros((10, 3)), np.arange(10) % 2
    with pytest.raises(ValueError, match=r"`n_tasks`=0 is out of range; pass n_tasks >= 1"):
        permuted_tasks(X, y, X, y, 0)
    with pytest.raises(TypeError, match=r"`n_tasks` must be an int, got 2.5"):
        permuted_tasks(X, y, X, y, 2.5)
    with pytest.raises(
        ValueError, match=r"`n_train_per_task`=11 is out of range; pass 1 <= n_train_per_task <= 10"
    ):
        permuted_tasks(X, y, X, y, 2, n_train_per_task=11)
    with pytest.raises(ValueError, match=r"`X_train` has 3 features but `X_test` has 4"):
        permuted_tasks(X, y, np.zeros((10, 4)), y, 2)
    with pytest.raises(ValueError, match=r"`X_test` has 10 rows but `y_test` has 9 labels"):
        permuted_tasks(X, y, X, y[:9], 2)


# ------------------------------------------------------------------------------------ split
def test_split_tasks_n_tasks_groups_sorted_classes_evenly():
    y = np.array([9, 3, 0, 1, 2, 4, 5, 6, 7, 8, 3, 0])
    X = tagged(len(y), 2)
    tasks = split_tasks(X, y, X, y, n_tasks=3)
    assert [t.name for t in tasks] == ["classes 0,1,2,3", "classes 4,5,6", "classes 7,8,9"]
    for task, group in zip(tasks, [{0, 1, 2, 3}, {4, 5, 6}, {7, 8, 9}]):
        assert set(task.y_train) == group and set(task.y_test) == group
        rows = rows_of(task.X_train)
        np.testing.assert_array_equal(rows, np.flatnonzero(np.isin(y, list(group))))  # original order
        np.testing.assert_array_equal(task.y_train, y[rows])


def test_split_tasks_class_groups_keep_order_and_labels():
    rng = np.random.default_rng(0)
    y_train, y_test = rng.permutation(np.arange(60) % 6), rng.permutation(np.arange(30) % 6)
    X_train, X_test = tagged(60, 3), tagged(30, 3, offset=100)
    tasks = split_tasks(X_train, y_train, X_test, y_test, class_groups=[[5, 1], [0]])  # 2, 3, 4 unused
    assert [t.name for t in tasks] == ["classes 5,1", "classes 0"]
    assert set(tasks[0].y_train) == {1, 5} and set(tasks[0].y_test) == {1, 5}
    assert set(tasks[1].y_train) == {0} and len(tasks[1].y_test) == 5
    train_rows = [set(rows_of(t.X_train)) for t in tasks]
    assert not train_rows[0] & train_rows[1]
    from_array = split_tasks(X_train, y_train, X_test, y_test, class_groups=np.array([[5, 1], [0, 2]]))
    assert [t.name for t in from_array] == ["classes 5,1", "classes 0,2"]

    labels = np.array(["cat", "dog", "eel", "fox"])[y_train % 4]
    named = split_tasks(X_train, labels, X_train, labels, class_groups=[["dog"], ["fox", "cat"]])
    assert [t.name for t in named] == ["classes dog", "classes fox,cat"]
    assert set(named[1].y_train) == {"fox", "cat"}


def test_split_tasks_long_group_names_are_shortened():
    y = np.arange(20)
    tasks = split_tasks(np.zeros((20, 1)), y, np.zeros((20, 1)), y, n_tasks=2)
    assert [t.name for t in tasks] == ["classes 0,1,...,9", "classes 10,11,...,19"]


def test_split_tasks_errors():
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    X = np.zeros((8, 2))
    with pytest.raises(ValueError, match=r"pass exactly one of `n_tasks` .* and `class_groups`"):
        split_tasks(X, y, X, y)
    with pytest.raises(ValueError, match=r"pass exactly one of `n_tasks`"):
        split_tasks(X, y, X, y, 2, class_groups=[[0], [1]])
    with pytest.raises(
        ValueError, match=r"`n_tasks`=5 is larger than the 4 classes in `y_train`; pass n_tasks <= 4"
    ):
        split_tasks(X, y, X, y, n_tasks=5)
    with pytest.raises(ValueError, match=r"`n_tasks`=0 is out of range"):
        split_tasks(X, y, X, y, n_tasks=0)
    with pytest.raises(
        ValueError,
        match=re.escape("label 1 appears more than once (in class_groups[0] and class_groups[1])"),
    ):
        split_tasks(X, y, X, y, class_groups=[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=re.escape("label 2 appears more than once (in class_groups[0])")):
        split_tasks(X, y, X, y, class_groups=[[2, 2]])
    with pytest.raises(ValueError, match=r"label 7 in `class_groups\[1\]` does not occur in `y_train`"):
        split_tasks(X, y, X, y, class_groups=[[0], [7]])
    with pytest.raises(ValueError, match=r"`class_groups\[0\]` is empty"):
        split_tasks(X, y, X, y, class_groups=[[], [1]])
    with pytest.raises(TypeError, match=r"`class_groups\[0\]` must be a list of labels, got 0"):
        split_tasks(X, y, X, y, class_groups=[0, 1])
    with pytest.raises(ValueError, match=r"no row of `y_test` has a label of task 1 \(classes \[3\]\)"):
        split_tasks(X, y, X[:3], y[:3], class_groups=[[0], [3]])
    with pytest.raises(ValueError, match=r"`y_test` has labels \[9\] that never occur in `y_train`"):
        split_tasks(X, y, X[:2], np.array([0, 9]), n_tasks=2)


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 12), min_size=1, max_size=60),
    data=st.data(),
)
def test_split_tasks_partition_the_classes(labels, data):
    y = np.array(labels)
    classes = np.unique(y)
    n_tasks = data.draw(st.integers(1, len(classes)))
    tasks = split_tasks(tagged(len(y), 1), y, tagged(len(y), 1), y, n_tasks=n_tasks)
    groups = [np.unique(t.y_train) for t in tasks]
    assert len(groups) == n_tasks
    np.testing.assert_array_equal(np.concatenate(groups), classes)  # disjoint, sorted, covering
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert sum(len(t.y_train) for t in tasks) == len(y)


# ------------------------------------------------------------------------------------ class-incremental
def test_class_incremental_test_sets_accumulate():
    y_train, y_test = np.arange(60) % 6, np.arange(30) % 6
    X_train, X_test = tagged(60, 2), tagged(30, 2, offset=100)
    tasks = class_incremental_tasks(X_train, y_train, X_test, y_test, n_tasks=3)
    split = split_tasks(X_train, y_train, X_test, y_test, n_tasks=3)
    assert [t.name for t in tasks] == ["classes 0,1", "+ classes 2,3", "+ classes 4,5"]
    for t, (task, plain) in enumerate(zip(tasks, split)):
        np.testing.assert_array_equal(task.X_train, plain.X_train)  # training as in split_tasks
        np.testing.assert_array_equal(task.y_train, plain.y_train)
        seen = np.arange(2 * (t + 1))
        expected = np.flatnonzero(np.isin(y_test, seen))
        np.testing.assert_array_equal(rows_of(task.X_test) - 100, expected)  # all seen classes, in order
        np.testing.assert_array_equal(task.y_test, y_test[expected])
    assert len(tasks[-1].y_test) == len(y_test)

    explicit = class_incremental_tasks(X_train, y_train, X_test, y_test, class_groups=[[5], [0, 2]])
    assert set(explicit[1].y_test) == {0, 2, 5} and set(explicit[1].y_train) == {0, 2}


# ------------------------------------------------------------------------------------ evaluate_stream
def toy_tasks():
    """Three tasks with controlled test sets; task i trains classes {2i, 2i+1}."""

    def task(labels_train, labels_test, name):
        return Task(
            tagged(len(labels_train), 2),
            np.array(labels_train),
            tagged(len(labels_test), 2, offset=900),
            np.array(labels_test),
            name,
        )

    return [
        task([0, 1, 0, 1, 0], [0, 0, 0, 1], "A"),
        task([2, 3, 3], [2, 3], "B"),
        task([5, 4, 5, 5], [4, 5, 5, 5, 5], "C"),
    ]


def test_evaluate_stream_protocol_with_a_recording_estimator():
    tasks = toy_tasks()
    est = Recorder()
    result = evaluate_stream(est, tasks, epochs=2, batch_size=2, random_state=0)
    assert isinstance(result, StreamResult)

    fits = [c for c in est.calls if c[0] == "partial_fit"]
    # classes=, with every label of the stream, on the very first call only
    np.testing.assert_array_equal(fits[0][3]["classes"], [0, 1, 2, 3, 4, 5])
    assert all(c[3] == {} for c in fits[1:])
    # per task: epochs x ceil(n / batch_size) calls, each pass one shuffled cover of the rows
    sizes = [len(c[2]) for c in fits]
    assert sizes == [2, 2, 1] * 2 + [2, 1] * 2 + [2, 2] * 2
    start, orders = 0, []
    for task, per_pass in zip(tasks, [3, 2, 2]):
        for _ in range(2):
            batch = fits[start : start + per_pass]
            rows = np.concatenate([rows_of(c[1]) for c in batch])
            assert sorted(rows) == list(range(len(task.y_train)))
            np.testing.assert_array_equal(np.concatenate([c[2] for c in batch]), task.y_train[rows])
            orders.append(rows.tolist())
            start += per_pass
    assert orders[0] != orders[1]  # every pass is reshuffled (seeded: these two differ)
    assert any(order != sorted(order) for order in orders)

    # after each task's training: end_task(X_train, y_train), then a predict on every test set
    kinds = [c[0] for c in est.calls if c[0] != "partial_fit"]
    assert kinds == (["end_task"] + ["predict"] * 3) * 3
    ends = [c for c in est.calls if c[0] == "end_task"]
    for call, task in zip(ends, tasks):
        np.testing.assert_array_equal(call[1], task.X_train)
        np.testing.assert_array_equal(call[2], task.y_train)
    # the shuffling is seeded
    again = Recorder()
    evaluate_stream(again, tasks, epochs=2, batch_size=2, random_state=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(est.calls, again.calls))


def test_evaluate_stream_accuracy_matrix_by_hand():
    # Recorder predicts the smallest label of the last batch; with batch_size=None that is the
    # first class of the most recent task: 0, then 2, then 4.
    tasks = toy_tasks()
    est = Recorder(with_end_task=False)
    result = evaluate_stream(est, tasks, random_state=0)
    expected = np.array(
        [
            [3 / 4, 0, 0],  # predicts 0: task A's test has three 0s of four
            [0, 1 / 2, 0],  # predicts 2
            [0, 0, 1 / 5],  # predicts 4
        ]
    )
    np.testing.assert_allclose(result.accuracy, expected)
    assert result.task_names == ["A", "B", "C"]
    assert result.average_accuracy == pytest.approx(1 / 15)
    assert result.backward_transfer == pytest.approx(((0 - 3 / 4) + (0 - 1 / 2)) / 2)
    assert result.n_tasks == 3
    assert [c[0] for c in est.calls].count("partial_fit") == 3  # one whole-task call per task
    assert result.fit_seconds >= 0.0


def test_evaluate_stream_perfect_memory_never_forgets():
    X, y = tagged(12, 3), np.arange(12) % 4
    tasks = split_tasks(X, y, X, y, n_tasks=2)  # test rows = training rows
    result = evaluate_stream(Memorizer(), tasks, batch_size=5, epochs=3, random_state=0)
    np.testing.assert_array_equal(result.accuracy, [[1.0, 0.0], [1.0, 1.0]])
    assert result.backward_transfer == 0.0
    assert result.average_accuracy == 1.0


def test_evaluate_stream_classes_argument():
    tasks = toy_tasks()
    est = Recorder()
    evaluate_stream(est, tasks, classes=[0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(est.calls[0][3]["classes"], np.arange(8))
    # a label only in a test set still belongs to the default classes
    odd = [Task(np.zeros((2, 1)), [0, 1], np.zeros((2, 1)), [1, 9], "odd")]
    est = Recorder()
    evaluate_stream(est, odd)
    np.testing.assert_array_equal(est.calls[0][3]["classes"], [0, 1, 9])
    with pytest.raises(ValueError, match=r"the tasks have labels \[4, 5\] that are not in `classes`"):
        evaluate_stream(Recorder(), tasks, classes=[0, 1, 2, 3])


def test_evaluate_stream_errors():
    tasks = toy_tasks()
    with pytest.raises(TypeError, match=r"`estimator` must have a `partial_fit` method; object has none"):
        evaluate_stream(object(), tasks)
    with pytest.raises(TypeError, match=r"`tasks` must be a list of Task, got Task"):
        evaluate_stream(Recorder(), tasks[0])
    with pytest.raises(TypeError, match=r"`tasks\[1\]` must be a Task, got tuple"):
        evaluate_stream(Recorder(), [tasks[0], (1, 2)])
    with pytest.raises(ValueError, match=r"`tasks` is empty"):
        evaluate_stream(Recorder(), [])
    wide = Task(np.zeros((2, 5)), [0, 1], np.zeros((2, 5)), [0, 1], "wide")
    with pytest.raises(ValueError, match=r"task 1 \('wide'\) has 5 features but task 0 has 2"):
        evaluate_stream(Recorder(), [tasks[0], wide])
    with pytest.raises(ValueError, match=r"`epochs`=0 is out of range; pass epochs >= 1"):
        evaluate_stream(Recorder(), tasks, epochs=0)
    with pytest.raises(TypeError, match=r"`batch_size` must be an int or None, got 2.0"):
        evaluate_stream(Recorder(), tasks, batch_size=2.0)


# ------------------------------------------------------------------------------------ metrics
def test_stream_result_metrics_by_hand():
    R = [
        [0.9, 0.1, 0.0],
        [0.6, 0.8, 0.2],
        [0.5, 0.7, 0.95],
    ]
    result = StreamResult(R, task_names=["x", "y", "z"], fit_seconds=1.5)
    assert result.average_accuracy == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert result.backward_transfer == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert not result.accuracy.flags.writeable
    assert dataclasses.asdict(result)["backward_transfer"] == result.backward_transfer

    single = StreamResult([[0.7]])
    assert single.backward_transfer == 0.0 and single.average_accuracy == 0.7
    assert single.task_names == ["task 0"]
    with pytest.raises(ValueError, match=r"`accuracy` must be a non-empty square matrix"):
        StreamResult(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"`task_names` must be 2 strings"):
        StreamResult(np.zeros((2, 2)), task_names=["a"])


# ------------------------------------------------------------------------------------ real data
def test_sgd_on_split_digits_forgets(digits):
    X_train, X_test, y_train, y_test = digits
    tasks = split_tasks(X_train, y_train, X_test, y_test, n_tasks=5)
    est = SGDClassifier(random_state=0)
    result = evaluate_stream(est, tasks, epochs=3, random_state=0)
    R = result.accuracy
    assert R.shape == (5, 5)
    assert np.diag(R).min() > 0.9  # each task is learned...
    assert result.backward_transfer < -0.5  # ...and forgotten once the next one is trained
    assert hasattr(est, "coef_") and est.coef_.shape == (10, 64)  # trained in place, not cloned
    assert 0 < result.fit_seconds < 10

    ci = evaluate_stream(
        SGDClassifier(random_state=0),
        class_incremental_tasks(X_train, y_train, X_test, y_test, n_tasks=5),
        epochs=3,
        random_state=0,
    )
    # same training, so on the first task's test set (classes 0, 1) the two streams agree
    np.testing.assert_allclose(ci.accuracy[:, 0], R[:, 0])
    assert ci.accuracy[-1, -1] < 0.5  # after the last task, little is right among all ten classes


def test_sgd_on_permuted_digits_runs(digits):
    X_train, X_test, y_train, y_test = digits
    tasks = permuted_tasks(
        X_train, y_train, X_test, y_test, 3, n_train_per_task=300, n_test_per_task=200, random_state=0
    )
    result = evaluate_stream(SGDClassifier(random_state=0), tasks, batch_size=50, random_state=0)
    assert result.accuracy.shape == (3, 3)
    assert np.diag(result.accuracy).min() > 0.6


# ------------------------------------------------------------------------------------ plot
def test_plot_accuracy_matrix(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = StreamResult([[0.9, 0.1, 0.0], [0.6, 0.8, 0.2], [0.5, 0.7, 0.95]], task_names=["x", "y", "z"])
    ax = plot_accuracy_matrix(result)
    try:
        assert len(ax.texts) == 9
        assert sorted(t.get_text() for t in ax.texts)[:2] == ["0.00", "0.10"]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["x", "y", "z"]
        assert ax.get_xlabel() == "accuracy on task" and ax.get_ylabel() == "after training task"
        assert "backward transfer -0.250" in ax.get_title()
        ax.figure.savefig(tmp_path / "R.png")
    finally:
        plt.close(ax.figure)

    fig, given_ax = plt.subplots()
    try:
        assert plot_accuracy_matrix(result, ax=given_ax, title="mine") is given_ax
        assert given_ax.get_title() == "mine"
    finally:
        plt.close(fig)
    with pytest.raises(TypeError, match=r"`result` must be a StreamResult, got ndarray"):
        plot_accuracy_matrix(np.eye(2))
