"""The C3 pipeline end to end on Chinook with a scripted model: linking, voting by execution
result, the repair loop; and the eval harness."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage

from ponder import Agent
from ponder.testing import FakeOpenAIServer, ScriptedChatModel, fake_embedding, tool_calls
from ponder.tools.sql import Database
from ponder.tools.sql.text_to_sql import TextToSQL, sql_tool, text_to_sql

MOST_ALBUMS = ("SELECT ar.Name FROM Artist ar JOIN Album al ON al.ArtistId = ar.ArtistId "
               "GROUP BY ar.ArtistId, ar.Name ORDER BY COUNT(*) DESC LIMIT 1")


def analyst(sql_candidates, link="Artist, Album"):
    """Answers the linking prompt with ``link``; SQL prompts with the next candidate; a repair
    prompt with the fixed query."""
    queue = list(sql_candidates)

    def reply(messages):
        prompt = messages[-1].content
        if prompt.startswith("Which tables"):
            return link
        if prompt.startswith("The query failed"):
            return f"```sql\n{MOST_ALBUMS}\n```"
        return queue.pop(0)
    return reply


async def test_linking_voting_and_repair(chinook_sqlite):
    candidates = [
        MOST_ALBUMS,
        f"```sql\n{MOST_ALBUMS.replace('LIMIT 1', 'LIMIT 1;')}\n```",   # same result
        "SELECT Name FROM Artist ORDER BY Name LIMIT 1",              # a different result
        "SELECT Nmae FROM Artist",                                    # fails, then is repaired
        "DELETE FROM Artist",                                         # unsafe, then repaired
    ]
    model = ScriptedChatModel(replies=analyst(candidates))
    db = Database(chinook_sqlite)
    result = await TextToSQL(db, model, candidates=5).answer("Which artist has the most albums?")
    assert result.tables == ["Album", "Artist"]
    assert result.result.rows == [("Iron Maiden",)]
    votes = {c["sql"]: c.get("votes") for c in result.candidates}
    assert max(votes.values()) == 4  # two right away, two after repair
    repaired = [c for c in result.candidates if c["repairs"] == 1]
    assert len(repaired) == 2 and all(c["error"] is None for c in repaired)
    repair_prompts = [m for m in model.calls if m[-1].content.startswith("The query failed")]
    assert any("no such column: Nmae" in m[-1].content for m in repair_prompts)
    assert any("only queries are allowed, not DELETE" in m[-1].content for m in repair_prompts)
    await db.aclose()


async def test_the_prompt_layout_and_calibration(chinook_sqlite):
    model = ScriptedChatModel(replies=analyst([MOST_ALBUMS]))
    await TextToSQL(Database(chinook_sqlite), model, candidates=1).answer("Top artist?")
    sql_call = next(m for m in model.calls if "### Schema:" in m[-1].content)
    prompt = sql_call[-1].content
    assert "# Album ( AlbumId, Title, ArtistId )" in prompt
    assert "# Artist ( ArtistId, Name )" in prompt and "# Track (" not in prompt  # linked only
    assert "# sample values of Artist.Name: 'AC/DC'" in prompt
    assert "# Album.ArtistId = Artist.ArtistId" in prompt
    assert isinstance(sql_call[-2], AIMessage) and "COUNT(*)" in sql_call[-2].content


class HashedWords(Embeddings):
    def embed_documents(self, texts):
        return [fake_embedding(t, 512) for t in texts]

    def embed_query(self, text):
        return fake_embedding(text, 512)


@pytest.mark.parametrize("embeddings", [None, HashedWords()], ids=["words", "embeddings"])
async def test_a_thousand_tables(tmp_path, embeddings):
    path = tmp_path / "wide.db"
    db_file = sqlite3.connect(path)
    for i in range(1000):
        db_file.execute(f"CREATE TABLE inventory_{i} (id INTEGER PRIMARY KEY, widget_{i} TEXT)")
    db_file.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT)")
    db_file.execute("INSERT INTO customers (name, city) VALUES ('Ann', 'Oslo'), ('Bo', 'Rome')")
    db_file.commit()
    db_file.close()
    model = ScriptedChatModel(replies=analyst(["SELECT name FROM customers WHERE city = 'Oslo'"],
                                              link="customers"))
    result = await TextToSQL(Database(f"sqlite:///{path}"), model, candidates=1,
                             embeddings=embeddings).answer(
        "Which customers live in the city of Oslo? name city customers")
    assert result.result.rows == [("Ann",)]
    link_prompt = model.calls[0][-1].content
    assert link_prompt.count("\n# ") <= 12 and "# customers ( id, name, city )" in link_prompt


async def test_other_languages_and_empty_results(chinook_sqlite):
    model = ScriptedChatModel(replies=analyst(
        ["SELECT Name FROM Artist WHERE Name = 'Nadie'"] * 2, link="Artist"))
    result = await TextToSQL(Database(chinook_sqlite), model, candidates=2).answer(
        "¿Qué artista se llama Nadie?")
    assert result.for_model().endswith("(the query returned no rows)")


async def test_when_nothing_runs_the_message_says_why(chinook_sqlite):
    model = ScriptedChatModel(replies=lambda m: "Artist" if m[-1].content.startswith("Which")
                              else "I cannot write SQL for that.")
    result = await text_to_sql("Quelle est la météo ?", chinook_sqlite, model=model,
                               candidates=2, max_repairs=1)
    assert result.sql is None
    assert result.for_model().startswith("Could not answer from the database: no candidate "
                                         "query ran")


async def test_sql_tools_for_agents(chinook_sqlite):
    plain = sql_tool(chinook_sqlite)
    assert plain.name == "query_database" and "# Artist ( ArtistId, Name )" in plain.description
    model = ScriptedChatModel(replies=[
        tool_calls(("query_database", {"sql": "DROP TABLE Artist"})),
        tool_calls(("query_database", {"sql": "SELECT count(*) FROM Artist"})), "275 artists."])
    agent = Agent("analyst", model, tools=[plain], checkpointer=False)
    state = await agent.ainvoke("How many artists?")
    tool_results = [m.content for m in state["messages"] if m.type == "tool"]
    assert tool_results[0].startswith("The query was not run: only queries are allowed")
    assert tool_results[1].endswith("275")
    asking = sql_tool(chinook_sqlite, model=ScriptedChatModel(replies=analyst([MOST_ALBUMS])),
                      candidates=1)
    answer = await asking.ainvoke({"question": "Which artist has the most albums?"})
    assert "Iron Maiden" in answer and answer.startswith("SQL: SELECT")


def test_execution_accuracy_harness(chinook_sqlite, tmp_path):
    questions = tmp_path / "q.jsonl"
    pairs = [
        ("How many artists are there?", "SELECT count(*) FROM Artist",
         "SELECT COUNT(ArtistId) FROM Artist"),                           # same rows: right
        ("List the media types.", "SELECT Name FROM MediaType",
         "SELECT Name FROM MediaType ORDER BY Name DESC"),                # order-free gold: right
        ("The three longest tracks, longest first.",
         "SELECT Name FROM Track ORDER BY Milliseconds DESC LIMIT 3",
         "SELECT Name FROM Track ORDER BY Milliseconds ASC LIMIT 3"),     # wrong rows
        ("Genres of the first two tracks, duplicates included.",
         "SELECT GenreId FROM Track WHERE TrackId IN (1, 2)",
         "SELECT DISTINCT GenreId FROM Track WHERE TrackId IN (1, 2)"),   # duplicates matter
    ]
    questions.write_text("\n".join(json.dumps({"question": q, "sql": gold})
                                   for q, gold, _ in pairs))
    predicted = {q: sql for q, _, sql in pairs}

    def reply(messages):
        prompt = messages[-1].content
        if prompt.startswith("Which tables"):
            return "Artist, MediaType, Track"
        return predicted[prompt.rsplit("### Question: ", 1)[1].split("\n")[0]]

    with FakeOpenAIServer(reply) as srv:
        done = subprocess.run(
            [sys.executable, "-m", "ponder.cli", "eval", "sql", "--db", chinook_sqlite,
             "--questions", str(questions), "--model", "openai:s", "--candidates", "1",
             "--json"], capture_output=True, text=True, timeout=120,
            env={**os.environ, "OPENAI_BASE_URL": srv.base_url})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["n"], report["correct"], report["execution_accuracy"]) == (4, 2, 0.5)


def test_bad_questions_file(tmp_path):
    from ponder.config import ConfigurationError
    from ponder.tools.sql.evaluation import load_questions

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ConfigurationError, match="line 1: expected a JSON object"):
        load_questions(bad)
