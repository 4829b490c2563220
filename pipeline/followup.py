"""Follow-up questions: the standalone question retrieval searches for, built from the conversation.

    from pipeline.followup import standalone
    q = standalone("How is it treated?", [{"role": "user", "content": "What is gout?"},
                                         {"role": "assistant", "content": "Gout is ..."}])
    q.query, q.how      # -> "How is gout treated?", "focus"

A follow-up ("How is it treated?", "What causes this condition?", "And the symptoms?") names no condition, so
retrieving it alone finds whatever "treated" is closest to (on 40 dev conversations the answer cited the right
record 0 times). Three ways to make it standalone, measured by benchmarks/followup.py:

- `focus` (deterministic): carry the conversation's focus, the condition the latest earlier user turn that names
  one was about (MedQuAD-style and patient question forms stripped down to what they ask about), into the
  follow-up: its pronoun or "this condition" is replaced, or the focus is added when nothing stands for it.
- `model`: the generator rewrites the question from the conversation (what LangChain's history-aware retriever
  and LlamaIndex's condense-question engine do with a large model).
- `both`: the model's rewrite when it names the focus, else the deterministic one.

A question that stands alone (it names its own subject) is searched as written, whatever the setting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.types import Generator

HOWS = ("focus", "model", "both", "off")

# what stands for the conversation's subject in a follow-up
_ANAPHOR = re.compile(r"\b(this|that|the|my|his|her|their|your)\s+(condition|disease|disorder|illness|syndrome|"
                      r"problem|infection|cancer|diagnosis|thing)\b|\b(it|its|they|them|these|those|this|that)\b",
                      re.I)
# words of a question that name no subject (question words, question types, filler)
_GENERIC = re.compile(
    r"\b(what|whats|what's|how|why|when|where|who|which|whom|is|are|was|were|be|been|do|does|did|can|could|should|"
    r"would|will|may|might|must|i|me|my|we|you|your|a|an|the|of|for|to|in|on|at|by|with|about|and|or|there|any|"
    r"some|get|gets|got|have|has|had|also|else|more|other|much|many|long|often|tell|know|need|want|please|thanks|"
    r"thank|ok|okay|so|then|now|next|again|it|its|they|them|this|that|these|those|condition|disease|disorder|"
    r"illness|syndrome|problem|about|treat\w*|therap\w*|cure[sd]?|manag\w*|medications?|medicines?|drugs?|"
    r"surgery|symptoms?|signs?|caus\w*|inherit\w*|hereditary|genetic|genes?|changes?|related|common|rare|"
    r"frequency|diagnos\w*|tests?|outlook|prognosis|risk|prevent\w*|research|clinical|trials?|stages?|"
    r"complications?|affected|people|done|being|happen\w*|like|mean|serious|dangerous|contagious|go|away|"
    r"worse|better|help|helps|options?|available|lead|last|look|cause|come|back)\b", re.I)
# question forms around the subject, most specific first (MedQuAD's templates, then patients' openings)
_FORMS = [re.compile(p, re.I) for p in (
    r"^what (is|are) \(are\) (?P<f>.+)$",
    r"^what (are|is) the genetic changes related to (?P<f>.+)$",
    r"^what (are|is) the (symptoms?|signs?|treatments?|causes?|complications?|stages?|outlook|risk factors?) "
    r"(of|for|to) (?P<f>.+)$",
    r"^what (research|clinical trials?)(.*) (is|are) being done for (?P<f>.+)$",
    r"^how (to|do you|can i|do i|is one|are you) (diagnose|prevent|treat|manage|cure|test for|get rid of) "
    r"(?P<f>.+)$",
    r"^how many people (are|is) affected by (?P<f>.+)$",
    r"^who (is|are) at risk (for|of) (?P<f>.+)$",
    r"^what to do for (?P<f>.+)$",
    r"^what causes? (?P<f>.+)$",
    r"^(is|are) (?P<f>.+?) (inherited|hereditary|contagious|curable|serious|dangerous|genetic|common)$",
    r"^(can|could) you (tell me|explain) (about|what) (?P<f>.+)$",
    r"^(tell me|information|info|questions?) (about|on) (?P<f>.+)$",
    r"^what (is|are|'s) (an? |the )?(?P<f>.+)$",
)]
# a patient's opening ("my dad has atrial fibrillation, what does that mean"): the subject ends at a clause
_PATIENT = re.compile(r"^(i|we|my \w+|he|she)( have| has| had| was| were| am| got)*( been)? (diagnosed with|"
                      r"dealing with|suffering from|living with|have|has|had|got) (?P<f>.+?)"
                      r"(,| for | since | and | but | what | which | - |$)", re.I)


@dataclass(frozen=True)
class Standalone:
    query: str
    """What retrieval searches for (the question itself when it stands alone)."""
    how: str
    """as_written (it stands alone or there is no history), focus, model, or none (no focus was found)."""
    focus: str = ""


def needs_context(question: str) -> bool:
    """A question with a pronoun or "this condition" for its subject, or with no word that names a subject."""
    words = re.findall(r"[a-z][a-z'-]*", question.lower())
    subject = [w for w in words if not _GENERIC.fullmatch(w)]
    return not subject or (bool(_ANAPHOR.search(question)) and len(subject) <= 2)


def focus_of(question: str) -> str:
    """What a question asks about ("What are the treatments for gout ?" -> "gout"); "" when it names nothing."""
    q = " ".join(question.replace("?", " ").split()).strip(" .!")
    q = re.sub(r"^(hi|hello|hey|dear doctor|doctor)[,!. ]+", "", q, flags=re.I)
    if needs_context(q):
        return ""
    for form in (*_FORMS, _PATIENT):
        m = form.match(q)
        if m:
            return m.group("f").strip(" ,.")
    return ""


def _focus_from(history: Sequence[dict[str, str]]) -> str:
    """The conversation's focus: the latest earlier user turn that names one, each turn read as it was resolved
    (a follow-up to a follow-up keeps the first turn's subject)."""
    focus = ""
    for m in history:
        if m.get("role") == "user":
            focus = focus_of(m.get("content", "")) or focus
    return focus


def carry_focus(question: str, focus: str) -> str:
    """The follow-up with the focus in place of what stands for it ("How is it treated?" -> "How is gout
    treated?"), or added at the end when nothing does ("And the symptoms?" -> "And the symptoms? (gout)")."""
    out, n = _ANAPHOR.subn(lambda m: focus if not m.group(0).lower().startswith(("its", "their")) else
                           f"{focus}'s", question, count=1)
    return out if n else f"{question.rstrip()} ({focus})"


REWRITE_PROMPT = ("Rewrite the user's last question so that it can be understood without the conversation: name "
                  "the condition it is about. Reply with the rewritten question only.")


def model_rewrite(question: str, history: Sequence[dict[str, str]], generator: Generator) -> str:
    """The generator's standalone rewrite (greedy, one line); "" when it gives nothing usable."""
    convo = "\n".join(f"{m['role']}: {' '.join(m['content'].split())[:400]}" for m in history[-4:])
    messages = [{"role": "system", "content": REWRITE_PROMPT},
                {"role": "user", "content": f"Conversation:\n{convo}\n\nLast question: {question}"}]
    text = generator.generate(messages, max_new_tokens=48).text.strip().splitlines()
    line = text[0].strip().strip('"') if text else ""
    return line if 3 <= len(line) <= 300 else ""


def standalone(question: str, history: Sequence[dict[str, str]] | None, how: str = "focus",
               generator: Generator | None = None) -> Standalone:
    """The question retrieval should search for, given the earlier turns (oldest first)."""
    if not history or how == "off" or not needs_context(question):
        return Standalone(question, "as_written")
    focus = _focus_from(history)
    rewritten = model_rewrite(question, history, generator) if how in ("model", "both") and generator else ""
    if how == "model" and rewritten:
        return Standalone(rewritten, "model", focus)
    if how == "both" and rewritten and focus and focus.lower() in rewritten.lower():
        return Standalone(rewritten, "model", focus)
    if focus:
        return Standalone(carry_focus(question, focus), "focus", focus)
    return Standalone(question, "none")
