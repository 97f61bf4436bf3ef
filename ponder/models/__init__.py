"""Provider strings -> LangChain chat and embedding models, behind one resilience policy.

``chat_model("openai:gpt-4o-mini")`` returns a LangChain ``BaseChatModel`` whose every call goes
through the same policy: a shared per-provider+model limiter for requests and tokens per minute,
a concurrency cap, a per-call timeout, and retries with exponential backoff and jitter that honour
``Retry-After``. Each call's token usage and latency are recorded (``model.usage`` and
``track_usage()``, which records any other LangChain model's calls in its scope too), with its
cost in dollars where genai-prices knows the model; budgets (``Budget``, ``spending``) stop
calls that would go over a limit.
"""

from ponder.models.budgets import (
    Budget,
    BudgetExceeded,
    LocalLedger,
    UnpricedModel,
    active_ledgers,
    charge_request,
    spending,
)
from ponder.models.chat import (
    ResilientChatModel,
    as_chat_model,
    chat_model,
    supports_response_format,
)
from ponder.models.embeddings import (
    LocalEmbeddings,
    ResilientEmbeddings,
    embedding_model_id,
    embeddings,
)
from ponder.models.quotas import ResiliencePolicy
from ponder.models.replies import first_json, json_list, list_items
from ponder.models.retries import ModelCallError
from ponder.models.usage import ModelCall, UsageLog, follow_background, track_usage

__all__ = [
    "Budget",
    "BudgetExceeded",
    "LocalLedger",
    "UnpricedModel",
    "active_ledgers",
    "charge_request",
    "spending",
    "LocalEmbeddings",
    "ModelCall",
    "ModelCallError",
    "ResiliencePolicy",
    "ResilientChatModel",
    "ResilientEmbeddings",
    "UsageLog",
    "as_chat_model",
    "chat_model",
    "embedding_model_id",
    "embeddings",
    "first_json",
    "follow_background",
    "json_list",
    "list_items",
    "supports_response_format",
    "track_usage",
]
