"""Loaders for the real data the benchmarks use.

Every loader reads a ``numpy.savez_compressed`` file from a local directory: ``data_dir`` when it is given,
else the directory named by the environment variable ``SKSEMIPARAM_DATA``. When neither is set, the loaders
for data that OpenML holds faithfully fall back to :func:`sklearn.datasets.fetch_openml`, which downloads once
and caches under ``data_home``.

The file names and layouts are those of the project's data directory:

==========================  ======================  =============================
file                        ``X``                   ``y``
==========================  ======================  =============================
``mnist_{train,test}.npz``  (n, 784) uint8          (n,) class ids
``fashion_mnist_*.npz``     (n, 784) uint8          (n,) class ids
``cifar10_train4000.npz``   (4000, 3072) uint8      (4000,) class ids
``gom.npz``                 (1059, 116) float32     (1059, 2) float32
``uci_<name>.npz``          (n, d) float32          (n,) float32, + ``test_mask``
==========================  ======================  =============================
"""

import os
from pathlib import Path

import numpy as np

__all__ = ["load_cifar10_subset", "load_fashion_mnist", "load_mnist", "load_uci"]

_ENV_VAR = "SKSEMIPARAM_DATA"
_SUBSETS = ("train", "test")
_UCI_NAMES = ("gom", "protein", "elevators", "pol")
_UCI_SOURCE = "GitHub repository treforevans/uci_datasets"
# Official MNIST and Fashion-MNIST splits: OpenML stores the 60000 training images first, then the 10000 test.
_N_TRAIN, _N_TEST = 60000, 10000
_N_CIFAR_SUBSET = 4000


def _load_npz(data_dir, filename, keys):
    """Read the arrays ``keys`` from ``filename`` in the data directory, or return None if none is set.

    The directory is ``data_dir``, else ``$SKSEMIPARAM_DATA``; None means the caller uses its OpenML fallback.
    """
    if data_dir is not None:
        directory, source = Path(data_dir), "data_dir"
    elif os.environ.get(_ENV_VAR):
        directory, source = (
            Path(os.environ[_ENV_VAR]),
            f"the directory set by the environment variable {_ENV_VAR}",
        )
    else:
        return None
    path = directory / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected the file {filename!r} in {source} {str(directory)!r}, but {str(path)!r} does not "
            f"exist. Put the numpy .npz file with arrays {', '.join(keys)} there (see the data README for "
            f"the layout), or pass data_dir pointing at the directory that holds it."
        )
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in keys if key not in archive.files]
        if missing:
            raise ValueError(
                f"{str(path)!r} has arrays {archive.files} but lacks {missing}; expected arrays "
                f"{list(keys)}. Replace it with the file described in the data README."
            )
        return tuple(archive[key] for key in keys)


def _check_option(value, name, valid):
    if value not in valid:
        raise ValueError(f"Unknown {name}={value!r}; pass one of {', '.join(repr(v) for v in valid)}.")


def _fetch_openml_images(name, data_home):
    """Fetch an image set from OpenML as (uint8 X, int64 y), in OpenML's row order."""
    from sklearn.datasets import fetch_openml

    X, y = fetch_openml(name, version=1, data_home=data_home, return_X_y=True, as_frame=False, parser="auto")
    # OpenML stores pixels as numeric 0..255 (float) and labels as nominal strings "0".."9".
    return np.asarray(X).astype(np.uint8), np.asarray(y).astype(np.int64)


def _load_mnist_like(data_dir, subset, prefix, openml_name, data_home):
    _check_option(subset, "subset", _SUBSETS)
    arrays = _load_npz(data_dir, f"{prefix}_{subset}.npz", ("X", "y"))
    if arrays is not None:
        return arrays[0].astype(np.uint8, copy=False), arrays[1].astype(np.int64)
    X, y = _fetch_openml_images(openml_name, data_home)
    if X.shape[0] != _N_TRAIN + _N_TEST:
        raise RuntimeError(
            f"OpenML dataset {openml_name!r} (version 1) returned {X.shape[0]} rows, expected "
            f"{_N_TRAIN + _N_TEST} (the official {_N_TRAIN} train then {_N_TEST} test); the split cannot be "
            f"recovered. Download {prefix}_{subset}.npz and pass data_dir instead."
        )
    rows = slice(0, _N_TRAIN) if subset == "train" else slice(_N_TRAIN, None)
    return X[rows], y[rows]


