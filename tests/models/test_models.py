"""The model layer: provider strings, the resilience policy, usage records."""

import asyncio
import time
import types

import pytest
from langchain_core.messages import AIMessage

from ponder.config import ConfigurationError, Settings
from ponder.models import (
    ModelCallError,
    ResiliencePolicy,
    ResilientChatModel,
    chat_model,
    embeddings,
    track_usage,
)
from ponder.models.retries import retry_after_s as _retry_after_s
from ponder.testing import FakeOpenAIServer, Fault, ScriptedChatModel, fake_embedding
from tests.helpers.concurrency import Rendezvous

FAST = ResiliencePolicy(backoff_initial_s=0.01, backoff_max_s=0.05, timeout_s=5)
NO_ENV = Settings()


def wrap(inner, **policy) -> ResilientChatModel:
    return ResilientChatModel(inner=inner, provider="scripted", model_name="test",
                              policy=ResiliencePolicy(**policy))


def served(srv, policy=FAST):
    return chat_model("openai:scripted", base_url=srv.base_url, policy=policy, settings=NO_ENV)


# -- configuration errors ----------------------------------------------------------------------


def test_missing_model_says_what_to_set():
    with pytest.raises(ConfigurationError, match="PONDER_MODEL is not set.*openai:gpt-4o-mini"):
        chat_model(settings=NO_ENV)


def test_unknown_provider_lists_the_known_ones():
    with pytest.raises(ConfigurationError, match="unknown model provider 'nope'.*openai"):
        chat_model("nope:model", settings=NO_ENV)


def test_spec_without_provider_is_rejected():
    with pytest.raises(ConfigurationError, match="not a provider:model string"):
        chat_model("gpt-4o-mini", settings=NO_ENV)


def test_missing_openai_key_names_the_variable_and_alternatives():
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY is not set.*OPENAI_BASE_URL"):
        chat_model("openai:gpt-4o-mini", settings=NO_ENV)


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://host/v1", "http://", "http://h:99999"])
def test_malformed_base_url_is_rejected(url):
    with pytest.raises(ConfigurationError, match="base URL"):
        chat_model("openai:m", base_url=url, settings=NO_ENV)


def test_settings_come_from_the_environment():
    s = Settings.from_env({"PONDER_MODEL": "openai:x", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                           "PONDER_REQUESTS_PER_MINUTE": "30", "PONDER_TIMEOUT": "2.5"})
    model = chat_model(settings=s)
    assert model.spec == "openai:x"
    assert model.policy.requests_per_minute == 30 and model.policy.timeout_s == 2.5
    with pytest.raises(ConfigurationError, match="PONDER_MAX_ATTEMPTS='many' is not an integer"):
        Settings.from_env({"PONDER_MAX_ATTEMPTS": "many"})


def test_invalid_policy_is_rejected():
    with pytest.raises(ConfigurationError, match="max_attempts must be at least 1"):
        ResiliencePolicy(max_attempts=0)


# -- retries ---------------------------------------------------------------------------------


async def test_rate_limited_call_is_retried_and_succeeds():
    async with FakeOpenAIServer(["fine"], faults=[Fault.rate_limit(0.05)]) as srv:
        reply = await served(srv).ainvoke("hi")
    assert reply.content == "fine"
    assert len(srv.requests) == 2


async def test_retry_after_is_honoured_over_backoff():
    # Backoff alone would wait 30 s: the bound below is far from both that and the 0.4 s asked.
    policy = ResiliencePolicy(backoff_initial_s=30, backoff_max_s=30)
    async with FakeOpenAIServer(["ok"], faults=[Fault.rate_limit(retry_after=0.4)]) as srv:
        await served(srv, policy).ainvoke("hi")
    gap = srv.requests[1]["time"] - srv.requests[0]["time"]
    assert 0.4 <= gap < 10


async def test_a_hang_is_cut_by_the_timeout_and_retried():
    # A timeout a busy machine's answer fits in, and a hang far longer than the bound below.
    policy = ResiliencePolicy(timeout_s=2, backoff_initial_s=0.01)
    async with FakeOpenAIServer(["after the hang"], faults=[Fault.hang(90)]) as srv:
        started = time.monotonic()
        reply = await served(srv, policy).ainvoke("hi")
    assert reply.content == "after the hang"
    assert time.monotonic() - started < 30
    assert len(srv.requests) == 2


