"""Test your agents without a network: a scripted chat model and a fake OpenAI server."""

from ponder.testing.background import BackgroundServer
from ponder.testing.embeddings import HashingEmbeddings, fake_embedding
from ponder.testing.openai_server import FakeOpenAIServer, Fault
from ponder.testing.script import Script, ScriptExhausted, tool_calls
from ponder.testing.scripted import ScriptedChatModel

__all__ = [
    "BackgroundServer",
    "FakeOpenAIServer",
    "Fault",
    "HashingEmbeddings",
    "Script",
    "ScriptExhausted",
    "ScriptedChatModel",
    "fake_embedding",
    "tool_calls",
]
