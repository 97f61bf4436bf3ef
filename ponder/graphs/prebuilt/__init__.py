"""Prebuilt graphs: compiled LangGraph graphs for common patterns, each servable, composable and
schedulable like any other: plan-and-execute, multi-hop retrieval (DSP), the tree of
clarifications, and Self-Instruct."""

from ponder.graphs.prebuilt.clarify import clarification_tree
from ponder.graphs.prebuilt.multihop import multi_hop
from ponder.graphs.prebuilt.plan_execute import plan_and_execute
from ponder.graphs.prebuilt.self_instruct import self_instruct

__all__ = ["clarification_tree", "multi_hop", "plan_and_execute", "self_instruct"]
