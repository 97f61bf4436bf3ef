"""Agents: profile + memory + planning + action, compiled to a LangGraph state machine."""

from ponder.agents.action import ActionModule
from ponder.agents.agent import Agent, ResumeError, final_text, turn_usage
from ponder.agents.output import OutputError
from ponder.agents.planning import Planner
from ponder.agents.profile import Profile
from ponder.agents.state import AgentState

__all__ = ["ActionModule", "Agent", "AgentState", "OutputError", "Planner", "Profile",
           "ResumeError", "final_text", "turn_usage"]
