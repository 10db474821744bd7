"""Loading support for models saved by sksemiparam 0.1, whose MbPA memory was an ``EpisodicMemory``.

Estimators now keep their stored examples in ``sksemiparam._memory.ExampleMemory``. This class only
receives the state of an old memory while a pickle or a ``persistence`` file of an MbPAClassifier
is loaded; the estimator converts it (``ExampleMemory.from_episodic_state``).
"""

from __future__ import annotations

from ..persistence import register


@register
class EpisodicMemory:
    """The saved state of an sksemiparam 0.1 episodic memory; converted when its estimator loads."""

    def __setstate__(self, state):
        self.__dict__.update(state)
