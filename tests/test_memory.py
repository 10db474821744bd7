"""ExampleMemory, the stored examples of every retrieval estimator, and RetrievalMixin's checks."""

import copy
import pickle

import numpy as np
import pytest
import torch

from sksemiparam._memory import ExampleMemory, row_identities


def _rows(values):
    """Rows (n, 2) whose first column is ``values``, with labels ``values % 3``."""
    values = torch.as_tensor(values, dtype=torch.float32)
    return torch.stack([values, -values], 1), values.long() % 3


def _write(memory, values, keys=None):
    X, y = _rows(values)
    return memory.write(row_identities(X, y), y, X=X if memory.store_inputs else None, keys=keys)


def test_identities_tell_rows_labels_and_repeats_apart():
    X = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    ids = row_identities(X, np.array([0, 0, 1, 0]))
    assert all(len(i) == 20 for i in ids)
    assert len(set(ids)) == 4  # the same row twice (occurrence 0, 1), and once more under another label
    assert ids[0][:16] == ids[1][:16] != ids[2][:16]
    assert row_identities(X[:1], np.array([0])) == ids[:1]  # a later call finds the first copy


def test_a_later_write_of_the_same_examples_adds_no_copies():
    memory = ExampleMemory()
    np.testing.assert_array_equal(_write(memory, range(50)), np.arange(50))
    # rows 25-49 are stored already (their slots come back), rows 50-74 take new slots
    np.testing.assert_array_equal(_write(memory, range(25, 75)), np.arange(25, 75))
    assert len(memory) == 75
    np.testing.assert_array_equal(memory.X[:, 0].numpy(), np.arange(75))
    np.testing.assert_array_equal(memory.y.numpy(), np.arange(75) % 3)


def test_equal_rows_within_one_call_stay_separate_entries():
    memory = ExampleMemory()
    _write(memory, [1, 1, 2])
    assert len(memory) == 3
    _write(memory, [1])  # the first copy is stored: nothing new
    assert len(memory) == 3
    _write(memory, [1, 1, 1])  # a third copy is new
    assert len(memory) == 4


def test_capacity_evicts_the_oldest_written_first():
    memory = ExampleMemory(capacity=100, store_inputs=False)
    for start in range(0, 250, 30):
        values = torch.arange(start, min(start + 30, 250))
        _write(memory, values, keys=values[:, None].float())
        assert len(memory) == min(100, start + len(values))
    assert sorted(memory.keys[:, 0].long().tolist()) == list(range(150, 250))
    assert torch.equal(memory.keys[:, 0].long() % 3, memory.y)  # keys stay aligned with labels
    assert memory.X is None


def test_writing_an_example_again_overwrites_its_key_in_place():
    memory = ExampleMemory(capacity=10, store_inputs=False)
    first = _write(memory, range(6), keys=torch.zeros(6, 3))
    again = _write(memory, range(6), keys=torch.ones(6, 3))  # a second epoch
    np.testing.assert_array_equal(first, again)
    assert len(memory) == 6 and memory.keys.eq(1).all()
    _write(memory, range(6, 14), keys=torch.full((8, 3), 2.0))  # fills the ring, evicts rows 0-3
    assert len(memory) == 10
    assert sorted(memory.keys[:, 0].tolist()) == [1.0] * 2 + [2.0] * 8
    X, y = _rows([3, 4])
    np.testing.assert_array_equal(memory.lookup(row_identities(X, y)), [-1, 4])
    assert memory.size_after(row_identities(X, y)) == 10  # capped by the capacity


def test_more_new_entries_than_capacity_keep_the_last():
    memory = ExampleMemory(capacity=4, store_inputs=False)
    slots = _write(memory, range(10), keys=torch.arange(10.0)[:, None])
    assert (slots[:6] == -1).all() and sorted(slots[6:].tolist()) == [0, 1, 2, 3]
    assert sorted(memory.keys[:, 0].tolist()) == [6.0, 7.0, 8.0, 9.0]