async def test_server_errors_exhaust_attempts_with_a_clear_error():
    policy = ResiliencePolicy(max_attempts=3, backoff_initial_s=0.01)
    async with FakeOpenAIServer(["never"], faults=[Fault.server_error(503)] * 3) as srv:
        with pytest.raises(ModelCallError) as caught:
            await served(srv, policy).ainvoke("hi")
    message = str(caught.value)
    assert "openai:scripted" in message and "after 3 attempts" in message and "503" in message
    assert caught.value.status == 503
    assert len(srv.requests) == 3


async def test_client_errors_are_not_retried():
    async with FakeOpenAIServer(["x"], api_key="right") as srv:
        model = chat_model("openai:scripted", base_url=srv.base_url, api_key="wrong",
                           policy=FAST, settings=NO_ENV)
        with pytest.raises(ModelCallError, match="after 1 attempt;.*401"):
            await model.ainvoke("hi")
    assert len(srv.requests) == 0  # rejected before it was recorded


# Each provider's way of saying the account has no quota or credit left, then a reply that a
# retry would get: (status, code, type, message).
QUOTA_ERRORS = {
    "openai 429 insufficient_quota": (429, "insufficient_quota", "insufficient_quota",
                                      "You exceeded your current quota."),
    "429 with only the type": (429, None, "insufficient_quota", "You exceeded your quota."),
    "azure InsufficientQuota": (429, "InsufficientQuota", None, "Insufficient quota."),
    "openai billing_hard_limit_reached": (400, "billing_hard_limit_reached",
                                          "invalid_request_error", "Billing hard limit reached."),
    "openai billing_not_active": (429, "billing_not_active", "invalid_request_error",
                                  "Your account is not active."),
    "deepseek 402": (402, "invalid_request_error", "unknown_error", "Insufficient Balance"),
    "openrouter insufficient_credits": (402, None, None, "Insufficient credits."),
    "anthropic low credit": (400, None, "invalid_request_error",
                             "Your credit balance is too low to access the Anthropic API."),
}


def assert_quota_error(caught, status):
    message = str(caught.value)
    assert "quota or credit is used up" in message and "billing" in message
    assert "retrying cannot help" in message and "openai:" in message
    assert caught.value.status == status and caught.value.attempts == 1


@pytest.mark.parametrize("status,code,kind,text", QUOTA_ERRORS.values(), ids=QUOTA_ERRORS)
async def test_an_exhausted_quota_is_not_retried(status, code, kind, text):
    fault = Fault.quota_exhausted(status, code, kind, text)
    async with FakeOpenAIServer(["never sent"], faults=[fault]) as srv:
        with pytest.raises(ModelCallError) as caught:
            await served(srv).ainvoke("hi")
    assert_quota_error(caught, status)
    assert text in str(caught.value)  # the provider's own words stay in the message
    assert len(srv.requests) == 1


async def test_an_exhausted_quota_is_not_retried_when_streaming_or_embedding():
    async with FakeOpenAIServer(["never sent"], faults=[Fault.quota_exhausted()] * 2) as srv:
        with pytest.raises(ModelCallError) as caught:
            async for _ in served(srv).astream("hi"):
                pass
        assert_quota_error(caught, 429)
        emb = embeddings("openai:text-embedding-3-small", base_url=srv.base_url, policy=FAST,
                         settings=NO_ENV)
        with pytest.raises(ModelCallError) as caught:
            await emb.aembed_query("cats purr")
        assert_quota_error(caught, 429)
    assert [r["path"] for r in srv.requests] == ["/v1/chat/completions", "/v1/embeddings"]


async def test_a_rate_limit_429_with_its_own_code_is_still_retried():
    fault = Fault.quota_exhausted(429, "rate_limit_exceeded", "requests", "Rate limit reached.")
    async with FakeOpenAIServer(["fine"], faults=[fault]) as srv:
        assert (await served(srv).ainvoke("hi")).content == "fine"
    assert len(srv.requests) == 2


