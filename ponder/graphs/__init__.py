"""Graphs: composition, prebuilt graphs, run records, schedules and workers.

Composition (``sequence``, ``parallel``, ``router``, ``delegate``, ``supervisor``) combines
agents and compiled graphs into one graph; ``submit`` starts a background run, ``wait`` and
``cancel`` follow it (a ``RunRecord``). ``Target`` is what runs: an Agent, or a compiled graph
wrapped by ``as_target``. The prebuilt graphs are in ``ponder.graphs.prebuilt``.
"""

from ponder.graphs.compose import delegate, parallel, router, sequence, supervisor
from ponder.graphs.runs import RunRecord
from ponder.graphs.targets import Target, as_target
from ponder.graphs.workers import cancel, submit, wait

__all__ = ["RunRecord", "Target", "as_target", "cancel", "delegate", "parallel", "router",
           "sequence", "submit", "supervisor", "wait"]
