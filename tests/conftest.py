import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits scaled to [0, 1], float32, split 70/30 (stratified): made anew per module."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
