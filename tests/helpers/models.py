"""Scripted chat models shared by the server's tests."""

from ponder.testing import ScriptedChatModel, tool_calls


def echo_model() -> ScriptedChatModel:
    """Replies with what it saw: the number of user messages and the last one ("turn N: you
    said ..."); computes with the calculator when asked to ("compute"), then says the result."""
    def reply(messages):
        users = [m for m in messages if m.type == "human"]
        if messages[-1].type == "tool":
            return f"The result is {messages[-1].content}."
        if "compute" in users[-1].content:
            return tool_calls(("calculator", {"expression": "6 * 7"}))
        return f"turn {len(users)}: you said {users[-1].content}"
    return ScriptedChatModel(replies=reply, tokens_per_second=500)