async def test_an_exhausted_quota_in_an_anthropic_style_body_is_not_retried():
    # Providers whose SDKs keep the whole body (Anthropic's does) nest the codes under "error".
    import httpx

    body = {"type": "error", "error": {"type": "insufficient_quota", "message": "No credit."}}
    calls = 0

    def reply(messages):
        nonlocal calls
        calls += 1
        request = httpx.Request("POST", "https://api.example.com/v1/messages")
        response = httpx.Response(429, json=body, request=request)
        raise httpx.HTTPStatusError("429 Too Many Requests", request=request, response=response)

    model = ResilientChatModel(inner=ScriptedChatModel(replies=reply), provider="openai",
                               model_name="test", policy=FAST)
    with pytest.raises(ModelCallError) as caught:
        await model.ainvoke("hi")
    assert_quota_error(caught, 429)
    assert calls == 1


async def test_malformed_json_is_retried():
    async with FakeOpenAIServer(["good"], faults=[Fault.malformed_json()]) as srv:
        assert (await served(srv).ainvoke("hi")).content == "good"


async def test_stream_retries_before_the_first_chunk_but_not_after():
    async with FakeOpenAIServer(["one two three", "four five six"],
                                faults=[Fault.rate_limit(0.01), None, Fault.cut_stream(2)]) as srv:
        model = served(srv)
        assert "".join([c.content async for c in model.astream("a")]) == "one two three"
        pieces = []
        with pytest.raises(ModelCallError, match="stream broke after output had started"):
            async for chunk in model.astream("b"):
                pieces.append(chunk.content)
    assert "".join(pieces).strip() != ""  # the caller saw what arrived before the cut


async def test_sync_invoke_goes_through_the_same_policy():
    with FakeOpenAIServer(["sync ok"], faults=[Fault.rate_limit(0.01)]) as srv:
        assert served(srv).invoke("hi").content == "sync ok"
    assert len(srv.requests) == 2


# -- limits ----------------------------------------------------------------------------------


async def test_requests_per_minute_is_never_exceeded():
    # The limit's window is scaled from a minute to one second to keep the test short.
    starts: list[float] = []
    inner = ScriptedChatModel(replies=lambda m: starts.append(time.monotonic()) or "ok")
    model = wrap(inner, requests_per_minute=60, period_s=1.0)
    await asyncio.gather(*(model.ainvoke("hi") for _ in range(200)))
    starts.sort()
    busiest = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    assert busiest <= 60
    assert starts[-1] - starts[0] >= (200 - 1) / 60 * 0.95  # it really was throttled


async def test_two_models_for_the_same_provider_share_one_quota():
    starts: list[float] = []
    inner = ScriptedChatModel(replies=lambda m: starts.append(time.monotonic()) or "ok")
    a = wrap(inner, requests_per_minute=20, period_s=1.0)
    b = wrap(inner, requests_per_minute=20, period_s=1.0)
    await asyncio.gather(*(m.ainvoke("x") for m in [a, b] * 20))
    starts.sort()
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) <= 20


async def test_tokens_per_minute_limits_throughput():
    # Each call uses 100 tokens; 600 tokens per (scaled) minute of one second.
    usage = {"input_tokens": 60, "output_tokens": 40, "total_tokens": 100}
    starts: list[float] = []

    def reply(messages):
        starts.append(time.monotonic())
        return AIMessage(content="ok", usage_metadata=usage)

    model = wrap(ScriptedChatModel(replies=reply), tokens_per_minute=600, period_s=1.0)
    # Like the provider, the limiter reserves the prompt (~60 tokens here) plus max_tokens.
    bounded = model.bind(max_tokens=40)
    began = time.monotonic()
    await asyncio.gather(*(bounded.ainvoke("x" * 240) for _ in range(24)))
    # 2,400 tokens against a bucket of 600 that refills at 600/s: at least ~3 s.
    assert time.monotonic() - began >= 2.5
    for t in starts:  # never more than one bucket ahead of the steady rate (plus one call)
        admitted = 100 * sum(1 for s in starts if s <= t)
        assert admitted <= 600 + 600 * (t - began) + 100


