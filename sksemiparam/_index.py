"""NeighborIndex: k-nearest-neighbour search over stored keys, exact or approximate.

Every estimator here that retrieves neighbours goes through this one small interface::

    index = NeighborIndex("auto").build(keys)     # keys: (N, d) tensor
    index.add(more_keys)                          # grows the index, ids continue at N
    dist, ids = index.query(queries, k, exclude=own_ids)

Distances are squared Euclidean. Three backends sit behind it:

- ``"exact"``: blocked matrix products on the keys' device, so memory stays bounded, each block's
  candidates kept (``topk``; on the CPU a compiled filter, query blocks on every torch thread), then
  the candidates re-scored in float64 and ranked by (distance, id);
- ``"approximate"``: a pynndescent nearest-neighbour graph. pynndescent (and numba) are imported only
  here, on first use: their JIT compilation costs tens of seconds in every new process;
- ``"faiss"``: a faiss HNSW graph (optional extra ``sksemiparam[faiss]``), imported only on first use.

``"auto"`` picks exact below ``AUTO_THRESHOLD`` stored keys and pynndescent above, whether or not faiss
is installed: faiss is used only when asked for (see the ``index`` and ``index-scale`` benchmarks for
the measurements behind the rule).
"""

from __future__ import annotations

import contextlib
import numbers
import os

import numpy as np
import torch

from .persistence import register

__all__ = ["AUTO_THRESHOLD", "INDEX_PARAMS", "NeighborIndex", "index_from_params"]

# Exact search below this many stored keys, approximate above. Measured by `python -m benchmarks index`
# (d = 32, clustered keys, 10k queries, 2 CPU cores): the approximate backend answers queries faster
# from ~3e3 keys on, but building its graph costs more than 10k exact queries at every size measured
# (1e3-2e5 keys), its recall is < 1, and numba compiles for 30-100 s in every new process. An
# estimator builds its index once per fit and queries it at every predict.
AUTO_THRESHOLD = 300_000
# `python -m benchmarks index-scale` (d = 64, 2026-12-02): exact search is the faster fit (a build
# + 10k queries) at every size to 1e6 keys, pynndescent the faster predict from 3e3 keys (1.2-1.8x
# below 3e5, 4.5x at 1e6); from 1e5 to 1e6 a graph's build costs what 80k-100k exact queries lose
# to it. No threshold on the number of keys suits every use (docs/neighbor-index.md); 3e5 is where
# a predict on a quarter as many queries as stored keys breaks even.
#
# "auto" never picks faiss, installed or not. Its HNSW build is multi-threaded and not reproducible, so
# installing an optional extra would make refits with the same seed differ; and index-scale did not
# show it faster where it could take over (1e4-3e5 keys: its build alone took longer than 10k exact
# queries in the run of 2026-12-02), while its recall with the defaults fell to 0.90 at 1e6 keys
# where pynndescent's held 0.976. It stays one argument away: method="faiss".

# Exact search works on blocks of this many queries x _EXACT_KEY_BLOCK keys (64 MiB of float32
# distances), merging the running top-k across key blocks, so its cost stays linear in N.
_EXACT_QUERY_BLOCK = 1024
_EXACT_KEY_BLOCK = 16384
# On the CPU the candidates are chosen by a compiled filter (``_cpu_kernels``) from products of
# this many keys at a time (float16 keys widened block by block): a (1024, 2048) float32 block
# (8 MiB) stays in the cache between the product that writes it and the filter that reads it, where
# a (1024, 16384) one went to memory and back (`python -m benchmarks index`). Tests switch the
# compiled path off to check it against torch's operators.
_COMPILED_KEY_BLOCK = 2048
_USE_COMPILED = True
# ... for calls of at least this many query-key pairs: below, torch's operators take well under a
# millisecond and a process that only makes such calls never imports numba (half a second).
_COMPILED_MIN_PAIRS = 1 << 20
# Float32 candidates re-scored in float64 per query beyond the k requested, and the size (elements)
# of the float64 blocks (key norms, gathered candidates) exact search computes at a time.
_RESCORE_MARGIN = 16
_FLOAT64_ELEMENTS = 1 << 22
# faiss receives new keys in blocks of this many rows (bounds the float32 copy of float16 keys).
_FAISS_ADD_BLOCK = 65536
_KEY_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_LATER_DEFAULTS = {"key_dtype": "float32", "hnsw_m": 32, "ef_construction": 80, "ef_search": 64}


