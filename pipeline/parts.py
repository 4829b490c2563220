"""Questions that ask two or three things at once, as patients write them, split into standalone sub-questions:
each is retrieved for and answered (pipeline.answer, pipeline.verify.stage), so the second part is not lost.

    from pipeline.parts import sub_questions
    sub_questions("My son has gout. What is gout? Also, how is it treated?")
    # -> ["My son has gout. What is gout?", "how is gout treated?"]

    sub_questions("How do I know if I have diabetes and what should I do?")   # -> [the question]

A part ends at a question mark or before a connector that opens another question ("Also, what causes ...",
"Another thing: ...", "... and how is it treated?"). Text that asks nothing ("Thanks!") stays with the part before
it; a later part that names no subject gets the earlier part's focus (pipeline.followup.carry_focus), or stays with the
part before it when there is none to carry. A question that asks one thing comes back as written, alone.

Why: in the blind review of 30 patient-style answers (benchmarks/results/review.json) two-part questions got one
part answered, and of the 10 patient-style answers that missed the gold record, 4 were two-part questions whose
passages were all retrieved for one of the parts.
"""

from __future__ import annotations

import re

from pipeline.followup import carry_focus, focus_of, needs_context

MAX_PARTS = 3
_ASKS = (r"(?:what|how|why|when|where|who|which|is|are|was|were|can|could|does|do|did|should|will|would|may|"
         r"i want to know|can you tell me|please explain|tell me)\b")
# a connector opening another question: "Also, what ...", "Another thing: is ...", "... and how is it treated"
_CONNECTOR = re.compile(r"\s+(?:also,?|another thing:?|one more thing:?|additionally,?|plus,?|and also|and)\s+"
                        rf"(?={_ASKS})", re.I)
_LEADING = re.compile(r"^(?:also,?|another thing:?|one more thing:?|additionally,?|plus,?|and also|and)\s+", re.I)
_QUESTION = re.compile(rf"\?|^\W*{_ASKS}|\b(?:what|how|why|whether)\b", re.I)


def sub_questions(question: str) -> list[str]:
    """The question's parts, each standalone (at most MAX_PARTS; the rest stays with the last)."""
    pieces = [p for chunk in re.split(r"(?<=\?)\s+", question.strip()) for p in _CONNECTOR.split(chunk)]
    parts: list[str] = []
    for piece in (_LEADING.sub("", p.strip()) for p in pieces):
        if not piece:
            continue
        if parts and (not _QUESTION.search(parts[-1]) or not _QUESTION.search(piece) or len(parts) == MAX_PARTS
                      or not re.search(r"[^\W\d_]", piece)):
            # asks nothing of its own ("Thanks!", the second "?" of MedQuAD's "Who is at risk for X? ?"), follows a
            # story that asks nothing ("I have chest pain and what should I do?"), or is past the cap
            parts[-1] = f"{parts[-1]} {piece}"
        else:
            parts.append(piece)
    if len(parts) <= 1:
        return [question]
    out = [parts[0]]
    for part in parts[1:]:
        if not needs_context(part):
            out.append(part)
            continue
        focus = next((f for f in (focus_of(p) for p in reversed(out)) if f), "")
        if focus:
            out.append(carry_focus(part, focus))
        else:  # nothing to carry ("How do I know if I have diabetes and what should I do?"): one question
            out[-1] = f"{out[-1]} and {part}" if part[:1].islower() else f"{out[-1]} {part}"
    return out if len(out) > 1 else [question]
