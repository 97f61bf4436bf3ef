"""Graphs: composition, prebuilt graphs, persistence, run records, schedules and workers.

``ponder.graphs.submit`` starts a background run (``ponder.graphs.workers.submit``).
"""


def __getattr__(name: str):
    # Lazy: ponder.agents imports ponder.graphs.persistence, and the workers import the agents.
    if name == "submit":
        from ponder.graphs.workers import submit

        return submit
    raise AttributeError(f"module 'ponder.graphs' has no attribute {name!r}")
