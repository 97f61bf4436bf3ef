"""The knowledge base as a LangChain VectorStore and BaseRetriever: the langchain-tests standard
suites, on SQLite and Postgres."""

import pytest
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from ponder.memory.knowledge import Document, KnowledgeBase
from ponder.memory.knowledge.interop import KnowledgeBaseRetriever, KnowledgeBaseVectorStore
from ponder.sync import run_sync
from ponder.testing import HashingEmbeddings


class TestSqliteVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path) -> VectorStore:
        kb = KnowledgeBase(f"sqlite:///{tmp_path}/kb.db", embeddings=self.get_embeddings())
        yield kb.as_vectorstore()
        run_sync(kb.aclose)


class TestPostgresVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    async def vectorstore(self, postgres_url) -> VectorStore:
        kb = KnowledgeBase(postgres_url, embeddings=self.get_embeddings())
        yield kb.as_vectorstore()
        await kb.aclose()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    kb = KnowledgeBase(f"sqlite:///{tmp_path_factory.mktemp('kb')}/kb.db",
                       embeddings=HashingEmbeddings())
    run_sync(lambda: kb.add([Document(f"Tea number {i} is brewed for {i} minutes.", f"tea-{i}")
                             for i in range(6)]))
    yield kb
    run_sync(kb.aclose)


class TestRetriever(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _shop(self, shop):
        self.shop = shop

    @property
    def retriever_constructor(self) -> type[KnowledgeBaseRetriever]:
        return KnowledgeBaseRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"knowledge_base": self.shop, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "how long is tea brewed?"


async def test_retrieved_documents_carry_source_title_and_score(tmp_path):
    kb = KnowledgeBase(f"sqlite:///{tmp_path}/kb.db", embeddings=HashingEmbeddings())
    await kb.add([Document("Oolong is partly oxidised.", "oolong", "Oolong", {"kind": "blue"})])
    [document] = await kb.as_retriever(k=1, mode="sparse").ainvoke("oxidised oolong")
    assert document.page_content == "Oolong is partly oxidised."
    assert document.metadata["source"] == "oolong" and document.metadata["title"] == "Oolong"
    assert document.metadata["kind"] == "blue" and document.metadata["score"] > 0
    store = KnowledgeBaseVectorStore.from_texts(["a", "b"], HashingEmbeddings(),
                                                url=f"sqlite:///{tmp_path}/other.db")
    assert [d.page_content for d in store.similarity_search("a", k=1)] == ["a"]
    await kb.aclose()
    await store.knowledge_base.aclose()
