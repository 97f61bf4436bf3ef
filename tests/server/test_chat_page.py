"""The chat page in a real headless Chromium: type, watch the reply stream in, reload, see the
thread again; answer the questions tools ask, each by its id."""

import shutil

import pytest
from langchain_core.tools import tool
from langgraph.types import interrupt
from playwright.async_api import async_playwright

from ponder import Agent
from ponder.server import create_app
from ponder.testing import BackgroundServer, ScriptedChatModel, tool_calls
from ponder.tools import calculator
from ponder.tools import tool as ponder_tool

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags the machine needs: no sandbox as root, and no calls home on a closed network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def page_model():
    def reply(messages):
        if messages[-1].type == "tool":
            return f"The total is {messages[-1].content} dollars, shipping included today."
        return tool_calls(("calculator", {"expression": "3 * 12.5 + 4.9"}),
                          content="Let me add that up.")
    return ScriptedChatModel(replies=reply, tokens_per_second=20)


def chatty_model():
    # Slow enough to see the reply grow word by word.
    return ScriptedChatModel(replies=lambda messages: "Fair winds and a following sea today.",
                             tokens_per_second=10)


ASSISTANT_TEXT = ("(() => { const m = document.querySelectorAll('.msg.assistant');"
                  " return m.length ? m[m.length - 1].textContent : ''; })()")


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
    agents = [Agent("shop", page_model(), tools=[calculator], checkpointer=db),
              Agent("chatty", chatty_model(), checkpointer=db)]
    async with BackgroundServer(create_app(agents, database_url=db)) as url:
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for_function("document.querySelector('#agent').options.length > 0")
        await page.fill("#input", "What do 3 tins cost?")
        await page.click("#send")
        reply = page.locator(".msg.assistant").last
        await page.wait_for_function(
            "[...document.querySelectorAll('.msg.assistant')].pop()"
            "?.textContent.endsWith('today.')")
        # The reply only: the text written before the tool call was a step, not the answer.
        assert await reply.text_content() == ("The total is 42.4 dollars, shipping included "
                                              "today.")
        assert await page.locator(".msg.assistant").count() == 1
        assert "calculator" in await page.locator(".msg.tool").first.text_content()
        assert "#thread=" in page.url
        await page.reload()
        await page.wait_for_selector(".msg.assistant")
        texts = await page.locator(".msg").all_text_contents()
        assert texts[0] == "What do 3 tins cost?" and texts[-1].endswith("today.")
        assert await page.locator(".thread.current").text_content() == "What do 3 tins cost?"
        # An agent without tools: its reply is seen part-way before it is complete (with
        # tools, a reply is known only once the model's message has ended without a tool call).
        await page.select_option("#agent", "chatty")
        await page.click("#new")
        await page.fill("#input", "Any wishes?")
        await page.click("#send")
        await page.wait_for_function(
            f"(t => t.startsWith('Fair') && !t.endsWith('today.'))({ASSISTANT_TEXT})")
        await page.wait_for_function(f"{ASSISTANT_TEXT}.endsWith('today.')")
        assert await page.locator(".msg.assistant").last.text_content() == (
            "Fair winds and a following sea today.")


