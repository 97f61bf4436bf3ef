"""`ponder kb ...` as a user runs it: real processes, a real SQLite file, embeddings from the
fake OpenAI server."""

import json

from ponder.testing import FakeOpenAIServer
from tests.helpers.cli import ponder
from tests.helpers.pdf import write_pdf


def _docs(tmp_path):
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "refunds.md").write_text("# Refunds\n\nRefunds reach the original card within "
                                       "14 days.\n\nGift cards cannot be refunded.\n")
    (folder / "shipping.html").write_text("<html><head><title>Shipping</title><script>x()"
                                          "</script></head><body><p>Parcels ship worldwide in "
                                          "3 to 5 days.</p></body></html>")
    write_pdf(folder / "warranty.pdf", ["Kettles carry a two year warranty."], title="Warranty")
    return folder


def test_add_search_stats_and_delete(tmp_path):
    folder = _docs(tmp_path)
    with FakeOpenAIServer() as server:
        env = {"PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/kb.db",
               "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}
        added = ponder("kb", "add", str(folder), "--meta", "team=support",
                       env={**env, "PONDER_EMBEDDINGS": "openai:text-embedding-3-small"})
        assert added.returncode == 0, added.stderr
        assert "3 added, 0 updated, 0 unchanged; 3 chunks" in added.stdout
        again = ponder("kb", "add", str(folder),  "--meta", "team=support",
                       env={**env, "PONDER_EMBEDDINGS": "openai:text-embedding-3-small"})
        assert "0 added, 0 updated, 3 unchanged; 0 chunks" in again.stdout

        # Without PONDER_EMBEDDINGS, search embeds with the model the knowledge base was built
        # with, so hybrid search works.
        found = ponder("kb", "search", "how long is the kettle warranty", "-k", "2", "--json",
                       env=env)
        assert found.returncode == 0, found.stderr
        hits = [json.loads(line) for line in found.stdout.splitlines()]
        assert hits[0]["title"] == "Warranty" and hits[0]["metadata"]["team"] == "support"
        assert len(hits) == 2
        embedded = [r for r in server.requests if "input" in r]
        assert embedded[-1]["input"] == ["how long is the kettle warranty"]

        filtered = ponder("kb", "search", "refunds", "--mode", "sparse", "--filter",
                          '{"team": "sales"}', env=env)
        assert filtered.returncode == 0 and "no results" in filtered.stdout

        stats = json.loads(ponder("kb", "stats", "--json", env=env).stdout)
        assert stats["sources"] == 3 and stats["chunks"] == 3
        assert stats["embedding_model"] == "openai:text-embedding-3-small"
        assert "team" in stats["fields"]

        deleted = ponder("kb", "delete", "--source", str(folder / "refunds.md"), env=env)
        assert "deleted 1 source" in deleted.stdout
        deleted = ponder("kb", "delete", "--filter", '{"team": "support"}', env=env)
        assert "deleted 2 sources" in deleted.stdout
        assert json.loads(ponder("kb", "stats", "--json", env=env).stdout)["sources"] == 0


def test_mistakes_get_a_message_not_a_traceback(tmp_path):
    folder = _docs(tmp_path)
    (folder / "empty.txt").write_text("\n\n")
    env = {"PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/kb.db"}
    cases = [
        (["kb", "add", str(folder)], "empty.txt: the document is empty"),
        (["kb", "add", str(tmp_path / "nowhere")], "nowhere: no such file or folder"),
        (["kb", "add", str(folder), "--meta", "team"], "--meta 'team': write KEY=VALUE"),
        (["kb", "search", "x", "--filter", "{oops"], "--filter is not JSON"),
        (["kb", "search", "x", "--filter", '{"colour": 1}'], "unknown metadata field 'colour'"),
        (["kb", "search", "x", "--mode", "fuzzy"], "--mode 'fuzzy': use sparse, dense or hybrid"),
        (["kb", "search", "x", "--mode", "dense"], "dense search needs embeddings"),
        (["kb", "delete"], "say what to delete"),
        (["eval", "retrieval", "--dataset", str(tmp_path), "--mode", "sparse"],
         "corpus.jsonl is missing"),
    ]
    for args, message in cases:
        done = ponder(*args, env=env)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    # The empty file stopped nothing that was readable from being kept on a second try.
    kept = ponder("kb", "add", str(folder), "--skip-errors", env=env)
    assert "skipped: " in kept.stderr and "3 added" in kept.stdout
