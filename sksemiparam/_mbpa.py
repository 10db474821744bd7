"""MbPAClassifier: Memory-based Parameter Adaptation (Sprechmann et al., 2018)."""

from __future__ import annotations

from numbers import Integral, Real

import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import TorchClassifierBase
from ._memory import MEMORY_POLICIES, ExampleMemory, RetrievalMixin, row_identities
from .nn import MbPANet, adapt_and_predict, memory_kernel_weights, memory_vote
from .nn.mbpa import adaptation_floats

# Queries adapted together hold about this many floats at once (retrieved keys and adaptation state).
_ADAPT_CHUNK_FLOATS = 2**24
# log(p) floor of the memory-only and mixture outputs (a class no neighbour votes for).
_MIN_PROBA = 1e-12


class MbPAClassifier(RetrievalMixin, TorchClassifierBase):
    """Neural network classifier whose output layer adapts to each query's neighbours in an episodic memory.

    An embedding network f and an output network g (softmax) are trained as an ordinary network.
    After every training step the batch's pairs (f(x), y) are written to an episodic memory of
    ``memory_size`` entries (by default the oldest dropped first; see ``memory_policy``). At
    prediction, the ``n_neighbors`` entries nearest to q = f(x) are retrieved, weighted by
    1 / (epsilon + ||h - q||^2) (normalised), and the parameters theta of g take ``adapt_steps``
    gradient steps on the weighted log-likelihood of the neighbours plus the pull-back
    ``adapt_reg * ||theta - theta_0||^2`` (the paper's eq. 1); the query is predicted with the
    adapted parameters, which are then discarded. All queries adapt together, without a loop over
    queries: the steps are written out in closed form, and the first layer of g, whose update lies
    in the span of the K neighbours' keys, adapts in that span
    (``sksemiparam.nn.adapt_and_predict``).

    Parameters
    ----------
    inference : {"adapt", "parametric", "memory", "mixture"}, default="adapt"
        ``"adapt"``: MbPA. ``"parametric"``: g(f(x)) without adaptation. ``"memory"``: the
        kernel-weighted vote of the neighbours' labels. ``"mixture"``: ``mixture_weight *
        p_parametric + (1 - mixture_weight) * p_memory`` (the paper's eq. 2). All four use the
        same fitted model, so they can be compared with ``set_params`` alone.
    n_neighbors : int, "auto" or None, default="auto"
        K, memory entries retrieved per query. ``"auto"``: 32, or all entries when fewer are
        stored. None: every entry. An integer larger than the memory holds after ``fit`` is an
        error.
    memory_size : int or None, default=None
        Capacity of the episodic memory; None keeps every training example.
    memory_policy : {"fifo", "reservoir", "class_balanced"}, default="fifo"
        Which examples a full memory keeps. ``"fifo"``: the newest (each new entry replaces the
        oldest); ``"reservoir"``: a uniform random sample of every example written (reservoir
        sampling); ``"class_balanced"``: about equal shares of the classes seen, each a uniform
        sample of its class (class-balancing reservoir sampling, Chrysakis and Moens 2020). On a
        stream of tasks, FIFO keeps the last task only once the stream outgrows the memory; the
        two samplers keep examples of every task. Not the paper's (its memory is FIFO or
        unbounded); draws seeded by ``random_state``.
    adapt_steps : int, default=5
        Gradient steps of the local adaptation; 0 gives the parametric prediction.
    adapt_lr : float, default=0.1
        Step size of the local adaptation (alpha_M). The right size depends on the scale of the
        keys (the gradient with respect to a linear output layer grows with ||h||): tune it with
        ``adapt_steps`` on validation data, as the paper did; predictions need no refit.
    adapt_reg : float, default=0.1
        Strength of the pull-back term ``||theta - theta_0||^2`` (the prior log p(theta^x | theta)).
    kernel_epsilon : float, default=1e-3
        epsilon of the kernel 1 / (epsilon + ||h - q||^2).
    mixture_weight : float, default=0.5
        lambda of ``inference="mixture"``.
    embedding : {"mlp", "conv", "identity"} or callable, default="mlp"
        f: ``"mlp"``, the Appendix-B ``"conv"`` network (needs ``image_shape``), ``"identity"`` (the
        features are the keys, the paper's permuted-MNIST setting) or
        ``factory(n_features, embedding_dim) -> torch.nn.Module``.
    hidden_layer_sizes : tuple of int, default=(32,)
        Hidden widths of the ``"mlp"`` embedding.
    embedding_dim : int, default=32
        Size of the keys f(x) (ignored with ``"identity"``).
    image_shape : tuple of int, default=None
        ``(channels, height, width)`` for ``embedding="conv"``.
    head_layer_sizes : tuple of int, default=()
        Hidden widths of the output network g, whose parameters adapt; ``()`` is a linear layer.
    .. shared:: index index_params max_epochs
    batch_size : int, default=100
        Mini-batch size.
    .. shared:: learning_rate weight_decay early_stopping validation_fraction n_iter_no_change tol warm_start
    ewc_lambda : float, default=0.0
        Strength of the elastic-weight-consolidation penalty that ``end_task`` sets up for
        continual learning with ``partial_fit``; 0 turns it off. With ``end_task``, gives the
        paper's MbPA + EWC combination.
    .. shared:: device num_threads precision random_state verbose

    Attributes
    ----------
    .. shared:: classes_ n_features_in_ feature_names_in_
    module_ : MbPANet
        The trained torch module: the embedding f and the output network g.
    memory_ : ExampleMemory
        The episodic memory: ``memory_.keys`` and ``memory_.y``; ``len(memory_)`` is the number of
        stored entries.
    index_ : NeighborIndex
        Search structure over the memory's keys, refreshed at the end of every fit/partial_fit.
    .. shared:: device_ n_iter_ loss_curve_ best_loss_ validation_scores_ best_validation_score_ ewc_state_

    See Also
    --------
    SemiparametricClassifier : nearest-neighbour information as a feature, learned end to end.

    Notes
    -----
    Keys are written with the embedding of the moment, after each optimisation step, and are not
    refreshed later (the paper's memory); with a trained f they age as f changes. An example
    written again (the same row with the same label, in a later epoch or a later ``partial_fit``
    call) overwrites its own entry with the new key, so looping ``partial_fit`` over the same data
    stores no copies; equal rows within one call's data are separate entries, as given.

    References
    ----------
    P. Sprechmann, S. M. Jayakumar, J. W. Rae, A. Pritzel, A. P. Badia, B. Uria, O. Vinyals,
    D. Hassabis, R. Pascanu and C. Blundell. "Memory-based Parameter Adaptation". ICLR 2018.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sksemiparam import MbPAClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MbPAClassifier(max_epochs=5, random_state=0).fit(X / 16, y)
    >>> len(clf.memory_)
    1797
    >>> clf.predict(X[:3] / 16).shape
    (3,)
    """

    _parameter_constraints: dict = {
        "inference": [StrOptions({"adapt", "parametric", "memory", "mixture"})],
        "memory_size": [Interval(Integral, 1, None, closed="left"), None],
        "memory_policy": [StrOptions(set(MEMORY_POLICIES))],
        "adapt_steps": [Interval(Integral, 0, None, closed="left")],
        "adapt_lr": [Interval(Real, 0, None, closed="left")],
        "adapt_reg": [Interval(Real, 0, None, closed="left")],
        "kernel_epsilon": [Interval(Real, 0, None, closed="neither")],
        "mixture_weight": [Interval(Real, 0, 1, closed="both")],
        "head_layer_sizes": ["array-like"],
    }

    def __init__(
        self,
        inference="adapt",
        *,
        n_neighbors="auto",
        memory_size=None,
        memory_policy="fifo",
        adapt_steps=5,
        adapt_lr=0.1,
        adapt_reg=0.1,
        kernel_epsilon=1e-3,
        mixture_weight=0.5,
        embedding="mlp",
        hidden_layer_sizes=(32,),
        embedding_dim=32,
        image_shape=None,
        head_layer_sizes=(),
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
        self.inference = inference
        self.n_neighbors = n_neighbors
        self.memory_size = memory_size
        self.memory_policy = memory_policy
        self.adapt_steps = adapt_steps
        self.adapt_lr = adapt_lr
        self.adapt_reg = adapt_reg
        self.kernel_epsilon = kernel_epsilon
        self.mixture_weight = mixture_weight
        self.head_layer_sizes = head_layer_sizes
        self.index = index
        self.index_params = index_params

    # ------------------------------------------------------------------ hooks
    def _check_adaptation(self):
        # Each step moves theta back toward theta_0 by the factor 1 - 2 adapt_lr adapt_reg: at
        # adapt_lr * adapt_reg >= 1 it overshoots theta_0 by as much as it corrects, or more.
        if self.adapt_steps and self.adapt_lr * self.adapt_reg >= 1:
            raise ValueError(
                f"`adapt_lr` * `adapt_reg` = {self.adapt_lr * self.adapt_reg:g} makes every adaptation step "
                "overshoot the trained parameters (the pull-back factor 1 - 2 * adapt_lr * adapt_reg is "
                "<= -1); pass values whose product is below 1, e.g. adapt_lr=0.1, adapt_reg=0.1"
            )

    # A warm-started fit writes into the memory it has, as training steps always do.
    _warm_fit_keeps_memory = True

    def _check_fit_data(self, X, y, *, first_pass, incremental):
        self._check_adaptation()
        super()._check_fit_data(X, y, first_pass=first_pass, incremental=incremental)

    def _new_memory(self, device):
        if self.memory_policy == "fifo":  # draws nothing (the generator's stream stays as it was)
            return ExampleMemory(capacity=self.memory_size, store_inputs=False, device=device)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))
        return ExampleMemory(
            capacity=self.memory_size,
            policy=self.memory_policy,
            random_state=seed,
            store_inputs=False,
            device=device,
        )

    def _build_module(self, n_features, n_outputs):
        self.memory_ = self._new_memory(self.device_)
        self.index_ = None
        # Drawn once: predicting must not consume the training generator.
        self._index_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))
        return MbPANet(
            embedding=self._make_embedding(n_features),
            embedding_dim=self._embedding_out_dim(n_features),
            n_classes=n_outputs,
            head_layer_sizes=tuple(self.head_layer_sizes),
        )

    def _loss(self, X, y, ids):
        return F.nll_loss(self.module_(X), y)

    def _before_epoch(self, X, y, epoch):
        if epoch == 0:  # each row's identity in the memory, for the writes of this call
            self._call_identities = row_identities(X, y)

    def _after_step(self, X, y, ids):
        # The memory stores the batch under the embedding just updated (eval mode: no dropout).
        # NOTE[paper]: entries are per training example: a row seen again in a later epoch (or call)
        # overwrites its entry instead of adding a copy.
        self.module_.eval()
        with torch.no_grad(), self._autocast():  # keys stored in float32 whatever the precision
            keys = self.module_.embed(X).float()
        self.memory_.write([self._call_identities[i] for i in ids.tolist()], y, keys=keys)
        self.module_.train()

    def _on_train_end(self, X, y, *, incremental):
        self._call_identities = None
        self._index_memory()

    def _before_validation(self, X, y):
        self._index_memory()

    def _index_memory(self):
        """Index the memory's keys for prediction (exact search shares their storage)."""
        self.index_ = self._new_index(self._index_seed).build(self._check_finite_keys(self.memory_.keys))

    def _fisher_outputs(self, X):
        return self.module_(X)  # EWC protects the parametric model

    def _upgrade_state(self, state):
        from .nn.memory import EpisodicMemory

        if isinstance(state.get("memory_"), EpisodicMemory):  # sksemiparam 0.1's memory
            state["memory_"] = ExampleMemory.from_episodic_state(vars(state["memory_"]))
            state.pop("_rows_seen", None)

    def _to_device(self, device):
        if self.device_ == device:
            return
        super()._to_device(device)
        self._index_memory()  # exact search shares the keys' storage: index the moved keys

    # -------------------------------------------------------------- prediction
    def _forward(self, X):
        module = self.module_
        q = module.embed(X)
        if self.inference == "parametric":
            return torch.log_softmax(module.head(q), dim=1)
        if self.inference == "adapt":
            self._check_adaptation()
        k = self._n_neighbors(len(self.memory_))
        # Search without gradients, then re-score the retrieved keys.
        with torch.no_grad():
            _, ids = self.index_.query(q.detach(), k)
        if self.inference == "adapt":
            return self._adapt(q, ids)
        keys, labels, weights = self._neighbours(q, ids)
        if self.inference == "memory":
            return torch.log(memory_vote(labels, weights, module.n_classes).clamp_min(_MIN_PROBA))
        # "mixture"
        p = self.mixture_weight * torch.softmax(module.head(q), dim=1)
        p = p + (1.0 - self.mixture_weight) * memory_vote(labels, weights, module.n_classes)
        return torch.log(p.clamp_min(_MIN_PROBA))

    def _neighbours(self, q, ids):
        """The retrieved entries' keys (n, K, e) and labels (n, K), and their kernel weights (n, K)."""
        keys, labels = self.memory_.keys[ids], self.memory_.y[ids]
        sq_dist = (keys - q[:, None, :]).square_().sum(-1)  # in place: one (n, K, e) temporary
        return keys, labels, memory_kernel_weights(sq_dist, self.kernel_epsilon)

    def _adapt(self, q, ids):
        """MbPA's prediction (eq. 1), over chunks of queries that bound the memory it takes."""
        head, (k, dim) = self.module_.head, (ids.shape[1], q.shape[1])
        # Per query: the gathered keys, their difference to the query, and the adaptation's state.
        per_query = 2 * k * dim + adaptation_floats(head, k, dim, self.adapt_steps)
        step = max(1, _ADAPT_CHUNK_FLOATS // per_query)
        out = []
        for s in range(0, q.shape[0], step):
            chunk = q[s : s + step]
            keys, labels, weights = self._neighbours(chunk, ids[s : s + step])
            settings = {"steps": self.adapt_steps, "lr": self.adapt_lr, "reg": self.adapt_reg}
            out.append(adapt_and_predict(head, chunk, keys, labels, weights, **settings))
        return torch.cat(out)
