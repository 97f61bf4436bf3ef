"""The public surface, pinned: what each package exports. A change here is a change of ponder's
API: make it on purpose, and say so in the README."""

import importlib

import pytest

SURFACE = {
    "ponder": ["Agent", "AgentState", "Budget", "BudgetExceeded", "ConfigurationError",
               "Document", "InMemoryMemory",
               "KnowledgeBase", "Memory", "NotFoundError", "Planner", "PonderError", "Profile",
               "chat_model", "embeddings", "track_usage"],
    "ponder.agents": ["ActionModule", "Agent", "AgentState", "OutputError", "Planner",
                      "Profile", "ResumeError", "final_text", "turn_usage"],
    "ponder.agents.planning": ["AutoCoT", "Budget", "BudgetExceeded", "ChainOfThought",
                               "Decompose", "Example", "Game24", "Planner", "PromptFormat",
                               "SelfConsistency", "Solution", "Step", "TreeOfThoughts",
                               "ZeroShotCoT", "canonical_answer", "extract_answer",
                               "make_planner", "planner_name"],
    "ponder.cli": ["app", "main"],
    "ponder.db": ["DatabaseURL", "parse_url"],
    "ponder.graphs": ["RunRecord", "Target", "as_target", "cancel", "delegate", "parallel",
                      "router", "sequence", "submit", "supervisor", "wait"],
    "ponder.graphs.prebuilt": ["clarification_tree", "multi_hop", "plan_and_execute",
                               "self_instruct"],
    "ponder.memory": ["ConversationMemory", "InMemoryMemory", "Memories", "Memory"],
    "ponder.memory.knowledge": ["Chunk", "Chunker", "Document", "DocumentError",
                                "EmbeddingMismatchError", "FilterError", "Hit", "IngestReport",
                                "KnowledgeBase"],
    "ponder.models": ["Budget", "BudgetExceeded", "LocalEmbeddings", "LocalLedger", "ModelCall",
                      "ModelCallError", "ResiliencePolicy", "UnpricedModel", "active_ledgers",
                      "charge_request", "spending",
                      "ResilientChatModel", "ResilientEmbeddings", "UsageLog", "as_chat_model",
                      "chat_model", "embedding_model_id", "embeddings", "first_json",
                      "follow_background", "json_list", "list_items",
                      "supports_response_format", "track_usage"],
    "ponder.server": ["create_app"],
    "ponder.testing": ["BackgroundServer", "FakeOpenAIServer", "Fault", "HashingEmbeddings",
                       "Script", "ScriptExhausted", "ScriptedChatModel", "fake_embedding",
                       "tool_calls"],
    "ponder.tools": ["BUILTIN_TOOLS", "WebSearch", "calculator", "current_time", "tool",
                     "web_search_tool"],
    "ponder.tools.sql": ["Database", "QueryError", "QueryResult", "Table", "TextToSQL",
                         "TextToSQLResult", "UnsafeSQLError", "check", "sql_tool",
                         "text_to_sql"],
}


@pytest.mark.parametrize("package", sorted(SURFACE))
def test_each_package_exports_what_it_says(package):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(SURFACE[package])
    for name in module.__all__:
        exported = getattr(module, name)  # every name in __all__ exists
        if callable(exported) and getattr(exported, "__module__", "").startswith("ponder"):
            assert exported.__doc__, f"{package}.{name} has no docstring"
