"""NeighborIndex: exact search matches brute force, approximate search keeps its recall."""

import contextlib
import pickle
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sksemiparam._index import NeighborIndex


def brute_force(keys, queries, k, exclude=None):
    d = ((queries[:, None, :] - keys[None]) ** 2).sum(-1)
    if exclude is not None:  # -1: exclude nothing
        rows = np.flatnonzero(np.asarray(exclude) >= 0)
        d[rows, np.asarray(exclude)[rows]] = np.inf
    ids = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, ids, 1), ids


def clustered(n, d=16, centers=20, seed=0):
    """Points of a fixed Gaussian mixture (the mixture depends on d and centers only, not on seed)."""
    c = np.random.default_rng(12345).normal(scale=5.0, size=(centers, d))
    rng = np.random.default_rng(seed)
    return (c[rng.integers(0, centers, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(params=["compiled", "torch"])
def exact_path(request, monkeypatch):
    """Exact search's CPU path: the compiled candidate filter and float64 ranking (``_cpu_kernels``),
    or torch's operators (the path CUDA takes)."""
    monkeypatch.setattr("sksemiparam._index._USE_COMPILED", request.param == "compiled")
    monkeypatch.setattr("sksemiparam._index._COMPILED_MIN_PAIRS", 0)
    return request.param


def test_exact_matches_brute_force(exact_path):
    keys, queries = clustered(500, seed=0), clustered(40, seed=1)
    dist, ids = NeighborIndex("exact").build(torch.from_numpy(keys)).query(torch.from_numpy(queries), 10)
    bd, bi = brute_force(keys.astype(np.float64), queries.astype(np.float64), 10)
    np.testing.assert_array_equal(ids.numpy(), bi)
    np.testing.assert_allclose(dist.numpy(), bd, rtol=1e-4, atol=1e-3)


def test_exact_blocking_gives_the_same_answer(exact_path, monkeypatch):
    keys, queries = torch.from_numpy(clustered(300)), torch.from_numpy(clustered(50, seed=2))
    own = torch.randint(-1, 300, (50,), generator=torch.Generator().manual_seed(0))
    whole = NeighborIndex("exact").build(keys).query(queries, 5, exclude=own)
    monkeypatch.setattr("sksemiparam._index._EXACT_QUERY_BLOCK", 7)
    monkeypatch.setattr("sksemiparam._index._EXACT_KEY_BLOCK", 11)  # 28 key blocks, merged
    monkeypatch.setattr("sksemiparam._index._COMPILED_KEY_BLOCK", 11)
    blocked = NeighborIndex("exact").build(keys).query(queries, 5, exclude=own)
    assert torch.equal(whole[1], blocked[1])
    torch.testing.assert_close(whole[0], blocked[0], rtol=1e-4, atol=1e-3)  # float32 cdist


def test_exact_exclude_self(exact_path):
    keys = torch.from_numpy(clustered(200))
    own = torch.arange(200)
    dist, ids = NeighborIndex("exact").build(keys).query(keys, 3, exclude=own)
    assert not (ids == own[:, None]).any()
    bd, bi = brute_force(keys.numpy().astype(np.float64), keys.numpy().astype(np.float64), 3, own.numpy())
    np.testing.assert_array_equal(ids.numpy(), bi)
    # -1 means "exclude nothing": the point finds itself at distance 0.
    _, ids = NeighborIndex("exact").build(keys).query(keys[:5], 1, exclude=torch.full((5,), -1))
    np.testing.assert_array_equal(ids[:, 0].numpy(), np.arange(5))


def test_add_continues_ids():
    keys = torch.from_numpy(clustered(100))
    index = NeighborIndex("exact").build(keys[:60]).add(keys[60:])
    assert len(index) == 100
    _, ids = index.query(keys[60:70], 1)
    np.testing.assert_array_equal(ids[:, 0].numpy(), np.arange(60, 70))


def test_query_errors_name_the_problem():
    index = NeighborIndex("exact").build(torch.zeros(12, 3))
    with pytest.raises(ValueError, match=r"`k`=13 neighbours requested but only 12 stored keys"):
        index.query(torch.zeros(2, 3), 13)
    with pytest.raises(ValueError, match=r"only 11 stored keys can be returned"):
        index.query(torch.zeros(2, 3), 12, exclude=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="`queries` have 4 dimensions but the index stores 3"):
        index.query(torch.zeros(2, 4), 1)
    with pytest.raises(ValueError, match="NaN or infinity"):
        NeighborIndex("exact").build(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="`method` must be"):
        NeighborIndex("fast")
    with pytest.raises(RuntimeError, match="empty"):
        NeighborIndex().query(torch.zeros(1, 3), 1)
    with pytest.raises(ValueError, match="`key_dtype` must be 'float32' or 'float16'"):
        NeighborIndex(key_dtype="int8")
    with pytest.raises(
        ValueError, match=r"exceed float16's range \(\|x\| > 65504\); use key_dtype='float32'"
    ):
        NeighborIndex("exact", key_dtype="float16").build(torch.full((2, 3), 1e5))


def test_float16_keys_halve_memory_and_rank_like_brute_force_on_the_rounded_keys(exact_path):
    keys, queries = clustered(500, seed=0), clustered(40, seed=1)
    index = NeighborIndex("exact", key_dtype="float16").build(torch.from_numpy(keys))
    assert index.keys.dtype == torch.float16
    assert index.memory_bytes() == {"keys": 500 * 16 * 2, "graph": 0, "total": 500 * 16 * 2}
    assert NeighborIndex("exact").build(torch.from_numpy(keys)).memory_bytes()["keys"] == 500 * 16 * 4
    # Queries stay float32 (float16 queries would round them too): the answer is the float64 brute
    # force against the float16-rounded keys.
    dist, ids = index.query(torch.from_numpy(queries), 10)
    assert dist.dtype == torch.float32
    rounded = keys.astype(np.float16).astype(np.float64)
    bd, bi = brute_force(rounded, queries.astype(np.float64), 10)
    np.testing.assert_array_equal(ids.numpy(), bi)
    np.testing.assert_allclose(dist.numpy(), bd, rtol=1e-5)
    index.add(torch.from_numpy(keys[:5]).double())  # added keys are stored as float16 too
    assert index.keys.dtype == torch.float16 and len(index) == 505


def test_auto_switches_at_threshold():
    keys = torch.from_numpy(clustered(50))
    assert NeighborIndex("auto", auto_threshold=51).build(keys).backend_ == "exact"
    index = NeighborIndex("auto", auto_threshold=51).build(keys[:40])
    assert index.backend_ == "exact"
    index.add(keys[40:])  # 50 < 51: still exact
    assert index.backend_ == "exact"


@pytest.mark.parametrize("faiss_installed", [False, True])
def test_auto_never_picks_faiss_installed_or_not(faiss_installed, monkeypatch):
    # faiss's multi-threaded HNSW build is not reproducible: installing the extra must not change
    # which backend (and so which neighbours) an estimator with index="auto" uses.
    import sys

    from sksemiparam import _index

    if faiss_installed:
        pytest.importorskip("faiss")
    else:
        monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    index = NeighborIndex("auto")
    assert index._choose_backend(1) == "exact"
    assert index._choose_backend(_index.AUTO_THRESHOLD - 1) == "exact"
    assert index._choose_backend(_index.AUTO_THRESHOLD) == "approximate"
    assert index._choose_backend(10 * _index.AUTO_THRESHOLD) == "approximate"
    assert NeighborIndex("auto", auto_threshold=10)._choose_backend(9) == "exact"
    small = NeighborIndex("auto", auto_threshold=10).build(torch.from_numpy(clustered(50)))
    assert small.backend_ == "approximate"


def test_import_does_not_load_pynndescent_numba_or_faiss():
    # A small exact query takes torch's operators: numba is imported by the large ones only.
    code = (
        "import sys, sksemiparam; "
        "from sksemiparam._index import NeighborIndex; import torch; "
        "NeighborIndex('exact').build(torch.zeros(5, 2)).query(torch.zeros(1, 2), 1); "
        "bad = [m for m in ('pynndescent', 'numba', 'faiss') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------- approximate (pynndescent)
# These share one process, so numba compiles once (tens of seconds).


@pytest.mark.approximate
def test_approximate_recall_at_10_on_clustered_data():
    keys, queries = clustered(5000, d=32, centers=50, seed=3), clustered(500, d=32, centers=50, seed=4)
    _, true_ids = NeighborIndex("exact").build(torch.from_numpy(keys)).query(torch.from_numpy(queries), 10)
    index = NeighborIndex("approximate", random_state=0).build(torch.from_numpy(keys))
    assert index.backend_ == "approximate"
    _, ids = index.query(torch.from_numpy(queries), 10)
    hits = sum(len(set(a) & set(b)) for a, b in zip(ids.tolist(), true_ids.tolist()))
    assert hits / true_ids.numel() >= 0.95


@pytest.mark.approximate
def test_approximate_exclude_self_and_pickle_rebuilds_graph():
    keys = torch.from_numpy(clustered(2000, d=8, seed=5))
    own = torch.arange(300)
    index = NeighborIndex("approximate", random_state=0).build(keys)
    dist, ids = index.query(keys[:300], 5, exclude=own)
    assert ids.shape == (300, 5)
    assert not (ids == own[:, None]).any()
    assert (dist[:, 1:] >= dist[:, :-1]).all()

    clone = pickle.loads(pickle.dumps(index))
    assert clone._graph is None  # the graph is not pickled...
    _, ids2 = clone.query(keys[:300], 5, exclude=own)  # ...but rebuilt on first use
    assert clone._graph is not None
    agree = (ids2 == ids).float().mean()
    assert agree > 0.9


@pytest.mark.approximate
def test_approximate_add_grows_the_graph():
    keys = torch.from_numpy(clustered(3000, d=8, seed=6))
    index = NeighborIndex("approximate", random_state=0).build(keys[:2000])
    assert index.memory_bytes()["graph"] > 0
    index.add(keys[2000:])
    assert len(index) == 3000
    assert index._graph is None  # pynndescent's update costs a rebuild: deferred to the next query
    _, ids = index.query(keys[2500:2600], 1)
    assert (ids[:, 0] == torch.arange(2500, 2600)).float().mean() > 0.95


@pytest.mark.parametrize("block", [8, 4096])
def test_exact_ties_go_to_the_lower_id_whatever_the_query_row(block, exact_path, monkeypatch):
    monkeypatch.setattr("sksemiparam._index._EXACT_KEY_BLOCK", block)
    monkeypatch.setattr("sksemiparam._index._COMPILED_KEY_BLOCK", block)
    # Duplicated keys at equal distance: every query, wherever it sits in the batch, gets the same ids.
    keys = torch.zeros(40, 3)
    keys[::2] = 1.0
    index = NeighborIndex("exact").build(keys)
    queries = torch.full((7, 3), 0.5)
    for k in (1, 5, 40):
        d, ids = index.query(queries, k)
        np.testing.assert_array_equal(ids.numpy(), np.tile(np.arange(k), (7, 1)))
        assert torch.all(d == 0.75)
    # Ties with a nearer key: the nearer first, then the tied ones by id, across key blocks.
    keys[33] = 0.5
    d, ids = NeighborIndex("exact").build(keys).query(queries, 3)
    np.testing.assert_array_equal(ids.numpy(), np.tile([33, 0, 1], (7, 1)))


def test_a_query_that_duplicates_stored_keys_gets_the_same_neighbours_in_any_batch(exact_path):
    # Rounding noise of the matrix-product distance depends on the query's row in the batch; the
    # duplicates' distances must still tie at 0 (then the lower ids win) wherever the query sits.
    g = torch.Generator().manual_seed(0)
    keys = torch.rand(50, 32, generator=g)
    keys[10:14] = keys[3]
    index = NeighborIndex("exact").build(keys)
    batch = torch.rand(300, 32, generator=g)
    batch[::7] = keys[3]
    d, ids = index.query(batch, 3)
    np.testing.assert_array_equal(ids[::7].numpy(), np.tile([3, 10, 11], (len(ids[::7]), 1)))
    assert torch.all(d[::7] == 0)


def test_exact_ranks_as_float64_where_float32_distances_cannot(exact_path):
    # Keys and queries far from the origin: cdist's |q|^2 + |k|^2 - 2 q.k cancels to noise of ~20
    # while the distances (~0.01, far above float32 resolution) differ; float64 re-scoring ranks them.
    g = torch.Generator().manual_seed(0)
    keys = 1000 + torch.rand(200, 8, generator=g) * 0.05
    queries = 999.99 + torch.rand(300, 8, generator=g) * 0.05
    dist, ids = NeighborIndex("exact").build(keys).query(queries, 5)
    bd, bi = brute_force(keys.double().numpy(), queries.double().numpy(), 5)
    np.testing.assert_array_equal(ids.numpy(), bi)
    np.testing.assert_allclose(dist.numpy(), bd, rtol=1e-6)


@pytest.mark.parametrize("exclude", [False, True])
def test_keys_tied_beyond_the_candidates_are_ranked_over_all_keys(exclude, exact_path, monkeypatch):
    # 60 copies of a key, more than the float32 candidates kept: the k chosen must still be the
    # lowest ids among all copies, not among the copies that survived the float32 stage.
    monkeypatch.setattr("sksemiparam._index._EXACT_KEY_BLOCK", 32)
    monkeypatch.setattr("sksemiparam._index._COMPILED_KEY_BLOCK", 32)
    g = torch.Generator().manual_seed(1)
    keys = torch.rand(300, 16, generator=g)
    keys[100:160] = keys[7]
    queries = torch.rand(50, 16, generator=g)
    queries[::5] = keys[7] + 0.25
    own = torch.full((50,), 100) if exclude else None
    dist, ids = NeighborIndex("exact").build(keys).query(queries, 4, exclude=own)
    expected = [7, 101, 102, 103] if exclude else [7, 100, 101, 102]
    np.testing.assert_array_equal(ids[::5].numpy(), np.tile(expected, (10, 1)))
    bd, bi = brute_force(keys.double().numpy(), queries.double().numpy(), 4, own.numpy() if exclude else None)
    np.testing.assert_array_equal(ids.numpy(), bi)


def _widened_rows(monkeypatch):
    """Record (rows, candidates) of every call to exact search's widened stage."""
    calls = []
    original = NeighborIndex._exact_widened

    def spy(self, q, kth, k, own, scale):
        d, i = original(self, q, kth, k, own, scale)
        calls.append(q.shape[0])
        return d, i

    monkeypatch.setattr(NeighborIndex, "_exact_widened", spy)
    return calls


def test_keys_written_in_place_after_build_are_searched_as_they_are_now(exact_path):
    # Exact search keeps its per-key norms between queries; a memory whose storage the keys share
    # may write into them (MbPA's ring), and the next query must see the new keys.
    storage = torch.from_numpy(clustered(200))
    index = NeighborIndex("exact").build(storage[:100])
    queries = torch.from_numpy(clustered(30, seed=5))
    index.query(queries, 3)
    storage[:100] = storage[100:].clone()
    dist, ids = index.query(queries, 3)
    bd, bi = brute_force(storage[:100].double().numpy(), queries.double().numpy(), 3)
    np.testing.assert_array_equal(ids.numpy(), bi)
    np.testing.assert_allclose(dist.numpy(), bd, rtol=1e-5)


def test_a_few_huge_keys_leave_the_other_queries_to_the_fast_stage(exact_path, monkeypatch):
    # One key 200x larger than the rest used to make every query "unsure" (the float32 error bound
    # took the largest key norm) and send it to a float64 scan of every key. The bound is per key now.
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((3000, 8)).astype(np.float32)
    keys[::200] *= 200
    queries = rng.standard_normal((500, 8)).astype(np.float32)
    calls = _widened_rows(monkeypatch)
    dist, ids = NeighborIndex("exact").build(torch.from_numpy(keys)).query(torch.from_numpy(queries), 10)
    assert sum(calls) == 0
    bd, bi = brute_force(keys.astype(np.float64), queries.astype(np.float64), 10)
    np.testing.assert_array_equal(ids.numpy(), bi)
    np.testing.assert_allclose(dist.numpy(), bd, rtol=1e-6)


def test_duplicated_keys_widen_only_to_the_tied_copies(exact_path, monkeypatch):
    # 3000 keys drawn from 60 distinct rows (~50 copies each): the k-th neighbour's copies reach past
    # the float32 candidates, so those rows are ranked again over the copies that could tie, with
    # the lower ids first, as brute force ranks them.
    rng = np.random.default_rng(1)
    distinct = rng.standard_normal((60, 8)).astype(np.float32)
    keys = distinct[rng.integers(0, 60, 3000)]
    queries = rng.standard_normal((200, 8)).astype(np.float32)
    own = rng.integers(-1, 3000, 200)
    widths = []
    original = NeighborIndex._exact_candidates

    def spy(self, q, n_candidates, own, scale):
        widths.append(n_candidates)
        return original(self, q, n_candidates, own, scale)

    monkeypatch.setattr(NeighborIndex, "_exact_candidates", spy)
    index = NeighborIndex("exact").build(torch.from_numpy(keys))
    dist, ids = index.query(torch.from_numpy(queries), 20, exclude=torch.from_numpy(own))
    bd, bi = brute_force(keys.astype(np.float64), queries.astype(np.float64), 20, own)
    np.testing.assert_array_equal(ids.numpy(), bi)
    np.testing.assert_allclose(dist.numpy(), bd, rtol=1e-6)
    copies = np.bincount(np.unique(keys, axis=0, return_inverse=True)[1].ravel()).max()
    assert max(widths) > 20 + 16  # some rows were widened ...
    assert max(widths) <= 20 + 2 * copies  # ... to the tied copies, not to all 3000 keys


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    d=st.integers(1, 12),
    distinct=st.integers(1, 300),
    log_scale=st.floats(-6, 6),
    offset=st.floats(-1e3, 1e3),
    heavy=st.booleans(),
)
def test_exact_search_is_brute_force_on_any_keys(seed, n, d, distinct, log_scale, offset, heavy):
    # Duplicates, huge and tiny scales, keys far from the origin, heavy tails: always the float64
    # brute-force ranking by (distance, id), on both CPU paths.
    for compiled in (True, False):
        with _compiled_path(compiled):
            _check_exact_search_is_brute_force(seed, n, d, distinct, log_scale, offset, heavy)


@contextlib.contextmanager
def _compiled_path(compiled):
    from sksemiparam import _index

    before = _index._USE_COMPILED, _index._COMPILED_MIN_PAIRS
    _index._USE_COMPILED, _index._COMPILED_MIN_PAIRS = compiled, 0
    try:
        yield
    finally:
        _index._USE_COMPILED, _index._COMPILED_MIN_PAIRS = before


def _check_exact_search_is_brute_force(seed, n, d, distinct, log_scale, offset, heavy):
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((distinct, d)) * 10.0**log_scale + offset
    if heavy:
        rows[rng.random(distinct) < 0.05] *= 300
    keys = rows[rng.integers(0, distinct, n)].astype(np.float32)
    queries = np.concatenate([rows[rng.integers(0, distinct, 20)], rows[:5] + 10.0**log_scale])
    queries = queries.astype(np.float32)
    own = rng.integers(-1, n, len(queries)) if n > 1 and rng.random() < 0.5 else None
    k = int(rng.integers(1, n + (1 if own is None else 0)))
    index = NeighborIndex("exact").build(torch.from_numpy(keys))
    dist, ids = index.query(
        torch.from_numpy(queries), k, exclude=None if own is None else torch.from_numpy(own)
    )
    bd, bi = brute_force(keys.astype(np.float64), queries.astype(np.float64), k, own)
    # Distances within float32 rounding of each other are snapped to 0 by design (a query equal to a
    # key up to rounding); brute force in float64 sees them, so compare rows without such near-ties.
    every, _ = brute_force(keys.astype(np.float64), queries.astype(np.float64), n)
    q_norms = np.square(queries.astype(np.float64)).sum(1, keepdims=True)
    near = (every > 0) & (every <= 1e-9 * (q_norms + np.square(keys.astype(np.float64)).sum(1).max()))
    plain = ~near.any(1)
    np.testing.assert_array_equal(ids.numpy()[plain], bi[plain])
    np.testing.assert_allclose(dist.numpy()[plain], bd[plain], rtol=1e-5, atol=1e-30)


# k = 40: more candidates (57) than the filter's 32 lanes; float16 keys: widened block by block
@pytest.mark.parametrize(
    ("k", "key_dtype"), [(1, "float32"), (10, "float32"), (40, "float32"), (10, "float16")]
)
def test_compiled_exact_search_equals_torch_operators(k, key_dtype, monkeypatch):
    # Several key blocks of the compiled filter (2048 keys each), the queries' own keys among them
    # and in no block at all (-1), clustered keys: the same ids, distances to float64 rounding.
    rng = np.random.default_rng(3)
    keys = torch.from_numpy(clustered(5000, d=24, seed=4))
    queries = torch.cat(
        [keys[rng.integers(0, 5000, 300)] + 0.01, torch.from_numpy(clustered(200, d=24, seed=5))]
    )
    own = torch.from_numpy(rng.integers(-1, 5000, 500))
    index = NeighborIndex("exact", key_dtype=key_dtype).build(keys)
    monkeypatch.setattr("sksemiparam._index._COMPILED_MIN_PAIRS", 0)
    calls = []
    original = NeighborIndex._exact_compiled

    def spy(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(NeighborIndex, "_exact_compiled", spy)
    for exclude in (None, own):
        d_c, i_c = index.query(queries, k, exclude=exclude)
        with _compiled_path(False):
            d_t, i_t = index.query(queries, k, exclude=exclude)
        assert torch.equal(i_c, i_t)
        torch.testing.assert_close(d_c, d_t, rtol=1e-6, atol=0)
    assert calls  # the compiled path did run


def test_compiled_query_blocks_on_threads_give_the_same_answer_and_leave_torch_threads(monkeypatch):
    # Several query blocks run side by side, one torch thread each: the same answer as in line, and
    # the caller's torch thread count afterwards what it was, and that of threads started later.
    keys = torch.from_numpy(clustered(3000, d=16, seed=6))
    queries = torch.from_numpy(clustered(230, d=16, seed=7))
    own = torch.from_numpy(np.random.default_rng(8).integers(-1, 3000, 230))
    monkeypatch.setattr("sksemiparam._index._COMPILED_MIN_PAIRS", 0)
    monkeypatch.setattr("sksemiparam._index._EXACT_QUERY_BLOCK", 50)
    index = NeighborIndex("exact").build(keys)
    threads = torch.get_num_threads()
    worker_threads = []
    original = NeighborIndex._exact_compiled

    def spy(self, *args):
        worker_threads.append(torch.get_num_threads())
        return original(self, *args)

    monkeypatch.setattr(NeighborIndex, "_exact_compiled", spy)

    def in_a_new_thread():
        seen = []
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        return seen[0]

    torch.set_num_threads(2)
    try:
        threaded = index.query(queries, 7, exclude=own)
        assert torch.get_num_threads() == 2
        assert in_a_new_thread() == 2
        assert worker_threads == [1] * 5  # five blocks, each on a one-thread worker
        torch.set_num_threads(1)
        inline = index.query(queries, 7, exclude=own)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(threaded[1], inline[1])
    assert torch.equal(threaded[0], inline[0])


def test_compiled_exact_search_for_cpu_keys_only_when_switched_on():
    keys = torch.from_numpy(clustered(100))
    assert NeighborIndex("exact").build(keys)._compiled_kernels() is not None
    assert NeighborIndex("exact", key_dtype="float16").build(keys)._compiled_kernels() is not None
    with _compiled_path(False):
        assert NeighborIndex("exact").build(keys)._compiled_kernels() is None


def test_the_index_benchmark_compares_with_the_products_exact_search_makes():
    from benchmarks import index as benchmark
    from sksemiparam import _index

    assert (benchmark.MM_QUERY_BLOCK, benchmark.MM_KEY_BLOCK) == (
        _index._EXACT_QUERY_BLOCK,
        _index._COMPILED_KEY_BLOCK,
    )


def test_a_nan_query_gets_nan_distances_and_leaves_the_other_rows_alone():
    keys = torch.from_numpy(clustered(3000))
    queries = torch.from_numpy(clustered(20, seed=1))
    expected = NeighborIndex("exact").build(keys).query(queries, 5)
    queries[3, 2] = float("nan")
    for compiled in (True, False):
        with _compiled_path(compiled):
            d, i = NeighborIndex("exact").build(keys).query(queries, 5)
        assert torch.isnan(d[3]).all()
        rest = torch.arange(20) != 3
        assert torch.equal(i[rest], expected[1][rest])
        torch.testing.assert_close(d[rest], expected[0][rest])


# ---------------------------------------------------------------------- faiss (optional extra)


def test_faiss_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'sksemiparam\[faiss\]'"):
        NeighborIndex("faiss").build(torch.zeros(10, 3))


def test_faiss_recall_exclude_and_memory():
    pytest.importorskip("faiss")
    keys, queries = clustered(5000, d=32, centers=50, seed=3), clustered(500, d=32, centers=50, seed=4)
    _, true_ids = NeighborIndex("exact").build(torch.from_numpy(keys)).query(torch.from_numpy(queries), 10)
    for key_dtype in ("float32", "float16"):
        index = NeighborIndex("faiss", key_dtype=key_dtype).build(torch.from_numpy(keys))
        assert index.backend_ == "faiss"
        dist, ids = index.query(torch.from_numpy(queries), 10)
        hits = sum(len(set(a) & set(b)) for a, b in zip(ids.tolist(), true_ids.tolist()))
        assert hits / true_ids.numel() >= 0.95
        assert (dist[:, 1:] >= dist[:, :-1]).all()
        # The graph holds its own copy of the vectors (4 or 2 bytes a coordinate) and its links.
        memory = index.memory_bytes()
        assert memory["keys"] == 5000 * 32 * (4 if key_dtype == "float32" else 2)
        assert memory["graph"] > memory["keys"]
    own = torch.arange(300)
    k = torch.from_numpy(keys)
    dist, ids = NeighborIndex("faiss").build(k).query(k[:300], 5, exclude=own)
    assert not (ids == own[:, None]).any()
    assert (ids[:, 0] != own).all()


def test_faiss_add_inserts_without_rebuilding_and_pickle_rebuilds():
    pytest.importorskip("faiss")
    keys = torch.from_numpy(clustered(3000, d=8, seed=6))
    index = NeighborIndex("faiss").build(keys[:2000])
    graph = index._graph
    index.add(keys[2000:2500]).add(keys[2500:])
    assert index._graph is graph and graph.ntotal == 3000  # HNSW grows in place
    _, ids = index.query(keys[2500:2600], 1)
    assert (ids[:, 0] == torch.arange(2500, 2600)).float().mean() > 0.95

    clone = pickle.loads(pickle.dumps(index))
    assert clone._graph is None  # a faiss index is not pickled...
    _, ids2 = clone.query(keys[2500:2600], 1)  # ...but rebuilt on first use
    assert clone._graph.ntotal == 3000
    assert (ids2 == ids).float().mean() > 0.9


def test_an_index_pickled_before_key_dtype_existed_still_loads():
    index = NeighborIndex("exact").build(torch.from_numpy(clustered(50)))
    state = index.__getstate__()
    for later in ("key_dtype", "hnsw_m", "ef_construction", "ef_search"):
        del state[later]
    old = NeighborIndex.__new__(NeighborIndex)
    old.__setstate__(state)
    old.add(torch.from_numpy(clustered(5, seed=1)))
    assert old.key_dtype == "float32" and len(old) == 55


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 3 epochs
@pytest.mark.parametrize("name", ["nngk", "mbpa"])
def test_estimators_search_with_faiss_when_asked(name):
    pytest.importorskip("faiss")
    from sklearn.datasets import load_digits

    from tests._estimators import fast_estimators

    X, y = load_digits(return_X_y=True)
    X = (X[:400] / 16).astype(np.float32)
    est = fast_estimators(name, max_epochs=3, random_state=0, device="cpu")[name]
    exact = est.set_params(index="exact").fit(X[:300], y[:300])
    expected = exact.predict(X[300:])
    model = est.set_params(index="faiss").fit(X[:300], y[:300])
    assert model.index_.backend_ == "faiss"
    # 300 keys: HNSW finds the true neighbours, so the predictions agree with exact search.
    assert (model.predict(X[300:]) == expected).mean() >= 0.97


def _index_of(model):
    """The NeighborIndex an estimator searches (Meta-Neighborhoods builds one per batch: none kept)."""
    return model.index_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 2 epochs
@pytest.mark.parametrize("name", ["semiparametric", "mbpa", "nngk", "impostor"])
def test_estimators_pass_index_params_to_their_index(name):
    from sklearn.datasets import load_digits

    from tests._estimators import fast_estimators

    X, y = load_digits(return_X_y=True)
    X = (X[:400] / 16).astype(np.float32)
    est = fast_estimators(name, max_epochs=2, random_state=0, device="cpu")[name]
    exact = est.set_params(index="exact").fit(X[:300], y[:300])
    expected = exact.predict(X[300:])
    half = est.set_params(index_params={"key_dtype": "float16", "auto_threshold": 10**9})
    half = half.fit(X[:300], y[:300])
    index = _index_of(half)
    assert index.keys.dtype == torch.float16 and index.auto_threshold == 10**9
    # Keys rounded to 11 bits (NNGK and Impostor also search them while training): the same seed
    # gives nearly the same predictions.
    assert (half.predict(X[300:]) == expected).mean() >= 0.9


def test_meta_neighborhoods_passes_index_params_to_its_per_batch_index(monkeypatch):
    from sklearn.datasets import load_digits

    from sksemiparam import MetaNeighborhoodsClassifier, _index

    seen = []
    real = _index.NeighborIndex.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("key_dtype"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(_index.NeighborIndex, "__init__", spy)
    X, y = load_digits(return_X_y=True)
    est = MetaNeighborhoodsClassifier(n_entries=16, n_neighbors=4, max_epochs=1, random_state=0)
    est.set_params(index_params={"key_dtype": "float16"}).fit(X[:100] / 16, y[:100])
    assert seen and set(seen) == {"float16"}


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"method": "exact"}, ValueError, "`index_params` has 'method', which it cannot set"),
        ({"random_state": 0, "ef": 3}, ValueError, "'ef', 'random_state'"),
        ({"epsilon": -1.0}, ValueError, "`epsilon` must be a finite number >= 0"),
        ({"epsilon": float("nan")}, ValueError, "`epsilon` must be a finite number >= 0"),
        ({"graph_degree": 2.5}, TypeError, "`graph_degree` must be an int"),
        ({"n_jobs": 0}, ValueError, "`n_jobs` must be a positive int"),
        ({"n_jobs": -2}, ValueError, "`n_jobs` must be a positive int, -1 (every core) or None, got -2"),
        ({"key_dtype": "bfloat16"}, ValueError, "`key_dtype` must be 'float32' or 'float16'"),
        ({"auto_threshold": 0}, ValueError, "`auto_threshold` must be >= 1"),
    ],
)
def test_bad_index_params_are_named_and_leave_a_fitted_estimator_alone(params, error, message):
    from sksemiparam import NNGKClassifier

    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40) % 2
    model = NNGKClassifier(n_neighbors=4, max_epochs=1, random_state=0).fit(X, y)
    before = model.predict_proba(X)
    with pytest.raises(error, match=re.escape(message)):
        model.set_params(index_params=params).fit(X, y)
    with pytest.raises(error, match=re.escape(message)):
        model.partial_fit(X, y)
    np.testing.assert_array_equal(model.predict_proba(X), before)
    with pytest.raises(ValueError, match="The 'index_params' parameter of NNGKClassifier must be"):
        NNGKClassifier(index_params="exact").fit(X, y)


def test_public_module_is_the_index_the_estimators_use():
    import sksemiparam
    import sksemiparam._index as private
    import sksemiparam.index as public

    assert public.NeighborIndex is private.NeighborIndex
    assert public.AUTO_THRESHOLD == private.AUTO_THRESHOLD
    assert sorted(public.__all__) == ["AUTO_THRESHOLD", "NeighborIndex"]
    # Public, but not re-exported from the package: __init__ holds the estimators only.
    assert "NeighborIndex" not in sksemiparam.__all__