def test_size_after_counts_what_a_call_would_leave_stored():
    memory = ExampleMemory()
    _write(memory, range(10))
    X, y = _rows(range(5, 20))
    assert memory.size_after(row_identities(X, y)) == 20
    assert len(memory) == 10  # nothing written


def test_remove_compacts_and_maps_old_slots_to_new():
    memory = ExampleMemory()
    _write(memory, range(6))
    keep = np.array([True, False, True, True, False, True])
    np.testing.assert_array_equal(memory.remove(keep), [0, -1, 1, 2, -1, 3])
    np.testing.assert_array_equal(memory.X[:, 0].numpy(), [0, 2, 3, 5])
    X, y = _rows([1, 2])
    np.testing.assert_array_equal(memory.lookup(row_identities(X, y)), [-1, 1])
    np.testing.assert_array_equal(_write(memory, [1]), [4])  # a removed example is new again


def test_deepcopy_shares_inputs_but_survives_later_writes():
    memory = ExampleMemory()
    _write(memory, range(10))
    snapshot = copy.deepcopy(memory)
    assert snapshot.X.untyped_storage().data_ptr() == memory.X.untyped_storage().data_ptr()
    _write(memory, range(5, 40))
    assert len(snapshot) == 10 and len(memory) == 40
    np.testing.assert_array_equal(snapshot.X[:, 0].numpy(), np.arange(10))
    X, y = _rows([20])
    assert snapshot.lookup(row_identities(X, y))[0] == -1


def test_deepcopy_of_keys_or_a_ring_copies_what_writes_change_in_place():
    memory = ExampleMemory(capacity=5, store_inputs=False)
    _write(memory, range(5), keys=torch.zeros(5, 2))
    snapshot = copy.deepcopy(memory)
    _write(memory, range(5), keys=torch.ones(5, 2))
    _write(memory, range(5, 8), keys=torch.ones(3, 2))
    assert snapshot.keys.eq(0).all()
    assert sorted(snapshot.y.tolist()) == sorted(np.arange(5) % 3)


def test_pickle_round_trip_keeps_entries_and_lookups():
    memory = ExampleMemory(capacity=8, store_inputs=True)
    _write(memory, range(12), keys=torch.arange(12.0)[:, None])
    loaded = pickle.loads(pickle.dumps(memory))
    assert loaded.device == torch.device("cpu") and loaded._slot_of is None
    for name in ("X", "y", "keys"):
        assert torch.equal(getattr(loaded, name), getattr(memory, name))
    for m in (memory, loaded):  # the ring continues where it was
        _write(m, range(12, 15), keys=torch.arange(12.0, 15.0)[:, None])
    assert torch.equal(loaded.keys, memory.keys) and torch.equal(loaded.X, memory.X)


def test_memory_errors():
    with pytest.raises(ValueError, match="`capacity` must be a positive integer or None, got 0"):
        ExampleMemory(capacity=0)
    memory = ExampleMemory()
    with pytest.raises(ValueError, match="this memory stores inputs: pass X"):
        memory.write(row_identities(np.zeros((2, 3)), [0, 1]), torch.zeros(2, dtype=torch.long))
    _write(memory, range(2))
    X, y = torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="`X` has 4 columns but the memory stores 2"):
        memory.write(row_identities(X, y), y, X=X)
    with pytest.raises(ValueError, match=r"expected 2 labels, got shape \(3,\)"):
        memory.write(row_identities(X, y), torch.zeros(3, dtype=torch.long), X=X)
    with pytest.raises(ValueError, match="boolean mask of shape"):
        memory.remove(np.ones(3, dtype=bool))


