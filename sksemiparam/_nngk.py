"""NNGKClassifier: nearest-neighbour Gaussian kernels over stored training embeddings (Meyer et al.)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._base import TorchClassifierBase
from ._index import NeighborIndex
from .nn.nngk import NNGKNet

# Dense mode (n_neighbors=None) scores queries against all centres in chunks of at most this many
# query x centre distances.
_DENSE_CHUNK_ELEMENTS = 1 << 24
# Rows embedded at once when the centres are refreshed.
_REFRESH_CHUNK = 4096


class NNGKClassifier(TorchClassifierBase):
    """Neural network classifier voting with Gaussian kernels over its nearest training embeddings.

    Every training example x_i is a centre c_i = f_theta(x_i) in the space of an embedding network
    f_theta. A query z = f_theta(x) is classified by its ``n_neighbors`` nearest centres, each voting
    for its class with weight w_i exp(-||z - c_i||^2 / (2 sigma^2)), normalised over the
    neighbourhood (eq. 7 of the review; Meyer, Harwood & Drummond). The network is trained end to
    end with the cross-entropy of that vote: gradients reach the query embedding, sigma (if
    learnable) and the per-centre importance weights w_i; the centres are constants between
    refreshes, recomputed every ``refresh_every`` epochs (the paper's "weak update"). A training
    example never retrieves its own centre. The centres live in a neighbour index (exact search,
    or a pynndescent graph when large).

    ``partial_fit`` adds the new examples as centres and trains on them; :meth:`explain` returns
    the stored examples that decided each prediction.

    Parameters
    ----------
    n_neighbors : int or None, default=32
        k, the centres that vote for each query. None: all centres (a dense soft nearest-neighbour
        rule, as in ModernNCA), whose cost grows with the number of centres.
    sigma : float or "scale", default="scale"
        Kernel width (initial value when ``learn_sigma``). ``"scale"``: the median distance from a
        centre to its nearest other centre, measured once when the first centres are computed (the
        untrained network's scale varies by orders of magnitude between architectures; compare
        ``gamma="scale"`` of ``sklearn.svm.SVC``). The value in use is ``module_.sigma``.
    learn_sigma : bool, default=False
        Train sigma (in log space) with the network.
    learn_importance : bool, default=True
        Train one importance weight w_i per centre (in log space, so positive; starts at 1).
    refresh_every : int, default=1
        Epochs between recomputations of all centres with the current network; a ``partial_fit``
        call counts as one epoch. The centres are also recomputed when training ends.
    index : {"auto", "exact", "approximate"}, default="auto"
        Search structure over the centres (see ``NeighborIndex``).
    embedding : {"mlp", "conv", "identity"} or callable, default="mlp"
        f_theta (``"conv"``: the Appendix-B image network, with ``image_shape``). Its last layer has
        no ReLU: the centres live in an unconstrained metric space.
    hidden_layer_sizes : tuple of int, default=(128,)
    embedding_dim : int, default=64
    image_shape : tuple of int, default=None
    max_epochs, batch_size, learning_rate, weight_decay, early_stopping, validation_fraction, \
n_iter_no_change, tol, warm_start, ewc_lambda, device, random_state, verbose
        Training, as in every sksemiparam estimator. With ``early_stopping`` the held-out rows are
        not centres.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    module_ : NNGKNet
        The embedding, sigma and the per-centre log-importance.
    centers_X_ : Tensor of shape (n_centers, n_features)
        The stored training examples (inputs), in the order :meth:`explain` indexes them.
    centers_y_ : Tensor of shape (n_centers,)
        Their encoded labels (indices into ``classes_``).
    index_ : NeighborIndex
        The centres' embeddings, as of the last refresh.
    n_features_in_, feature_names_in_, device_, n_iter_, loss_curve_, best_loss_, validation_scores_, \
best_validation_score_, ewc_state_
        As in every sksemiparam estimator.

    References
    ----------
    B. J. Meyer, B. Harwood and T. Drummond. "Deep Metric Learning and Image Classification with
    Nearest Neighbour Gaussian Kernels". ICIP 2018. Reviewed in S. Chervontsev, "Deep Metric
    Learning and Image Classification with Nearest Neighbour Gaussian Kernels (Article Review)".

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sksemiparam import NNGKClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = NNGKClassifier(n_neighbors=8, max_epochs=5, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    >>> clf.explain(X[:1]).indices.shape
    (1, 8)
    """

    _parameter_constraints: dict = {
        **TorchClassifierBase._parameter_constraints,
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), None],
        "sigma": [Interval(Real, 0, None, closed="neither"), StrOptions({"scale"})],
        "learn_sigma": ["boolean"],
        "learn_importance": ["boolean"],
        "refresh_every": [Interval(Integral, 1, None, closed="left")],
        "index": [StrOptions({"auto", "exact", "approximate"})],
    }
    # NOTE[paper]: no ReLU after the embedding's last layer: the centres live in an unconstrained
    # metric space (the paper uses VGG/ResNet features; the activation is not specified).
    _embedding_final_activation = False
    # One importance per centre: grows with partial_fit, and is the memory itself rather than a
    # weight earlier tasks depend on.
    _ewc_exclude = ("log_importance",)

    def __init__(
        self,
        *,
        n_neighbors=32,
        sigma="scale",
        learn_sigma=False,
        learn_importance=True,
        refresh_every=1,
        index="auto",
        embedding="mlp",
        hidden_layer_sizes=(128,),
        embedding_dim=64,
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
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            embedding=embedding,
            hidden_layer_sizes=hidden_layer_sizes,
            embedding_dim=embedding_dim,
            image_shape=image_shape,
            max_epochs=max_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            warm_start=warm_start,
            ewc_lambda=ewc_lambda,
            device=device,
            random_state=random_state,
            verbose=verbose,
        )
        self.n_neighbors = n_neighbors
        self.sigma = sigma
        self.learn_sigma = learn_sigma
        self.learn_importance = learn_importance
        self.refresh_every = refresh_every
        self.index = index

    # ------------------------------------------------------------------ hooks
    def _check_fit_data(self, X, y, *, first_pass, incremental):
        stored = X.shape[0]
        if incremental and not first_pass and getattr(self, "centers_X_", None) is not None:
            stored += self.centers_X_.shape[0]
        if self.n_neighbors is not None and self.n_neighbors > stored:
            raise ValueError(
                f"`n_neighbors`={self.n_neighbors} is larger than the {stored} training samples stored as "
                f"centres; pass n_neighbors <= {stored}"
            )

    def _build_module(self, n_features, n_outputs):
        self.centers_X_ = None
        self.centers_y_ = None
        self.index_ = None
        self._call_offset = 0
        self._epochs_since_refresh = 0
        self._sigma_pending = self.sigma == "scale"
        return NNGKNet(
            embedding=self._make_embedding(n_features),
            n_classes=n_outputs,
            sigma=1.0 if self.sigma == "scale" else self.sigma,
            learn_sigma=self.learn_sigma,
            learn_importance=self.learn_importance,
        )

    def _before_epoch(self, X, y, epoch):
        if epoch == 0:  # this call's rows become centres: all of them (fit), or new ones (partial_fit)
            self._store_centers(X, y)
        elif self._epochs_since_refresh >= self.refresh_every:
            self._refresh()
        self._epochs_since_refresh += 1

    def _store_centers(self, X, y):
        incremental = self.centers_X_ is not None and self._storing_incrementally
        if incremental:
            self._call_offset = self.centers_X_.shape[0]
            self.centers_X_ = torch.cat([self.centers_X_, X])
            self.centers_y_ = torch.cat([self.centers_y_, y.to(self.device_)])
            self._grow_importance(X.shape[0])
            self.index_.add(self._embed_all(X))  # only the new centres; all are refreshed at the end
        else:
            self._call_offset = 0
            self.centers_X_ = X
            self.centers_y_ = y.to(self.device_)
            self._grow_importance(X.shape[0] - self.module_.log_importance.shape[0])
            self._refresh()
        if self._sigma_pending:
            self._set_sigma_from_scale()

    def _set_sigma_from_scale(self):
        """sigma = the median distance from a centre to its nearest other centre (<= 1000 sampled)."""
        n = len(self.index_)
        if n < 2:
            return  # keep 1.0 until there are two centres
        rows = torch.randperm(n, generator=self._generator)[:1000].to(self.index_.keys.device)
        sq, _ = self.index_.query(self.index_.keys[rows], 1, exclude=rows)
        median = float(sq[:, 0].median().clamp_min(1e-12).sqrt())
        with torch.no_grad():
            self.module_.log_sigma.fill_(np.log(median))
        self._sigma_pending = False

    def _grow_importance(self, n_new):
        """Resize the per-centre log-importance to the centres, keeping AdamW's state in step."""
        module = self.module_
        old = module.log_importance
        if n_new == 0:
            return
        if n_new > 0:
            data = torch.cat([old.detach(), old.new_zeros(n_new)])
        else:
            data = old.detach()[: old.shape[0] + n_new]
        new = nn.Parameter(data, requires_grad=module.learn_importance)
        optimizer = self._get_optimizer()
        state = optimizer.state.pop(old, None)
        for group in optimizer.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    buf = state[key]
                    state[key] = (
                        torch.cat([buf, buf.new_zeros(n_new)]) if n_new > 0 else buf[: data.shape[0]].clone()
                    )
            optimizer.state[new] = state
        module.log_importance = new

    def _embed_all(self, X):
        was_training = self.module_.training
        self.module_.eval()
        try:
            with torch.no_grad():
                return torch.cat(
                    [
                        self.module_(X[s : s + _REFRESH_CHUNK].to(self.device_))
                        for s in range(0, X.shape[0], _REFRESH_CHUNK)
                    ]
                )
        finally:
            self.module_.train(was_training)

    def _refresh(self):
        """Recompute every centre with the current network and rebuild the index."""
        keys = self._embed_all(self.centers_X_)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))
        self.index_ = NeighborIndex(self.index, random_state=seed).build(keys)
        self._epochs_since_refresh = 0

    def _fit(self, X, y, *, incremental, classes=None):
        self._storing_incrementally = incremental
        return super()._fit(X, y, incremental=incremental, classes=classes)

    def _log_proba(self, z, exclude=None):
        """Eq. (7) for embeddings z against the centres; ``exclude``: each row's own centre id."""
        module, n_centers = self.module_, len(self.index_)
        available = n_centers - (1 if exclude is not None else 0)
        if available < 1:  # a single stored example cannot vote for itself: uniform
            return torch.full((z.shape[0], module.n_classes), -np.log(module.n_classes), device=z.device)
        if self.n_neighbors is None:
            ids = torch.arange(n_centers, device=self.index_.keys.device)
            step = max(1, _DENSE_CHUNK_ELEMENTS // n_centers)
            return torch.cat(
                [
                    module.log_proba(
                        z[s : s + step],
                        self.index_.keys,
                        ids,
                        self.centers_y_,
                        None if exclude is None else exclude[s : s + step],
                    )
                    for s in range(0, z.shape[0], step)
                ]
            )
        k = min(self.n_neighbors, available)
        with torch.no_grad():  # search without gradients, then score the retrieved centres with autograd
            _, ids = self.index_.query(z.detach(), k, exclude=exclude)
        return module.log_proba(z, self.index_.keys[ids], ids, self.centers_y_[ids])

    def _loss(self, X, y, ids):
        z = self.module_(X)
        return F.nll_loss(self._log_proba(z, exclude=ids + self._call_offset), y)

    def _on_train_end(self, X, y, *, incremental):
        # After fit, predictions use centres from the final network; after partial_fit, every
        # refresh_every calls.
        if not incremental or self._epochs_since_refresh >= self.refresh_every:
            self._refresh()

    def _to_device(self, device):
        if self.device_ == device:
            return
        super()._to_device(device)
        if self.centers_y_ is not None:
            self.centers_y_ = self.centers_y_.to(device)
            self.index_.to(device)

    def _forward(self, X):
        return self._log_proba(self.module_(X))

    # ---------------------------------------------------------------- public
    def explain(self, X, n_neighbors=None):
        """The stored training examples that decide each prediction, with their vote weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        n_neighbors : int, default=None
            How many to return; default the estimator's ``n_neighbors`` (all centres when that is None).

        Returns
        -------
        Bunch with
            indices : ndarray (n_samples, k), int
                Rows of ``centers_X_`` (for ``fit``: rows of its training data, in order; later
                ``partial_fit`` calls append), nearest first.
            labels : ndarray (n_samples, k)
                Their classes (from ``classes_``).
            weights : ndarray (n_samples, k)
                Their normalised vote weights w_i k(z, c_i) / sum over the k (the terms of eq. 7).
            distances : ndarray (n_samples, k)
                Squared Euclidean distances in the embedding space.
        """
        check_is_fitted(self)
        n_centers = len(self.index_)
        k = n_neighbors if n_neighbors is not None else (self.n_neighbors or n_centers)
        if isinstance(k, bool) or not isinstance(k, Integral) or not 1 <= k <= n_centers:
            raise ValueError(
                f"`n_neighbors` must be an int in [1, {n_centers}] (the stored centres), got {k!r}"
            )
        X = validate_data(self, X, reset=False, dtype=np.float32)
        X_t = torch.from_numpy(np.require(X, requirements=["C", "W"]))
        self.module_.eval()
        with torch.no_grad():
            z = self._embed_all(X_t)
            sq, ids = self.index_.query(z, int(k))
            log_w = -sq / (2 * self.module_.sigma**2) + self.module_.log_importance[ids]
            weights = torch.softmax(log_w, dim=1)
        ids_np = ids.cpu().numpy()
        return Bunch(
            indices=ids_np,
            labels=self.classes_[self.centers_y_.cpu().numpy()[ids_np]],
            weights=weights.double().cpu().numpy(),
            distances=sq.double().cpu().numpy(),
        )
