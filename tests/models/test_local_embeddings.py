"""Local embeddings: the bundled all-MiniLM-L6-v2, loaded from disk, used by the knowledge base."""

import json
import math

import pytest

from ponder.config import ConfigurationError
from ponder.memory.knowledge import Document, KnowledgeBase
from ponder.models import LocalEmbeddings, embeddings
from tests.helpers.data import DATA


async def test_local_model_embeds_meaning():
    model = embeddings("local")
    assert isinstance(model, LocalEmbeddings)
    tea, kettle, tax = await model.aembed_documents([
        "How long should green tea steep?", "Steep green tea for two minutes.",
        "The quarterly tax return is due in April."])
    assert len(tea) == 384 and math.isclose(sum(v * v for v in tea), 1.0, rel_tol=1e-4)

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(tea, kettle) > cosine(tea, tax) + 0.3
    assert await model.aembed_query("How long should green tea steep?") == pytest.approx(tea,
                                                                                         abs=1e-5)


def test_a_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="is not a model folder"):
        embeddings(f"local:{tmp_path}/nothing-here").embed_query("x")


async def test_dense_search_on_scifact_abstracts(tmp_path):
    corpus = [json.loads(line) for line, _ in zip((DATA / "scifact" / "corpus.jsonl").open(),
                                                   range(80), strict=False)]
    kb = KnowledgeBase(f"sqlite:///{tmp_path}/kb.db", embeddings="local")
    await kb.add([Document(d["text"], d["_id"], d["title"]) for d in corpus])
    target = corpus[17]
    # A title finds its abstract among 80 by meaning alone.
    hits = await kb.search(target["title"], k=3, mode="dense")
    assert target["_id"] in [h.chunk.source for h in hits]
    assert (await kb.stats())["embedding_model"] == "local:all-MiniLM-L6-v2"
    await kb.aclose()
