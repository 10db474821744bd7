import pytest
import torch

from sksemiparam.nn import EpisodicMemory


def test_unbounded_memory_keeps_every_example_once():
    memory = EpisodicMemory()
    for start in range(0, 300, 50):
        memory.add(torch.full((50, 2), float(start)), torch.arange(start, start + 50))
    assert len(memory) == 300
    assert sorted(memory.values.tolist()) == list(range(300))


def test_capacity_drops_the_oldest_first():
    memory = EpisodicMemory(capacity=100)
    for start in range(0, 250, 30):
        n = min(30, 250 - start)
        memory.add(
            torch.arange(start, start + n, dtype=torch.float32)[:, None], torch.arange(start, start + n)
        )
        assert len(memory) <= 100
    assert len(memory) == 100
    assert sorted(memory.values.tolist()) == list(range(150, 250))
    # keys stay aligned with values
    assert torch.equal(memory.keys[:, 0].long(), memory.values)


def test_rewriting_an_id_overwrites_in_place():
    memory = EpisodicMemory(capacity=10)
    ids = torch.arange(6)
    memory.add(torch.zeros(6, 3), torch.zeros(6, dtype=torch.long), ids)
    memory.add(torch.ones(6, 3), torch.ones(6, dtype=torch.long), ids)  # a second epoch
    assert len(memory) == 6
    assert memory.keys.eq(1).all() and memory.values.eq(1).all()
    # New ids fill the ring and then evict the oldest; an evicted id written again is new.
    memory.add(torch.full((8, 3), 2.0), torch.full((8,), 2), torch.arange(6, 14))
    assert len(memory) == 10
    assert sorted(memory.values.tolist()) == [1, 1] + [2] * 8
    memory.add(torch.full((1, 3), 3.0), torch.tensor([3]), torch.tensor([0]))
    assert len(memory) == 10 and (memory.values == 3).sum() == 1


def test_memory_errors():
    with pytest.raises(ValueError, match="`capacity` must be a positive integer"):
        EpisodicMemory(0)
    memory = EpisodicMemory()
    memory.add(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="keys have 4 dimensions but the memory stores 3"):
        memory.add(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
