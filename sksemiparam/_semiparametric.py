"""SemiparametricClassifier: Deep Semiparametric Learning (Jain & Lindsey, 2018)."""

from __future__ import annotations

from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import TorchClassifierBase, _torch_threads
from ._memory import ExampleMemory, RetrievalMixin
from .nn import SemiparametricNet, pairwise_sq_distances, soft_neighbor_class_estimate
from .nn.semiparametric import resolvable_sq_distances
from .persistence import register

# Rows of the fixed probe batch on which the reliance diagnostic is measured after each epoch.
_RELIANCE_PROBE = 256


class SemiparametricClassifier(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, RetrievalMixin, TorchClassifierBase
):
    """Neural network classifier with a differentiable nearest-neighbour class estimate as a feature.

    An embedding network maps x to v. A nearest-neighbour estimate of the class of x,
    P(c = a) proportional to sum_j w_j 1(c_j = a) with w_j = d_j^-tau on squared embedding distances
    d_j, is concatenated with v and fed to a classifier head. During training the neighbours of a row
    are the other rows of its mini-batch (the paper's Algorithm 1), so the whole model trains end to
    end. At prediction the neighbours are the ``n_neighbors`` nearest stored training embeddings
    (refreshed at the end of every ``fit``/``partial_fit``), so a prediction never depends on the
    other rows of the predict batch.

    Parameters
    ----------
    mode : {"semiparametric", "parametric", "nonparametric"}, default="semiparametric"
        ``"semiparametric"``: head on [embedding, neighbour estimate] (the paper's model).
        ``"parametric"``: head on the embedding only (the paper's parametric baseline; no memory is
        stored). ``"nonparametric"``: the neighbour estimate is the output (the paper's
        nonparametric baseline).
    tau : float, default=2.0
        Exponent of the neighbour weights w = d^-tau (d: squared Euclidean distance). Larger values
        concentrate the estimate on the closest neighbours.
    n_neighbors : int, "auto" or None, default="auto"
        Stored training examples consulted per query at prediction. ``"auto"``: 32, or all of them
        when fewer are stored. ``None``: all of them (dense; exact, slower on large training sets).
        An integer larger than the number of stored examples is an error.
    embedding : {"mlp", "conv", "identity"} or callable, default="mlp"
        Embedding network. ``"mlp"``: dense ReLU layers ``hidden_layer_sizes`` then ``embedding_dim``.
        ``"conv"``: the paper's image network (two pairs of 3x3 convolutions with 32 and 64 channels,
        2x2 max pooling and 25% dropout after each pair, a dense layer to ``embedding_dim``); needs
        ``image_shape``. ``"identity"``: the features themselves. A callable
        ``factory(n_features, embedding_dim) -> torch.nn.Module`` builds your own.
    hidden_layer_sizes : tuple of int, default=(32,)
        Hidden widths of the ``"mlp"`` embedding (the paper's MNIST network: 32).
    embedding_dim : int, default=32
        Size of the embedding v (the paper: 32 on MNIST, 128 on CIFAR).
    .. shared:: image_shape
    head_layer_sizes : tuple of int, default=()
        Hidden widths of the classifier head. ``()`` is a single linear layer (the paper's MNIST
        head); the paper's CIFAR head is ``(128, 128)``.
    neighbor_skip : float or None, default=1.0
        ``"semiparametric"`` mode only; not in the paper. A float adds ``s * c'`` to the head's
        logits, with ``s`` a learnable scalar starting at this value: the neighbour estimate of
        class a feeds class a's logit directly. The model then learns as fast as the nonparametric
        one at first and ends at least as well as the parametric one (``semiparametric-subset``,
        5 seeds, 1000 images: test accuracy after one epoch 0.72 on MNIST and 0.70 on
        Fashion-MNIST where the paper's model is at 0.30 and 0.25; after 30 epochs 0.886 and 0.791,
        the paper's 0.883 and 0.786), and it can predict a class its head has never been trained
        on as soon as stored examples of it are retrieved (new classes arriving through
        ``partial_fit``; see ``semiparametric-domain-skip``). ``None``: the paper's model, where the
        head must learn how to use each class's estimate from random weights.
    estimate_input : {"proba", "log_proba"}, default="proba"
        ``"semiparametric"`` mode only. What the head (and ``neighbor_skip``) see of the neighbour
        estimate c': the class probabilities themselves (the paper's), or ``"log_proba"``,
        log(c' + 1e-4). With ``neighbor_skip=1.0`` the latter makes the output
        softmax(head + log c'), proportional to c' exp(head): it starts as the nonparametric
        estimate, which the head then corrects. See the ``semiparametric-subset`` benchmark.
    .. shared:: index index_params max_epochs
    batch_size : int, default=100
        Mini-batch size (the paper: 100 on MNIST, 1000 on CIFAR). It is also the neighbourhood size
        of the in-batch estimate during training.
    .. shared:: learning_rate weight_decay early_stopping validation_fraction n_iter_no_change tol warm_start
    .. shared:: ewc_lambda device num_threads precision random_state verbose

    Attributes
    ----------
    .. shared:: classes_ n_features_in_
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when X has feature names that are all strings.
    module_ : SemiparametricNet
        The trained torch module.
    .. shared:: device_
    index_ : NeighborIndex or None
        Search structure over the stored training embeddings (None in ``"parametric"`` mode),
        built when first needed after a ``fit``/``partial_fit``.
    memory_ : ExampleMemory
        The stored training examples whose embeddings give the neighbour estimate at prediction:
        those of the last ``fit``, plus those of every ``partial_fit`` since (or those given to
        :meth:`set_memory`). A ``partial_fit`` stores only the (x, y) pairs not stored yet, so
        several passes over the same data keep one copy of each. Empty in ``"parametric"`` mode.
    memory_X_ : torch.Tensor of shape (n_stored, n_features) or None
        ``memory_.X``, the stored inputs (None when nothing is stored).
    memory_y_ : torch.Tensor of shape (n_stored,) or None
        ``memory_.y``, their encoded labels (indices into ``classes_``).
    .. shared:: n_iter_ loss_curve_ best_loss_ validation_scores_ best_validation_score_ ewc_state_
    reliance_curve_ : list of float or None
        ``"semiparametric"`` mode: after each epoch, how much the output relies on the neighbour
        estimate c' relative to the embedding v (the paper's Figure 3B): on a fixed probe batch (the
        first 256 rows of the first ``fit``/``partial_fit``, their in-batch estimate as in
        training), the norm of d(sum_i log p(y_i | x_i)) / dc' over the norm of the same gradient in
        v. None in the other modes.

    See Also
    --------
    sklearn.neural_network.MLPClassifier : the parametric network alone.
    sklearn.neighbors.KNeighborsClassifier : nearest neighbours on the raw features.

    Notes
    -----
    The paper's class "probabilities" sum_j w_ij 1(c_j = a) are unnormalised; here the weights are
    normalised to sum to 1 over the neighbours (computed as a log-softmax of -tau log d, so d^-tau
    never overflows), which makes the estimate a distribution and the nonparametric mode a proper
    classifier. Squared distances below 1e-12 count as 1e-12.

    References
    ----------
    M. Sarkin Jain and J. Lindsey. "Deep Semiparametric Learning". Stanford University, 2018.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sksemiparam import SemiparametricClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = SemiparametricClassifier(max_epochs=5, random_state=0).fit(X / 16, y)
    >>> clf.predict(X[:3] / 16).shape
    (3,)
    """

    _parameter_constraints: dict = {
        "mode": [StrOptions({"semiparametric", "parametric", "nonparametric"})],
        "tau": [Interval(Real, 0, None, closed="neither")],
        "head_layer_sizes": ["array-like"],
        "neighbor_skip": [Interval(Real, 0, None, closed="left"), None],
        "estimate_input": [StrOptions({"proba", "log_proba"})],
    }

    def __init__(
        self,
        mode="semiparametric",
        *,
        tau=2.0,
        n_neighbors="auto",
        embedding="mlp",
        hidden_layer_sizes=(32,),
        embedding_dim=32,
        image_shape=None,
        head_layer_sizes=(),
        neighbor_skip=1.0,
        estimate_input="proba",
        index="auto",
        index_params=None,
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
        self.mode = mode
        self.tau = tau
        self.n_neighbors = n_neighbors
        self.head_layer_sizes = head_layer_sizes
        self.neighbor_skip = neighbor_skip
        self.estimate_input = estimate_input
        self.index = index
        self.index_params = index_params

    # ------------------------------------------------------------------ hooks
    def _stores_examples(self):
        return self.mode != "parametric"

    def _build_module(self, n_features, n_outputs):
        self.memory_ = self._new_memory(self.device_)
        self._index = _IndexCache(None)
        self.reliance_curve_ = [] if self.mode == "semiparametric" else None
        self._reliance_probe = None
        return SemiparametricNet(
            embedding=self._make_embedding(n_features),
            embedding_dim=self._embedding_out_dim(n_features),
            n_classes=n_outputs,
            mode=self.mode,
            tau=self.tau,
            head_layer_sizes=tuple(self.head_layer_sizes),
            neighbor_skip=self.neighbor_skip,
            estimate_input=self.estimate_input,
        )

    def _loss(self, X, y, ids):
        return F.nll_loss(self.module_(X, y), y)

    def _after_epoch(self, X, y, epoch):
        if self.mode != "semiparametric":
            return
        if self._reliance_probe is None:  # fixed for the life of the model
            self._reliance_probe = (X[:_RELIANCE_PROBE].clone(), y[:_RELIANCE_PROBE].clone())
        self.reliance_curve_.append(self._reliance(*self._reliance_probe))

    def _reliance(self, X, y):
        """Norm of the gradient of sum_i log p(y_i | x_i) in the estimate c', over that in v."""
        module = self.module_
        was_training = module.training
        module.eval()
        try:
            X, y = X.to(self.device_), y.to(self.device_)
            with torch.no_grad():
                v = module.embed(X)
                estimate = module.in_batch_estimate(v, y)
            v.requires_grad_(True)
            estimate.requires_grad_(True)
            with torch.enable_grad():
                log_p = module.output(v, estimate).gather(1, y[:, None]).sum()
                g_v, g_c = torch.autograd.grad(log_p, [v, estimate])
            norm_v, norm_c = float(g_v.norm()), float(g_c.norm())
            return norm_c / norm_v if norm_v > 0 else float("inf")
        finally:
            module.train(was_training)

    # ------------------------------------------------------------- transform
    def transform(self, X):
        """The learned embeddings v = f(x) of X, e.g. for t-SNE or a downstream model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_embedding), float64
            ``n_embedding`` is ``embedding_dim`` (``n_features_in_`` for ``embedding="identity"``).
        """
        X_t = self._prepare_predict(X)
        if X_t.shape[0] == 0:
            return np.empty((0, self._n_features_out))
        with _torch_threads(self):
            return self._embed_rows(X_t, queries=True).double().cpu().numpy()

    @property
    def _n_features_out(self):
        return self._embedding_out_dim(self.n_features_in_)

    def _before_validation(self, X, y):
        self._store(X, y, replace=True)

    def _on_train_end(self, X, y, *, incremental):
        # A partial_fit stores only the examples not stored yet, so passing over the same data
        # several times (the partial_fit idiom for epochs) does not fill the memory with copies.
        self._store(X, y, replace=not incremental)

    def _store(self, X, y, *, replace):
        """Write (X, y) to the memory (emptied first with ``replace``); their embeddings are
        indexed when first needed (see ``index_``)."""
        if not self.module_.uses_neighbors:
            return
        self._remember(X, y, replace=replace)
        self._index = _IndexCache(int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator)))

    def set_memory(self, X, y):
        """Replace the stored examples, the neighbours consulted at prediction, with (X, y).

        The network is unchanged. For example to predict a new domain from a few labelled examples
        of it alone (the ``semiparametric-domain`` benchmark), or to index the same examples again
        after ``set_params(index=...)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels, all in ``classes_``.

        Returns
        -------
        self
        """
        X_t = self._prepare_predict(X)
        if self.mode == "parametric":
            raise ValueError("mode='parametric' stores no examples: there is no memory to set")
        if X_t.shape[0] == 0:
            raise ValueError("`X` has 0 rows: the memory needs at least one example")
        self._check_n_neighbors(X_t.shape[0])
        y_t = torch.from_numpy(self._encode_known_targets(y))
        if y_t.shape[0] != X_t.shape[0]:
            raise ValueError(f"`X` has {X_t.shape[0]} rows but `y` has {y_t.shape[0]} labels")
        self._store(X_t, y_t, replace=True)
        return self

    def _upgrade_state(self, state):
        if "memory_X_" in state:  # sksemiparam 0.1 kept the memory as two tensors
            X, y = state.pop("memory_X_"), state.pop("memory_y_")
            state.pop("_digests", None)
            state["memory_"] = ExampleMemory.from_inputs(X, y)

    @property
    def memory_X_(self):
        return self.memory_.X if len(self.memory_) else None

    @property
    def memory_y_(self):
        return self.memory_.y if len(self.memory_) else None

    @property
    def index_(self):
        """The search structure over the current embeddings of the stored examples.

        Built on first use after a ``fit``/``partial_fit``, not at the end of it: a loop of
        ``partial_fit`` calls embeds the (growing) memory once, at the next prediction, instead of
        after every call.
        """
        cache = self._index
        if cache.index is None and len(self.memory_):
            keys = self._check_finite_keys(self._embed_rows(self.memory_.X), self.memory_.X)
            cache.index = self._new_index(cache.seed).build(keys)
        return cache.index

    def _to_device(self, device):
        if self.device_ == device:
            return
        super()._to_device(device)
        if self._index.index is not None:
            self._index.index.to(device)

    def _forward(self, X):
        module = self.module_
        v = module.embed(X)
        if not module.uses_neighbors:
            return module.output(v, None)
        index = self.index_
        n_stored = len(index)
        if self.n_neighbors is None:
            keys = index.keys
            key_norms = keys.square().sum(1)[None, :]
            estimate = torch.cat(
                [
                    soft_neighbor_class_estimate(
                        resolvable_sq_distances(
                            pairwise_sq_distances(v[rows], keys),
                            v[rows].square().sum(1)[:, None],
                            key_norms,
                            v.shape[1],
                        ),
                        self.memory_.y,
                        module.n_classes,
                        module.tau,
                    )
                    for rows in self._dense_chunks(v.shape[0], n_stored)
                ]
            )
        else:
            # NOTE[paper]: the paper's estimate at test time uses the current batch; to keep each
            # prediction independent of the rest of the predict batch, a query's neighbours are its
            # k nearest stored training embeddings instead.
            k = self._n_neighbors(n_stored)
            # Search without gradients, then re-score the retrieved keys with autograd.
            with torch.no_grad():
                _, ids = index.query(v.detach(), k)
            estimate = module.memory_estimate(v, index.keys[ids], self.memory_.y[ids])
        return module.output(v, estimate)


@register
class _IndexCache:
    """Holds the lazily built index of the stored embeddings and the seed to build it with.

    A prediction that builds the index fills this holder in place, so the estimator's own
    attributes do not change (the predict methods leave ``__dict__`` as it was).
    """

    def __init__(self, seed):
        self.seed = seed
        self.index = None

    def __getstate__(self):  # a cache: pickles stay small and a prediction does not change them
        return {"seed": self.seed, "index": None}