def _check_2d(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (n, d), got shape {tuple(x.shape)}")
    return x


@register
class NeighborIndex:
    """k-nearest-neighbour search under squared Euclidean distance.

    Parameters
    ----------
    method : {"auto", "exact", "approximate", "faiss"}, default="auto"
        Backend. ``"approximate"`` is a pynndescent graph, ``"faiss"`` a faiss HNSW graph (needs the
        optional extra: ``pip install sksemiparam[faiss]``). ``"auto"`` uses exact search while
        fewer than ``auto_threshold`` keys are stored and a pynndescent graph from then on; it
        never picks faiss (not reproducible), installed or not.
    auto_threshold : int or None, default=None
        Number of stored keys from which ``"auto"`` switches to pynndescent. None:
        ``AUTO_THRESHOLD``.
    key_dtype : {"float32", "float16"}, default="float32"
        Storage of the keys. ``"float16"`` halves their memory; queries are still compared in
        float32 (exact search re-scores in float64), but against keys rounded to 11 significant
        bits (relative error <= 2**-11 per coordinate), so near-ties among neighbours may swap and
        distances carry that rounding. Keys must lie within float16's range (``|x| <= 65504``). The
        faiss backend then stores float16 vectors too (``IndexHNSWSQ``); pynndescent always keeps
        its own float32 copy, so with it float16 saves nothing.
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
    hnsw_m : int, default=32
        Links per node of the faiss HNSW graph (its ``M``; 2 * M on the bottom layer). The graph
        costs about 8 * M bytes per key.
    ef_construction : int, default=80
        Candidate list of faiss HNSW while inserting keys: larger is slower to build and better
        connected. On clustered keys (d = 64, 1e5 keys) faiss's default of 40 left recall@10 at
        0.957-0.978 whatever ``ef_search`` (64-256); 80 reached 0.995 at ``ef_search=64`` for a
        ~25% longer build.
    ef_search : int, default=64
        Candidate list of faiss HNSW at query time (raised to ``k`` + 1 when smaller): larger is
        slower and more accurate.
    random_state : int or None, default=None
        Seed of the pynndescent graph's construction (faiss's HNSW uses its own fixed seed, and
        its multi-threaded insertion order is not reproducible).
    n_jobs : int or None, default=None
        Threads of the approximate backends (pynndescent's ``n_jobs``; for faiss, OpenMP threads
        set around each call and restored after). None leaves each library's default.

    Attributes
    ----------
    backend_ : {"exact", "approximate", "faiss"}
        The backend in use after ``build``.
    """

    def __init__(
        self,
        method: str = "auto",
        *,
        auto_threshold: int | None = None,
        key_dtype: str = "float32",
        graph_degree: int = 30,
        epsilon: float = 0.3,
        search_tree_leaf_budget: int = 4,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        random_state: int | None = None,
        n_jobs: int | None = None,
    ) -> None:
        if method not in ("auto", "exact", "approximate", "faiss"):
            raise ValueError(f"`method` must be 'auto', 'exact', 'approximate' or 'faiss', got {method!r}")
        for name, value, optional in (
            ("auto_threshold", auto_threshold, True),
            ("graph_degree", graph_degree, False),
            ("search_tree_leaf_budget", search_tree_leaf_budget, False),
            ("hnsw_m", hnsw_m, False),
            ("ef_construction", ef_construction, False),
            ("ef_search", ef_search, False),
            ("n_jobs", n_jobs, True),
        ):
            if not (value is None and optional) and (
                isinstance(value, bool) or not isinstance(value, numbers.Integral)
            ):
                raise TypeError(f"`{name}` must be an int{' or None' if optional else ''}, got {value!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not 0 <= epsilon < np.inf:
            raise ValueError(f"`epsilon` must be a finite number >= 0, got {epsilon!r}")
        if search_tree_leaf_budget < 1:
            raise ValueError(f"`search_tree_leaf_budget` must be >= 1, got {search_tree_leaf_budget}")
        if n_jobs is not None and n_jobs != -1 and n_jobs < 1:
            raise ValueError(f"`n_jobs` must be a positive int, -1 (every core) or None, got {n_jobs}")
        if auto_threshold is not None and auto_threshold < 1:
            raise ValueError(f"`auto_threshold` must be >= 1, got {auto_threshold}")
        if key_dtype not in _KEY_DTYPES:
            raise ValueError(f"`key_dtype` must be 'float32' or 'float16', got {key_dtype!r}")
        if graph_degree < 2:
            raise ValueError(f"`graph_degree` must be >= 2, got {graph_degree}")
        if hnsw_m < 2 or ef_construction < 1 or ef_search < 1:
            raise ValueError(
                f"`hnsw_m` must be >= 2 and `ef_construction`, `ef_search` >= 1, got "
                f"{hnsw_m}, {ef_construction}, {ef_search}"
            )
        self.method = method
        self.auto_threshold = auto_threshold
        self.key_dtype = key_dtype
        self.graph_degree = graph_degree
        self.epsilon = epsilon
        self.search_tree_leaf_budget = search_tree_leaf_budget
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.random_state = random_state
        self.n_jobs = n_jobs
        self._keys: torch.Tensor | None = None
        self._graph = None  # pynndescent.NNDescent or faiss index, never pickled: rebuilt on first use
        self._graph_size = 0  # number of keys the graph holds

    # ------------------------------------------------------------------ building
    def build(self, keys: torch.Tensor, *, check_finite: bool = True) -> NeighborIndex:
        """Replace the stored keys with ``keys`` (N, d) and index them.

        ``check_finite=False`` skips the check that the keys are finite (and within float16's range
        with ``key_dtype="float16"``): on a GPU it is the one value ``build`` reads back from the
        device, so a caller that rebuilds an index of keys it knows to be finite every step (its own
        parameters) may skip it.
        """
        keys = self._check_keys(keys, check_finite)
        if keys.shape[0] == 0:
            raise ValueError("cannot build a NeighborIndex from 0 keys")
        self._keys = keys.contiguous()
        self._graph = None
        self._graph_size = 0
        self.backend_ = self._choose_backend(keys.shape[0])
        if self.backend_ != "exact":
            self._build_graph()
        return self

    def add(self, keys: torch.Tensor, *, check_finite: bool = True) -> NeighborIndex:
        """Append ``keys`` (n, d); their ids continue after the stored ones (``check_finite``: as in
        ``build``).

        Exact search only appends. faiss inserts the new keys into its HNSW graph. A pynndescent
        graph is dropped and rebuilt at the next query: its ``update`` re-runs the forest and
        NN-descent over every key, and measured no faster than a rebuild (see
        docs/neighbor-index.md). Several ``add`` calls in a row so pay for one rebuild.
        """
        if self._keys is None:
            return self.build(keys, check_finite=check_finite)
        keys = self._check_keys(keys, check_finite).to(self._keys.device)
        if keys.shape[1] != self._keys.shape[1]:
            raise ValueError(
                f"`keys` have {keys.shape[1]} dimensions but the index stores {self._keys.shape[1]}"
            )
        self._keys = torch.cat([self._keys, keys])
        backend = self._choose_backend(self._keys.shape[0])
        if backend == "faiss" and self.backend_ == "faiss" and self._graph is not None:
            self._faiss_add(keys)  # HNSW inserts natively: ids continue at ntotal
        elif backend != self.backend_ or backend == "approximate":
            self._graph = None  # built lazily at the next query
            self._graph_size = 0
        self.backend_ = backend
        return self

    def _check_keys(self, keys: torch.Tensor, check_finite: bool = True) -> torch.Tensor:
        keys = _check_2d("keys", keys).detach()
        if check_finite and not torch.isfinite(keys).all():
            raise ValueError("`keys` contains NaN or infinity")
        stored = keys.to(_KEY_DTYPES[self.key_dtype])
        if check_finite and self.key_dtype == "float16" and not torch.isfinite(stored).all():
            raise ValueError(
                "`keys` exceed float16's range (|x| > 65504); use key_dtype='float32' or rescale them"
            )
        return stored

    def _choose_backend(self, n: int) -> str:
        if self.method != "auto":
            return self.method
        threshold = AUTO_THRESHOLD if self.auto_threshold is None else self.auto_threshold
        return "exact" if n < threshold else "approximate"

    def _build_graph(self) -> None:
        if self.backend_ == "faiss":
            self._build_faiss()
        else:
            self._build_pynndescent()

    def _build_pynndescent(self) -> None:
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

    def _build_faiss(self) -> None:
        faiss = _import_faiss()
        d = self._keys.shape[1]
        if self.key_dtype == "float16":
            graph = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, self.hnsw_m)
        else:
            graph = faiss.IndexHNSWFlat(d, self.hnsw_m)
        graph.hnsw.efConstruction = self.ef_construction
        self._graph, self._graph_size = graph, 0
        self._faiss_add(self._keys)

    def _faiss_add(self, keys: torch.Tensor) -> None:
        # In blocks: a float16 -> float32 copy of a million keys would double their memory at once.
        with _faiss_threads(self.n_jobs):
            for s in range(0, keys.shape[0], _FAISS_ADD_BLOCK):
                block = keys[s : s + _FAISS_ADD_BLOCK].cpu().numpy()
                self._graph.add(np.ascontiguousarray(block, dtype=np.float32))
        self._graph_size += keys.shape[0]

    def memory_bytes(self) -> dict[str, int]:
        """Memory held by the index, in bytes: ``keys`` (the stored tensor), ``graph`` (the
        approximate backend's structures, including its own copy of the vectors where it keeps one;
        0 for exact search or before a lazy rebuild) and ``total``."""
        keys = 0 if self._keys is None else self._keys.nelement() * self._keys.element_size()
        graph = 0
        if self._graph is not None and self.backend_ == "faiss":
            graph = _faiss_bytes(self._graph)
        elif self._graph is not None:
            shared = self._keys.numpy() if self._keys.device.type == "cpu" else None
            graph = _object_bytes(self._graph, shared)
        return {"keys": keys, "graph": graph, "total": keys + graph}

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
        # float32 at least, whatever the keys' storage: float16 queries would add their own rounding.
        queries = _check_2d("queries", queries).detach().to(keys.device, torch.float32)
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
        if self._graph is None or self._graph_size != len(self):
            self._build_graph()
        if self.backend_ == "faiss":
            return self._query_faiss(queries, k, exclude)
        return self._query_approximate(queries, k, exclude)

    def _query_exact(self, queries, k, exclude):
        """Exact search in two stages: float32 matrix products find candidates, float64 ranks them.

        Stage one scores every key by ``t = (1 - nu) |k|^2 - 2 q.k`` in float32, one matrix product
        per block of keys (``_ExactScale.scores``: the machine's matrix-multiply speed), and keeps
        the ``k + _RESCORE_MARGIN``
        smallest. ``|q|^2`` is the same for a whole row and is left out; ``nu = 8 d eps`` shifts each
        key by more than the rounding error of its own score, so ``t + |q|^2 (1 - (d + 1) eps)`` is a
        lower bound of the key's true squared distance, a bound that depends on the key's own norm and
        not on the largest one (a few huge keys leave every other query's bound as tight as without
        them).

        Stage two re-scores the candidates as float64 sums of squared differences (exact for float32
        inputs to ~1e-16; identical keys get identical distances) and ranks them by (distance, id).
        A row where a key left out could still rank among the k (its bound reaches the k-th
        distance: keys tied with the k-th, e.g. duplicated rows) takes every key whose bound is that
        low as its candidates and is ranked again: exact, at the cost of the keys that could tie, not
        of the whole row.
        """
        n_keys = self.keys.shape[0]
        # One more with ``exclude``: a query's own key may be among them (the float64 stage drops it).
        n_candidates = min(n_keys, k + _RESCORE_MARGIN + (exclude is not None))
        with _exact_arithmetic(self.keys.device):
            scale = self.__dict__.get("_exact_scale")
            # Recomputed when build, add or to replaced the keys, or something wrote into them (a
            # memory whose storage the keys share: views share the version counter).
            if scale is None or scale.keys is not self.keys or scale.version != self.keys._version:
                scale = self._exact_scale = _ExactScale(self.keys)
            kernels = None if queries.shape[0] * n_keys < _COMPILED_MIN_PAIRS else self._compiled_kernels()

            def one_block(qs):
                q = queries[qs : qs + _EXACT_QUERY_BLOCK]
                own = None if exclude is None else exclude[qs : qs + _EXACT_QUERY_BLOCK]
                if kernels is not None:
                    t, d, i, q_floor = self._exact_compiled(q, k, n_candidates, own, scale, kernels)
                else:
                    t, cand = self._exact_candidates(q, n_candidates, own, scale)
                    d, i, q_floor = self._rescore(q, cand, k, own, scale)
                # A key left out scores t >= the last candidate's: its distance is >= floor.
                unsure = t[:, -1].double() + q_floor <= d[:, -1] if n_candidates < n_keys else None
                return d, i, unsure

            starts = range(0, queries.shape[0], _EXACT_QUERY_BLOCK)
            blocks = _map_compiled(one_block, starts) if kernels is not None else map(one_block, starts)
            dists, ids, unsure = zip(*blocks)
            d, i = torch.cat(dists), torch.cat(ids)
            if n_candidates < n_keys:
                # The only value read back from the device: one per call, not per block.
                rows = torch.cat(unsure).nonzero()[:, 0]
                if rows.numel():
                    own = None if exclude is None else exclude[rows]
                    d[rows], i[rows] = self._exact_widened(queries[rows], d[rows, -1], k, own, scale)
        return d.to(queries.dtype), i

    def _compiled_kernels(self):
        """``_cpu_kernels`` for keys in CPU memory (float32 or float16), else None (torch's
        operators: CUDA)."""
        keys = self.keys
        if not (_USE_COMPILED and keys.device.type == "cpu" and keys.is_contiguous()):
            return None
        from . import _cpu_kernels  # lazy: numba's import and first compile cost a few seconds

        return _cpu_kernels

    def _exact_compiled(self, q, k, n_candidates, own, scale, kernels):
        """``_exact_candidates`` and ``_rescore`` on the CPU in compiled loops: each (queries, 2048)
        block of products filtered into each row's ``n_candidates`` smallest scores as soon as it is
        made, then the candidates ranked in float64. Returns the scores of the candidates
        (ascending), the k distances and ids, and the rows' lower-bound parts as ``_rescore``."""
        n = q.shape[0]
        q = q.contiguous()
        own_np = np.full(n, -1, dtype=np.int64) if own is None else own.contiguous().numpy()
        best_t = np.full((n, n_candidates), np.inf, dtype=np.float32)
        best_i = np.zeros((n, n_candidates), dtype=np.int64)
        filled = np.zeros(n, dtype=np.int64)
        shifted = scale.shifted.numpy()
        buffer = torch.empty(n * min(_COMPILED_KEY_BLOCK, scale.n_keys), dtype=torch.float32)
        for ks in range(0, scale.n_keys, _COMPILED_KEY_BLOCK):
            block = self.keys[ks : ks + _COMPILED_KEY_BLOCK].float()  # float16 keys: widened
            p = torch.mm(q, block.T, out=buffer[: n * block.shape[0]].view(n, block.shape[0]))
            kernels.select_smallest(
                p.numpy(), shifted[ks : ks + block.shape[0]], ks, own_np, best_t, best_i, filled
            )
        short = np.flatnonzero(filled < n_candidates)
        if short.size:  # never expected (every key enters until a row holds n_candidates): torch's way
            rows = torch.from_numpy(short)
            t, cand = self._exact_candidates(q[rows], n_candidates, None if own is None else own[rows], scale)
            best_t[short], best_i[short] = t.numpy(), cand.numpy()
        if self.keys.dtype != torch.float32:  # float16 keys: torch's float64 ranking
            d, i, q_floor = self._rescore(q, torch.from_numpy(best_i), k, own, scale)
            return torch.from_numpy(best_t), d, i, q_floor
        d = np.empty((n, k), dtype=np.float64)
        i = np.empty((n, k), dtype=np.int64)
        norms64 = scale.norms64.numpy()
        kernels.rescore_rows(q.numpy(), self.keys.numpy(), best_i, own_np, norms64, scale.same, d, i)
        q_floor = q.double().square().sum(1) * (1 - scale.slack)
        return torch.from_numpy(best_t), torch.from_numpy(d), torch.from_numpy(i), q_floor

    def _exact_candidates(self, q, n_candidates, own, scale):
        """The ``n_candidates`` keys of each query with the smallest float32 scores ``t`` (and those
        scores), over key blocks. Which of several tied keys makes the cut does not matter: the
        float64 stage ranks the candidates, and a row where a key left out could rank among the k is
        widened."""
        block = max(_EXACT_KEY_BLOCK, n_candidates)
        best_t = best_i = None
        for ks in range(0, scale.n_keys, block):
            t = scale.scores(q, ks, ks + block, own)
            t, i = t.topk(min(n_candidates, t.shape[1]), dim=1, largest=False)
            i += ks
            if best_t is not None:
                t, pos = torch.cat([best_t, t], 1).topk(n_candidates, dim=1, largest=False)
                i = torch.cat([best_i, i], 1).gather(1, pos)
            best_t, best_i = t, i
        return best_t, best_i

    def _rescore(self, q, cand, k, own, scale):
        """The k nearest of each row's candidates by float64 (distance, id), the query's own key
        left out, and the row's part of the lower bound, ``|q|^2 (1 - (d + 1) eps)``."""
        q64 = q.double()
        q_norms = q64.square().sum(1, keepdim=True)
        d64 = _sq_distances64(q64, self.keys, cand)
        d64 = _snap_to_zero(d64, scale.same * (q_norms + scale.norms64[cand]))
        if own is not None:
            d64.masked_fill_(cand == own[:, None], float("inf"))
        d, i = (t[:, :k] for t in _by_value_then_column(d64, cand))
        return d, i, q_norms[:, 0] * (1 - scale.slack)

    def _exact_widened(self, q, kth, k, own, scale):
        """Rows whose k-th distance ``kth`` a key outside their candidates could reach: every key
        whose lower bound is <= ``kth`` (all that could rank among the k, ties included) becomes a
        candidate, counted in a first pass over the keys and gathered in a second."""
        q_norms = q.double().square().sum(1)
        # Snapped distances: a key within ``same`` of the query counts as 0, so reach that far too.
        reach = (kth + scale.same * q_norms - q_norms * (1 - scale.slack)).float()
        reach = torch.nextafter(reach, torch.full_like(reach, float("inf")))
        count = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        for ks in range(0, scale.n_keys, _EXACT_KEY_BLOCK):
            count += (scale.scores(q, ks, ks + _EXACT_KEY_BLOCK, own) <= reach[:, None]).sum(1)
        # The k nearest are always counted (their bound is below their distance); never fewer than
        # k (+ the query's own key) whatever rounding did to the count.
        n_candidates = max(int(count.max()), min(scale.n_keys, k + (own is not None)))
        d, i = [], []
        # Rows at a time so that a gathered (rows, candidates, d) float64 block stays bounded.
        step = max(1, _FLOAT64_ELEMENTS // max(n_candidates * self.keys.shape[1], 1))
        for s in range(0, q.shape[0], step):
            own_s = None if own is None else own[s : s + step]
            _, cand = self._exact_candidates(q[s : s + step], n_candidates, own_s, scale)
            ds, is_, _ = self._rescore(q[s : s + step], cand, k, own_s, scale)
            d.append(ds)
            i.append(is_)
        return torch.cat(d), torch.cat(i)

    def _query_approximate(self, queries, k, exclude):
        q = queries.cpu().numpy().astype(np.float32, copy=False)
        extra = 1 if exclude is not None else 0
        idx, dist = self._graph.query(q, k=k + extra, epsilon=self.epsilon)
        return _finish_approximate(dist, idx, k, exclude, self.keys.device)

    def _query_faiss(self, queries, k, exclude):
        faiss = _import_faiss()
        q = np.ascontiguousarray(queries.cpu().numpy(), dtype=np.float32)
        extra = 1 if exclude is not None else 0
        params = faiss.SearchParametersHNSW()  # per call: the index itself is left unchanged
        params.efSearch = max(self.ef_search, k + extra)
        with _faiss_threads(self.n_jobs):
            dist, idx = self._graph.search(q, k + extra, params=params)
        return _finish_approximate(dist, idx, k, exclude, self.keys.device)

    # --------------------------------------------------------------- persistence
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_graph"] = None  # rebuilt on first query after unpickling (faiss indexes do not pickle)
        state["_graph_size"] = 0
        state.pop("_exact_scale", None)  # derived from the keys, recomputed on first query
        if self._keys is not None:
            state["_keys"] = self._keys.detach().cpu()
        return state

    def __setstate__(self, state):
        # Indexes saved before key_dtype and the faiss settings existed load with their defaults.
        self.__dict__.update({**_LATER_DEFAULTS, **state})

    def to(self, device: torch.device | str) -> NeighborIndex:
        """Move the stored keys (and exact search) to ``device``."""
        if self._keys is not None:
            self._keys = self._keys.to(device)
        return self

    def __repr__(self) -> str:
        backend = getattr(self, "backend_", "unbuilt")
        return f"NeighborIndex(method={self.method!r}, backend={backend!r}, n_keys={len(self)})"


# NeighborIndex arguments an estimator's ``index_params`` may set; ``method`` and ``random_state``
# come from the estimator's ``index`` and ``random_state``.
INDEX_PARAMS = (
    "auto_threshold",
    "key_dtype",
    "graph_degree",
    "epsilon",
    "search_tree_leaf_budget",
    "hnsw_m",
    "ef_construction",
    "ef_search",
    "n_jobs",
)


def index_from_params(method: str, params: dict | None, random_state: int | None) -> NeighborIndex:
    """A NeighborIndex for an estimator's ``index`` and ``index_params``, checked.

    Raises ValueError naming an argument that ``index_params`` may not set, and NeighborIndex's own
    ValueError for a value out of range.
    """
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise TypeError(f"`index_params` must be a dict or None, got {type(params).__name__}")
    unknown = sorted(str(key) for key in params if key not in INDEX_PARAMS)
    if unknown:
        raise ValueError(
            f"`index_params` has {', '.join(repr(k) for k in unknown)}, which it cannot set; "
            f"it takes {', '.join(INDEX_PARAMS)} (the backend is the estimator's `index`, the seed "
            "its `random_state`)"
        )
    return NeighborIndex(method, random_state=random_state, **params)


def _finish_approximate(dist, idx, k, exclude, device):
    """An approximate backend's (n, k [+ 1]) answer as tensors, each query's own id dropped."""
    idx = torch.from_numpy(idx.astype(np.int64, copy=False))
    dist = torch.from_numpy(dist.astype(np.float32, copy=False))
    if exclude is not None:
        e = exclude.cpu()
        is_self = idx == e[:, None]
        # Keep the k first ids that are not the query's own; if it was not found drop the last.
        drop = torch.where(is_self.any(1), is_self.float().argmax(1), torch.full_like(e, k))
        keep = torch.ones_like(idx, dtype=torch.bool)
        keep[torch.arange(idx.shape[0]), drop] = False
        idx = idx[keep].reshape(-1, k)
        dist = dist[keep].reshape(-1, k)
    # pynndescent and faiss pad with -1 when their graph cannot supply k neighbours: never pass that on.
    if (idx < 0).any():
        raise RuntimeError(
            "the approximate index returned fewer neighbours than requested; "
            "use method='exact' for such a small or degenerate set of keys"
        )
    return dist.to(device), idx.to(device)


def _import_faiss():
    try:
        import faiss  # lazy: an optional extra
    except ImportError as error:
        raise ImportError(
            "method='faiss' needs the faiss package, an optional extra: pip install 'sksemiparam[faiss]' "
            "(it installs faiss-cpu); or use method='approximate' (pynndescent) or 'exact'"
        ) from error
    return faiss


@contextlib.contextmanager
def _faiss_threads(n_jobs: int | None):
    """faiss's OpenMP threads set to ``n_jobs`` (-1: every core) for the block, then restored."""
    if n_jobs is None:
        yield
        return
    faiss = _import_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads((os.cpu_count() or 1) if n_jobs < 0 else n_jobs)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _faiss_bytes(graph) -> int:
    """Bytes of a faiss HNSW index: its stored vectors plus the graph's link lists and offsets."""
    faiss = _import_faiss()
    hnsw = graph.hnsw
    vectors = faiss.downcast_index(graph.storage).codes.size()  # uint8 codes: bytes
    links = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
    return int(vectors + links)


def _object_bytes(obj, shared: np.ndarray | None, depth: int = 0, seen: set | None = None) -> int:
    """Bytes of the numpy arrays an object holds (attributes, tuples, lists, sparse matrices), each
    buffer counted once and none that shares memory with ``shared`` (the stored keys)."""
    seen = set() if seen is None else seen
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        if id(base) in seen or (shared is not None and np.shares_memory(base, shared)):
            return 0
        seen.add(id(base))
        return int(base.nbytes)
    if depth >= 3:
        return 0
    if isinstance(obj, (tuple, list)):
        children = obj
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = vars(obj).values()
    else:
        return 0
    return sum(_object_bytes(child, shared, depth + 1, seen) for child in children)


class _ExactScale:
    """What exact search precomputes from the stored keys, kept by the index until the keys change:
    their float64 squared norms, the float32 shifted norms ``(1 - nu) |k|^2`` its scores start from,
    and its tolerances.

    ``nu = 8 d eps`` exceeds the rounding of a float32 score ``(1 - nu) |k|^2 - 2 q.k``, a dot product
    of length d + 1 (at most ``(d + 1) eps / 2 (|k|^2 + 2 |q| |k|)``, with ``eps`` float32's machine
    epsilon), so the score plus ``|q|^2 (1 - slack)``, ``slack = (d + 1) eps`` (twice what the
    bound needs), is a lower bound of the true squared distance.
    """

    def __init__(self, keys: torch.Tensor) -> None:
        d = keys.shape[1]
        eps = torch.finfo(torch.float32).eps
        self.keys = keys
        self.version = keys._version
        self.n_keys = keys.shape[0]
        self.norms64 = torch.empty(keys.shape[0], dtype=torch.float64, device=keys.device)
        step = max(1, _FLOAT64_ELEMENTS // max(d, 1))  # a float64 copy of a million keys: too large
        for s in range(0, keys.shape[0], step):
            self.norms64[s : s + step] = keys[s : s + step].double().square().sum(1)
        self.shifted = ((1 - 8 * d * eps) * self.norms64).float()
        self.slack = (d + 1) * eps
        self.same = d * (4 * eps) ** 2  # below this (relative) two embeddings are one row

    def scores(self, q: torch.Tensor, start: int, stop: int, own: torch.Tensor | None) -> torch.Tensor:
        """Float32 scores ``(1 - nu) |k|^2 - 2 q.k`` of the queries against keys ``start:stop``, the
        query's own key (``own``, a stored id or -1) at +inf."""
        # One product of [q, 1] and [-2 k, (1 - nu) |k|^2]: ``addmm`` would first copy the norms
        # into every row of the output (a pass as long as the product itself at d = 64).
        keys = torch.cat([self.keys[start:stop].to(q.dtype) * -2, self.shifted[start:stop, None]], 1)
        t = torch.cat([q, torch.ones_like(q[:, :1])], 1) @ keys.T
        if own is not None:  # the query's own key, when it falls in this block, is never a neighbour
            _exclude_own(t, own - start)
        return t


def _map_compiled(fn, starts):
    """``map(fn, starts)`` over query blocks of the compiled CPU path, on as many threads as torch
    has (each block's product single-threaded: the compiled filter runs on one core, so two blocks
    side by side keep both cores busy where one block's two-threaded product leaves one idle while
    the other filters; `python -m benchmarks index`). A single block, or a single thread: in line."""
    n_threads = torch.get_num_threads()
    if n_threads < 2 or len(starts) < 2:
        return list(map(fn, starts))
    import threading
    from concurrent.futures import ThreadPoolExecutor

    inherited = []

    def single_threaded():
        inherited.append(torch.get_num_threads())  # a new thread starts from the process-wide count
        torch.set_num_threads(1)  # this thread's OpenMP setting, and torch's process-wide count

    try:
        with ThreadPoolExecutor(min(n_threads, len(starts)), initializer=single_threaded) as pool:
            return list(pool.map(fn, starts))
    finally:
        # Threads started later begin from the process-wide count: give it back from a thread of its
        # own (setting it here would set the caller's OpenMP count too), then check the caller's.
        if inherited:
            restore = threading.Thread(target=torch.set_num_threads, args=(inherited[0],))
            restore.start()
            restore.join()
        if torch.get_num_threads() != n_threads:  # a build whose thread count is process-wide
            torch.set_num_threads(n_threads)


@contextlib.contextmanager
def _exact_arithmetic(device: torch.device):
    """Exact search's products as written: float32, whatever the caller's autocast, TF32 setting or
    torch-function mode (the estimators' float64 prediction mode would widen them; the float64 stage
    makes the answer batch-invariant by itself)."""
    precision = torch.get_float32_matmul_precision()
    with torch._C.DisableTorchFunction(), torch.autocast(device.type, enabled=False):
        if device.type == "cuda" and precision != "highest":
            torch.set_float32_matmul_precision("highest")  # TF32 would break the rounding bound
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(precision)


def _exclude_own(d: torch.Tensor, local: torch.Tensor) -> None:
    """Set ``d[row, local[row]]`` to +inf where ``0 <= local[row] < d.shape[1]`` (the query's own key
    falls in this block), in place and without reading anything back from the device."""
    inside = (local >= 0) & (local < d.shape[1])
    col = local.clamp(0, d.shape[1] - 1)[:, None]
    d.scatter_(1, col, d.gather(1, col).masked_fill_(inside[:, None], float("inf")))


def _by_value_then_column(values: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's entries sorted by (value, column): ties go to the lower column (or id)."""
    by_col = cols.sort(dim=1).indices
    values, cols = values.gather(1, by_col), cols.gather(1, by_col)
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
