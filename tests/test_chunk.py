"""Chunking: windows cover the text, respect the size and overlap, and passages are exact substrings."""

import pytest

from core.types import Record
from index_build.chunk import chunk_records, token_windows


@pytest.mark.parametrize("n,size,overlap", [(1, 10, 2), (10, 10, 2), (11, 10, 2), (95, 20, 5), (200, 200, 40),
                                            (1000, 200, 40), (57, 16, 0)])
def test_token_windows_properties(n, size, overlap):
    w = token_windows(n, size, overlap)
    assert w[0][0] == 0 and w[-1][1] == n
    assert all(0 < e - s <= size for s, e in w)
    for (s1, e1), (s2, _) in zip(w, w[1:], strict=False):
        assert s2 == s1 + size - overlap  # fixed stride
        assert e1 - s2 == overlap or e1 == n  # consecutive windows share exactly `overlap` tokens
    assert len(w) == 1 or n > size


def test_chunk_records_substrings_ids_and_sizes(minilm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    long_text = " ".join(f"Paragraph {i}: hypertension management includes lifestyle changes." for i in range(60))
    recs = [Record("a:1", "Hypertension: treatment", long_text, "src", "https://x"),
            Record("b:2", "Short", "One short answer.", "src")]
    ps = chunk_records(recs, tok, size=50, overlap=10)
    a = [p for p in ps if p.record_id == "a:1"]
    assert [p.id for p in a] == [f"a:1#{i}" for i in range(len(a))] and len(a) > 5
    assert all(p.text in long_text and p.title == "Hypertension: treatment" and p.url == "https://x" for p in a)
    for p in a:  # word boundaries: a window may grow to whole words, by at most a couple of tokens
        assert len(tok(p.text, add_special_tokens=False)["input_ids"]) <= 50 + 4
        assert long_text.startswith(p.text) or long_text[long_text.index(p.text) - 1] == " "
    assert a[0].text.startswith("Paragraph 0:") and long_text.endswith(a[-1].text)
    # consecutive passages overlap
    assert a[1].text[:20] in a[0].text
    (b,) = [p for p in ps if p.record_id == "b:2"]
    assert (b.id, b.text) == ("b:2#0", "One short answer.")
