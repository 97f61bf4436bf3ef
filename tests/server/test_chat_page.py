"""The chat page in a real headless Chromium: type, watch the reply stream in, reload, see the
thread again."""

import shutil

import pytest
from playwright.async_api import async_playwright

from ponder import Agent
from ponder.server import create_app
from ponder.testing import BackgroundServer, ScriptedChatModel, tool_calls
from ponder.tools import calculator

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags the machine needs: no sandbox as root, and no calls home on a closed network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def page_model():
    def reply(messages):
        if messages[-1].type == "tool":
            return f"The total is {messages[-1].content} dollars, shipping included today."
        return tool_calls(("calculator", {"expression": "3 * 12.5 + 4.9"}))
    # Slow enough to see the reply grow word by word.
    return ScriptedChatModel(replies=reply, tokens_per_second=20)


@pytest.fixture
async def browser():
    assert CHROMIUM, "chromium is not installed: apt-get install -y chromium (the README's " \
                     "test command does it)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        await browser.close()


async def test_chat_streams_and_survives_a_reload(tmp_path, browser):
    db = f"sqlite:///{tmp_path}/page.db"
    agent = Agent("shop", page_model(), tools=[calculator], checkpointer=db)
    async with BackgroundServer(create_app([agent], database_url=db)) as url:
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for_function("document.querySelector('#agent').options.length > 0")
        await page.fill("#input", "What do 3 tins cost?")
        await page.click("#send")
        reply = page.locator(".msg.assistant").last
        # Streaming: the reply is seen part-way before it is complete.
        await page.wait_for_function(
            "(() => { const m = document.querySelectorAll('.msg.assistant');"
            " const t = m.length ? m[m.length - 1].textContent : '';"
            " return t.startsWith('The total') && !t.endsWith('today.'); })()")
        await page.wait_for_function(
            "[...document.querySelectorAll('.msg.assistant')].pop()"
            "?.textContent.endsWith('today.')")
        assert await reply.text_content() == ("The total is 42.4 dollars, shipping included "
                                              "today.")
        assert "calculator" in await page.locator(".msg.tool").first.text_content()
        assert "#thread=" in page.url
        await page.reload()
        await page.wait_for_selector(".msg.assistant")
        texts = await page.locator(".msg").all_text_contents()
        assert texts[0] == "What do 3 tins cost?" and texts[-1].endswith("today.")
        assert await page.locator(".thread.current").text_content() == "What do 3 tins cost?"