def test_a_first_write_of_rows_hashes_them_only_when_a_later_call_needs_it():
    memory = ExampleMemory()
    X, y = _rows([5, 6, 6, 7])
    np.testing.assert_array_equal(memory.write(None, y, X=X), [0, 1, 2, 3])
    assert memory._ids is None  # nothing hashed by fit
    state = memory.__getstate__()
    assert state["_ids"] is None
    loaded = pickle.loads(pickle.dumps(memory))
    snapshot = copy.deepcopy(memory)
    X_more, y_more = _rows([6, 6, 6, 8])
    for m in (memory, loaded, snapshot):  # derived from the rows: the same identities as a call's
        np.testing.assert_array_equal(m.lookup(row_identities(X, y)), [0, 1, 2, 3])
        np.testing.assert_array_equal(m.write(None, y_more, X=X_more), [1, 2, 4, 5])
        assert len(m) == 6


def _labelled(values, labels):
    X = torch.stack([torch.as_tensor(values, dtype=torch.float32)] * 2, 1)
    y = torch.as_tensor(labels, dtype=torch.long)
    return row_identities(X, y), y, X


def test_reservoir_keeps_a_uniform_sample_of_the_whole_stream():
    memory = ExampleMemory(capacity=200, policy="reservoir", random_state=0)
    for start in range(0, 20_000, 100):  # 200 writes of 100 new examples
        ids, y, X = _labelled(np.arange(start, start + 100), np.zeros(100))
        memory.write(ids, y, X=X)
    assert len(memory) == 200
    stored = memory.X[:, 0].numpy()
    assert len(np.unique(stored)) == 200
    # each tenth of the stream holds ~20 of the 200 (binomial sd ~4.2); FIFO would hold the last 200
    per_tenth = np.bincount((stored // 2000).astype(int), minlength=10)
    assert per_tenth.min() >= 5 and per_tenth.max() <= 40, per_tenth
    fifo = ExampleMemory(capacity=200)
    for start in range(0, 20_000, 100):
        ids, y, X = _labelled(np.arange(start, start + 100), np.zeros(100))
        fifo.write(ids, y, X=X)
    assert sorted(fifo.X[:, 0].tolist()) == list(range(19_800, 20_000))


def test_class_balanced_gives_a_late_class_its_share():
    memory = ExampleMemory(capacity=100, policy="class_balanced", random_state=0)
    memory.write(*_labelled(np.arange(900), np.zeros(900))[:2], X=torch.arange(900.0)[:, None].repeat(1, 2))
    assert memory.y.tolist() == [0] * 100
    for start in range(900, 1000, 10):  # 100 examples of class 1, ten at a time
        ids, y, X = _labelled(np.arange(start, start + 10), np.ones(10))
        memory.write(ids, y, X=X)
    assert np.bincount(memory.y.numpy()).tolist() == [50, 50]
    assert len(np.unique(memory.X[:, 0].numpy())) == 100  # each example once


def test_sampling_policies_are_reproducible_and_survive_copies_and_pickles():
    def stream(memory):
        for start in range(0, 3000, 50):
            memory.write(*_labelled(np.arange(start, start + 50), np.arange(start, start + 50) % 3)[:2],
                         X=torch.arange(start, start + 50.0)[:, None].repeat(1, 2))  # fmt: skip
        return memory

    for policy in ("reservoir", "class_balanced"):
        a = stream(ExampleMemory(capacity=64, policy=policy, random_state=1))
        b = stream(ExampleMemory(capacity=64, policy=policy, random_state=1))
        np.testing.assert_array_equal(a.X.numpy(), b.X.numpy())
        # a copy (the estimators' snapshot) and a pickle continue the same draws as the original
        for other in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
            ids, y, X = _labelled(np.arange(5000, 5050), np.arange(50) % 3)
            a_slots = copy.deepcopy(a).write(ids, y, X=X)
            np.testing.assert_array_equal(other.write(ids, y, X=X), a_slots)
    with pytest.raises(ValueError, match="`policy` must be one of"):
        ExampleMemory(capacity=5, policy="lru")
