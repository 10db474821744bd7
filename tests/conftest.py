import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_blobs
from sklearn.model_selection import train_test_split

# Several tests compare two fits bitwise. With two torch threads on an oversubscribed CPU, float32
# kernels may split their work differently from one call to the next, and training amplifies the
# last-bit differences (ImpostorClassifier refits differed by up to 9e-6 in 8 of 20 trials at load
# 8 on 2 cores; 0 of 20 with one thread).
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits scaled to [0, 1], float32, split 70/30 (stratified): made anew per module."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def blobs():
    """150 rows, 4 float32 features, 3 well-separated classes (make_blobs, seed 0): made anew per module."""
    X, y = make_blobs(n_samples=150, centers=3, n_features=4, random_state=0)
    return X.astype(np.float32), y
