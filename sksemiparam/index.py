"""Nearest-neighbour search over stored keys, exact or approximate: the index the estimators use.

Every estimator that retrieves neighbours builds a :class:`NeighborIndex` (its fitted ``index_``);
the class is public for code that searches embeddings the same way, such as the benchmarks::

    from sksemiparam.index import NeighborIndex

    index = NeighborIndex("exact").build(keys)    # keys: (N, d) float tensor
    index.add(more_keys)                          # ids continue at N
    dist, ids = index.query(queries, k)           # squared Euclidean distances, (n, k) each

``"auto"`` (the default) searches exactly while fewer than :data:`AUTO_THRESHOLD` keys are stored
and with a pynndescent graph from then on. The user guide's "Neighbour search" page describes the
backends and the measurements behind the threshold.
"""

from ._index import AUTO_THRESHOLD as _AUTO_THRESHOLD
from ._index import NeighborIndex

__all__ = ["AUTO_THRESHOLD", "NeighborIndex"]

#: Number of stored keys from which ``NeighborIndex("auto")`` switches from exact search to a
#: pynndescent graph (unless ``auto_threshold`` is given).
AUTO_THRESHOLD = _AUTO_THRESHOLD
