"""Reading a consumer message for search: people write a subject line and a story ("achalasia. after surgery for
achalasia, will spasms continue in the upper chest area ..."), and the story's words (the surgery, the family, the
weeks) pull retrieval towards records that share them. What is searched is the subject line and the sentences that
ask something; the whole message still goes to the model and to verification.

    from pipeline.reading import search_text
    search_text("Jaundice. My baby is 5 months old and was fine until now. Can older infants get jaundice?")
    # -> "Jaundice. Can older infants get jaundice?"

A question that is not such a message (no short subject line, or little after it) is searched as written: MedQuAD's
templates and short questions are untouched. Why: the NLM's hand-written summaries of such messages (focus plus
question) retrieve far better than the originals (recall@5 0.46 vs 0.32 with plain hybrid, MEDIQA-2019); on the
consumer dev messages this rule-based summary took served recall@5 from 0.714 to 0.857 (7 linked messages: an
interval as wide as the set) and the 49 linked consumer questions from 0.918 to 0.939, MedQuAD dev unchanged
(`benchmarks/retrieval.py`).
"""

from __future__ import annotations

import re

MAX_SUBJECT_CHARS = 80
"""A subject line is a short first sentence ("Body Lice.", "burn to my wrist."); a longer one is the story."""
MIN_STORY_WORDS = 8
"""Fewer words after the subject line are the question itself ("gout. what helps?"): searched as written."""
STORY_WORDS_KEPT = 30
"""Where no sentence asks (no "?"), the story's first words stand for what it asks."""

_SENTENCE = re.compile(r"(?<=[.?!])\s+")


def search_text(message: str) -> str:
    """The subject line and the asking sentences of a consumer message, or the message as written."""
    text = " ".join(message.split())
    subject, sep, story = text.partition(". ")
    if not sep or len(subject) > MAX_SUBJECT_CHARS or len(story.split()) < MIN_STORY_WORDS:
        return message
    asks = [s for s in _SENTENCE.split(story) if "?" in s]
    body = " ".join(asks) if asks else " ".join(story.split()[:STORY_WORDS_KEPT])
    return f"{subject}. {body}"
