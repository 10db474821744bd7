"""Episodic memory: a first-in-first-out store of (key, label) pairs."""

from __future__ import annotations

import numpy as np
import torch


class EpisodicMemory:
    """Keys and labels written in batches; the oldest entries are dropped first when full.

    Each entry belongs to an example id. Writing an id already stored overwrites its entry in place
    (a training example seen again in a later epoch refreshes its key rather than filling the memory
    with copies); a new id takes a new slot. Storage is a ring buffer, grown geometrically while
    below capacity, so a write costs its own size, not the memory's.

    Parameters
    ----------
    capacity : int or None
        Most entries kept; None keeps one entry per example ever written.
    """

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"`capacity` must be a positive integer or None, got {capacity}")
        self.capacity = capacity
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        # Example id held by each slot (-1: free): host-side bookkeeping in numpy, with _slot_of_id, so
        # that writing a batch on CUDA never reads anything back from the device; the device tensors
        # are only ever indexed with slot numbers sent to it.
        self._ids: np.ndarray | None = None
        self._slot_of_id = np.empty(0, dtype=np.int64)  # slot of each example id, -1 if none
        self._size = 0
        self._next = 0  # next slot to overwrite once the ring is full
        self._next_id = 0

    def __len__(self) -> int:
        return self._size

    def add(self, keys: torch.Tensor, values: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Write ``keys`` (n, e) with ``values`` (n,) for the examples ``ids`` (n,), unique.

        ``ids=None`` gives the rows new ids. Entries beyond capacity are dropped, oldest first.
        """
        keys, values = keys.detach(), values.detach()
        n = keys.shape[0]
        if keys.ndim != 2 or values.shape != (n,):
            raise ValueError(
                f"expected keys (n, e) and values (n,), got {tuple(keys.shape)} and {tuple(values.shape)}"
            )
        if n == 0:
            return
        if self._keys is None:
            self._keys = keys.new_empty((0, keys.shape[1]))
            self._values = values.new_empty((0,))
            self._ids = np.empty(0, dtype=np.int64)
        elif keys.shape[1] != self._keys.shape[1]:
            raise ValueError(
                f"keys have {keys.shape[1]} dimensions but the memory stores {self._keys.shape[1]}"
            )
        device = self._keys.device
        keys, values = keys.to(device, self._keys.dtype), values.to(device)
        if ids is None:
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            ids = (ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)).astype(
                np.int64
            )
        self._next_id = max(self._next_id, int(ids.max()) + 1)
        if self._slot_of_id.shape[0] < self._next_id:
            grown = np.full(max(self._next_id, 2 * self._slot_of_id.shape[0]), -1, dtype=np.int64)
            grown[: self._slot_of_id.shape[0]] = self._slot_of_id
            self._slot_of_id = grown

        # Examples already stored: overwrite their entries in place.
        slots = self._slot_of_id[ids]
        present = np.flatnonzero(slots >= 0)
        if present.size:
            where, rows = _on(device, slots[present]), _on(device, present)
            self._keys[where] = keys[rows]
            self._values[where] = values[rows]
            absent = np.flatnonzero(slots < 0)
            rows = _on(device, absent)
            keys, values, ids = keys[rows], values[rows], ids[absent]
        if self.capacity is not None and ids.shape[0] > self.capacity:
            keys, values, ids = keys[-self.capacity :], values[-self.capacity :], ids[-self.capacity :]
        if ids.shape[0]:
            self._append(keys, values, ids)

    def _append(self, keys, values, ids):
        n = ids.shape[0]
        allocated = self._keys.shape[0]
        if self._size + n > allocated and (self.capacity is None or allocated < self.capacity):
            new = max(self._size + n, 2 * allocated, 64)
            if self.capacity is not None:
                new = min(new, self.capacity)
            extra = new - allocated
            self._keys = torch.cat([self._keys, self._keys.new_empty((extra, self._keys.shape[1]))])
            self._values = torch.cat([self._values, self._values.new_empty((extra,))])
            self._ids = np.concatenate([self._ids, np.full(extra, -1, dtype=np.int64)])
        # Free slots first, then the oldest entries of the full ring.
        free = min(n, self._keys.shape[0] - self._size)
        ring = self._keys.shape[0]
        reused = (self._next + np.arange(n - free, dtype=np.int64)) % ring
        slots = np.concatenate([np.arange(self._size, self._size + free, dtype=np.int64), reused])
        self._size += free
        self._next = (self._next + n - free) % ring
        evicted = self._ids[slots]
        self._slot_of_id[evicted[evicted >= 0]] = -1
        self._slot_of_id[ids] = slots
        dev_slots = _on(self._keys.device, slots)
        self._keys[dev_slots] = keys
        self._values[dev_slots] = values
        self._ids[slots] = ids

    @property
    def keys(self) -> torch.Tensor:
        """Stored keys (len, e), in storage order."""
        return self._keys[: self._size]

    @property
    def values(self) -> torch.Tensor:
        """Stored labels (len,), aligned with ``keys``."""
        return self._values[: self._size]

    def to(self, device: torch.device | str) -> EpisodicMemory:
        """Move the stored keys and labels to ``device``."""
        if self._keys is not None:
            self._keys, self._values = self._keys.to(device), self._values.to(device)
        return self

    def __setstate__(self, state):
        # Memories saved before the bookkeeping moved to numpy held it in CPU tensors.
        for name in ("_ids", "_slot_of_id"):
            if isinstance(state.get(name), torch.Tensor):
                state[name] = state[name].numpy()
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"EpisodicMemory(capacity={self.capacity}, entries={self._size})"


def _on(device: torch.device, index: np.ndarray) -> torch.Tensor:
    """A host index array as a tensor on ``device``; the copy does not wait for the device."""
    return torch.from_numpy(index).to(device, non_blocking=True)
