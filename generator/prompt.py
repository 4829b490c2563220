"""The one prompt format, shared by serving, fine-tuning and evaluation, and citation extraction.

    msgs, shown = build_messages(question, hits, count_tokens=gen.count_tokens, budget=1536)
    citations, invalid = extract_citations(answer_text, len(shown))

Passages are numbered `[n] <title>\\n<text>` in retrieval order and trimmed to fit the token budget. Changing
anything here that a tuned adapter would notice means bumping PROMPT_VERSION: the version is stamped into
adapters, eval reports and API responses, and a mismatching adapter is refused at load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.markers import markers_in
from core.types import Hit

PROMPT_VERSION = "medcite-prompt-v2"
ADAPTER_STAMP = "medcite_adapter.json"
"""Written into every adapter by the fine-tuning job: the prompt version it was trained with."""

SYSTEM_PROMPT = (
    "You are a careful medical information assistant. Answer the question using only the numbered passages "
    "below. Cite the passages you use with their numbers in square brackets, like [1] or [2]. If the passages "
    "do not contain the answer, say plainly that they do not, and do not guess. Keep the answer short and "
    "clear. This is general information, not a substitute for advice from a clinician."
)
NO_RETRIEVAL_SYSTEM_PROMPT = (
    "You are a careful medical information assistant. Answer the question briefly and accurately. If you are "
    "not sure, say so. This is general information, not a substitute for advice from a clinician."
)
# Repeated at the end of the user turn: small models follow the last instruction they read. Measured with
# SmolLM2 on 30 dev questions (v1 -> v2): citing 0% -> 53%, token F1 0.237 -> 0.269, end-of-turn 90% -> 97%.
ANSWER_INSTRUCTION = ("Answer in a few sentences using the passages, and put the number of the passage you used "
                      "in square brackets after each sentence, like [1].")
_PASSAGE_HEADER = "Passages:"
_MIN_PASSAGE_TOKENS = 32


# --- user text never becomes prompt structure ---------------------------------------------------------------------

NEUTRAL = "\u200b"
"""What breaks a control-token string in user text: a zero-width space after its first character, so the tokenizer
reads plain characters where "<|im_end|>" would have closed the turn."""
GENERIC_CONTROLS = re.compile(r"<\|[^|<>\s]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>")
"""Control-token shapes of the common chat formats (ChatML, Llama 3, Llama 2), for a remote server whose tokenizer
this process does not hold."""


def control_strings(tokenizer) -> tuple[str, ...]:
    """A tokenizer's special tokens as text (<|im_start|>, <|eot_id|>, ...), longest first."""
    specials = set(getattr(tokenizer, "all_special_tokens", None) or ())
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    specials |= {t.content for t in decoder.values() if getattr(t, "special", False)}
    return tuple(sorted((s for s in specials if len(s) > 1), key=len, reverse=True))


def neutralise(text: str, controls: Sequence[str] = ()) -> str:
    """`text` with every control-token string in it (the tokenizer's own `controls`, else the common shapes) broken
    into plain characters. Applied to every message's content just before templating: questions, earlier turns and
    passages can never open or close a turn or a system message."""
    if controls:
        for c in controls:
            if c in text:
                text = text.replace(c, c[0] + NEUTRAL + c[1:])
        return text
    return GENERIC_CONTROLS.sub(lambda m: m.group(0)[0] + NEUTRAL + m.group(0)[1:], text)


def neutralise_messages(messages: Sequence[dict[str, str]], controls: Sequence[str] = ()) -> list[dict[str, str]]:
    return [{**m, "content": neutralise(m["content"], controls)} for m in messages]


def check_adapter(adapter_dir: str | Path) -> Path:
    """An adapter directory whose stamp matches this prompt format; refused with one line otherwise. Both the
    local backend (which loads it) and the remote one (whose server, e.g. vLLM --lora-modules, serves it) check."""
    from core.errors import ModelLoadError

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"{path} is not a PEFT adapter directory (no adapter_config.json)")
    stamp = path / ADAPTER_STAMP
    if stamp.is_file():
        trained_with = json.loads(stamp.read_text()).get("prompt_version")
        if trained_with != PROMPT_VERSION:
            raise ModelLoadError(f"adapter {path} was trained with prompt {trained_with}, this medcite builds "
                                 f"{PROMPT_VERSION}; retrain it or use a matching medcite")
    return path


def approx_tokens(text: str) -> int:
    """A conservative estimate (about 3.5 characters per token) for backends without a local tokenizer."""
    return int(len(text) / 3.5) + 1


def _trim(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """Longest word-prefix of text within max_tokens (binary search on words; tokenizers are not additive)."""
    if count_tokens(text) <= max_tokens:
        return text
    words = text.split(" ")
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid]) + " ...") <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) + " ..." if lo else ""


@dataclass
class PromptPassage:
    """A passage as the model saw it: its marker number, the hit it came from, and the (trimmed) text."""

    marker: int
    hit: Hit
    text: str


