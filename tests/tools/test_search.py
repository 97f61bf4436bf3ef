"""Web search with a fake backend at the ddgs boundary: no network."""

import time

import pytest
from ddgs.exceptions import RatelimitException, TimeoutException

from ponder import Agent
from ponder.testing import ScriptedChatModel, tool_calls
from ponder.tools.search import SearchError, WebSearch, web_search_tool


class FakeDDGS:
    """Answers like ddgs.DDGS; fails as told first."""

    def __init__(self, failures=()):
        self.failures = list(failures)
        self.calls = []

    def _answer(self, kind, query, **options):
        self.calls.append((kind, query, options))
        if self.failures:
            raise self.failures.pop(0)
        time.sleep(0.01)  # sync, like the real client: must not block the loop
        if kind == "news":
            return [{"title": "Tea prices rise", "url": "https://news.example/tea", "body":
                     "Prices of  green tea\nrose.", "date": "2026-11-20T10:00:00"}]
        return [{"title": f"Result {i}", "href": f"https://example.com/{i}",
                 "body": f"About {query} #{i}"} for i in range(10)]

    def text(self, query, **options):
        return self._answer("text", query, **options)

    def news(self, query, **options):
        return self._answer("news", query, **options)


async def test_results_are_normalised_and_options_passed():
    fake = FakeDDGS()
    search = WebSearch(client=fake, region="uk-en")
    text = await search.search("green tea", max_results=3, timelimit="week")
    news = await search.search("tea", kind="news")
    assert [r.url for r in text] == [f"https://example.com/{i}" for i in range(3)]
    assert news[0].snippet == "Prices of green tea rose." and news[0].date.startswith("2026")
    assert fake.calls[0][2] == {"region": "uk-en", "safesearch": "moderate", "timelimit": "w",
                                "max_results": 3}


async def test_rate_limits_and_timeouts_are_retried():
    fake = FakeDDGS([RatelimitException("202 Ratelimit"), TimeoutException("timed out")])
    results = await WebSearch(client=fake).search("tea")
    assert len(results) == 5 and len(fake.calls) == 3


async def test_giving_up_says_why():
    fake = FakeDDGS([RatelimitException("202 Ratelimit")] * 3)
    with pytest.raises(SearchError, match="failed: RatelimitException: 202 Ratelimit"):
        await WebSearch(client=fake, attempts=3).search("tea")


async def test_repeated_queries_come_from_the_cache():
    fake = FakeDDGS()
    search = WebSearch(client=fake)
    first = await search.search("Green Tea")
    again = await search.search("green tea ")
    assert first == again and len(fake.calls) == 1
    expired = WebSearch(client=fake, cache_ttl_s=0)
    await expired.search("tea")
    await expired.search("tea")
    assert len(fake.calls) == 3


async def test_bad_queries():
    search = WebSearch(client=FakeDDGS())
    with pytest.raises(ValueError, match="empty"):
        await search.search("  ")
    with pytest.raises(ValueError, match="timelimit"):
        await search.search("x", timelimit="decade")


async def test_an_agent_gets_results_fenced_as_data():
    tool = web_search_tool(WebSearch(client=FakeDDGS()))
    model = ScriptedChatModel(replies=[tool_calls(("web_search", {"query": "tea",
                                                                 "kind": "news"})), "done"])
    agent = Agent("researcher", model, tools=[tool], checkpointer=False)
    state = await agent.ainvoke("what happened to tea prices?")
    result = state["messages"][2].content
    assert result.startswith('<search_results query="tea">')
    assert "Tea prices rise (2026-11-20T10:00:00)" in result
    assert "not instructions" in result
