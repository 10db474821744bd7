"""MetaNeighborhoodsRegressor and MetaNeighborhoodsClassifier: Meta-Neighborhoods (Shan & Oliva)."""

from __future__ import annotations

from numbers import Integral, Real

import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import TorchClassifierBase, TorchRegressorBase
from ._memory import RetrievalMixin
from .nn import MetaNeighborhoodsNet

# The dictionary and inner-loop parameters shared by both estimators.
_CONSTRAINTS = {
    "n_entries": [Interval(Integral, 1, None, closed="left")],
    "gamma": [Interval(Real, 0, None, closed="neither")],
    "similarity": [StrOptions({"euclidean", "cosine"})],
    "n_inner_steps": [Interval(Integral, 0, None, closed="left")],
    "inner_lr": [StrOptions({"scalar", "diagonal"})],
    "inner_lr_init": [Interval(Real, None, None, closed="neither")],
    "first_order": ["boolean"],
    "n_neighbors": [Interval(Integral, 1, None, closed="left"), None],  # no "auto": entries, not a memory
    "head_layer_sizes": ["array-like"],
}


class _MetaNeighborhoodsMixin(RetrievalMixin):
    """Retrieval of each row's nearest dictionary entries, shared by both estimators."""

    def _check_fit_data(self, X, y, *, first_pass, incremental):
        if self.n_neighbors is not None and self.n_neighbors > self.n_entries:
            raise ValueError(
                f"`n_neighbors`={self.n_neighbors} is larger than the {self.n_entries} dictionary entries; "
                f"pass n_neighbors <= {self.n_entries} (or None for attention over all entries)"
            )

    def _outputs(self, X, with_embedding=False):
        module = self.module_
        z = module.embedding(X)
        ids = None
        if self.n_neighbors is not None and module.n_inner_steps > 0:
            # NOTE[paper]: large dictionaries: attention over the k entries nearest the query, found
            # without gradients (cosine order = Euclidean order of unit vectors) and re-scored with
            # autograd. The keys move every step, so the index is rebuilt for every batch (without
            # its finiteness check, a device read: non-finite keys show up in the loss anyway).
            with torch.no_grad():
                keys, q = module.keys.detach(), z.detach()
                if self.similarity == "cosine":
                    keys, q = F.normalize(keys, dim=1), F.normalize(q, dim=1)
                index = self._new_index(0).build(keys, check_finite=False)
                _, ids = index.query(q, self.n_neighbors)
        out = module.outputs(z, ids)
        return (out, z) if with_embedding else out


def _net(estimator, n_features, n_outputs, **task):
    return MetaNeighborhoodsNet(
        embedding=estimator._make_embedding(n_features),
        embedding_dim=estimator._embedding_out_dim(n_features),
        n_outputs=n_outputs,
        n_entries=estimator.n_entries,
        head_layer_sizes=tuple(estimator.head_layer_sizes),
        gamma=estimator.gamma,
        similarity=estimator.similarity,
        n_inner_steps=estimator.n_inner_steps,
        inner_lr=estimator.inner_lr,
        inner_lr_init=estimator.inner_lr_init,
        first_order=estimator.first_order,
        **task,
    )


