"""Conversation memory: a thread's history fitted to a token budget, with a rolling summary.

The messages live in the checkpointer. Before a turn, once the thread holds more than
``max_tokens``, its oldest whole turns are folded into a summary (one model call) and removed
from the state, so neither the prompt nor the stored thread grows without bound; the summary is
state too, so it survives restarts. Before each model call the history is trimmed to the budget
as a last resort (a single turn with long tool results), never splitting a tool call from its
result.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AnyMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
)
from langchain_core.messages.utils import (
    count_tokens_approximately,
    get_buffer_string,
    trim_messages,
)


class ConversationMemory:
    """A thread's history kept within a token budget, its oldest turns folded into a summary.

    Tokens are counted approximately (LangChain's ``count_tokens_approximately``). Raises ValueError
    when ``max_tokens`` is below 100.
    """
    def __init__(self, model: BaseChatModel | None = None, *, max_tokens: int = 3000,
                 keep_tokens: int | None = None, summary_tokens: int = 400) -> None:
        """``max_tokens``: the budget for the thread's messages; when a turn starts above it,
        the oldest turns are folded until at most ``keep_tokens`` (default half) remain.
        ``model`` writes the summary (default: the agent's model)."""
        if max_tokens < 100:
            raise ValueError(f"max_tokens must be at least 100, got {max_tokens}")
        self.model, self.max_tokens = model, max_tokens
        self.keep_tokens = keep_tokens or max_tokens // 2
        self.summary_tokens = summary_tokens

    @staticmethod
    def tokens(messages: Sequence[AnyMessage]) -> int:
        """The approximate token count of ``messages`` (LangChain's
        ``count_tokens_approximately``)."""
        return count_tokens_approximately(messages)

    def fit(self, messages: Sequence[AnyMessage]) -> list[AnyMessage]:
        """The newest messages within the budget, starting at a user message (so no tool
        result is cut from its call); at least the current turn's question."""
        if self.tokens(messages) <= self.max_tokens:
            return list(messages)
        kept = trim_messages(messages, max_tokens=self.max_tokens, strategy="last",
                             token_counter=count_tokens_approximately, start_on="human",
                             allow_partial=False)
        if kept:
            return kept
        last_question = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        return list(messages[last_question:])

    async def fold(self, summary: str | None, messages: Sequence[AnyMessage],
                   model: BaseChatModel) -> dict | None:
        """The state update that folds the oldest turns into the summary, or None when the
        thread is within budget. Only whole turns are folded (a cut falls before a user
        message), and never the current one."""
        if self.tokens(messages) <= self.max_tokens:
            return None
        starts = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
        cut = None
        for start in starts[1:]:  # the earliest cut that leaves at most keep_tokens
            cut = start
            if self.tokens(messages[start:]) <= self.keep_tokens:
                break
        if cut is None:
            return None
        folded = messages[:cut]
        earlier = f"The summary so far:\n{summary}\n\n" if summary else ""
        reply = await (self.model or model).ainvoke([
            SystemMessage(f"Summarise the conversation for your own memory in at most "
                          f"{self.summary_tokens} tokens: who the user is, what they asked and "
                          f"decided, facts and numbers you will need later. Write the summary "
                          f"only."),
            HumanMessage(f"{earlier}New messages:\n{get_buffer_string(folded)}"),
        ])
        return {"summary": reply.text.strip(),
                "messages": [RemoveMessage(id=m.id) for m in folded if m.id]}
