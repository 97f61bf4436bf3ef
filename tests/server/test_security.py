"""API keys, isolation between keys, per-key limits, body size and CORS, over real HTTP."""

import os
import subprocess
import sys

import httpx
import openai
import pytest

from ponder import Agent
from ponder.server import create_app, security
from ponder.server.keys import KeyStore
from ponder.server.security import SlidingWindow
from ponder.testing import BackgroundServer, ScriptedChatModel


def counting_agent(db_url):
    def reply(messages):
        return f"message {sum(m.type == 'human' for m in messages)}"
    return Agent("bot", ScriptedChatModel(replies=reply), checkpointer=db_url)


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path}/server.db"


async def make_key(db_url, name, **limits):
    store = KeyStore(db_url)
    try:
        return await store.create(name, **limits)
    finally:
        await store.aclose()


async def chat(url, key, content="hi", thread=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if thread:
        headers["X-Thread-Id"] = thread
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{url}/v1/chat/completions", headers=headers, json={
            "model": "bot", "messages": [{"role": "user", "content": content}]})


def said(response) -> str:
    return response.json()["choices"][0]["message"]["content"]


async def test_without_keys_the_server_is_open_and_with_keys_it_is_closed(db_url):
    app = create_app([counting_agent(db_url)], database_url=db_url)
    async with BackgroundServer(app) as url:
        assert (await chat(url, None)).status_code == 200
    _, secret = await make_key(db_url, "app")
    async with BackgroundServer(create_app([counting_agent(db_url)], database_url=db_url)) as url:
        refused = await chat(url, None)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert (await chat(url, "pk-wrong")).status_code == 401
        assert (await chat(url, secret)).status_code == 200
        async with httpx.AsyncClient() as http:  # health needs no key
            assert (await http.get(f"{url}/health")).status_code == 200
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=secret)
        assert (await client.models.list()).data[0].id == "bot"


async def test_each_key_sees_only_its_own_threads(db_url):
    (_, ann), (_, bob) = await make_key(db_url, "ann"), await make_key(db_url, "bob")
    async with BackgroundServer(create_app([counting_agent(db_url)], database_url=db_url)) as url:
        assert said(await chat(url, ann, thread="shared")) == "message 1"
        assert said(await chat(url, ann, thread="shared")) == "message 2"
        # Same thread name, other key: a different thread.
        assert said(await chat(url, bob, thread="shared")) == "message 1"
        # Same opening messages, no thread named: the hash includes the key.
        assert said(await chat(url, ann)) == "message 1"
        assert said(await chat(url, bob)) == "message 1"


async def test_request_and_token_limits_answer_429_with_retry_after(db_url):
    _, slow = await make_key(db_url, "slow", requests_per_minute=2)
    _, thrifty = await make_key(db_url, "thrifty", tokens_per_minute=3)
    async with BackgroundServer(create_app([counting_agent(db_url)], database_url=db_url)) as url:
        assert [(await chat(url, slow)).status_code for _ in range(2)] == [200, 200]
        limited = await chat(url, slow)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert (await chat(url, thrifty)).status_code == 200  # spends more than 3 tokens
        assert (await chat(url, thrifty)).status_code == 429


async def test_revoked_keys_stop_working(db_url, monkeypatch):
    monkeypatch.setattr(security, "_CACHE_S", 0.0)
    key, secret = await make_key(db_url, "gone")
    await make_key(db_url, "stays")
    async with BackgroundServer(create_app([counting_agent(db_url)], database_url=db_url)) as url:
        assert (await chat(url, secret)).status_code == 200
        store = KeyStore(db_url)
        await store.revoke(key.id)
        await store.aclose()
        assert (await chat(url, secret)).status_code == 401


async def test_body_size_and_message_count(db_url):
    app = create_app([counting_agent(db_url)], database_url=db_url, max_body_bytes=100_000)
    async with BackgroundServer(app) as url, httpx.AsyncClient() as http:
        huge = await http.post(f"{url}/v1/chat/completions", content=b"x" * 10_000_000,
                               headers={"content-type": "application/json"})
        assert huge.status_code == 413 and "larger than 100000 bytes" in huge.text
        many = await http.post(f"{url}/v1/chat/completions", json={
            "model": "bot", "messages": [{"role": "user", "content": "x"}] * 1001})
        assert many.status_code == 400


async def test_cors_for_configured_origins(db_url):
    app = create_app([counting_agent(db_url)], database_url=db_url,
                     cors_origins=["https://chat.example"])
    async with BackgroundServer(app) as url, httpx.AsyncClient() as http:
        preflight = await http.options(f"{url}/v1/chat/completions", headers={
            "Origin": "https://chat.example", "Access-Control-Request-Method": "POST"})
        other = await http.options(f"{url}/v1/chat/completions", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert preflight.headers["access-control-allow-origin"] == "https://chat.example"
    assert "access-control-allow-origin" not in other.headers


def test_sliding_window_says_how_long_to_wait():
    window = SlidingWindow(limit=10, period_s=60)
    window.add(6, now=0)
    window.add(4, now=30)
    assert window.wait_s(1, now=31) == pytest.approx(29)  # the 6 at t=0 expire at t=60
    assert window.wait_s(5, now=31) == pytest.approx(29)
    assert window.wait_s(7, now=31) == pytest.approx(59)  # needs the 4 at t=30 gone too
    assert window.wait_s(1, now=60) == 0


def test_keys_cli(tmp_path):
    env = {**os.environ, "PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/keys.db"}

    def keys(*args):
        return subprocess.run([sys.executable, "-m", "ponder.cli", "keys", *args],
                              capture_output=True, text=True, env=env, timeout=60)

    made = keys("create", "mobile-app", "--rpm", "30")
    assert made.returncode == 0, made.stderr
    key_id, secret = made.stdout.split()[0], made.stdout.splitlines()[-1]
    assert secret.startswith("pk-") and "shown once" in made.stderr
    assert secret not in (tmp_path / "keys.db").read_bytes().decode("latin-1")
    listed = keys("list")
    assert key_id in listed.stdout and "30 rpm" in listed.stdout and "active" in listed.stdout
    assert keys("revoke", key_id).returncode == 0
    assert "revoked" in keys("list").stdout
    again = keys("revoke", key_id)
    assert again.returncode == 2 and "no active key" in again.stderr