def load_mnist(data_dir=None, *, subset="train", data_home=None):
    """Load the MNIST handwritten digits with the official split and order.

    MNIST database of handwritten digits by Y. LeCun, C. Cortes and C. J. C. Burges (upstream licence usually
    given as CC BY-SA 3.0). The local files were rebuilt from GitHub repository ``rasbt/mnist-pngs`` (MIT) and
    match the published MD5s of the official files.

    Parameters
    ----------
    data_dir : str or path-like, default=None
        Directory holding ``mnist_train.npz`` and ``mnist_test.npz``. If None, the environment variable
        ``SKSEMIPARAM_DATA`` is used; if that is unset too, the data is fetched from OpenML (``mnist_784``,
        version 1, whose first 60000 rows are the official training set and last 10000 the test set).
    subset : {"train", "test"}, default="train"
        Which official split to return.
    data_home : str or path-like, default=None
        Cache directory for :func:`sklearn.datasets.fetch_openml`; only used by the OpenML fallback.

    Returns
    -------
    X : ndarray of shape (n_samples, 784), dtype uint8
        Flattened 28x28 greyscale images, row-major, 0 = background. ``n_samples`` is 60000 for train and
        10000 for test.
    y : ndarray of shape (n_samples,), dtype int64
        Digit labels 0..9.

    Raises
    ------
    FileNotFoundError
        If a data directory is set but does not hold the file.
    ValueError
        If ``subset`` is not "train" or "test".

    Examples
    --------
    >>> from sksemiparam.datasets import load_mnist
    >>> X, y = load_mnist("path/to/data", subset="test")  # doctest: +SKIP
    >>> X.shape, X.dtype, y.dtype  # doctest: +SKIP
    ((10000, 784), dtype('uint8'), dtype('int64'))
    """
    return _load_mnist_like(data_dir, subset, "mnist", "mnist_784", data_home)


def load_fashion_mnist(data_dir=None, *, subset="train", data_home=None):
    """Load Fashion-MNIST with the official split and order.

    Fashion-MNIST by H. Xiao, K. Rasul and R. Vollgraf (Zalando Research, 2017), licence MIT. The local files
    come from the Debian package ``dataset-fashion-mnist`` and match the published MD5s of the official files.
    Classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag,
    9 Ankle boot.

    Parameters
    ----------
    data_dir : str or path-like, default=None
        Directory holding ``fashion_mnist_train.npz`` and ``fashion_mnist_test.npz``. If None, the environment
        variable ``SKSEMIPARAM_DATA`` is used; if that is unset too, the data is fetched from OpenML
        (``Fashion-MNIST``, version 1, first 60000 rows train, last 10000 test).
    subset : {"train", "test"}, default="train"
        Which official split to return.
    data_home : str or path-like, default=None
        Cache directory for :func:`sklearn.datasets.fetch_openml`; only used by the OpenML fallback.

    Returns
    -------
    X : ndarray of shape (n_samples, 784), dtype uint8
        Flattened 28x28 greyscale images, row-major. ``n_samples`` is 60000 for train and 10000 for test.
    y : ndarray of shape (n_samples,), dtype int64
        Class labels 0..9.

    Raises
    ------
    FileNotFoundError
        If a data directory is set but does not hold the file.
    ValueError
        If ``subset`` is not "train" or "test".
    """
    return _load_mnist_like(data_dir, subset, "fashion_mnist", "Fashion-MNIST", data_home)


def load_cifar10_subset(data_dir=None, *, data_home=None):
    """Load the 4000-image CIFAR-10 training subset.

    CIFAR-10 by A. Krizhevsky (2009, "Learning Multiple Layers of Features from Tiny Images"); no formal
    licence is published. The local file's pixels come from GitHub repository ``karpathy/convnetjs`` (MIT) and
    appear to be the first 4000 official training images (``data_batch_1``), in order. There is no test split:
    split the data yourself. Classes: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse,
    8 ship, 9 truck.

    Parameters
    ----------
    data_dir : str or path-like, default=None
        Directory holding ``cifar10_train4000.npz``. If None, the environment variable ``SKSEMIPARAM_DATA`` is
        used; if that is unset too, the first 4000 rows of OpenML's ``CIFAR_10`` (version 1) are returned.
        OpenML's row order may not match the official ``data_batch_1`` order, so this fallback subset may
        differ from the file's images.
    data_home : str or path-like, default=None
        Cache directory for :func:`sklearn.datasets.fetch_openml`; only used by the OpenML fallback.

    Returns
    -------
    X : ndarray of shape (4000, 3072), dtype uint8
        Images in the official channel-major CIFAR layout: 1024 red, then 1024 green, then 1024 blue values,
        each a 32x32 row-major plane. ``X.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)`` gives HWC images.
    y : ndarray of shape (4000,), dtype int64
        Class labels 0..9.

    Raises
    ------
    FileNotFoundError
        If a data directory is set but does not hold the file.
    """
    arrays = _load_npz(data_dir, "cifar10_train4000.npz", ("X", "y"))
    if arrays is not None:
        return arrays[0].astype(np.uint8, copy=False), arrays[1].astype(np.int64)
    X, y = _fetch_openml_images("CIFAR_10", data_home)
    return X[:_N_CIFAR_SUBSET], y[:_N_CIFAR_SUBSET]


