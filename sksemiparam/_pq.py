"""Product quantisation (Jegou et al.) with an optional learned rotation (OPQ, Ge et al.).

A vector of dimension d is split into M sub-vectors of d / M; each is replaced by the index of its
nearest codeword among K <= 256 learned by k-means in its sub-space, so a vector costs M bytes. The
distance from an unquantised query to a quantised vector is computed asymmetrically: against the
vector's reconstruction, which equals the sum over sub-spaces of the query-to-codeword distances.
"""

from __future__ import annotations

import numpy as np

from .persistence import register


@register
class ProductQuantizer:
    """Encode vectors as M bytes each; decode them to their reconstructions.

    Parameters
    ----------
    n_subspaces : int
        M, bytes per vector; must divide the dimension.
    n_codewords : int, default=256
        K per sub-space (at most 256, so a code fits a byte; at most the number of training vectors).
    rotation : bool, default=False
        Learn an orthogonal rotation R first (non-parametric OPQ: alternate PQ training on X R and
        the orthogonal Procrustes solution for R).
    n_rotation_iter : int, default=8
    random_state : int, default=0

    Attributes
    ----------
    codebooks_ : ndarray (M, K, d / M), float32
    rotation_ : ndarray (d, d) or None
    """

    def __init__(self, n_subspaces, *, n_codewords=256, rotation=False, n_rotation_iter=8, random_state=0):
        self.n_subspaces = n_subspaces
        self.n_codewords = n_codewords
        self.rotation = rotation
        self.n_rotation_iter = n_rotation_iter
        self.random_state = random_state

    def _check(self, X):
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array of vectors, got shape {X.shape}")
        if X.shape[1] % self.n_subspaces:
            raise ValueError(
                f"the dimension {X.shape[1]} is not divisible by n_subspaces={self.n_subspaces}; "
                "pick a divisor of the embedding dimension"
            )
        return X

    def _train_codebooks(self, X, k):
        from sklearn.cluster import KMeans

        d_sub = X.shape[1] // self.n_subspaces
        books = np.empty((self.n_subspaces, k, d_sub), dtype=np.float32)
        for m in range(self.n_subspaces):
            part = X[:, m * d_sub : (m + 1) * d_sub]
            km = KMeans(n_clusters=k, n_init=1, max_iter=50, random_state=self.random_state + m).fit(part)
            books[m] = km.cluster_centers_
        return books

    def _assign(self, Y):
        d_sub = Y.shape[1] // self.n_subspaces
        codes = np.empty((Y.shape[0], self.n_subspaces), dtype=np.uint8)
        for m in range(self.n_subspaces):
            part = Y[:, m * d_sub : (m + 1) * d_sub]
            book = self.codebooks_[m]
            sq = (part**2).sum(1, keepdims=True) - 2 * part @ book.T + (book**2).sum(1)[None]
            codes[:, m] = sq.argmin(1)
        return codes

    def _reconstruct(self, codes):
        return np.concatenate([self.codebooks_[m][codes[:, m]] for m in range(self.n_subspaces)], axis=1)

    def fit(self, X):
        """Learn the codebooks (and the rotation) from vectors X (n, d)."""
        X = self._check(X)
        k = min(self.n_codewords, 256, X.shape[0])
        self.rotation_ = None
        if self.rotation:
            rotation = np.eye(X.shape[1], dtype=np.float32)
            for _ in range(self.n_rotation_iter):
                Y = X @ rotation
                self.codebooks_ = self._train_codebooks(Y, k)
                Y_hat = self._reconstruct(self._assign(Y))
                u, _, vt = np.linalg.svd(X.T @ Y_hat)  # orthogonal Procrustes: min ||X R - Y_hat||
                rotation = (u @ vt).astype(np.float32)
            self.rotation_ = rotation
            self.codebooks_ = self._train_codebooks(X @ rotation, k)
        else:
            self.codebooks_ = self._train_codebooks(X, k)
        return self

    def encode(self, X):
        """Codes (n, M), uint8."""
        X = self._check(X)
        return self._assign(X if self.rotation_ is None else X @ self.rotation_)

    def decode(self, codes):
        """Reconstructions (n, d), float32, in the original space."""
        Y = self._reconstruct(np.asarray(codes))
        return Y if self.rotation_ is None else Y @ self.rotation_.T

    @property
    def codebook_nbytes(self):
        """Bytes of the codebooks (and rotation), shared by all vectors."""
        rotation = 0 if self.rotation_ is None else self.rotation_.nbytes
        return int(self.codebooks_.nbytes + rotation)