async def test_every_question_shows_with_its_id_and_each_answer_reaches_its_tool(tmp_path,
                                                                                  browser):
    sent: list[str] = []

    @tool
    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        return f"sent to {to}"

    @tool
    def approve(action: str) -> str:
        """Do an action once a human approves it."""
        answer = interrupt(f"{action}?")
        return f"{action}: done" if answer == "yes" else f"{action}: held ({answer})"

    def reply(messages):
        if messages[-1].type == "tool":
            return "Done: " + "; ".join(m.content for m in messages if m.type == "tool")
        return tool_calls(("approve", {"action": "delete acme"}), ("send_email", {"to": "ann"}),
                          ("approve", {"action": "refund 500"}))

    db = f"sqlite:///{tmp_path}/page.db"
    agent = Agent("office", ScriptedChatModel(replies=reply), tools=[send_email, approve],
                  checkpointer=db)
    async with BackgroundServer(create_app([agent], database_url=db)) as url:
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for_function("document.querySelector('#agent').options.length > 0")
        await page.fill("#input", "clean up")
        await page.click("#send")
        await page.wait_for_function("document.querySelectorAll('.msg.question').length == 2")
        questions = await page.locator(".msg.question").all_text_contents()
        pending = await agent.ainterrupts(page.url.split("#thread=")[1])
        assert questions == [f"{i.value} (id {i.id})" for i in pending]
        assert [i.value for i in pending] == ["delete acme?", "refund 500?"]
        assert await page.get_attribute("#input", "placeholder") == "Answer: delete acme?"
        await page.fill("#input", "yes")
        await page.click("#send")
        assert await page.get_attribute("#input", "placeholder") == "Answer: refund 500?"
        await page.fill("#input", "no")
        await page.click("#send")
        # The reply streams in: wait for all of it, not its first tokens.
        await page.wait_for_function(
            "[...document.querySelectorAll('.msg.assistant')].pop()?.textContent"
            ".endsWith('(no)')")
        assert await page.locator(".msg.assistant").last.text_content() == (
            "Done: delete acme: done; sent to ann; refund 500: held (no)")
        assert sent == ["ann"]
        await page.reload()  # answered: nothing waits any more
        await page.wait_for_selector(".msg.assistant")
        assert await page.locator(".msg.question").count() == 0
        assert await page.get_attribute("#input", "placeholder") == "Message"


async def test_tool_calls_are_approved_or_rejected_with_buttons(tmp_path, browser):
    ran: list[str] = []

    @ponder_tool(approval=True)
    def send_email(to: str) -> str:
        """Send an email."""
        ran.append(f"send_email {to}")
        return f"sent to {to}"

    @ponder_tool(approval=True)
    def pay(amount: int) -> str:
        """Pay an amount, in dollars."""
        ran.append(f"pay {amount}")
        return f"paid {amount}"

    def reply(messages):
        if messages[-1].type == "tool":
            return "Done: " + "; ".join(m.content for m in messages if m.type == "tool")
        return tool_calls(("send_email", {"to": "ann"}), ("pay", {"amount": 500}))

    db = f"sqlite:///{tmp_path}/page.db"
    agent = Agent("shop", ScriptedChatModel(replies=reply), tools=[send_email, pay],
                  checkpointer=db)
    async with BackgroundServer(create_app([agent], database_url=db)) as url:
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for_function("document.querySelector('#agent').options.length > 0")
        await page.fill("#input", "mail ann, pay 500")
        await page.click("#send")
        await page.wait_for_function("document.querySelectorAll('.msg.question').length == 2")
        email, payment = page.locator(".msg.question").nth(0), page.locator(".msg.question").nth(1)
        assert (await email.text_content()).startswith('approve send_email({"to":"ann"})?')
        assert await page.get_attribute("#input", "placeholder") == (
            "Approve or reject the tool calls above")
        # Typing instead of deciding says what to do; nothing runs.
        await page.fill("#input", "hm")
        await page.click("#send")
        await page.wait_for_function("document.querySelector('#error').textContent != ''")
        assert await page.text_content("#error") == (
            "Approve or reject the tool calls above first.")
        # Decided in the opposite order from the one asked in.
        await payment.locator("button.reject").click()
        assert ran == [] and await payment.locator("button.approve").is_disabled()
        await email.locator("button.approve").click()
        await page.wait_for_function(
            "[...document.querySelectorAll('.msg.assistant')].pop()?.textContent"
            ".endsWith('sent to ann')")
        assert await page.locator(".msg.assistant").last.text_content() == (
            "Done: The person did not approve this call of 'pay': it was not run.; sent to ann")
        assert ran == ["send_email ann"]
        await page.reload()
        await page.wait_for_selector(".msg.assistant")
        assert await page.locator(".msg.question").count() == 0