def _fetch_openml_gom(data_home):
    """Fetch Geographical Original of Music from OpenML (data id 4544) as (X, y) in V1..V118 order."""
    from sklearn.datasets import fetch_openml

    # OpenML's default target is V100, an audio feature: ask for every column and pick them by name.
    frame = fetch_openml(
        data_id=4544, data_home=data_home, target_column=None, as_frame=True, parser="auto"
    ).frame
    feature_cols = [f"V{i}" for i in range(1, 117)]
    target_cols = ["V117", "V118"]
    missing = [col for col in feature_cols + target_cols if col not in frame.columns]
    if missing:
        raise RuntimeError(
            f"OpenML data id 4544 lacks the expected columns {missing}; download gom.npz and pass data_dir "
            "instead."
        )
    X = frame[feature_cols].to_numpy(dtype=np.float32)
    y = frame[target_cols].to_numpy(dtype=np.float32)
    return X, y


def load_uci(name, data_dir=None, *, split=None, data_home=None):
    """Load a UCI regression set: ``gom``, ``protein``, ``elevators`` or ``pol``.

    - ``gom``: UCI "Geographical Original of Music" (chromatic version, 1059 tracks), by F. Zhou, Q. Claire
      and R. D. King, "Predicting the Geographical Origin of Music", ICDM 2014; UCI licence CC BY 4.0. Local
      copy from GitHub repository ``EpistasisLab/pmlb`` (MIT), itself from OpenML data id 4544. Features
      V1..V116 (already standardised upstream), targets latitude and longitude (V117, V118). No official
      split.
    - ``protein`` (UCI "Physicochemical Properties of Protein Tertiary Structure", CC BY 4.0), ``elevators``
      and ``pol`` (L. Torgo's regression collection): the preprocessed copies of GitHub repository
      ``treforevans/uci_datasets`` (MIT), with feature columns mean-centred and 10 fixed 90/10 train/test
      splits (Yang et al. 2016). Shapes: protein (45730, 9), elevators (16599, 18), pol (15000, 26).

    Parameters
    ----------
    name : {"gom", "protein", "elevators", "pol"}
        Which dataset to load.
    data_dir : str or path-like, default=None
        Directory holding ``gom.npz`` or ``uci_<name>.npz``. If None, the environment variable
        ``SKSEMIPARAM_DATA`` is used. If that is unset too, ``gom`` is fetched from OpenML (data id 4544);
        the other three have no faithful OpenML copy and raise an error asking for the files.
    split : int or None, default=None
        For ``protein``, ``elevators`` and ``pol``: None returns all rows; ``k`` in 0..9 returns the ``k``-th
        fixed split, whose test rows are ``test_mask[:, k]``. Must be None for ``gom``.
    data_home : str or path-like, default=None
        Cache directory for :func:`sklearn.datasets.fetch_openml`; only used by the ``gom`` fallback.

    Returns
    -------
    X, y : ndarrays
        When ``split`` is None. ``X`` has shape (n_samples, n_features), dtype float32. ``y`` is float32 of
        shape (n_samples,), or (1059, 2) holding (latitude, longitude) for ``gom``.
    X_train, X_test, y_train, y_test : ndarrays
        When ``split`` is an int, in the order of :func:`sklearn.model_selection.train_test_split`.

    Raises
    ------
    FileNotFoundError
        If a data directory is set but does not hold the file, or if no data directory is set for
        ``protein``, ``elevators`` or ``pol``.
    ValueError
        If ``name`` is unknown, ``split`` is given for ``gom``, or ``split`` is out of range.

    Examples
    --------
    >>> from sksemiparam.datasets import load_uci
    >>> X_train, X_test, y_train, y_test = load_uci("pol", "path/to/data", split=0)  # doctest: +SKIP
    >>> X_train.shape, X_test.shape  # doctest: +SKIP
    ((13500, 26), (1500, 26))
    """
    _check_option(name, "name", _UCI_NAMES)
    if name == "gom":
        if split is not None:
            raise ValueError(
                f"gom has no fixed splits; pass split=None (got split={split!r}) and split it yourself."
            )
        arrays = _load_npz(data_dir, "gom.npz", ("X", "y"))
        if arrays is None:
            return _fetch_openml_gom(data_home)
        return arrays[0].astype(np.float32, copy=False), arrays[1].astype(np.float32, copy=False)

    if split is not None and (isinstance(split, bool) or not isinstance(split, int | np.integer)):
        raise ValueError(f"`split` must be None or an int in 0..9, got {split!r}.")
    filename = f"uci_{name}.npz"
    arrays = _load_npz(data_dir, filename, ("X", "y", "test_mask"))
    if arrays is None:
        raise FileNotFoundError(
            f"No data directory is set and {name!r} has no faithful copy on OpenML: the benchmarks use the "
            f"preprocessed data with 10 fixed splits from the {_UCI_SOURCE}. Download {filename} (see the "
            f"data README for how it is built), put it in a directory and pass data_dir=<that directory> or "
            f"set the environment variable {_ENV_VAR}."
        )
    X, y, test_mask = arrays
    X, y = X.astype(np.float32, copy=False), y.astype(np.float32, copy=False)
    if split is None:
        return X, y
    n_splits = test_mask.shape[1]
    if not 0 <= split < n_splits:
        raise ValueError(
            f"`split`={split} is out of range: {filename} has {n_splits} splits; pass 0..{n_splits - 1}."
        )
    test = test_mask[:, split].astype(bool)
    return X[~test], X[test], y[~test], y[test]
