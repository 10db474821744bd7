"""The stored examples of a retrieval estimator, and the parameters that retrieve from them.

``ExampleMemory`` holds what every retrieval estimator stores: the labels of its examples, and their
inputs (SemiparametricClassifier, NNGK and the Impostor Network embed them again as the network
learns) or keys written once (MbPA's embeddings of the moment), all on the estimator's device. It
recognises an example it already holds, so that ``partial_fit`` over rows seen before adds no copies,
keeps at most ``capacity`` entries (by default the oldest written are evicted first; ``policy``
chooses reservoir or class-balanced sampling instead), counts what a call would
leave stored (for the "k larger than what is stored" check), and pickles to CPU tensors.

``RetrievalMixin`` declares the parameters that search such a memory (``n_neighbors`` with its
``"auto"``, ``index``, ``index_params``), their constraints, the index they make and the check that
``n_neighbors`` does not exceed what is stored.
"""

from __future__ import annotations

import copy
import hashlib
from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._index import index_from_params
from .persistence import register

__all__ = ["AUTO_NEIGHBORS", "MEMORY_POLICIES", "ExampleMemory", "RetrievalMixin", "row_identities"]

# What a full memory of ``capacity`` entries does with a new example (see ExampleMemory).
MEMORY_POLICIES = ("fifo", "reservoir", "class_balanced")

# n_neighbors="auto": this many stored examples per query, or all of them while fewer are stored.
AUTO_NEIGHBORS = 32
# Dense retrieval (n_neighbors=None) scores queries against every stored example, about this many
# query x example distances at a time.
_DENSE_CHUNK_ELEMENTS = 1 << 24
# Bytes of an example's identity: a 128-bit digest of its (row, label) pair, then a 32-bit count of
# the equal pairs before it in the same call.
_IDENTITY_BYTES = 20


def row_identities(X, y) -> list[bytes]:
    """The identity of each (row of X, label) pair, as ``ExampleMemory`` stores it.

    A 128-bit digest of the row's float32 bytes and its label, followed by the pair's occurrence
    number within this call: the first copy of a pair is occurrence 0, a second equal pair in the
    same data occurrence 1, and so on. So rows repeated within one ``fit`` stay separate entries, as
    the data gave them, while a later call over the same rows finds each of them stored.

    Parameters
    ----------
    X : array-like or Tensor of shape (n, d)
    y : array-like or Tensor of shape (n,), integer labels

    Returns
    -------
    list of n bytes objects of length 20
    """
    X = np.ascontiguousarray(_numpy(X), dtype=np.float32)
    y = np.ascontiguousarray(_numpy(y), dtype=np.int64)
    seen: dict[bytes, int] = {}
    out = []
    for row, label in zip(X, y):
        digest = hashlib.blake2b(row.tobytes() + label.tobytes(), digest_size=16).digest()
        occurrence = seen.get(digest, 0)
        seen[digest] = occurrence + 1
        out.append(digest + occurrence.to_bytes(4, "little"))
    return out


