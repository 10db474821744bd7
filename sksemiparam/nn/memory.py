"""Episodic memory: a first-in-first-out store of (key, label) pairs."""

from __future__ import annotations

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
        # Example id held by each slot: bookkeeping, kept on the CPU with _slot_of_id so that writing
        # a batch on CUDA never copies ids back to the host.
        self._ids: torch.Tensor | None = None
        self._slot_of_id = torch.empty(0, dtype=torch.long)  # slot of each example id, -1 if none
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
            self._ids = torch.empty(0, dtype=torch.long)
        elif keys.shape[1] != self._keys.shape[1]:
            raise ValueError(
                f"keys have {keys.shape[1]} dimensions but the memory stores {self._keys.shape[1]}"
            )
        device = self._keys.device
        keys, values = keys.to(device, self._keys.dtype), values.to(device)
        ids = torch.arange(self._next_id, self._next_id + n) if ids is None else ids.detach().long().cpu()
        self._next_id = max(self._next_id, int(ids.max()) + 1)
        if self._slot_of_id.shape[0] < self._next_id:
            grown = torch.full((max(self._next_id, 2 * self._slot_of_id.shape[0]),), -1, dtype=torch.long)
            grown[: self._slot_of_id.shape[0]] = self._slot_of_id
            self._slot_of_id = grown

        # Examples already stored: overwrite their entries in place.
        slots = self._slot_of_id[ids]
        present = slots >= 0
        if present.any():
            where = slots[present].to(device)
            self._keys[where] = keys[present.to(device)]
            self._values[where] = values[present.to(device)]
            keep = ~present
            keys, values, ids = keys[keep.to(device)], values[keep.to(device)], ids[keep]
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
            self._ids = torch.cat([self._ids, self._ids.new_full((extra,), -1)])
        # Free slots first, then the oldest entries of the full ring.
        free = min(n, self._keys.shape[0] - self._size)
        slots = list(range(self._size, self._size + free))
        self._size += free
        for _ in range(n - free):
            slots.append(self._next)
            self._next = (self._next + 1) % self._keys.shape[0]
        slots = torch.tensor(slots, dtype=torch.long)
        evicted = self._ids[slots]
        self._slot_of_id[evicted[evicted >= 0]] = -1
        self._slot_of_id[ids] = slots
        dev_slots = slots.to(self._keys.device)
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

    def __repr__(self) -> str:
        return f"EpisodicMemory(capacity={self.capacity}, entries={self._size})"
