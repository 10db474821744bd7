"""The machinery NNGK and the Impostor Network share: training examples as centres, a kernel vote.

``KernelVoteClassifierBase`` stores training examples as centres, keeps their positions in a
neighbour index, refreshes them, and classifies a query by the Gaussian-kernel vote of its nearest
centres (eq. 7 / eq. 9 of the review). Subclasses decide where the centres come from
(``_center_keys``), what scores them (``_scored_centers``), what their labels are
(``_center_targets``) and what grows with them (``_on_centers_added``).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._base import TorchClassifierBase, _torch_threads
from ._memory import ExampleMemory, RetrievalMixin


class KernelVoteClassifierBase(RetrievalMixin, TorchClassifierBase):
    """Training examples as centres in an embedding space, classified by a kernel vote of the nearest.

    Not for direct use: see ``NNGKClassifier`` and ``ImpostorClassifier``.
    """

    _parameter_constraints: dict = {
        "sigma": [Interval(Real, 0, None, closed="neither"), StrOptions({"scale"})],
        "learn_sigma": ["boolean"],
        "refresh_every": [Interval(Integral, 1, None, closed="left")],
        "candidates": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="right"),
            None,
        ],
    }
    _stored_name = "training samples stored as centres"
    # NOTE[paper]: no ReLU after the embedding's last layer: the centres live in an unconstrained
    # metric space (the papers use VGG/ResNet/SqueezeNet features; the activation is not specified).
    _embedding_final_activation = False
    # One row per centre: these grow and shrink with the memory, and are the memory itself rather
    # than weights earlier tasks depend on.
    _ewc_exclude = ("log_importance", "centers")
    # While training with sampled candidates: (a permutation of the stored rows, how many are drawn).
    _candidate_pool = None
    # Centres whose nearest distinct centre sets sigma="scale". On MNIST's 60,000 untrained
    # embeddings (5 draws each) the median came out 0.262 +- 1.0% from 1,000 centres and 0.265 +-
    # 0.8% from 256, whose search took 0.09 s instead of 0.50 s (a third of a softmax epoch).
    _SCALE_SAMPLE = 256

    # ------------------------------------------------------- subclass hooks
    def _center_keys(self, X_new=None):
        """Positions of the centres for the index: of the new rows ``X_new``, or of all centres."""
        return self._embed_rows(self.memory_.X if X_new is None else X_new)

    def _scored_centers(self, ids):
        """The positions the vote scores (with autograd where the centres learn)."""
        return self.index_.keys if ids is None else self.index_.keys[ids]

    def _center_targets(self):
        """Each centre's label: encoded classes (N,), or class distributions (N, n_classes)."""
        return self.memory_.y

    def _on_centers_added(self, keys_new):
        """Grow per-centre state for newly stored centres whose index keys are ``keys_new``."""
        self._resize_rows("log_importance", new_rows=torch.zeros(keys_new.shape[0]))

    def _upgrade_state(self, state):
        if "centers_X_" in state:  # sksemiparam 0.1 kept the centres as two tensors
            X, y = state.pop("centers_X_"), state.pop("centers_y_")
            for name in ("_call_offset", "_center_digests", "_row_centers", "_phase"):
                state.pop(name, None)
            state["memory_"] = ExampleMemory.from_inputs(X, y)
            state["_row_center_map"] = None
            state["_continual"] = False

    @property
    def centers_X_(self):
        return self.memory_.X

    @property
    def centers_y_(self):
        return self.memory_.y

    def _init_centers(self):
        """Fitted state of the centres, reset when the module is (re)built."""
        self.memory_ = self._new_memory(self.device_)
        self.index_ = None
        self._row_center_map = None  # this call's row -> centre id (-1: the row is not a centre)
        self._epochs_since_refresh = 0
        self._sigma_pending = self.sigma == "scale"
        self._candidate_pool = None

    def _before_epoch(self, X, y, epoch):
        if epoch > 0 and self.candidates is not None:
            return  # sampled candidates: no search while training, centres recomputed at the end
        if epoch == 0:  # this call's rows become centres: all of them (fit), or new ones (partial_fit)
            self._store_centers(X, y)
        elif self._epochs_since_refresh >= self.refresh_every:
            self._refresh()
        self._epochs_since_refresh += 1

    def _before_validation(self, X, y):
        # Sampled candidates search nothing while training, so the index still holds the centres
        # of the first epoch: bring it up to date before validation scores the model.
        if self.candidates is not None:
            self._refresh()

    def _store_centers(self, X, y):
        """Store the rows of this call as centres: a new set for ``fit``; for ``partial_fit`` those
        not stored yet. A row stored by an earlier call (partial_fit passes over the same data) keeps
        its centre, which is its own centre to leave out of its vote."""
        replace = not (self._incremental and len(self.memory_))
        self._candidate_pool = None  # every call draws from a permutation of its own
        if replace:
            self._reset_rows()
            self.index_ = None
        self._row_center_map = torch.from_numpy(self._add_centers(X, y, replace=replace))
        if self._sigma_pending:
            self._set_sigma_from_scale()

    def _add_centers(self, X, y, *, replace=False):
        """Store rows as centres (the new ones embedded with the current network and indexed);
        returns each row's centre id."""
        n_old = 0 if replace else len(self.memory_)
        slots = self._remember(X, y, replace=replace)
        new = np.flatnonzero(slots >= n_old)  # in row order, so their slots are n_old, n_old + 1, ...
        if new.size == 0:
            return slots
        rows = X if new.size == X.shape[0] else X[new]  # every row new (fit): no copy of X
        keys = self._check_finite_keys(self._center_keys(rows), X)
        self._on_centers_added(keys)
        if self.index_ is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))
            self.index_ = self._new_index(seed).build(keys)
        else:  # only the new centres; all are refreshed at the end of the call
            self.index_.add(keys)
        return slots

    def _set_sigma_from_scale(self):
        """sigma = the median distance from a centre to its nearest distinct centre (``_SCALE_SAMPLE``
        sampled centres, each searched among all)."""
        n = len(self.index_)
        if n < 2:
            return  # keep 1.0 until there are two centres
        rows = torch.randperm(n, generator=self._generator)[: self._SCALE_SAMPLE]
        rows = rows.to(self.index_.keys.device)
        sq, _ = self.index_.query(self.index_.keys[rows], min(n - 1, 16), exclude=rows)
        # Duplicated rows are at distance 0 from each other: they say nothing about the scale, and a
        # width of ~0 would turn float rounding into decisive vote differences. Each sampled centre
        # counts with its nearest centre at a distance > 0 (among its 16 nearest).
        nonzero = sq > 0
        found = nonzero.any(1)
        if not found.any():
            return  # every sampled centre duplicates others: keep 1.0 until the data say more
        first = sq[found].gather(1, nonzero[found].int().argmax(1, keepdim=True))
        median = float(first.median().sqrt())
        with torch.no_grad():
            self.module_.log_sigma.fill_(np.log(median))
        self._sigma_pending = False

    def _reset_rows(self):
        """Empty every per-centre parameter (a new fit replaces the centres)."""
        for name in ("log_importance", "centers"):
            param = getattr(self.module_, name, None)
            if param is not None and param.shape[0]:
                self._resize_rows(name, keep=torch.zeros(param.shape[0], dtype=torch.bool))

    def _resize_rows(self, name, *, keep=None, new_rows=None):
        """Drop rows (``keep`` mask) and/or append ``new_rows`` to a per-centre parameter of the
        module, keeping AdamW's moment estimates row for row (new rows start at zero) and, for
        rows updated lazily (``_lazy_adam``), the step each row is up to date with (new rows: now)."""
        module = self.module_
        old = getattr(module, name)
        data = old.detach()
        moments = {}
        optimizer = self._get_optimizer()
        state = optimizer.state.pop(old, None) or {}
        for key in ("exp_avg", "exp_avg_sq", "row_step"):
            if key in state:
                moments[key] = state[key]
        if keep is not None:
            keep = keep.to(data.device)
            data = data[keep]
            moments = {k: v[keep] for k, v in moments.items()}
        if new_rows is not None:
            new_rows = new_rows.to(data.device, data.dtype)
            if data.ndim == 2 and data.shape[1] != new_rows.shape[1]:  # the first centres set the width
                data = data.new_zeros(0, new_rows.shape[1])
                moments = {}
            data = torch.cat([data, new_rows])
            for key, value in moments.items():
                if key == "row_step":  # new rows are up to date with the current step
                    fill = torch.full((new_rows.shape[0],), float(state["step"]), device=value.device)
                else:
                    fill = torch.zeros_like(new_rows)
                moments[key] = torch.cat([value, fill.to(value.dtype)])
        new = nn.Parameter(data, requires_grad=old.requires_grad)
        for group in optimizer.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]
        if state:
            state.update(moments)
            optimizer.state[new] = state
        setattr(module, name, new)

    def _refresh(self):
        """Recompute the centres' positions (``_center_keys``) and rebuild the index."""
        keys = self._check_finite_keys(self._center_keys())
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))
        self.index_ = self._new_index(seed).build(keys)
        self._epochs_since_refresh = 0

    def _log_proba(self, z, exclude=None):
        """Eq. (7) for embeddings z against the centres; ``exclude``: each row's own centre id."""
        module, n_centers = self.module_, len(self.index_)
        available = n_centers - (1 if exclude is not None else 0)
        if available < 1:  # a single stored example cannot vote for itself: uniform
            return torch.full((z.shape[0], module.n_classes), -np.log(module.n_classes), device=z.device)
        targets = self._center_targets()
        if self.n_neighbors is None:  # dense: every centre, in chunks of queries
            ids = torch.arange(n_centers, device=self.index_.keys.device)
            return torch.cat(
                [
                    module.log_proba(
                        z[rows],
                        self._scored_centers(None),
                        ids,
                        targets,
                        None if exclude is None else exclude[rows],
                    )
                    for rows in self._dense_chunks(z.shape[0], n_centers)
                ]
            )
        k = self._n_neighbors(available)
        with torch.no_grad():  # search without gradients, then score the retrieved centres with autograd
            _, ids = self.index_.query(z.detach(), k, exclude=exclude)
        return module.log_proba(z, self._scored_centers(ids), ids, targets[ids])

    def _row_center_ids(self, ids):
        """The centre id of each training row of this call (-1: the row is not a centre)."""
        return self._row_center_map.to(ids.device)[ids]

    def _training_vote(self, X, ids):
        """The batch's embeddings z, its log-probabilities and each row's own centre id (-1: none).

        ``candidates`` None: eq. (7) over each row's nearest centres, searched in the index.
        Otherwise a dense vote over stored rows drawn at random (``_sampled_candidates``).
        """
        own = self._row_center_ids(ids)
        if self.candidates is None:
            z = self.module_(X)
            return z, self._log_proba(z, exclude=own), own
        n_stored = len(self.memory_)
        m = self.candidates
        m = min(m if isinstance(m, Integral) else max(1, int(round(m * n_stored))), n_stored)
        z, positions, drawn = self._sampled_candidates(X, own, m)
        targets = self._center_targets()[drawn.clamp_min(0)]
        log_p = self.module_.log_proba(z, positions, drawn, targets, own)
        return z, log_p, own

    def _sampled_candidates(self, X, own, m):
        """(z, candidate positions, candidate centre ids; -1: no vote) for a step against m
        candidates, embedded with autograd in the batch's forward pass.

        The batch's own rows are stored centres drawn at random too, so they are candidates (each
        row's own centre left out of its vote): only the m minus batch-size others are drawn and
        embedded besides, where drawing all m apart from the batch embedded m + batch rows a step
        (2.3x a softmax network's at 128 candidates and batch 100). A batch holding more than m
        stored rows votes over the first m of them (the batch is a shuffled draw; all of them made a
        step quadratic in the batch size: 10,000 x 10,000 at batch 10,000, `predict-scale`). A
        batch row that is not stored (a continual pass) is no candidate and does not count towards
        m; a drawn row that is also in the batch votes once (its second copy is an empty slot).
        """
        n = X.shape[0]
        # Only stored rows are candidates (a continual pass trains rows not stored yet). ``own``
        # comes from the host-side row map (the batch ids are on the CPU): counting is no GPU sync.
        stored = own >= 0
        n_own = int(stored.sum())
        n_extra = m - n_own
        own = own.to(self.memory_.y.device)
        if n_extra <= 0:
            z = self.module_(X)
            if n_extra == 0:
                return z, z, own
            positions = stored.nonzero()[:m, 0]  # (host-side: no sync)
            return z, z[positions.to(z.device)], own[positions.to(own.device)]
        n_stored = len(self.memory_)
        extra = self._draw_candidates(n_extra, n_stored).to(own.device)
        in_batch = torch.zeros(n_stored + 1, dtype=torch.bool, device=own.device)
        in_batch[own] = True  # (own = -1, a row not stored, marks the spare last slot)
        extra = torch.where(in_batch[extra], -1, extra)
        rows = self.memory_.X[extra.clamp_min(0)].to(X.device, X.dtype)
        z_all = self.module_(torch.cat([X, rows]))
        return z_all[:n], z_all, torch.cat([own, extra])

    def _draw_candidates(self, m, n):
        """m distinct stored rows of n, at random: successive slices of one random permutation,
        drawn again when used up (a 60,000-row permutation per step was 12% of an MNIST step)."""
        if m >= n:
            return torch.arange(n)
        pool, used = self._candidate_pool if self._candidate_pool is not None else (None, n)
        if pool is None or pool.shape[0] != n or used + m > n:
            pool, used = torch.randperm(n, generator=self._generator), 0
        self._candidate_pool = (pool, used + m)
        return pool[used : used + m]

    def _loss(self, X, y, ids):
        _, log_p, _ = self._training_vote(X, ids)
        return F.nll_loss(log_p, y)

    def _on_train_end(self, X, y, *, incremental):
        self._candidate_pool = None
        # After fit, predictions use centres from the final network; after partial_fit, every
        # refresh_every calls.
        if not incremental or self._epochs_since_refresh >= self.refresh_every:
            self._refresh()

    # Fitted tensors of a subclass to move with the model.
    _device_tensors: tuple[str, ...] = ()

    def _to_device(self, device):
        if self.device_ == device:
            return
        super()._to_device(device)
        for name in self._device_tensors:
            if getattr(self, name, None) is not None:
                setattr(self, name, getattr(self, name).to(device))

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
                Their classes as stored (from ``classes_``).
            weights : ndarray (n_samples, k)
                Their normalised vote weights w_i k(z, c_i) / sum over the k (the terms of eq. 7).
            distances : ndarray (n_samples, k)
                Squared Euclidean distances in the embedding space.
        """
        check_is_fitted(self)
        n_centers = len(self.index_)
        k = n_neighbors if n_neighbors is not None else self._n_neighbors(n_centers)
        if isinstance(k, bool) or not isinstance(k, Integral) or not 1 <= k <= n_centers:
            raise ValueError(
                f"`n_neighbors` must be an int in [1, {n_centers}] (the stored centres), got {k!r}"
            )
        X_t = self._prepare_predict(X)
        with torch.no_grad(), _torch_threads(self):
            z = self._embed_rows(X_t, queries=True)
            sq, ids = self.index_.query(z, int(k))
            log_w = -sq / (2 * self.module_.sigma**2) + self.module_.log_importance[ids]
            weights = torch.softmax(log_w, dim=1)
        ids_np = ids.cpu().numpy()
        return Bunch(
            indices=ids_np,
            labels=self.classes_[self.memory_.y.cpu().numpy()[ids_np]],
            weights=weights.double().cpu().numpy(),
            distances=sq.double().cpu().numpy(),
        )