class MetaNeighborhoodsRegressor(_MetaNeighborhoodsMixin, TorchRegressorBase):
    """Neural network regressor tuned per query by a learned dictionary of neighbours (Meta-Neighborhoods).

    A dictionary of ``n_entries`` learnable pairs (k_j, v_j) lives in the input space (or in the
    space of an ``embedding``). For a query x, attention omega_j = softmax_j(-gamma ||x - k_j||)
    weights the entries, and the output network f_phi takes ``n_inner_steps`` gradient steps
    phi_x = phi - alpha grad_phi sum_j omega_j (f_phi(k_j) - v_j)^2 before predicting f_{phi_x}(x).
    The dictionary, phi and alpha are trained end to end through the inner step (MAML-style, second
    order unless ``first_order``). Prediction runs the same inner step (the paper's Algorithm 2), so
    it is batch-invariant. Targets are standardised internally; several outputs are supported.

    Parameters
    ----------
    n_entries : int, default=1000
        S, the number of dictionary entries.
    gamma : float, default=10.0
        Attention temperature (the paper's regression value).
    similarity : {"euclidean", "cosine"}, default="euclidean"
        Eq. (11) or eq. (12).
    n_inner_steps : int, default=1
        Inner gradient steps per query; 0 gives the plain output network.
    inner_lr : {"scalar", "diagonal"}, default="scalar"
        alpha as one learnable scalar, or one learnable rate per parameter entry of f_phi.
    inner_lr_init : float, default=0.1
        Initial alpha.
    first_order : bool, default=False
        Ignore second derivatives in phi through the inner step (cheaper); the dictionary and alpha
        still learn through it.
    n_neighbors : int or None, default=None
        Attention over the k dictionary entries nearest each query (found through the neighbour
        index, re-scored with autograd) instead of all S: the cost of the inner step falls from S
        to k entries per query. None: all entries, as in the paper.
    index : {"auto", "exact", "approximate", "faiss"}, default="auto"
        Search structure for ``n_neighbors`` (rebuilt every batch, since the keys move).
    .. shared:: index_params
    head_layer_sizes : tuple of int, default=(128, 128, 128)
        Hidden widths of f_phi (the paper: 3 dense layers of 128).
    embedding : {"identity", "mlp", "conv"} or callable, default="identity"
        Where the keys live: ``"identity"``, the input space (the paper's regression setting).
    hidden_layer_sizes : tuple of int, default=(128,)
        Hidden widths of the ``"mlp"`` embedding.
    embedding_dim : int, default=32
        Size of the embedding (ignored with ``"identity"``).
    .. shared:: image_shape max_epochs
    batch_size : int, default=128
        Mini-batch size. The paper's value.
    .. shared:: learning_rate weight_decay
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data and stop when its R^2 has not
        improved by ``tol`` for ``n_iter_no_change`` epochs; the best model is kept.
    .. shared:: validation_fraction n_iter_no_change tol warm_start ewc_lambda device num_threads precision
    .. shared:: random_state verbose

    Attributes
    ----------
    module_ : MetaNeighborhoodsNet
        The trained torch module: the dictionary (``module_.keys``, ``module_.values``), f_phi and
        alpha.
    n_outputs_ : int
        Number of targets (1 for a 1-d y).
    y_mean_, y_scale_ : ndarray of shape (`n_outputs_`,)
        The target standardisation.
    .. shared:: n_features_in_ feature_names_in_ device_ n_iter_ loss_curve_ best_loss_
    validation_scores_ : list of float or None
        Validation R^2 after each epoch of the last ``fit`` with ``early_stopping``.
    .. shared:: best_validation_score_ ewc_state_

    References
    ----------
    S. Shan and J. B. Oliva. "Meta-Neighborhoods".

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sksemiparam import MetaNeighborhoodsRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = MetaNeighborhoodsRegressor(n_entries=50, max_epochs=3, random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    """

    _parameter_constraints: dict = _CONSTRAINTS

    def __init__(
        self,
        *,
        n_entries=1000,
        gamma=10.0,
        similarity="euclidean",
        n_inner_steps=1,
        inner_lr="scalar",
        inner_lr_init=0.1,
        first_order=False,
        n_neighbors=None,
        index="auto",
        index_params=None,
        head_layer_sizes=(128, 128, 128),
        embedding="identity",
        hidden_layer_sizes=(128,),
        embedding_dim=32,
        image_shape=None,
        max_epochs=100,
        batch_size=128,
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
            num_threads=num_threads,
            precision=precision,
            random_state=random_state,
            verbose=verbose,
        )
        self.n_entries = n_entries
        self.gamma = gamma
        self.similarity = similarity
        self.n_inner_steps = n_inner_steps
        self.inner_lr = inner_lr
        self.inner_lr_init = inner_lr_init
        self.first_order = first_order
        self.n_neighbors = n_neighbors
        self.index = index
        self.index_params = index_params
        self.head_layer_sizes = head_layer_sizes

    def _check_fit_data(self, X, y, *, first_pass, incremental):
        super()._check_fit_data(X, y, first_pass=first_pass, incremental=incremental)
        if first_pass:  # the values start uniform over the (standardised) training targets
            self._value_range = (float(y.min()), float(y.max()))

    def _build_module(self, n_features, n_outputs):
        return _net(self, n_features, n_outputs, task="regression", value_range=self._value_range)

    def _loss(self, X, y, ids):
        return F.mse_loss(self._outputs(X), y)

    def _forward(self, X):
        # The inner step runs at prediction too (the paper's Algorithm 2); it needs no autograd.
        return self._outputs(X)