def fit_passages(hits: Sequence[Hit], room: int, count_tokens: Callable[[str], int]) -> list[PromptPassage]:
    """The passages that fit `room` tokens: each gets an equal share and is trimmed to it; passages that would
    get less than a useful share are dropped from the end; markers count 1.. over what is shown."""
    room, hits = max(0, room), list(hits)
    while hits and room // len(hits) < _MIN_PASSAGE_TOKENS:
        hits.pop()
    shown: list[PromptPassage] = []
    for n, hit in enumerate(hits, start=1):
        share = room // len(hits) - count_tokens(f"[{n}] {hit.passage.title}\n") - 2
        text = _trim(hit.passage.text, share, count_tokens)
        if text:
            shown.append(PromptPassage(len(shown) + 1, hit, text))
    return shown


def format_passages(passages: Sequence[PromptPassage]) -> str:
    return "\n\n".join(f"[{p.marker}] {p.hit.passage.title}\n{p.text}" for p in passages)


HISTORY_SHARE = 3
"""Earlier turns get at most 1/HISTORY_SHARE of the prompt budget: the passages, which the answer is checked
against, keep the rest."""


def fit_history(history: Sequence[dict[str, str]] | None, budget: int,
                count_tokens: Callable[[str], int] = approx_tokens) -> tuple[list[dict[str, str]], int]:
    """The latest earlier turns that fit in `budget` tokens (oldest dropped first, a user turn never kept without
    the answer after it) and how many were dropped."""
    turns = [{"role": m["role"], "content": m["content"].strip()} for m in history or ()
             if m.get("role") in ("user", "assistant") and m.get("content", "").strip()]
    kept: list[dict[str, str]] = []
    used = 0
    for m in reversed(turns):
        cost = count_tokens(m["content"]) + 4
        if used + cost > budget:
            break
        kept.insert(0, m)
        used += cost
    while kept and kept[0]["role"] != "user":  # a conversation the model reads starts with the user
        kept.pop(0)
    return kept, len(turns) - len(kept)


def build_messages(question: str, hits: Sequence[Hit] | None, count_tokens: Callable[[str], int] = approx_tokens,
                   budget: int = 1536, history: Sequence[dict[str, str]] = ()
                   ) -> tuple[list[dict[str, str]], list[PromptPassage]]:
    """Chat messages for a question. hits=None is the no-retrieval baseline; an empty list still uses the
    retrieval prompt (the model should then say the passages do not answer the question). `history` (earlier
    turns, already fitted with `fit_history`) goes between the system prompt and the question.

    The budget covers system prompt, history, question and passages; each passage gets an equal share of what is
    left and is trimmed to it, and passages that would get less than a useful share are dropped from the end."""
    question = question.strip()
    earlier = [dict(m) for m in history]
    if hits is None:
        return [{"role": "system", "content": NO_RETRIEVAL_SYSTEM_PROMPT}, *earlier,
                {"role": "user", "content": question}], []
    fixed = (count_tokens(SYSTEM_PROMPT) + count_tokens(question) + count_tokens(_PASSAGE_HEADER)
             + count_tokens(ANSWER_INSTRUCTION) + 16 + sum(count_tokens(m["content"]) + 4 for m in earlier))
    shown = fit_passages(hits, budget - fixed, count_tokens)
    user = f"{_PASSAGE_HEADER}\n\n{format_passages(shown)}\n\nQuestion: {question}\n\n{ANSWER_INSTRUCTION}" if shown else (
        f"{_PASSAGE_HEADER}\n\n(no passages were found)\n\nQuestion: {question}")
    return [{"role": "system", "content": SYSTEM_PROMPT}, *earlier, {"role": "user", "content": user}], shown


CHOICE_SYSTEM_PROMPT = (
    "You are a careful medical expert answering multiple-choice questions. Reply with the letter of the single "
    "best option.")


def build_choice_messages(question: str, options: dict[str, str], hits: Sequence[Hit] | None,
                          count_tokens: Callable[[str], int] = approx_tokens, budget: int = 1536,
                          ) -> tuple[list[dict[str, str]], list[PromptPassage]]:
    """Messages for a multiple-choice item (MIRAGE): optional numbered passages, the question, the lettered
    options. The answer is then scored as the log-likelihood of each option letter after the assistant turn opens."""
    body = f"Question: {question.strip()}\n\nOptions:\n" + "\n".join(f"{k}. {v}" for k, v in options.items())
    tail = f"Answer with one letter ({', '.join(options)})."
    if hits is None:
        return [{"role": "system", "content": CHOICE_SYSTEM_PROMPT}, {"role": "user", "content": f"{body}\n\n{tail}"}], []
    shown = fit_passages(hits, budget - count_tokens(CHOICE_SYSTEM_PROMPT) - count_tokens(body) - count_tokens(tail) - 16,
                         count_tokens)
    user = f"{_PASSAGE_HEADER}\n\n{format_passages(shown)}\n\n{body}\n\n{tail}" if shown else f"{body}\n\n{tail}"
    return [{"role": "system", "content": CHOICE_SYSTEM_PROMPT}, {"role": "user", "content": user}], shown


def extract_citations(text: str, n_passages: int) -> tuple[list[int], list[int]]:
    """Marker numbers cited in text, in order of first appearance, and the out-of-range ones (flagged).

    Accepts [1], [1, 2] and [1][2] (core.markers.markers_in); a number outside 1..n_passages is not a citation of
    anything shown."""
    valid: list[int] = []
    invalid: list[int] = []
    for n in markers_in(text):
        (valid if 1 <= n <= n_passages else invalid).append(n)
    return valid, invalid
