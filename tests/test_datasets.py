"""Tests for sksemiparam.datasets on tiny fake files and a fake fetch_openml (no network, no shared data)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn.datasets
from sklearn.utils import Bunch

from sksemiparam.datasets import load_cifar10_subset, load_fashion_mnist, load_mnist, load_uci

REAL_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
UCI_SETS = ["protein", "elevators", "pol"]


@pytest.fixture(autouse=True)
def _no_env_no_network(monkeypatch):
    """Unset SKSEMIPARAM_DATA and make any unexpected fetch_openml call fail loudly."""
    monkeypatch.delenv("SKSEMIPARAM_DATA", raising=False)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"fetch_openml called unexpectedly with {args}, {kwargs}")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", forbidden)


def _save_images(directory, filename, n, width, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, width), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.uint8)
    np.savez_compressed(directory / filename, X=X, y=y)
    return X, y


def _save_uci(directory, name, n=30, d=3, n_splits=10):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.normal(size=n).astype(np.float32)
    # Each row is a test row in exactly one split, as in the real files.
    test_mask = np.zeros((n, n_splits), dtype=bool)
    test_mask[np.arange(n), np.arange(n) % n_splits] = True
    np.savez_compressed(directory / f"uci_{name}.npz", X=X, y=y, test_mask=test_mask)
    return X, y, test_mask


# --- local files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loader, prefix", [(load_mnist, "mnist"), (load_fashion_mnist, "fashion_mnist")])
@pytest.mark.parametrize("subset", ["train", "test"])
def test_mnist_like_from_files(tmp_path, loader, prefix, subset):
    X_saved, y_saved = _save_images(tmp_path, f"{prefix}_{subset}.npz", n=7, width=784)
    X, y = loader(tmp_path, subset=subset)
    assert X.shape == (7, 784) and X.dtype == np.uint8
    assert y.shape == (7,) and y.dtype == np.int64
    np.testing.assert_array_equal(X, X_saved)
    np.testing.assert_array_equal(y, y_saved)


def test_mnist_default_subset_is_train(tmp_path):
    _save_images(tmp_path, "mnist_train.npz", n=5, width=784, seed=0)
    _save_images(tmp_path, "mnist_test.npz", n=3, width=784, seed=1)
    assert load_mnist(str(tmp_path))[0].shape == (5, 784)


def test_cifar10_subset_from_file(tmp_path):
    X_saved, y_saved = _save_images(tmp_path, "cifar10_train4000.npz", n=4, width=3072)
    X, y = load_cifar10_subset(tmp_path)
    assert X.shape == (4, 3072) and X.dtype == np.uint8
    assert y.dtype == np.int64
    np.testing.assert_array_equal(X, X_saved)
    np.testing.assert_array_equal(y, y_saved)


def test_gom_from_file(tmp_path):
    X_saved = np.arange(5 * 116, dtype=np.float32).reshape(5, 116)
    y_saved = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.savez_compressed(tmp_path / "gom.npz", X=X_saved, y=y_saved)
    X, y = load_uci("gom", tmp_path)
    assert X.shape == (5, 116) and X.dtype == np.float32
    assert y.shape == (5, 2) and y.dtype == np.float32
    np.testing.assert_array_equal(X, X_saved)
    np.testing.assert_array_equal(y, y_saved)


def test_gom_rejects_split(tmp_path):
    with pytest.raises(ValueError, match="gom has no fixed splits; pass split=None"):
        load_uci("gom", tmp_path, split=0)


@pytest.mark.parametrize("name", UCI_SETS)
def test_uci_all_rows(tmp_path, name):
    X_saved, y_saved, _ = _save_uci(tmp_path, name)
    X, y = load_uci(name, tmp_path)
    assert X.shape == (30, 3) and X.dtype == np.float32
    assert y.shape == (30,) and y.dtype == np.float32
    np.testing.assert_array_equal(X, X_saved)
    np.testing.assert_array_equal(y, y_saved)


@pytest.mark.parametrize("k", [0, 3, 9])
def test_uci_split_follows_test_mask(tmp_path, k):
    X_all, y_all, test_mask = _save_uci(tmp_path, "pol")
    X_train, X_test, y_train, y_test = load_uci("pol", tmp_path, split=np.int64(k))
    test = test_mask[:, k]
    assert X_test.shape == (3, 3) and X_train.shape == (27, 3)
    np.testing.assert_array_equal(X_test, X_all[test])
    np.testing.assert_array_equal(y_test, y_all[test])
    np.testing.assert_array_equal(X_train, X_all[~test])
    np.testing.assert_array_equal(y_train, y_all[~test])


def test_uci_splits_partition_the_rows(tmp_path):
    X_all, _, _ = _save_uci(tmp_path, "protein")
    tests = [load_uci("protein", tmp_path, split=k)[1] for k in range(10)]
    np.testing.assert_array_equal(np.sort(np.concatenate(tests), axis=0), np.sort(X_all, axis=0))


@pytest.mark.parametrize("split", [-1, 10])
def test_uci_split_out_of_range(tmp_path, split):
    _save_uci(tmp_path, "elevators")
    with pytest.raises(
        ValueError, match=r"`split`=-?\d+ is out of range: uci_elevators.npz has 10 splits; pass 0..9"
    ):
        load_uci("elevators", tmp_path, split=split)


@pytest.mark.parametrize("split", [1.0, "0", True])
def test_uci_split_wrong_type(tmp_path, split):
    with pytest.raises(ValueError, match="`split` must be None or an int in 0..9"):
        load_uci("pol", tmp_path, split=split)


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, filename",
    [
        (lambda d: load_mnist(d, subset="test"), "mnist_test.npz"),
        (lambda d: load_fashion_mnist(d), "fashion_mnist_train.npz"),
        (lambda d: load_cifar10_subset(d), "cifar10_train4000.npz"),
        (lambda d: load_uci("gom", d), "gom.npz"),
        (lambda d: load_uci("pol", d, split=0), "uci_pol.npz"),
    ],
)
def test_missing_file(tmp_path, call, filename):
    with pytest.raises(FileNotFoundError) as excinfo:
        call(tmp_path)
    message = str(excinfo.value)
    assert f"Expected the file '{filename}' in data_dir '{tmp_path}'" in message
    assert "pass data_dir pointing at the directory that holds it" in message


def test_file_without_expected_arrays(tmp_path):
    np.savez_compressed(tmp_path / "uci_pol.npz", X=np.zeros((2, 2)), y=np.zeros(2))
    with pytest.raises(ValueError, match=r"lacks \['test_mask'\]"):
        load_uci("pol", tmp_path)


def test_unknown_subset(tmp_path):
    with pytest.raises(ValueError, match="Unknown subset='val'; pass one of 'train', 'test'"):
        load_mnist(tmp_path, subset="val")
    with pytest.raises(ValueError, match="Unknown subset='all'"):
        load_fashion_mnist(tmp_path, subset="all")


def test_unknown_uci_name(tmp_path):
    with pytest.raises(
        ValueError, match="Unknown name='super'; pass one of 'gom', 'protein', 'elevators', 'pol'"
    ):
        load_uci("super", tmp_path)


@pytest.mark.parametrize("name", UCI_SETS)
def test_uci_without_directory_asks_for_files(name):
    with pytest.raises(FileNotFoundError, match=f"treforevans/uci_datasets.*uci_{name}.npz.*data_dir"):
        load_uci(name)


# --- SKSEMIPARAM_DATA ---------------------------------------------------------------------------------------


def test_env_var_is_used_when_data_dir_is_none(tmp_path, monkeypatch):
    _save_images(tmp_path, "mnist_test.npz", n=3, width=784)
    _save_uci(tmp_path, "pol")
    monkeypatch.setenv("SKSEMIPARAM_DATA", str(tmp_path))
    assert load_mnist(subset="test")[0].shape == (3, 784)
    assert len(load_uci("pol", split=2)) == 4


def test_data_dir_wins_over_env_var(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _save_images(tmp_path / "a", "cifar10_train4000.npz", n=2, width=3072)
    _save_images(tmp_path / "b", "cifar10_train4000.npz", n=5, width=3072)
    monkeypatch.setenv("SKSEMIPARAM_DATA", str(tmp_path / "a"))
    assert load_cifar10_subset(tmp_path / "b")[0].shape == (5, 3072)


def test_env_var_missing_file_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SKSEMIPARAM_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="environment variable SKSEMIPARAM_DATA"):
        load_uci("gom")


# --- fetch_openml fallback ----------------------------------------------------------------------------------


def _fake_image_fetch(calls, n_rows, width=2):
    """A fetch_openml stand-in: row i has pixels i % 256 and label str(i % 10) (OpenML labels are strings)."""

    def fetch(name=None, **kwargs):
        calls.append((name, kwargs))
        rows = np.arange(n_rows)
        X = np.repeat((rows % 256).astype(np.float64)[:, None], width, axis=1)
        y = np.array([str(i % 10) for i in rows], dtype=object)
        return X, y

    return fetch


@pytest.mark.parametrize(
    "loader, openml_name", [(load_mnist, "mnist_784"), (load_fashion_mnist, "Fashion-MNIST")]
)
def test_openml_fallback_mnist_split(monkeypatch, loader, openml_name):
    calls = []
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", _fake_image_fetch(calls, 70000))
    X_train, y_train = loader(subset="train", data_home="cache")
    X_test, y_test = loader(subset="test")
    assert X_train.shape == (60000, 2) and X_test.shape == (10000, 2)
    assert X_train.dtype == X_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == np.int64
    # First 60000 rows are train, the last 10000 are test, in order.
    np.testing.assert_array_equal(y_train, np.arange(60000) % 10)
    np.testing.assert_array_equal(y_test, np.arange(60000, 70000) % 10)
    np.testing.assert_array_equal(X_test[:, 0], np.arange(60000, 70000) % 256)
    name, kwargs = calls[0]
    assert name == openml_name
    assert kwargs["version"] == 1 and kwargs["as_frame"] is False and kwargs["parser"] == "auto"
    assert kwargs["data_home"] == "cache"


def test_openml_fallback_wrong_row_count(monkeypatch):
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", _fake_image_fetch([], 69999))
    with pytest.raises(RuntimeError, match="returned 69999 rows, expected 70000"):
        load_mnist()


def test_openml_fallback_cifar_first_4000(monkeypatch):
    calls = []
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", _fake_image_fetch(calls, 6000, width=3))
    X, y = load_cifar10_subset()
    assert X.shape == (4000, 3) and X.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(y, np.arange(4000) % 10)
    assert calls[0][0] == "CIFAR_10" and calls[0][1]["version"] == 1


def test_openml_fallback_gom_reorders_columns(monkeypatch):
    n = 4
    columns = [f"V{i}" for i in range(1, 119)]
    # Column Vi holds i + row / 10, so any misplaced column is detectable.
    values = {c: np.arange(1, 119)[j] + np.arange(n) / 10 for j, c in enumerate(columns)}
    shuffled = list(np.random.default_rng(0).permutation(columns))
    frame = pd.DataFrame({c: values[c] for c in shuffled})
    calls = []

    def fetch(name=None, **kwargs):
        calls.append(kwargs)
        return Bunch(frame=frame, data=frame, target=None)

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fetch)
    X, y = load_uci("gom")
    assert X.shape == (n, 116) and X.dtype == np.float32
    assert y.shape == (n, 2) and y.dtype == np.float32
    expected = (np.arange(1, 119)[None, :] + np.arange(n)[:, None] / 10).astype(np.float32)
    np.testing.assert_array_equal(X, expected[:, :116])
    np.testing.assert_array_equal(y, expected[:, 116:])
    assert calls[0]["data_id"] == 4544 and calls[0]["as_frame"] is True and calls[0]["target_column"] is None


# --- the real files (skipped when the shared data directory is absent) --------------------------------------


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="shared data directory not present")
def test_real_mnist_test_label_counts():
    X, y = load_mnist(REAL_DATA, subset="test")
    assert X.shape == (10000, 784) and X.dtype == np.uint8 and y.dtype == np.int64
    expected = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    np.testing.assert_array_equal(np.bincount(y, minlength=10), expected)
