"""NeighborIndex: k-nearest-neighbour search over stored keys, exact or approximate.

Every estimator here that retrieves neighbours goes through this one small interface::

    index = NeighborIndex("auto").build(keys)     # keys: (N, d) tensor
    index.add(more_keys)                          # grows the index, ids continue at N
    dist, ids = index.query(queries, k, exclude=own_ids)

Distances are squared Euclidean. Two backends sit behind it:

- ``"exact"``: torch, on the keys' device, chunked ``cdist`` + ``topk``, so memory stays bounded, then
  the candidates re-scored in float64 and ranked by (distance, id);
- ``"approximate"``: a pynndescent nearest-neighbour graph. pynndescent (and numba) are imported only
  here, on first use: their JIT compilation costs tens of seconds in every new process.

``"auto"`` picks exact below ``AUTO_THRESHOLD`` stored keys and approximate above (see the ``index``
benchmark for the measurement behind the number).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["AUTO_THRESHOLD", "NeighborIndex"]

# Exact search below this many stored keys, approximate above. Measured by `python -m benchmarks index`
# (d = 32, clustered keys, 10k queries, 2 CPU cores): the approximate backend answers queries faster
# from ~3e3 keys on, but building its graph costs as much as 10k exact queries up to ~2e5 keys, its
# recall is < 1, and numba compiles for 30-100 s in every new process. An estimator builds its index
# once per fit and queries it at every predict, so exact search stays cheaper until a few 1e5 keys.
AUTO_THRESHOLD = 300_000

# Exact search works on blocks of this many queries x _EXACT_KEY_BLOCK keys (64 MiB of float32
# distances), merging the running top-k across key blocks, so its cost stays linear in N.
_EXACT_QUERY_BLOCK = 1024
_EXACT_KEY_BLOCK = 16384
# Float32 candidates re-scored in float64 per query beyond the k requested, and the size (elements)
# of the float64 difference blocks of rows that need scoring against every key.
_RESCORE_MARGIN = 16
_FLOAT64_ELEMENTS = 1 << 22


def _check_2d(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (n, d), got shape {tuple(x.shape)}")
    return x


class NeighborIndex:
    """k-nearest-neighbour search under squared Euclidean distance.

    Parameters
    ----------
    method : {"auto", "exact", "approximate"}, default="auto"
        Backend. ``"auto"`` uses exact search while fewer than ``auto_threshold`` keys are stored
        and a pynndescent graph from then on.
    auto_threshold : int, default=AUTO_THRESHOLD
        Number of stored keys from which ``"auto"`` switches to the approximate backend.
    graph_degree : int, default=30
        Out-degree of the pynndescent graph (its ``n_neighbors``). Larger is slower to build and
        more accurate.
    epsilon : float, default=0.3
        pynndescent's search-breadth parameter at query time; larger is slower and more accurate.
    search_tree_leaf_budget : int, default=4
        Leaves of pynndescent's search tree visited to start each query. Embeddings of a trained
        model form tight clusters whose neighbour graph falls apart into one piece per cluster; a
        query started in the wrong piece finds none of its neighbours, whatever ``epsilon``. With
        the pynndescent default of 1, 4-9% of queries were lost so on clustered data (recall@10
        0.91 at 10k keys); with 4, under 1.1% (recall >= 0.975), at the same build time.
    random_state : int or None, default=None
        Seed of the approximate graph's construction.
    n_jobs : int or None, default=None
        Threads of the approximate backend (pynndescent's ``n_jobs``).

    Attributes
    ----------
    backend_ : {"exact", "approximate"}
        The backend in use after ``build``.
    """

    def __init__(
        self,
        method: str = "auto",
        *,
        auto_threshold: int = AUTO_THRESHOLD,
        graph_degree: int = 30,
        epsilon: float = 0.3,
        search_tree_leaf_budget: int = 4,
        random_state: int | None = None,
        n_jobs: int | None = None,
    ) -> None:
        if method not in ("auto", "exact", "approximate"):
            raise ValueError(f"`method` must be 'auto', 'exact' or 'approximate', got {method!r}")
        if auto_threshold < 1:
            raise ValueError(f"`auto_threshold` must be >= 1, got {auto_threshold}")
        if graph_degree < 2:
            raise ValueError(f"`graph_degree` must be >= 2, got {graph_degree}")
        self.method = method
        self.auto_threshold = auto_threshold
        self.graph_degree = graph_degree
        self.epsilon = epsilon
        self.search_tree_leaf_budget = search_tree_leaf_budget
        self.random_state = random_state
        self.n_jobs = n_jobs
        self._keys: torch.Tensor | None = None
        self._graph = None  # pynndescent.NNDescent, never pickled: rebuilt on first use
        self._graph_size = 0  # number of keys the graph holds

    # ------------------------------------------------------------------ building
    def build(self, keys: torch.Tensor) -> NeighborIndex:
        """Replace the stored keys with ``keys`` (N, d) and index them."""
        keys = _check_2d("keys", keys).detach()
        if keys.shape[0] == 0:
            raise ValueError("cannot build a NeighborIndex from 0 keys")
        if not torch.isfinite(keys).all():
            raise ValueError("`keys` contains NaN or infinity")
        self._keys = keys.contiguous()
        self._graph = None
        self._graph_size = 0
        self.backend_ = self._choose_backend(keys.shape[0])
        if self.backend_ == "approximate":
            self._build_graph()
        return self

    def add(self, keys: torch.Tensor) -> NeighborIndex:
        """Append ``keys`` (n, d); their ids continue after the stored ones."""
        if self._keys is None:
            return self.build(keys)
        keys = _check_2d("keys", keys).detach().to(self._keys.device, self._keys.dtype)
        if keys.shape[1] != self._keys.shape[1]:
            raise ValueError(
                f"`keys` have {keys.shape[1]} dimensions but the index stores {self._keys.shape[1]}"
            )
        if not torch.isfinite(keys).all():
            raise ValueError("`keys` contains NaN or infinity")
        self._keys = torch.cat([self._keys, keys])
        backend = self._choose_backend(self._keys.shape[0])
        if backend == "approximate" and self.backend_ == "approximate" and self._graph is not None:
            # pynndescent grows its graph in place (update), cheaper than a rebuild.
            self._graph.update(keys.cpu().numpy().astype(np.float32, copy=False))
            self._graph.prepare()
            self._graph_size = self._keys.shape[0]
        elif backend == "approximate":
            self._graph = None  # built lazily at the next query
        self.backend_ = backend
        return self

    def _choose_backend(self, n: int) -> str:
        if self.method == "auto":
            return "approximate" if n >= self.auto_threshold else "exact"
        return self.method

    def _build_graph(self) -> None:
        import pynndescent  # lazy: numba compiles on first use, tens of seconds per process

        data = self._keys.cpu().numpy().astype(np.float32, copy=False)
        self._graph = pynndescent.NNDescent(
            data,
            metric="sqeuclidean",
            n_neighbors=min(self.graph_degree, max(data.shape[0] - 1, 1)),
            search_tree_leaf_budget=self.search_tree_leaf_budget,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            low_memory=True,
        )
        self._graph.prepare()
        self._graph_size = data.shape[0]

    # ------------------------------------------------------------------ querying
    def __len__(self) -> int:
        return 0 if self._keys is None else int(self._keys.shape[0])

    @property
    def keys(self) -> torch.Tensor:
        """The stored keys (N, d)."""
        if self._keys is None:
            raise RuntimeError("NeighborIndex is empty: call build() first")
        return self._keys

    def query(
        self, queries: torch.Tensor, k: int, *, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` nearest stored keys of each query.

        Parameters
        ----------
        queries : Tensor of shape (n, d)
        k : int
            Neighbours per query, ``1 <= k <= len(self)`` (``len(self) - 1`` with ``exclude``).
        exclude : LongTensor of shape (n,), optional
            Per query, the id of a stored key it must not retrieve (its own), or -1 for none.

        Returns
        -------
        distances : Tensor of shape (n, k)
            Squared Euclidean distances, ascending, on the keys' device.
        ids : LongTensor of shape (n, k)
        """
        keys = self.keys
        queries = _check_2d("queries", queries).detach().to(keys.device, keys.dtype)
        if queries.shape[1] != keys.shape[1]:
            raise ValueError(
                f"`queries` have {queries.shape[1]} dimensions but the index stores {keys.shape[1]}"
            )
        available = len(self) - (1 if exclude is not None else 0)
        if not 1 <= k <= available:
            raise ValueError(
                f"`k`={k} neighbours requested but only {available} stored keys can be returned; "
                f"pass 1 <= k <= {available}"
            )
        if exclude is not None:
            exclude = torch.as_tensor(exclude, dtype=torch.long, device=keys.device).reshape(-1)
            if exclude.shape[0] != queries.shape[0]:
                raise ValueError(
                    f"`exclude` has {exclude.shape[0]} entries but there are {queries.shape[0]} queries"
                )
        if queries.shape[0] == 0:
            empty = torch.empty(0, k, device=keys.device)
            return empty, empty.long()
        if self.backend_ == "exact":
            return self._query_exact(queries, k, exclude)
        return self._query_approximate(queries, k, exclude)

    def _query_exact(self, queries, k, exclude):
        """Exact search in two stages: float32 ``cdist`` finds candidates, float64 ranks them.

        ``cdist``'s matrix-product formula leaves rounding noise of about dim * eps * (|q|^2 + |k|^2)
        that depends on where a query sits in its batch, so on its own it ranks near-ties and
        duplicated keys by noise. The ``k + _RESCORE_MARGIN`` float32 candidates are therefore
        re-scored as float64 sums of squared differences (exact for float32 inputs to ~1e-16, and
        identical keys get identical distances), ranked by (distance, id). Where a key outside the
        candidates could still rank among the k (many keys within the float32 noise of the k-th,
        e.g. duplicated keys), the whole row is scored in float64 instead.
        """
        keys = self.keys
        n_keys = keys.shape[0]
        available = n_keys - (1 if exclude is not None else 0)
        n_candidates = min(available, k + _RESCORE_MARGIN)
        eps = torch.finfo(keys.dtype).eps
        noise = 8 * keys.shape[1] * eps  # float32 cdist's error, relative to |q|^2 + |k|^2
        same = keys.shape[1] * (4 * eps) ** 2  # below this (relative) two embeddings are one row
        key_norms = keys.double().square().sum(1)
        dists, ids = [], []
        for qs in range(0, queries.shape[0], _EXACT_QUERY_BLOCK):
            q = queries[qs : qs + _EXACT_QUERY_BLOCK]
            own = None if exclude is None else exclude[qs : qs + _EXACT_QUERY_BLOCK]
            d32, cand = self._exact_candidates(q, n_candidates, own)
            q64 = q.double()
            q_norms = q64.square().sum(1, keepdim=True)
            d64 = _sq_distances64(q64, keys, cand)
            d64 = _snap_to_zero(d64, same * (q_norms + key_norms[cand]))
            d, i = _rank(d64, cand, k)
            if n_candidates < available:
                # A key left out has a float32 distance >= the last candidate's, so a true distance
                # >= that minus the noise; if that could reach the k-th, score the whole row.
                floor = d32[:, -1].double() - noise * (q_norms[:, 0] + key_norms.max())
                unsure = (floor <= d[:, -1]).nonzero()[:, 0]
                if unsure.numel():
                    d_all, i_all = self._exact_float64_rows(
                        q64[unsure], k, None if own is None else own[unsure], key_norms, same
                    )
                    d[unsure], i[unsure] = d_all, i_all
            dists.append(d.to(keys.dtype))
            ids.append(i)
        return torch.cat(dists), torch.cat(ids)

    def _exact_candidates(self, q, n_candidates, own):
        """The ``n_candidates`` smallest float32 ``cdist`` distances of each query, over key blocks."""
        keys = self.keys
        block = max(_EXACT_KEY_BLOCK, n_candidates)
        rows = torch.arange(q.shape[0], device=q.device)
        best_d = best_i = None
        for ks in range(0, keys.shape[0], block):
            d = torch.cdist(q, keys[ks : ks + block]).square_()
            if own is not None:  # the query's own key, when it falls in this block, is never a neighbour
                local = own - ks
                mine = (local >= 0) & (local < d.shape[1])
                d[rows[mine], local[mine]] = float("inf")
            d, i = _smallest(d, min(n_candidates, d.shape[1]))
            i += ks
            if best_d is not None:
                d, pos = _smallest(torch.cat([best_d, d], 1), n_candidates)
                i = torch.cat([best_i, i], 1).gather(1, pos)
            best_d, best_i = d, i
        return best_d, best_i

    def _exact_float64_rows(self, q64, k, own, key_norms, same):
        """The k nearest keys of each row of ``q64`` with every distance computed in float64."""
        keys = self.keys
        rows = torch.arange(q64.shape[0], device=q64.device)
        block = max(k, _FLOAT64_ELEMENTS // max(q64.shape[0] * keys.shape[1], 1))
        q_norms = q64.square().sum(1, keepdim=True)
        best_d = best_i = None
        for ks in range(0, keys.shape[0], block):
            chunk = torch.arange(ks, min(ks + block, keys.shape[0]), device=q64.device)
            d = _sq_distances64(q64, keys, chunk.expand(q64.shape[0], -1))
            d = _snap_to_zero(d, same * (q_norms + key_norms[chunk]))
            if own is not None:
                local = own - ks
                mine = (local >= 0) & (local < d.shape[1])
                d[rows[mine], local[mine]] = float("inf")
            d, i = _smallest(d, min(k, d.shape[1]))
            i += ks
            if best_d is not None:  # earlier blocks hold the lower ids: ties keep them first
                d, pos = _smallest(torch.cat([best_d, d], 1), k)
                i = torch.cat([best_i, i], 1).gather(1, pos)
            best_d, best_i = d, i
        return best_d, best_i

    def _query_approximate(self, queries, k, exclude):
        if self._graph is None or self._graph_size != len(self):
            self._build_graph()
        device = self.keys.device
        q = queries.cpu().numpy().astype(np.float32, copy=False)
        extra = 1 if exclude is not None else 0
        idx, dist = self._graph.query(q, k=k + extra, epsilon=self.epsilon)
        idx = torch.from_numpy(idx.astype(np.int64))
        dist = torch.from_numpy(dist.astype(np.float32))
        if exclude is not None:
            e = exclude.cpu()
            is_self = idx == e[:, None]
            # Keep the k first ids that are not the query's own; if it was not found drop the last.
            drop = torch.where(is_self.any(1), is_self.float().argmax(1), torch.full_like(e, k))
            keep = torch.ones_like(idx, dtype=torch.bool)
            keep[torch.arange(idx.shape[0]), drop] = False
            idx = idx[keep].reshape(-1, k)
            dist = dist[keep].reshape(-1, k)
        # pynndescent pads with -1 / inf when its graph cannot supply k neighbours: never pass that on.
        if (idx < 0).any():
            raise RuntimeError(
                "the approximate index returned fewer neighbours than requested; "
                "use method='exact' for such a small or degenerate set of keys"
            )
        return dist.to(device), idx.to(device)

    # --------------------------------------------------------------- persistence
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_graph"] = None  # rebuilt on first query after unpickling
        state["_graph_size"] = 0
        if self._keys is not None:
            state["_keys"] = self._keys.detach().cpu()
        return state

    def to(self, device: torch.device | str) -> NeighborIndex:
        """Move the stored keys (and exact search) to ``device``."""
        if self._keys is not None:
            self._keys = self._keys.to(device)
        return self

    def __repr__(self) -> str:
        backend = getattr(self, "backend_", "unbuilt")
        return f"NeighborIndex(method={self.method!r}, backend={backend!r}, n_keys={len(self)})"


def _smallest(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of each row of d and their columns, ascending; ties go to the lower column.

    ``torch.topk`` breaks ties arbitrarily (and differently from row to row), so equal queries among
    duplicated keys could get different neighbours; here the result depends only on the row itself.
    """
    kth = torch.topk(d, k, dim=1, largest=False, sorted=True).values[:, -1:]
    below = d < kth
    tied = d == kth
    chosen = below | (tied & (tied.cumsum(1) <= k - below.sum(1, keepdim=True)))
    # The chosen columns in ascending order, by a top-k rather than nonzero(), whose data-dependent
    # size would make every CUDA query wait for the GPU (same result, same cost on the CPU).
    n = d.shape[1]
    cols = torch.where(chosen, torch.arange(n, device=d.device), n).topk(k, dim=1, largest=False).values
    values = d.gather(1, cols)
    order = torch.sort(values, dim=1, stable=True).indices
    return values.gather(1, order), cols.gather(1, order)


def _sq_distances64(q64: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Squared distances (float64) from each row of ``q64`` to ``keys[ids[row]]``, as sums of squared
    differences: no cancellation, and a key's distance does not depend on where it or the query sits."""
    out = torch.empty(ids.shape, dtype=torch.float64, device=q64.device)
    step = max(1, _FLOAT64_ELEMENTS // max(ids.shape[1] * keys.shape[1], 1))
    for s in range(0, ids.shape[0], step):
        diff = keys[ids[s : s + step]].double() - q64[s : s + step, None, :]
        out[s : s + step] = diff.square_().sum(-1)
    return out


def _snap_to_zero(d: torch.Tensor, tolerance: torch.Tensor) -> torch.Tensor:
    """Distances within ``tolerance`` are 0: a query that duplicates stored keys up to float32
    rounding (its embedding computed at another position in a batch, where BLAS rounds differently:
    ~1e-7 relative per coordinate) ties with all of them at 0."""
    return d.masked_fill_(d <= tolerance, 0.0)


def _rank(d: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k entries of each row with the smallest (distance, id)."""
    by_id = ids.argsort(1)
    d, ids = d.gather(1, by_id), ids.gather(1, by_id)
    order = torch.sort(d, dim=1, stable=True).indices[:, :k]
    return d.gather(1, order), ids.gather(1, order)
