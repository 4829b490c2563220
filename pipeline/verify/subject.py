"""What an answer is about: a passage's subject (its title's focus), whether a question names it, and the
supported sentences whose every source is about a look-alike of what was asked (pipeline.verify.stage uses them for
quotes and for the model's own sentences). Standard library only."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.types import SentenceVerdict
    from generator.prompt import PromptPassage


def focus(title: str) -> str:
    """A title's subject: "Gout" of "Gout: research"."""
    return title.split(":")[0].strip()


def names_subject(question: str, title: str) -> bool:
    """Whether the question names the passage's subject (its title's focus, "Gout" of "Gout: research"), so a
    quote from it needs no introduction."""
    def norm(text: str) -> str:
        return f" {' '.join(re.sub(r'[^a-z0-9]+', ' ', text.lower()).split())} "

    subject = norm(focus(title))
    # the focus as a phrase, not as a bag of words: "Adult Hodgkin Lymphoma" is not named by "adult non-Hodgkin
    # lymphoma" although every word of it occurs there (found reading the benchmark's answers)
    return not subject.strip() or subject in norm(question)


def off_subject(question: str, shown: list[PromptPassage], sentences: list[SentenceVerdict]) -> list[SentenceVerdict]:
    """Supported sentences whose every source is a passage about another condition than the one the question
    names, where a shown passage is about that one ("the symptoms of adult non-Hodgkin lymphoma include ..." [the
    Adult Hodgkin Lymphoma passage]; "What is Young syndrome?" answered from the Ohdo syndrome, Say-Barber-
    Biesecker-Young-Simpson variant passage): true of the look-alike, not of what was asked. Found reading the
    trained judges' generated answers on MedQuAD dev (3 of 30 lost the relevant record so). A question naming no
    shown passage's subject (consumer wording: "flu" for Influenza) keeps every sentence."""
    named = {p.marker for p in shown if focus(p.hit.passage.title) and names_subject(question, p.hit.passage.title)}
    if not named:
        return []
    return [v for v in sentences if v.supported and v.citations and not set(v.citations) & named]
