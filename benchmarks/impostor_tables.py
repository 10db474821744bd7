"""ImpostorClassifier trained as ModernNCA trains its model: each change alone against its defaults.

Issue 19, part 1, for the Impostor Network. The same tables, protocol and changes as
``nngk-tables`` (see that module: ``VARIANTS`` there), each applied to ``ImpostorClassifier()``
instead of ``NNGKClassifier()``, and three changes of the Impostor Network's own:

- ``tied_centers``: ``centers="tied"``, the centres are the current embeddings of the stored rows
  (NNGK without importance weights) instead of parameters of their own;
- ``center_reg_0.1`` / ``center_reg_10``: the L2 tie of eq. (8) ten times weaker or stronger
  than the default 1.

``candidates_half`` draws half the stored rows per step (ModernNCA's rate) instead of the default
1024 of them (on these tables, capped at 2,000 rows, 1024 is most of the 1,333 training rows).
``dense_predict`` votes over every centre at prediction.

Finished folds are kept in ``OUT/impostor-tables-cells.jsonl``. ``summary`` as in
``nngk-tables``: ``score.<table>.<variant>``, ``mean_score.<variant>``, ``mean_gain.<variant>``,
``win_tie_loss.<variant>``, ``rank.<variant>``, ``fit_seconds.<variant>``.
"""

from __future__ import annotations

from typing import Any

from .nngk_tables import VARIANTS as NNGK_VARIANTS
from .nngk_tables import run_variants

VARIANTS: dict[str, dict[str, Any]] = {
    **NNGK_VARIANTS,
    "tied_centers": {"centers": "tied"},
    "center_reg_0.1": {"center_reg": 0.1},
    "center_reg_10": {"center_reg": 10.0},
}


def run(quick: bool, data_dir: str | None, out: str | None = None) -> dict[str, Any]:
    return run_variants("ImpostorClassifier", VARIANTS, "impostor-tables", quick, data_dir, out)
