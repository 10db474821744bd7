"""Figure 2's MNIST protocol for SemiparametricClassifier with and without ``neighbor_skip``.

``neighbor_skip`` (not in the paper) adds s * c' to the head's logits, s learnable from 10: class a's
neighbour estimate feeds class a's logit, so a class the head was never trained on can be predicted
from its stored examples. This runs ``semiparametric-domain``'s MNIST protocol (the same first
domain, reserve, draws, k and passes; see that module) for the paper's semiparametric model and
for ``neighbor_skip=10``, side by side in one run. ``SEEDS`` seeds (3 under ``--quick``).
``summary``: as ``semiparametric-domain``'s, with modes ``semiparametric`` and ``semiparametric+skip``.
"""

from __future__ import annotations

from typing import Any

from .semiparametric_domain import SEEDS, _summary, _task

VARIANTS = {
    "semiparametric": {"mode": "semiparametric", "neighbor_skip": None},
    "semiparametric+skip": {"mode": "semiparametric", "neighbor_skip": 10.0},
}
N_JOBS = 2


def run(quick: bool, data_dir: str | None) -> dict[str, Any]:
    from joblib import Parallel, delayed

    seeds = 3 if quick else SEEDS
    outputs = Parallel(n_jobs=N_JOBS)(
        delayed(_task)("mnist", seed, quick, data_dir, VARIANTS) for seed in range(seeds)
    )
    results = [row for rows in outputs for row in rows]
    return {"results": results, "summary": _summary(results, seeds, tuple(VARIANTS), ("mnist",))}
