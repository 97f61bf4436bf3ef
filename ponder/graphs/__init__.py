"""Graphs: composition, prebuilt graphs, run records, schedules and workers.

Composition (``sequence``, ``parallel``, ``router``, ``delegate``, ``supervisor``) combines
agents and compiled graphs into one graph; ``submit`` starts a background run, ``wait`` and
``cancel`` follow it. The prebuilt graphs are in ``ponder.graphs.prebuilt``.
"""

from ponder.graphs.compose import delegate, parallel, router, sequence, supervisor
from ponder.graphs.workers import cancel, submit, wait

__all__ = ["cancel", "delegate", "parallel", "router", "sequence", "submit", "supervisor",
           "wait"]