async def test_tokens_beyond_the_estimate_are_charged_to_later_calls():
    usage = {"input_tokens": 1, "output_tokens": 599, "total_tokens": 600}
    model = wrap(ScriptedChatModel(replies=lambda m: AIMessage(content="ok", usage_metadata=usage)),
                 tokens_per_minute=600, period_s=1.0)
    began = time.monotonic()
    for _ in range(3):  # each call is estimated at 1 token but uses a whole bucket
        await model.ainvoke("x")
    # The first 600 are the initial bucket; the debt makes the third call wait a whole period.
    assert time.monotonic() - began >= 0.9


async def test_concurrency_cap_bounds_calls_in_flight():
    in_flight, peak = 0, 0
    first_three = Rendezvous(3)  # the cap is reached however slowly the calls start

    async def reply(messages):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await first_three.meet()
        await asyncio.sleep(0.05)
        in_flight -= 1
        return "ok"

    model = wrap(ScriptedChatModel(replies=reply), max_concurrency=3)
    await asyncio.gather(*(model.ainvoke("x") for _ in range(12)))
    assert peak == 3


# -- usage -----------------------------------------------------------------------------------


async def test_usage_and_latency_are_recorded_per_call():
    async with FakeOpenAIServer(["one two three", "four"], latency=0.05) as srv:
        model = served(srv)
        with track_usage() as log:
            await model.ainvoke("a b")
            await asyncio.create_task(model.ainvoke("c"))  # tasks inherit the scope
    assert log.calls == 2
    assert log.output_tokens == 4 and log.input_tokens == 3 and log.total_tokens == 7
    first = log.recent[0]
    assert (first.provider, first.model) == ("openai", "scripted")
    assert first.latency_s >= 0.05 and first.attempts == 1
    assert model.usage.calls == 2  # the model keeps its own running totals too


async def test_embeddings_from_an_openai_compatible_server():
    async with FakeOpenAIServer() as srv:
        emb = embeddings("openai:text-embedding-3-small", base_url=srv.base_url, policy=FAST,
                         settings=NO_ENV)
        vector = await emb.aembed_query("cats purr")
        many = await emb.aembed_documents(["cats purr", "dogs bark"])
    assert vector == pytest.approx(fake_embedding("cats purr"), abs=1e-6)
    assert len(many) == 2 and emb.usage.calls == 2


def test_models_work_from_any_event_loop():
    """A model is used from the sync methods' shared loop, each asyncio.run and other models of
    the same endpoint: no connection opened on one loop may be reused on another."""
    with FakeOpenAIServer(["sync", "first run", "second run", "other model"]) as srv:
        model = served(srv)
        emb = embeddings("openai:e", base_url=srv.base_url, policy=FAST, settings=NO_ENV)
        replies = [model.invoke("hi").content,
                   asyncio.run(model.ainvoke("hi")).content,
                   asyncio.run(model.ainvoke("hi")).content,
                   asyncio.run(served(srv).ainvoke("hi")).content]
        vectors = [emb.embed_query("tea"), asyncio.run(emb.aembed_query("tea")),
                   asyncio.run(emb.aembed_query("tea"))]
    assert replies == ["sync", "first run", "second run", "other model"]
    assert all(v == pytest.approx(fake_embedding("tea"), abs=1e-6) for v in vectors)


def test_embeddings_config_errors():
    with pytest.raises(ConfigurationError, match="PONDER_EMBEDDINGS is not set"):
        embeddings(settings=NO_ENV)
    with pytest.raises(ConfigurationError, match="unknown embeddings provider"):
        embeddings("nope:x", settings=NO_ENV)


def test_an_unreadable_retry_after_falls_back_to_backoff():
    def error(headers):
        return types.SimpleNamespace(response=types.SimpleNamespace(headers=headers))

    assert _retry_after_s(error({"retry-after": "soon"})) is None
    assert _retry_after_s(error({"retry-after-ms": "-50"})) == 0.0
    assert _retry_after_s(error({"retry-after": "2.5"})) == 2.5
