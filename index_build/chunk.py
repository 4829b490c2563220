"""Split record texts into passages measured in the embedder's own tokens.

A passage is a window of at most `chunk_tokens` tokens; consecutive windows of one record share `overlap`
tokens. Window edges are moved to word boundaries so no passage starts or ends mid-word, and each passage is
an exact substring of the cleaned record text. A record that fits in one window is one passage.
"""

from __future__ import annotations

from core.types import Passage, Record


def token_windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) token windows covering 0..n_tokens; the last one ends exactly at n_tokens."""
    if n_tokens <= size:
        return [(0, n_tokens)]
    step = size - overlap
    windows, start = [], 0
    while True:
        end = min(start + size, n_tokens)
        windows.append((start, end))
        if end == n_tokens:
            return windows
        start += step


def _word_start(text: str, pos: int) -> int:
    while pos > 0 and not text[pos - 1].isspace():
        pos -= 1
    return pos


def _word_end(text: str, pos: int) -> int:
    while pos < len(text) and not text[pos].isspace():
        pos += 1
    return pos


def record_spans(texts: list[str], tokenizer, size: int = 200, overlap: int = 40) -> list[list[tuple[int, int]]]:
    """Character spans of each text's passages (token windows widened to whole words, repeats dropped)."""
    # One batched call to the fast tokenizer: offsets map tokens back to characters.
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                    verbose=False)["offset_mapping"] if texts else []
    out = []
    for text, offsets in zip(texts, enc, strict=True):
        spans: list[tuple[int, int]] = []
        for start, end in token_windows(len(offsets), size, overlap):
            if start >= end:
                continue
            a, b = _word_start(text, offsets[start][0]), _word_end(text, offsets[end - 1][1])
            if not spans or (a, b) != spans[-1]:
                spans.append((a, b))
        out.append(spans or [(0, len(text))])
    return out


def chunk_records(records: list[Record], tokenizer, size: int = 200, overlap: int = 40) -> list[Passage]:
    """Passages for every record, in record order; ids are `<record id>#<n>`."""
    spans = record_spans([r.text for r in records], tokenizer, size, overlap)
    return [Passage(id=f"{rec.id}#{n}", record_id=rec.id, title=rec.title, text=rec.text[a:b].strip(),
                    source=rec.source, url=rec.url)
            for rec, rec_spans in zip(records, spans, strict=True) for n, (a, b) in enumerate(rec_spans)]