def _numpy(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


@register
class ExampleMemory:
    """Labels, and inputs or keys, of stored examples; each example once.

    Entries are written in batches with their identities (``row_identities``). Writing an identity
    already stored overwrites its entry in place (a key written again in a later epoch replaces the
    old one); a new identity takes a new slot. With a ``capacity``, once the memory is full each new
    example is kept or not by ``policy``: ``"fifo"`` (a ring: it replaces the oldest written),
    ``"reservoir"`` (Vitter's algorithm R: the n-th new example replaces a random entry with
    probability capacity / n, so the memory is a uniform sample of every example written) or
    ``"class_balanced"`` (class-balancing reservoir sampling, Chrysakis and Moens 2020: an example of
    a class that is not among the largest stored replaces a random entry of a largest class; one of
    a largest class replaces a random entry of its own class with probability stored / seen of that
    class, so the memory tends to equal shares of the classes, each a uniform sample of its class).
    Storage grows by half when full, so a write costs its own size, not the memory's, and storage
    stays within 1.5x of the entries. Entry ids (what a ``NeighborIndex`` over the entries returns)
    are slots: ``X[i]``, ``y[i]`` and ``keys[i]`` belong to one example.

    Parameters
    ----------
    capacity : int or None, default=None
        Most entries kept; None keeps every example written.
    policy : {"fifo", "reservoir", "class_balanced"}, default="fifo"
        Which examples a full memory keeps (above).
    random_state : int or None, default=None
        Seeds the draws of ``"reservoir"`` and ``"class_balanced"``.
    store_inputs : bool, default=True
        Keep each example's input row (``X``). MbPA keeps only keys.
    device : torch.device or str, default="cpu"
        Where the labels, inputs and keys live.

    Attributes
    ----------
    X : Tensor (len, d) or None
        Stored inputs, in slot order (None without ``store_inputs`` or before the first write).
    y : Tensor (len,)
        Stored labels.
    keys : Tensor (len, e) or None
        Stored keys, where written.
    """

    def __init__(
        self,
        *,
        capacity: int | None = None,
        policy: str = "fifo",
        random_state: int | None = None,
        store_inputs: bool = True,
        device="cpu",
    ) -> None:
        if capacity is not None and (
            isinstance(capacity, bool) or not isinstance(capacity, Integral) or capacity < 1
        ):
            raise ValueError(f"`capacity` must be a positive integer or None, got {capacity!r}")
        if policy not in MEMORY_POLICIES:
            raise ValueError(f"`policy` must be one of {MEMORY_POLICIES}, got {policy!r}")
        self.capacity = capacity
        self.policy = policy
        self._rng = np.random.default_rng(random_state)
        self._seen = 0  # new examples written, kept or not (the n of reservoir sampling)
        self._seen_per_class: dict[int, int] = {}
        self.store_inputs = store_inputs
        self.device = torch.device(device)
        self._X: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._keys: torch.Tensor | None = None
        # Identity of each allocated slot (None: free). None for the whole list while every entry
        # comes from one first write of inputs: derived from the stored rows when first needed.
        self._ids: list | None = []
        self._size = 0
        self._next = 0  # next slot to overwrite once the ring is full
        self._slot_of: dict[bytes, int] | None = {}  # identity -> slot; a cache, rebuilt from _ids

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self._size

    @property
    def X(self) -> torch.Tensor | None:
        return None if self._X is None else self._X[: self._size]

    @property
    def y(self) -> torch.Tensor:
        if self._y is None:
            return torch.empty(0, dtype=torch.long, device=self.device)
        return self._y[: self._size]

    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._keys is None else self._keys[: self._size]

    def _identities(self) -> list:
        if self._ids is None:
            allocated = self._y.shape[0]
            self._ids = row_identities(self.X, self.y) + [None] * (allocated - self._size)
        return self._ids

    def _slots(self) -> dict[bytes, int]:
        self._identities()
        if self._slot_of is None:
            self._slot_of = {ident: slot for slot, ident in enumerate(self._ids[: self._size])}
        return self._slot_of

    def lookup(self, identities) -> np.ndarray:
        """The slot of each identity, -1 where it is not stored."""
        slots = self._slots()
        return np.fromiter((slots.get(i, -1) for i in identities), dtype=np.int64, count=len(identities))

    def size_after(self, identities) -> int:
        """How many entries the memory would hold after writing ``identities`` (nothing is written)."""
        new = len(set(identities).difference(self._slots()))
        total = self._size + new
        return total if self.capacity is None else min(total, self.capacity)

    # ------------------------------------------------------------------ writing
    def write(self, identities, y: torch.Tensor, *, X=None, keys=None) -> np.ndarray:
        """Write entries; returns the slot of each (-1 for one dropped because it did not fit).

        ``identities`` (n,) from ``row_identities``, or None to derive them from the rows (X, y);
        ``y`` (n,) labels; ``X`` (n, d) inputs (required with ``store_inputs``); ``keys`` (n, e),
        optional (once a memory holds keys, every write brings them). An identity already stored
        overwrites its entry; new ones take new slots, and when more new ones come than
        ``capacity`` holds, only the last ``capacity`` are kept. The first write of rows into an
        empty, unbounded memory (a ``fit``) takes them all, in order, and hashes them only when a
        later call needs their identities.
        """
        y = y.detach()
        n = y.shape[0] if identities is None else len(identities)
        if y.shape != (n,):
            raise ValueError(f"expected {n} labels, got shape {tuple(y.shape)}")
        if self.store_inputs and X is None:
            raise ValueError("this memory stores inputs: pass X")
        X = None if X is None or not self.store_inputs else X.detach()
        keys = None if keys is None else keys.detach()
        for name, t in (("X", X), ("keys", keys)):
            if t is not None and (t.ndim != 2 or t.shape[0] != n):
                raise ValueError(f"expected `{name}` of shape ({n}, d), got {tuple(t.shape)}")
        self._allocate_like(X, y, keys)
        out = np.full(n, -1, dtype=np.int64)
        if n == 0:
            return out
        if identities is None:
            if self._size == 0 and self.capacity is None and X is not None:
                return self._write_all(X, y, keys)
            if X is None:
                raise ValueError("pass the identities of the entries, or their rows X")
            identities = row_identities(X, y)
        slots = self.lookup(identities)
        present = np.flatnonzero(slots >= 0)
        if present.size:  # examples stored already: their entries are overwritten in place
            self._put(slots[present], present, X, y, keys)
            out[present] = slots[present]
        absent = np.flatnonzero(slots < 0)
        if self.capacity is not None and absent.size > self.capacity and self.policy == "fifo":
            self._count_seen(y[_on(y.device, absent[: -self.capacity])])
            absent = absent[-self.capacity :]
        if absent.size:
            out[absent] = self._append(absent, [identities[i] for i in absent], X, y, keys)
        return out

    def remove(self, keep) -> np.ndarray:
        """Keep only the entries where the boolean mask ``keep`` (len,) is True, in order.

        Returns the new slot of each old one (-1 for a removed entry). The storage is compacted, so a
        ring (``capacity``) starts again from its first slot.
        """
        keep = np.asarray(_numpy(keep), dtype=bool)
        if keep.shape != (self._size,):
            raise ValueError(f"`keep` must be a boolean mask of shape ({self._size},), got {keep.shape}")
        new_slot = np.cumsum(keep) - 1
        new_slot[~keep] = -1
        self._identities()
        rows = torch.from_numpy(np.flatnonzero(keep)).to(self.device)
        self._X = None if self._X is None else self.X[rows]
        self._y = self.y[rows]
        self._keys = None if self._keys is None else self.keys[rows]
        self._ids = [ident for ident, kept in zip(self._ids[: self._size], keep) if kept]
        self._size, self._next, self._slot_of = len(self._ids), 0, None
        return new_slot

    def _allocate_like(self, X, y, keys) -> None:
        """Empty storage of the right widths and dtypes, before the first write."""
        if self._y is None:
            self._y = torch.empty(0, dtype=y.dtype, device=self.device)
        if X is not None and self._X is None:
            self._X = X.new_empty((self._y.shape[0], X.shape[1]), device=self.device)
        if keys is not None and self._keys is None:
            self._keys = keys.new_empty((self._y.shape[0], keys.shape[1]), device=self.device)
        for name, new, stored in (("X", X, self._X), ("keys", keys, self._keys)):
            if new is not None and new.shape[1] != stored.shape[1]:
                raise ValueError(
                    f"`{name}` has {new.shape[1]} columns but the memory stores {stored.shape[1]}"
                )

    def _put(self, slots: np.ndarray, rows: np.ndarray, X, y, keys) -> None:
        where, rows = _on(self.device, slots), _on(y.device, rows)
        self._y[where] = y[rows].to(self.device, self._y.dtype)
        if X is not None and self._X is not None:
            self._X[where] = X[rows.to(X.device)].to(self.device, self._X.dtype)
        if keys is not None and self._keys is not None:
            self._keys[where] = keys[rows.to(keys.device)].to(self.device, self._keys.dtype)

    def _write_all(self, X, y, keys) -> np.ndarray:
        """Take every row of a first write, in order; their identities are derived when needed."""
        n = y.shape[0]
        self._X = X.to(self.device, self._X.dtype, copy=True)
        self._y = y.to(self.device, self._y.dtype, copy=True)
        if keys is not None:
            self._keys = keys.to(self.device, self._keys.dtype, copy=True)
        self._ids, self._slot_of, self._size = None, None, n
        return np.arange(n, dtype=np.int64)

    def _append(self, rows: np.ndarray, identities: list, X, y, keys) -> np.ndarray:
        self._identities()
        n = rows.shape[0]
        allocated = self._y.shape[0]
        if self._size + n > allocated and (self.capacity is None or allocated < self.capacity):
            # 1.5x: appends cost amortised O(1) copies, and storage stays within 1.5x of the entries.
            new = max(self._size + n, allocated + allocated // 2, 64)
            if self.capacity is not None:
                new = min(new, self.capacity)
            self._grow(new - allocated)
        # Free slots first; then, in a full memory, the policy's choice (-1: not kept).
        ring = self._y.shape[0]
        free = min(n, ring - self._size)
        labels = y[_on(y.device, rows)]
        self._count_seen(labels[:free])
        if self.policy == "fifo":
            reused = (self._next + np.arange(n - free, dtype=np.int64)) % ring
            self._next = (self._next + n - free) % ring
        else:
            labels = labels.cpu().numpy()
            reused = self._sampled_slots(labels[free:], free_labels=labels[:free])
        slots = np.concatenate([np.arange(self._size, self._size + free, dtype=np.int64), reused])
        self._size += free
        # An entry replaced again later in the same write: the later example keeps the slot.
        _, last = np.unique(slots[::-1], return_index=True)
        kept = np.zeros(n, dtype=bool)
        kept[n - 1 - last] = True
        kept &= slots >= 0
        index = self._slots()
        for slot, ident in zip(slots[kept], [identities[i] for i in np.flatnonzero(kept)]):
            old = self._ids[slot]
            if old is not None and index.get(old) == slot:
                del index[old]
            self._ids[slot] = ident
            index[ident] = int(slot)
        self._put(slots[kept], rows[kept], X, y, keys)
        return np.where(kept, slots, -1)

    def _count_seen(self, labels: torch.Tensor) -> None:
        """Count new examples offered to the memory (kept or not), in all and per class."""
        self._seen += int(labels.shape[0])
        if self.policy == "class_balanced":
            values, counts = np.unique(labels.cpu().numpy(), return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist()):
                self._seen_per_class[value] = self._seen_per_class.get(value, 0) + count

    def _sampled_slots(self, labels: np.ndarray, free_labels: np.ndarray) -> np.ndarray:
        """The slot each new example of a full memory replaces under ``"reservoir"`` or
        ``"class_balanced"`` (-1: not kept), in order, as if written one at a time."""
        slots = np.full(labels.shape[0], -1, dtype=np.int64)
        if self.policy == "reservoir":
            for i in range(labels.shape[0]):
                self._seen += 1
                j = int(self._rng.integers(self._seen))
                if j < self.capacity:
                    slots[i] = j
            return slots
        # class_balanced: the stored labels, with the free slots this write fills first
        stored = np.concatenate([self._y[: self._size].cpu().numpy(), free_labels])
        held = dict(zip(*np.unique(stored, return_counts=True)))
        held = {int(k): int(v) for k, v in held.items()}
        for i, label in enumerate(labels.tolist()):
            self._seen += 1
            self._seen_per_class[label] = self._seen_per_class.get(label, 0) + 1
            largest = max(held.values())
            if held.get(label, 0) < largest:  # a minority class: take a slot of a largest class
                donors = [c for c, m in held.items() if m == largest]
                victim = donors[int(self._rng.integers(len(donors)))]
            elif self._rng.random() < held[label] / self._seen_per_class[label]:
                victim = label
            else:
                continue
            candidates = np.flatnonzero(stored == victim)
            slot = int(candidates[int(self._rng.integers(candidates.shape[0]))])
            stored[slot] = label
            held[victim] -= 1
            held[label] = held.get(label, 0) + 1
            slots[i] = slot
        return slots

    def _grow(self, extra: int) -> None:
        self._y = torch.cat([self._y, self._y.new_empty((extra,))])
        if self._X is not None:
            self._X = torch.cat([self._X, self._X.new_empty((extra, self._X.shape[1]))])
        if self._keys is not None:
            self._keys = torch.cat([self._keys, self._keys.new_empty((extra, self._keys.shape[1]))])
        self._ids.extend([None] * extra)

    # ------------------------------------------------------- devices, copies, pickles
    def to(self, device) -> ExampleMemory:
        """Move the stored tensors to ``device``."""
        self.device = torch.device(device)
        for name in ("_X", "_y", "_keys"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.to(self.device))
        return self

    def __deepcopy__(self, memo):
        """A copy that shares what later writes never change in place.

        Used by the estimators' snapshot before a ``fit``/``partial_fit`` call, taken at every call:
        copying every stored row each time would make a stream of calls quadratic. Writes only
        overwrite slots below ``len`` in place when an entry is written again (keys) or evicted (a
        full ring), so inputs and labels are shared unless the memory has a ``capacity``, and keys
        are copied. Slots at or above ``len`` may be filled in place by the original later; the
        copy never reads them.
        """
        new = type(self).__new__(type(self))  # not copy.copy: it would go through __getstate__
        new.__dict__.update(self.__dict__)
        memo[id(self)] = new
        ring = self.capacity is not None
        for name in ("_X", "_y", "_keys"):
            t = getattr(self, name)
            if t is not None and (ring or name == "_keys"):
                setattr(new, name, t.clone())
        new._ids = None if self._ids is None else list(self._ids)
        new._slot_of = None  # rebuilt on first use
        new._rng = copy.deepcopy(self._rng)
        new._seen_per_class = dict(self._seen_per_class)
        return new

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_slot_of"] = None
        state["device"] = str(self.device)
        for name in ("_X", "_y", "_keys"):
            t = state[name]
            if t is not None:
                state[name] = t[: self._size].detach().cpu()
        ids = [] if self._ids is None else self._ids[: self._size]
        # As int32 words rather than bytes: a model file's uint8 arrays would look like pickled blobs.
        words = np.frombuffer(b"".join(ids), dtype="<i4").reshape(len(ids), _IDENTITY_BYTES // 4)
        # Not derived yet: derived from the stored rows after loading too, when needed.
        state["_ids"] = None if self._ids is None else words.copy()  # writable, for torch.from_numpy
        state["_rng"] = self._rng.bit_generator.state  # a dict of ints: JSON for sksemiparam.persistence
        return state

    def __setstate__(self, state):
        state = dict(state)
        ids = state["_ids"]
        if isinstance(ids, np.ndarray):
            state["_ids"] = [row.astype("<i4").tobytes() for row in ids]
        state["device"] = torch.device("cpu") if state["_y"] is None else state["_y"].device
        state["_slot_of"] = None
        # Saved before the memory had policies: first in, first out.
        state.setdefault("policy", "fifo")
        rng = np.random.default_rng(0)
        if isinstance(state.get("_rng"), dict):
            rng.bit_generator.state = state["_rng"]
        state["_rng"] = rng
        state.setdefault("_seen", state["_size"])
        state.setdefault("_seen_per_class", {})
        self.__dict__.update(state)

    @classmethod
    def from_inputs(cls, X, y) -> ExampleMemory:
        """A memory holding the examples (X, y) on X's device; empty when X is None. For fitted
        state saved by sksemiparam 0.1, which kept the stored inputs and labels as two tensors."""
        memory = cls(device="cpu" if X is None else X.device)
        if X is not None:
            memory.write(None, y, X=X)
        return memory

    @classmethod
    def from_episodic_state(cls, state: dict) -> ExampleMemory:
        """A memory holding the entries of an sksemiparam 0.1 ``EpisodicMemory`` (MbPA's keys and
        labels, in the same slots). It kept no rows, so its entries get identities no row has: a
        row written again after loading is a new entry."""
        memory = cls(capacity=state["capacity"], store_inputs=False)
        size = state["_size"]
        if state.get("_keys") is not None:
            memory._keys = state["_keys"][:size].clone()
            memory._y = state["_values"][:size].clone()
            memory.device = memory._y.device
            memory._ids = [b"\xff" * 16 + slot.to_bytes(4, "little") for slot in range(size)]
            memory._size = size
            memory._next = state["_next"] if size == state["_keys"].shape[0] else 0
            memory._slot_of = None
        return memory

    def __repr__(self) -> str:
        return f"ExampleMemory(capacity={self.capacity}, policy={self.policy!r}, entries={self._size})"


def _on(device: torch.device, index: np.ndarray) -> torch.Tensor:
    """A host index array as a tensor on ``device``; the copy does not wait for the device."""
    return torch.from_numpy(np.ascontiguousarray(index)).to(device, non_blocking=True)


class RetrievalMixin:
    """What an estimator that retrieves stored examples shares: parameters, memory and index.

    ``n_neighbors`` (an int, ``"auto"``, or None for every stored example), ``index`` and
    ``index_params``, with their constraints (merged into the estimator's by ``TorchEstimatorBase``)
    and their shared docstring entries (``.. shared:: n_neighbors index index_params``). Before a
    call changes anything, ``index_params`` is checked (``_check_params``) and so is an int
    ``n_neighbors`` against the examples the memory will hold after the call (``_check_fit_data``).
    The fitted memory is ``memory_`` (made by ``_new_memory``, filled with ``_remember``), the
    search structure ``index_``; both move with the model (``_to_device``).
    """

    # Does a warm-started fit keep writing into the memory (MbPA) rather than replace it?
    _warm_fit_keeps_memory = False

    _parameter_constraints: dict = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "index": [StrOptions({"auto", "exact", "approximate", "faiss"})],
        "index_params": [dict, None],
    }

    def _check_params(self) -> None:
        super()._check_params()
        self._new_index(None)  # index_params: a ValueError naming the key, before anything changes

    def _new_index(self, random_state):
        """An empty ``NeighborIndex`` of the estimator's ``index`` and ``index_params``."""
        return index_from_params(self.index, self.index_params, random_state)

    # How the error of _check_n_neighbors names what is stored.
    _stored_name = "samples stored in memory"

    def _check_n_neighbors(self, stored: int) -> None:
        """A ValueError naming ``n_neighbors`` when an int exceeds ``stored``, the examples the
        memory will hold (``ExampleMemory.size_after``), checked before a call changes anything."""
        k = self.n_neighbors
        if isinstance(k, Integral) and not isinstance(k, bool) and k > stored:
            raise ValueError(
                f"`n_neighbors`={k} is larger than the {stored} {self._stored_name}; "
                f"pass n_neighbors <= {stored}"
            )

    def _stores_examples(self) -> bool:
        """Does this configuration keep a memory of examples? (SemiparametricClassifier's
        parametric mode does not.)"""
        return True

    def _new_memory(self, device) -> ExampleMemory:
        """An empty memory for the examples of a new fit."""
        return ExampleMemory(device=device)

    def _check_fit_data(self, X, y, *, first_pass, incremental):
        super()._check_fit_data(X, y, first_pass=first_pass, incremental=incremental)
        if not isinstance(self.n_neighbors, Integral) or not self._stores_examples():
            return  # nothing to check, nor rows to hash
        keeps = not first_pass and (incremental or self._warm_fit_keeps_memory)
        memory = self.memory_ if keeps else self._new_memory("cpu")
        if len(memory) == 0:  # every row is a new entry
            stored = X.shape[0] if memory.capacity is None else min(X.shape[0], memory.capacity)
        else:
            stored = memory.size_after(row_identities(X, y))
        self._check_n_neighbors(stored)

    def _compared_keys(self, new_rows: int) -> int:
        """For ``num_threads="auto"``: a row is compared with at most every stored example (exact
        search, dense votes), counted as the memory after this call's ``new_rows`` are added (an
        estimator without ``memory_`` counts the rows)."""
        if not self._stores_examples():
            return 0
        memory = self.__dict__.get("memory_")
        if memory is None:
            return new_rows
        stored = len(memory) + new_rows
        return stored if memory.capacity is None else min(stored, memory.capacity)

    def _remember(self, X, y, *, replace: bool) -> np.ndarray:
        """Write the rows (X, y) to ``memory_``, a new memory with ``replace``; the slot of each
        row (a row stored by an earlier call keeps its slot)."""
        if replace:
            self.memory_ = self._new_memory(self.device_)
        return self.memory_.write(None, y, X=X)  # identities from the rows, hashed when needed

    def _to_device(self, device):
        if self.device_ == device:
            return
        super()._to_device(device)
        self.memory_.to(device)
        index = self.__dict__.get("index_")  # not a property: one that builds lazily stays unbuilt
        if index is not None:
            index.to(device)

    @staticmethod
    def _dense_chunks(n_queries: int, n_stored: int) -> list[slice]:
        """Slices of the queries for scoring them against all ``n_stored`` examples (``n_neighbors``
        None) with about ``_DENSE_CHUNK_ELEMENTS`` distances at a time."""
        step = max(1, _DENSE_CHUNK_ELEMENTS // max(n_stored, 1))
        return [slice(s, s + step) for s in range(0, n_queries, step)]

    def _n_neighbors(self, n_stored: int) -> int:
        """Examples retrieved per query from ``n_stored``: ``"auto"`` is ``AUTO_NEIGHBORS`` (or all
        while fewer are stored), None all of them, an int itself (capped at ``n_stored``)."""
        k = {"auto": AUTO_NEIGHBORS, None: n_stored}.get(self.n_neighbors, self.n_neighbors)
        return min(k, n_stored)
