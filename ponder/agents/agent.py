"""Agent: a profile, memory, a planner and an action module, compiled to a LangGraph graph.

A turn flows ``recall -> plan -> act <-> tools -> remember`` (``recall`` also folds the
conversation; without memory a ``compact`` node does); a module that is not configured
adds no node, so a bare agent is just ``act <-> tools``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from langgraph.types import Command, Interrupt, Send

from ponder.agents import approval
from ponder.agents.action import ActionModule
from ponder.agents.output import (
    OutputError,
    OutputSchema,
    call_options,
    output_for_run,
    typed_reply,
    with_instructions,
)
from ponder.agents.planning.base import Planner
from ponder.agents.profile import Profile
from ponder.agents.reply import STREAM_MODES, ReplyStream, final_text
from ponder.agents.spec import SpecError, agent_arguments
from ponder.agents.state import AgentState
from ponder.config import ConfigurationError, Settings
from ponder.db.persistence import (
    Persistence,
    copy_checkpoints,
    open_persistence,
    prune_checkpoints,
    rewind_checkpoints,
)
from ponder.errors import PonderError
from ponder.memory.base import Memories, Memory
from ponder.memory.conversation import ConversationMemory
from ponder.models import Budget, LocalLedger, chat_model, follow_background, spending
from ponder.sync import run_sync
from ponder.tools.toolkit import ToolSource

log = logging.getLogger("ponder.agents")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_INTERRUPT_ID = re.compile(r"[0-9a-f]{32}")  # how LangGraph tells a resume map from an answer


class ResumeError(PonderError, ValueError):
    """A resume value that does not fit a thread's pending interrupts (nothing ran).

    ``pending`` maps the id of each interrupt the thread waits on to its value (what it asks);
    the message lists them. ``unknown`` holds the ids the value named that are not pending
    (empty when the value was one answer for several interrupts).
    """

    def __init__(self, problem: str, thread_id: str, pending: dict[str, Any],
                 unknown: Sequence[str] = ()) -> None:
        listed = "; ".join(f"{id} asks {value!r}" for id, value in pending.items())
        super().__init__(f"{problem}. Pending: {listed or 'none'}.")
        self.thread_id = thread_id
        self.pending = pending
        self.unknown = list(unknown)


class Agent:
    """An agent you can run (``ainvoke``, ``astream``, ``aask``) or embed (``agent.graph``).

    ``model`` is a LangChain chat model or a provider string (default ``PONDER_MODEL``).
    ``durability`` is LangGraph's: ``"sync"`` (the default) saves each step's checkpoint before
    the next step starts, so a crash loses no finished step; ``"async"`` saves while the next
    step runs (a crash may lose the whole turn); ``"exit"`` saves only when the run ends.
    ``checkpointer`` is a LangGraph saver, a database URL, ``None`` for ``PONDER_DATABASE_URL``
    (opened on the first run), or ``False`` for no persistence. ``agent.graph`` is compiled with
    the saver only when one is passed in, so it can be a subgraph that shares its parent's.
    ``tool_timeout_s`` bounds each tool call, in seconds, except for a tool made with
    ``ponder.tools.tool``, which keeps its own ``timeout_s``. ``tools`` may include MCP servers
    (``ponder.tools.mcp.MCPServer``): each thread gets a session of its own on each, and its
    tools are listed for every model step.
    ``output`` (a pydantic model, a TypedDict or a JSON Schema dict) makes the answer typed
    (``ponder.agents.output``): validated, repaired up to ``output_retries`` times, returned by
    ``aask`` and kept in the state as ``structured_response``. ``approve`` maps tool names to
    approval policies (True, False, or a function of a call's arguments returning a bool) over
    the tools' own: a call that needs approval interrupts until a person answers (see
    ``ponder.agents.approval``); an MCP server's tools marked ``destructiveHint`` need it.
    ``budget`` (a ``Budget``) limits what this Agent object's model calls spend, across its
    turns and threads, in this process: a call that could go over it is not made, and the turn
    fails with ``BudgetExceeded`` (see ``ponder.models.budgets``).
    """

    def __init__(
        self,
        name: str,
        model: BaseChatModel | str | None = None,
        profile: Profile | None = None,
        memory: Memory | Sequence[Memory] | None = None,
        planner: Planner | None = None,
        tools: Sequence[BaseTool | ToolSource | Callable[..., Any]] = (),
        *,
        conversation: ConversationMemory | None = None,
        max_steps: int = 10,
        tool_timeout_s: float = 30.0,
        checkpointer: BaseCheckpointSaver | str | bool | None = None,
        store: BaseStore | None = None,
        keep_checkpoints: int | None = None,
        interrupt_before: Sequence[str] = (),
        durability: str = "sync",
        output: Any = None,
        output_retries: int = 2,
        approve: Mapping[str, approval.Policy] | None = None,
        budget: Budget | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(
                f"agent name {name!r} is not valid: use 1-64 letters, digits, '_', '-' or '.', "
                "starting with a letter or digit (it is the model id clients ask for)"
            )
        if isinstance(memory, list | tuple):
            memory = Memories(memory)
        if memory is not None and not isinstance(memory, Memory):
            raise ConfigurationError(f"memory {memory!r} has no async recall() and remember()")
        if planner is not None and not isinstance(planner, Planner):
            raise ConfigurationError(f"planner {planner!r} has no async plan()")
        self._options = dict(
            profile=profile, memory=memory, planner=planner, tools=tools,
            conversation=conversation, max_steps=max_steps,
            tool_timeout_s=tool_timeout_s, checkpointer=checkpointer, store=store,
            keep_checkpoints=keep_checkpoints, interrupt_before=interrupt_before,
            durability=durability, output=output, output_retries=output_retries,
            approve=approve, budget=budget,
        )
        self.output = OutputSchema.of(output) if output is not None else None
        if not isinstance(output_retries, int) or output_retries < 0:
            raise ConfigurationError(f"output_retries must be 0 or more, not {output_retries!r}")
        self.output_retries = output_retries
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigurationError(f"budget must be a ponder.Budget, e.g. Budget(usd=0.5), "
                                     f"not {budget!r}")
        self._ledger = LocalLedger(budget, f"agent {name!r}") if budget is not None else None
        if durability not in ("sync", "async", "exit"):
            raise ConfigurationError(f"durability must be 'sync', 'async' or 'exit', not "
                                     f"{durability!r}")
        self.durability = durability
        self.name = name
        self.model = chat_model(model) if model is None or isinstance(model, str) else model
        self.profile = profile or Profile()
        self._profile_message = self.profile.system_message(name)
        self.memory = memory
        self.conversation = conversation
        self.planner = planner
        self.action = ActionModule(tools, timeout_s=tool_timeout_s, max_steps=max_steps,
                                   approve=approve)
        # The provider's formatting of the tool schemas, done once; passed to every call.
        self._tool_kwargs = (self.model.bind_tools(self.action.tools).kwargs
                             if self.action.tools else {})
        self._interrupt_before = list(interrupt_before)
        if keep_checkpoints is not None and keep_checkpoints < 1:
            raise ConfigurationError(f"keep_checkpoints must be at least 1, got {keep_checkpoints}")
        self._keep = keep_checkpoints or Settings.from_env().checkpoints_per_thread
        self._store = store
        self._saver = checkpointer if isinstance(checkpointer, BaseCheckpointSaver) else None
        self._database_url = checkpointer if isinstance(checkpointer, str) else None
        self._persist = checkpointer is not False
        self.graph: CompiledStateGraph = self._compile(self._saver, store)
        self._runnable: CompiledStateGraph | None = self.graph if self._saver or not self._persist \
            else None
        self._persistence: Persistence | None = None
        self._opening: asyncio.Lock | None = None
        self._background: set[asyncio.Task] = set()
        # Per thread, at most how many checkpoints it may hold beyond what the last prune left.
        self._unpruned: OrderedDict[str, int] = OrderedDict()

    # -- the graph ------------------------------------------------------------------------------

    def _compile(self, checkpointer: BaseCheckpointSaver | None, store: BaseStore | None
                 ) -> CompiledStateGraph:
        builder = StateGraph(AgentState)
        first = "act"
        finish = END
        if self.memory is not None:
            builder.add_node("recall", self._recall)
            builder.add_node("remember", self._remember)
            builder.add_edge("remember", END)
            first, finish = "recall", "remember"
        builder.add_node("act", self._act)
        builder.add_node("tools", self._tools)
        # A step's tool calls go to "tools" as one task each (Sends): see ActionModule.tasks.
        builder.add_conditional_edges("act", self._after_act, {"tools": "tools",
                                                               "finish": finish})
        if self.action.policies or self.action.sources:  # an MCP tool may need approval
            # An approved call runs in the step after its approval (ActionModule.review), when
            # the step's other calls have finished: a deferred node waits for all of them.
            builder.add_node("tools_done", _tools_done, defer=True)
            builder.add_edge("tools", "tools_done")
            builder.add_conditional_edges("tools_done", _after_tools, {"act": "act",
                                                                       "finish": finish})
        else:
            builder.add_conditional_edges("tools", _after_tools, {"act": "act",
                                                                  "finish": finish})
        if self.planner is not None:
            builder.add_node("plan", self._plan)
            builder.add_conditional_edges("plan", _after_plan, {"act": "act", "finish": finish})
            if first == "recall":
                builder.add_edge("recall", "plan")
            else:
                first = "plan"
        elif first == "recall":
            builder.add_edge("recall", "act")
        if self.conversation is not None and self.memory is None:
            # With memory, recall folds the conversation too: one step (one checkpoint) fewer.
            builder.add_node("compact", self._compact)
            builder.add_edge("compact", first)
            first = "compact"
        builder.add_edge(START, first)
        return builder.compile(checkpointer=checkpointer, store=store, name=self.name,
                               interrupt_before=self._interrupt_before or None)

    def _system(self, state: dict[str, Any]):
        summary, context, plan = state.get("summary"), state.get("context"), state.get("plan")
        if not summary and not context and not plan:
            return self._profile_message  # rendered once: the profile does not change
        return self.profile.system_message(
            self.name,
            f"Summary of the earlier conversation:\n{summary}" if summary else None,
            f"Context you recalled (use it when relevant):\n{context}" if context else None,
            f"Your plan for this turn:\n{plan}" if plan else None,
        )

    def _history(self, state: AgentState) -> list[AnyMessage]:
        """The thread's messages as a model call sees them: fitted to the budget, if any."""
        if self.conversation is None:
            return state["messages"]
        return self.conversation.fit(state["messages"])

    async def _compact(self, state: AgentState) -> dict[str, Any]:
        update = await self.conversation.fold(state.get("summary"), state["messages"],
                                              self.model)
        return update or {}

    async def _recall(self, state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        user_id, thread_id = _ids(config)
        query = _last_human_text(state["messages"])
        recall = self.memory.recall(query, user_id=user_id, thread_id=thread_id)
        if self.conversation is None:
            return {"context": await recall}
        context, update = await asyncio.gather(recall, self._compact(state))
        return {**update, "context": context}

    async def _plan(self, state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        if self.conversation is not None:
            state = {**state, "messages": self._history(state)}
        update = await self.planner.plan(state, model=self.model, system=self._system(state),
                                         action=self.action, config=config)
        answer = (update.get("messages") or [None])[-1]
        output = output_for_run(self.output, config)
        if output is None or not isinstance(answer, AIMessage) or answer.tool_calls:
            return {**update, **_untyped(state)}
        # The planner's answer is text: the model turns it into the typed answer.
        messages = [with_instructions(self._system(state), output), *self._history(state)]
        return {**update, **await typed_reply(self.model, messages, answer, output,
                                              self.output_retries,
                                              call_options(self.model, output))}

    async def _act(self, state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        # The run's config (callbacks, streaming) reaches the model through LangGraph's context
        # variable, as in LangChain's own agents; passing it again would only merge it again.
        tool_kwargs = self._tool_kwargs
        if self.action.sources:  # MCP servers: the thread's tools now
            tools = await self.action.tools_for(config)
            tool_kwargs = self.model.bind_tools(tools).kwargs if tools else {}
        output = output_for_run(self.output, config)
        if output is None:
            reply = await self.model.ainvoke([self._system(state), *self._history(state)],
                                             **tool_kwargs)
            return {"messages": [reply], **_untyped(state)}
        messages = [with_instructions(self._system(state), output), *self._history(state)]
        options = call_options(self.model, output)
        # Structured output with tools needs strict tools (OpenAI): with tools, the answer is
        # asked for by the system message, and a repair (no tools) uses structured output.
        reply = await self.model.ainvoke(messages, **(tool_kwargs or options))
        if reply.tool_calls:
            return {"messages": [reply], "structured_response": None}
        return await typed_reply(self.model, messages, reply, output, self.output_retries,
                                 options)

    async def _after_act(self, state: AgentState) -> str | list[Send]:
        # Each tool call its own task: LangGraph keeps a finished call's result when another
        # call of the step interrupts, and gives each interrupt its own id. (Async on purpose,
        # like the routers below.)
        return self.action.tasks("tools", state["messages"],
                                 state.get("allowed_tools") or ()) or "finish"

    async def _tools(self, task: dict[str, Any], config: RunnableConfig
                     ) -> dict[str, Any] | Command:
        # ``task`` is an ActionModule ToolTask, sent by _after_act (annotated as a plain dict:
        # LangGraph would make a TypedDict annotation the node's input schema, with channels).
        done = await self.action.execute(task, config)
        return done if isinstance(done, Command) else {"messages": done}

    async def _remember(self, state: AgentState, config: RunnableConfig) -> None:
        # Off the critical path: the reply does not wait; flush() or aclose() does.
        user_id, thread_id = _ids(config)
        turn = _current_turn(state["messages"])
        self._spawn(self.memory.remember(turn, user_id=user_id, thread_id=thread_id))

    # -- running --------------------------------------------------------------------------------

    async def _graph(self) -> CompiledStateGraph:
        if self._runnable is None:
            self._opening = self._opening or asyncio.Lock()
            async with self._opening:
                if self._runnable is None:
                    self._persistence = await open_persistence(self._database_url)
                    self._saver = self._persistence.checkpointer
                    self._runnable = self._compile(self._saver,
                                                   self._store or self._persistence.store)
        return self._runnable

    def _durability(self) -> str | None:
        return self.durability if self._saver is not None else None  # nothing to save to

    def _config(self, thread_id: str | None, user_id: str | None,
                checkpoint_id: str | None, config: RunnableConfig | None) -> RunnableConfig:
        configurable = {"thread_id": thread_id or str(uuid.uuid4())}
        if user_id is not None:
            configurable["user_id"] = user_id
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        merged: dict[str, Any] = dict(config or {})
        merged["configurable"] = {**merged.get("configurable", {}), **configurable}
        # Enough supersteps for max_steps tool steps plus recall, plan and remember: the step
        # limit ends the turn well before LangGraph's recursion error would.
        merged.setdefault("recursion_limit", 2 * self.action.max_steps + 10)
        return merged

    async def ainvoke(self, input: Any, *, thread_id: str | None = None,
                      user_id: str | None = None, checkpoint_id: str | None = None,
                      config: RunnableConfig | None = None) -> dict[str, Any]:
        """Run one turn and return the thread's state (``messages``, ...).

        ``input`` is a string, a message, a list of messages, a state dict, a
        ``Command(resume=...)``, or ``None`` to continue the thread from its last checkpoint
        (after a crash, or from ``checkpoint_id`` for time travel). Without ``thread_id`` the
        turn runs in a new thread.
        """
        graph = await self._graph()
        cfg = self._config(thread_id, user_id, checkpoint_id, config)
        state = None
        try:
            with spending(self._ledger):
                state = await graph.ainvoke(_as_input(input), cfg,
                                            durability=self._durability())
            if state.get("__interrupt__") and self._saver is not None:
                # LangGraph lists the interrupts of concurrent tasks in no particular order.
                order = {i.id: n for n, i in enumerate(
                    await self.ainterrupts(cfg["configurable"]["thread_id"]))}
                state["__interrupt__"] = sorted(state["__interrupt__"],
                                                key=lambda i: order.get(i.id, len(order)))
            return state
        finally:
            self._after_turn(cfg, state)

    async def astream(self, input: Any, *, thread_id: str | None = None,
                      user_id: str | None = None, checkpoint_id: str | None = None,
                      stream_mode: str | Sequence[str] = "updates", subgraphs: bool = False,
                      config: RunnableConfig | None = None) -> AsyncIterator[Any]:
        """Run one turn, yielding what LangGraph's ``astream`` yields for ``stream_mode``."""
        graph = await self._graph()
        cfg = self._config(thread_id, user_id, checkpoint_id, config)
        try:
            with spending(self._ledger):
                async for item in graph.astream(_as_input(input), cfg, stream_mode=stream_mode,
                                                subgraphs=subgraphs,
                                                durability=self._durability()):
                    yield item
        finally:
            self._after_turn(cfg)

    @property
    def live_reply_node(self) -> str | None:
        """The node whose model tokens are the reply as they stream, or None when a reply is
        known only once its message is complete. Without tools, the ``act`` call always ends
        the turn; with tools, text may be followed by a tool call that makes it a step."""
        # A typed answer may be repaired: its first text may not be the reply.
        return None if self.action.tools or self.action.sources or self.output else "act"

    def reply_stream(self) -> ReplyStream:
        """A ReplyStream for this agent's turns (see ``ponder.agents.reply``)."""
        return ReplyStream(self.live_reply_node)

    async def astream_text(self, input: Any, **options: Any) -> AsyncIterator[str]:
        """Run one turn, yielding the reply's text as it streams: joined, the pieces are
        exactly what ``aask`` returns (text written before a tool call is not the reply)."""
        reply = self.reply_stream()
        async for mode, data in self.astream(input, stream_mode=STREAM_MODES, **options):
            for piece in reply.feed(mode, data):
                yield piece.text
        for piece in reply.end():
            yield piece.text

    async def aask(self, input: Any, **options: Any) -> Any:
        """Run one turn and return the text of the final reply, or with ``output`` the
        validated answer (OutputError when the turn ended without one: an interrupt, the step
        limit)."""
        state = await self.ainvoke(input, **options)
        if self.output is None:
            return final_text(state)
        if state.get("structured_response") is None:
            why = ("it waits on interrupts: answer them with aresume" if
                   state.get("__interrupt__") else f"it ended with {final_text(state)[:200]!r}")
            raise OutputError(f"the turn has no typed answer: {why}")
        return self.output.validate(state["structured_response"])

    async def aresume(self, thread_id: str, value: Any = None, **options: Any) -> dict[str, Any]:
        """Continue an interrupted thread, answering its pending interrupts with ``value``.

        ``value`` is a mapping ``{interrupt_id: answer, ...}`` (the ids from ``ainterrupts`` or
        the state's ``__interrupt__``; it may answer some of the pending interrupts, the others
        stay pending), or a single answer when one interrupt is pending, or a ``Command`` of
        your own, or ``None`` to continue without an answer (after a static breakpoint or a
        crash). ``ResumeError``
        (nothing runs) when ``value`` does not fit the pending interrupts.
        """
        resume = await self.resume_input(thread_id, value)
        return await self.ainvoke(resume, thread_id=thread_id, **options)

    async def ainterrupts(self, thread_id: str) -> list[Interrupt]:
        """The interrupts the thread waits on, each with its ``id`` and ``value`` (what it asks),
        in the order of the tool calls that raised them."""
        await self._graph()
        if self._saver is None:
            return []  # without a checkpointer nothing can be interrupted
        return list((await self.aget_state(thread_id)).interrupts)

    async def resume_input(self, thread_id: str, value: Any) -> Command | None:
        """The input that resumes ``thread_id`` with ``value`` (see ``aresume``), checked against
        the thread's pending interrupts (``resume_command``)."""
        if value is None:
            return None
        return resume_input(thread_id, await self.ainterrupts(thread_id), value)

    async def aget_state(self, thread_id: str):
        """The thread's current LangGraph ``StateSnapshot`` (its values, next nodes and
        interrupts)."""
        graph = await self._graph()
        return await graph.aget_state({"configurable": {"thread_id": thread_id}})

    async def aget_state_history(self, thread_id: str) -> AsyncIterator[Any]:
        """Every checkpoint of the thread as a ``StateSnapshot``, newest first (LangGraph's
        order)."""
        graph = await self._graph()
        async for snapshot in graph.aget_state_history({"configurable": {"thread_id": thread_id}}):
            yield snapshot

    async def arewind(self, thread_id: str, checkpoint_id: str | None) -> None:
        """Discard what the thread saved after ``checkpoint_id`` (None: everything): the
        thread is as it was then, history included."""
        await self._graph()
        if self._saver is not None:
            await rewind_checkpoints(self._saver, thread_id, checkpoint_id)

    async def acopy_thread(self, source: str, target: str) -> None:
        """Give thread ``target`` the checkpoints of thread ``source`` (state and history)."""
        await self._graph()
        if self._saver is not None:
            await copy_checkpoints(self._saver, source, target)

    async def aupdate_state(self, thread_id: str, values: Any, as_node: str | None = None
                            ) -> RunnableConfig:
        """Write ``values`` to the thread as if ``as_node`` had (LangGraph's ``update_state``);
        the new checkpoint's config."""
        graph = await self._graph()
        return await graph.aupdate_state({"configurable": {"thread_id": thread_id}}, values,
                                         as_node=as_node)

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints (all of them: its whole history)."""
        await self._graph()
        if self._saver is not None:
            await self._saver.adelete_thread(thread_id)
        self._unpruned.pop(thread_id, None)

    def invoke(self, input: Any, **options: Any) -> dict[str, Any]:
        """``ainvoke`` for scripts (not from inside a running event loop)."""
        return run_sync(lambda: self.ainvoke(input, **options))

    def ask(self, input: Any, **options: Any) -> Any:
        """``aask`` for scripts (not from inside a running event loop)."""
        return run_sync(lambda: self.aask(input, **options))

    # -- housekeeping ---------------------------------------------------------------------------

    def _after_turn(self, config: RunnableConfig, state: dict[str, Any] | None = None) -> None:
        """Retention: prune the thread once it may hold more than ``keep`` checkpoints.

        A turn saves one checkpoint for its input and one per node run; from the turn's messages
        that is at most 1 + 2 per model reply + 3 (recall, plan, remember), 4 per reply with tool
        approval (a step that asks, one that runs the approved calls, and their join). Without
        the final state (a stream, a failure) the thread is pruned at once. Runs in the
        background.
        """
        if self._saver is None:
            return
        thread_id = config["configurable"]["thread_id"]
        if state is None:
            written = self._keep + 1
        else:
            replies = sum(isinstance(m, AIMessage) for m in _current_turn(state["messages"]))
            per_reply = 4 if self.action.policies or self.action.sources else 2
            written = self._unpruned.pop(thread_id, 0) + 4 + per_reply * replies
        if written > self._keep:
            self._spawn(prune_checkpoints(self._saver, [thread_id], self._keep))
            written = self._keep
        self._unpruned[thread_id] = written
        if len(self._unpruned) > 10_000:  # forget the oldest threads: they only prune later
            self._unpruned.popitem(last=False)

    def _spawn(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)
        follow_background(task)  # its model calls are the turn's: a usage scope can wait

    def _finished(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Background work (memory writes, retention) must not fail silently.
            log.error("background work of agent %r failed", self.name,
                      exc_info=task.exception())

    async def flush(self) -> None:
        """Wait for background work (memory writes, retention) to finish."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def aclose(self) -> None:
        """Flush background work and close the databases this agent and its memory opened
        (a memory reopens its database when used again)."""
        await self.flush()
        await self.action.aclose()  # MCP sessions
        close = getattr(self.memory, "aclose", None)
        if close is not None:
            await close()
        if self._persistence is not None:  # opened by us: the next run opens it again
            await self._persistence.aclose()
            self._persistence = self._saver = self._runnable = None

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def with_model(self, model: BaseChatModel | str) -> Agent:
        """The same agent on another model."""
        return Agent(self.name, model, **self._options)

    @classmethod
    def from_spec(cls, path: str | Path, *, model: BaseChatModel | str | None = None,
                  **options: Any) -> Agent:
        """An agent from a YAML spec (name, model, profile, tools, knowledge, planner).

        ``model`` and ``options`` override the spec's. Raises SpecError naming the file."""
        arguments = agent_arguments(path)
        if model is not None:
            arguments["model"] = model
        try:
            return cls(**{**arguments, **options})
        except ConfigurationError as exc:
            raise SpecError(f"{path}: {exc}") from None

    def __repr__(self) -> str:
        modules = [m for m, on in (("memory", self.memory), ("planner", self.planner)) if on]
        tools = ", ".join(t.name for t in self.action.tools)
        return f"Agent({self.name!r}, modules={modules}, tools=[{tools}])"


def _as_input(value: Any) -> Any:
    if value is None or isinstance(value, (dict, Command)):
        return value
    if isinstance(value, str):
        return {"messages": [HumanMessage(content=value)]}
    if isinstance(value, BaseMessage):
        return {"messages": [value]}
    if isinstance(value, list):
        return {"messages": value}
    raise TypeError(f"an agent's input is a str, message, list of messages, state dict, Command "
                    f"or None, not {type(value).__name__}")


def resume_input(thread_id: str, pending: Sequence[Interrupt], value: Any) -> Command:
    """The input that resumes a thread waiting on ``pending`` with ``value``: a ``Command`` of
    one's own (its resume value checked too), or one from ``resume_command``."""
    if isinstance(value, Command):  # one's own (with an update or a goto): checked as well
        if value.resume is not None:
            resume_command(thread_id, pending, value.resume)
        return value
    return resume_command(thread_id, pending, value)


def resume_command(thread_id: str, pending: Sequence[Interrupt], value: Any) -> Command:
    """``Command(resume=value)`` for a thread waiting on the interrupts ``pending``, once it is
    clear which interrupt each answer is for: ``ResumeError`` when ``value`` names an id that is
    not pending, or is one answer while several interrupts are pending (whichever got it, it
    could be the wrong one), or when nothing is pending. ``value`` is ``{interrupt_id: answer,
    ...}`` or one answer."""
    waiting = {i.id: i.value for i in pending}
    if not waiting:
        raise ResumeError(f"thread {thread_id!r} waits on no interrupt, so there is nothing to "
                          "resume: send a message instead", thread_id, waiting)
    if _is_resume_map(value, waiting):
        if unknown := [k for k in value if k not in waiting]:
            raise ResumeError(
                f"no pending interrupt of thread {thread_id!r} has the id "
                f"{', '.join(map(repr, unknown))}", thread_id, waiting, unknown)
        _check_decisions(thread_id, waiting, value)
        return Command(resume=dict(value))
    if len(waiting) > 1:
        raise ResumeError(
            f"{len(waiting)} interrupts are pending on thread {thread_id!r}: one answer "
            "cannot say which it is for. Answer each by its id: {interrupt_id: answer, ...}",
            thread_id, waiting)
    _check_decisions(thread_id, waiting, {next(iter(waiting)): value})
    return Command(resume=value)


def _check_decisions(thread_id: str, waiting: dict[str, Any], answers: Mapping[str, Any]
                     ) -> None:
    """ResumeError when an answer to a tool approval request is not a decision."""
    for id, answer in answers.items():
        if approval.is_request(asked := waiting[id]):
            try:
                approval.check_answer(answer, asked["args"])
            except approval.ApprovalError as exc:
                raise ResumeError(f"interrupt {id} asks to approve a call of tool "
                                  f"{asked['tool']!r}, and {exc}", thread_id, waiting) from None


def _is_resume_map(value: Any, pending: dict[str, Any]) -> bool:
    """Whether ``value`` answers interrupts by id rather than being one answer (a dict itself).

    A dict is a map of answers when one of its keys is a pending interrupt's id, or when all of
    them look like interrupt ids (LangGraph's test: 32 hex digits), so that a stale id is
    refused rather than taken for an answer.
    """
    if not isinstance(value, Mapping) or not value:
        return False
    keys = [k for k in value if isinstance(k, str)]
    return len(keys) == len(value) and (any(k in pending for k in keys) or
                                         all(_INTERRUPT_ID.fullmatch(k) for k in keys))


def _untyped(state: AgentState) -> dict[str, Any]:
    """The update that clears an earlier run's typed answer from a turn without one."""
    return {"structured_response": None} if state.get("structured_response") is not None else {}


def _ids(config: RunnableConfig) -> tuple[str | None, str | None]:
    configurable = config.get("configurable", {})
    return configurable.get("user_id"), configurable.get("thread_id")


def _last_human_text(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    return ""


def _current_turn(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return list(messages[i:])
    return list(messages)


# Routers are async on purpose: LangGraph runs a sync router in a worker thread when the graph
# runs async, a thread hop per decision that costs more than the decision itself.


async def _after_tools(state: AgentState) -> str:
    # Each task of the tools node answers with a tool message, or with an AI message when the
    # step limit ends the turn.
    return "finish" if isinstance(state["messages"][-1], AIMessage) else "act"


async def _tools_done(state: AgentState) -> dict[str, Any]:
    return {}  # only a join: every call of the step has its answer


async def _after_plan(state: AgentState) -> str:
    last = state["messages"][-1]
    answered = isinstance(last, AIMessage) and not last.tool_calls
    return "finish" if answered else "act"


def turn_usage(messages: Sequence[BaseMessage]) -> dict[str, int]:
    """Tokens of the AI messages of the last turn, from their usage metadata (any model)."""
    totals = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    for message in _current_turn(messages):
        usage = getattr(message, "usage_metadata", None) or {}
        for key in totals:
            totals[key] += usage.get(key, 0)
    return totals