class MetaNeighborhoodsClassifier(_MetaNeighborhoodsMixin, TorchClassifierBase):
    """Neural network classifier tuned per query by a learned dictionary of neighbours (Meta-Neighborhoods).

    An encoder mu maps x to features z (no ReLU after its last layer, as in the paper). A dictionary
    of ``n_entries`` learnable keys k_j in feature space with logit values v_j (a class distribution
    softmax(v_j) each) tunes the output network f_phi, a cosine-similarity classifier with a
    learnable scale (eq. 15): with attention omega_j = softmax_j(gamma cos(z, k_j)), ``n_inner_steps``
    steps phi_x = phi - alpha grad_phi sum_j omega_j CE(f_phi(k_j), softmax(v_j)), then f_{phi_x}(z).
    An auxiliary cosine classifier xi on z, never adapted, adds ``aux_weight`` times its
    cross-entropy to the loss (co-training, eq. 14). Trained end to end with AdamW; prediction runs
    the same inner step.

    Parameters
    ----------
    n_entries : int, default=1000
        S, the number of dictionary entries.
    gamma : float, default=5.0
        Attention temperature (the paper's classification value).
    similarity : {"cosine", "euclidean"}, default="cosine"
        Eq. (12) or eq. (11).
    n_inner_steps : int, default=1
        Inner gradient steps per query; 0 gives the plain output network.
    inner_lr : {"scalar", "diagonal"}, default="scalar"
        alpha as one learnable scalar, or one learnable rate per parameter entry of f_phi.
    inner_lr_init : float, default=0.1
        Initial alpha.
    first_order : bool, default=False
        Ignore second derivatives in phi through the inner step (cheaper); the dictionary and alpha
        still learn through it.
    n_neighbors : int or None, default=None
        Attention over the k dictionary entries nearest each query (found through the neighbour
        index, re-scored with autograd) instead of all S: the cost of the inner step falls from S
        to k entries per query. None: all entries, as in the paper.
    index : {"auto", "exact", "approximate", "faiss"}, default="auto"
        Search structure for ``n_neighbors`` (rebuilt every batch, since the keys move).
    .. shared:: index_params
    aux_weight : float, default=1.0
        lambda of the auxiliary loss; 0 removes the auxiliary head.
    head_layer_sizes : tuple of int, default=()
        Hidden widths of f_phi before its cosine layer; ``()``: f_phi is the cosine layer.
    embedding : {"mlp", "conv"} or callable, default="mlp"
        The encoder mu (``"conv"``: the Appendix-B image network, with ``image_shape``).
    hidden_layer_sizes : tuple of int, default=(64,)
        Hidden widths of the ``"mlp"`` encoder.
    embedding_dim : int, default=32
        Size of the features z, the space of the dictionary keys.
    .. shared:: image_shape max_epochs
    batch_size : int, default=128
        Mini-batch size. The paper's value.
    .. shared:: learning_rate weight_decay early_stopping validation_fraction n_iter_no_change tol warm_start
    .. shared:: ewc_lambda device num_threads precision random_state verbose

    Attributes
    ----------
    .. shared:: classes_
    module_ : MetaNeighborhoodsNet
        The trained torch module: the encoder mu, the dictionary (``module_.keys``,
        ``module_.values``), f_phi, alpha and the auxiliary head xi.
    .. shared:: n_features_in_ feature_names_in_ device_ n_iter_ loss_curve_ best_loss_ validation_scores_
    .. shared:: best_validation_score_ ewc_state_

    References
    ----------
    S. Shan and J. B. Oliva. "Meta-Neighborhoods".

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sksemiparam import MetaNeighborhoodsClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MetaNeighborhoodsClassifier(n_entries=20, max_epochs=3, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    """

    _parameter_constraints: dict = {**_CONSTRAINTS, "aux_weight": [Interval(Real, 0, None, closed="left")]}
    # NOTE[paper]: "we also remove the ReLU activation function after the last hidden layer".
    _embedding_final_activation = False

    def __init__(
        self,
        *,
        n_entries=1000,
        gamma=5.0,
        similarity="cosine",
        n_inner_steps=1,
        inner_lr="scalar",
        inner_lr_init=0.1,
        first_order=False,
        n_neighbors=None,
        index="auto",
        index_params=None,
        aux_weight=1.0,
        head_layer_sizes=(),
        embedding="mlp",
        hidden_layer_sizes=(64,),
        embedding_dim=32,
        image_shape=None,
        max_epochs=100,
        batch_size=128,
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
            num_threads=num_threads,
            precision=precision,
            random_state=random_state,
            verbose=verbose,
        )
        self.n_entries = n_entries
        self.gamma = gamma
        self.similarity = similarity
        self.n_inner_steps = n_inner_steps
        self.inner_lr = inner_lr
        self.inner_lr_init = inner_lr_init
        self.first_order = first_order
        self.n_neighbors = n_neighbors
        self.index = index
        self.index_params = index_params
        self.aux_weight = aux_weight
        self.head_layer_sizes = head_layer_sizes

    def _build_module(self, n_features, n_outputs):
        return _net(
            self,
            n_features,
            n_outputs,
            task="classification",
            cosine_output=True,
            auxiliary_head=self.aux_weight > 0,
        )

    def _loss(self, X, y, ids):
        logits, z = self._outputs(X, with_embedding=True)
        loss = F.cross_entropy(logits, y)
        if self.module_.auxiliary is not None:
            loss = loss + self.aux_weight * F.cross_entropy(self.module_.auxiliary(z), y)
        return loss

    def _forward(self, X):
        return torch.log_softmax(self._outputs(X), dim=1)
