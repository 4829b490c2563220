"""The quotable units of the shown passages: whole sentences, and lists quoted as lists (a lead-in with its items,
GARD's flattened symptom tables as their rows); never a link line, a heading, a cut end, a fragment or a sentence
whose subject lives in the sentence before it without that sentence. pipeline.verify.stage chooses among them."""

from __future__ import annotations

import re

from core.quality import split_sentences
from generator.prompt import PromptPassage
from pipeline.verify.subject import focus as _focus
from pipeline.verify.support import (
    MAX_QUOTE_WORDS,
    is_fragment,
    is_header,
    leans_on_previous,
    points_at_list,
    restates_question,
)
from pipeline.verify.tables import HPO_TABLE, listed, table_items

# a list's lead-in without a colon: quoted without its items it ends mid-sentence ("Certain foods and drinks may cause
# IBS symptoms in some children, such as" was quoted to a consumer message)
_OPEN_LEAD = re.compile(r"\b(?:such as|include|includes|including|like|the following)\s*$", re.I)
# the corpus's link lines, quoted as if they were answers ("More on: Alveolar Echinococcosis (AE) FAQs")
_NAVIGATION = re.compile(r"\s*\(?\s*(more on|learn more|see also|read more|for more information)\b", re.I)
# a sentence that only sends the reader elsewhere: quoted, it answers nothing ("For information on the treatment of
# lupus, you can read the NIAMS publication called ...", "To see NIH-funded studies ... visit www.ClinicalTrials.gov",
# "See the following PDQ summaries for more information", the CDC's link lists "Podcast: Take Three Actions to Fight
# Flu", "... (PDF Version) Oct 13": consumer dev answers, blind-reviewed as not answering)
_REFERRAL = re.compile(r"\b(?:visit|go to|you can read|publication called|see the following|check the list|click"
                       r"|clicking|following links?)\b|www\.|https?://|\(PDF\b|^(?:Podcast|Video|Questions? (?:&|and) "
                       r"Answers?|Fact Sheet)\s*:", re.I)


def title_like(line: str) -> bool:
    """A heading or a link's title, not a sentence: no closing stop and most of its longer words capitalised
    ("Quick Facts for Clinicians on Antiviral Treatments for 2009 H1N1 Nov 4", "Stage I, Stage II, Stage III, and
    Stage IV Chronic Lymphocytic Leukemia")."""
    bare = line.strip()
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]{3,}", bare)]
    return (not re.search(r"[.!?:;]$", bare) and len(words) >= 3
            and sum(w[0].isupper() for w in words) >= 0.6 * len(words))


def without_referral(line: str) -> str:
    """The line without the words that send the reader elsewhere (a link, a publication, a web site): empty when
    that is all it says; a flattened line that says something first keeps that part ("Therapy may involve: ...
    Pneumatic balloon dilation of the esophagus ... You can learn more about these treatment options by clicking
    on the following links: eMedicine ..." keeps its list)."""
    m = _REFERRAL.search(line)
    if not m:
        return line
    # where the referral's own sentence starts: the last capitalised word after a word or bracket, before the match
    starts = [b.start() + 1 for b in re.finditer(r"[a-z0-9)\]] [A-Z]", line[: m.start() + 1])]
    cut = starts[-1] if starts else 0
    kept = line[:cut].rstrip()
    return kept if len(kept.split()) >= 8 and not title_like(kept) else ""


# a section heading glued to the line before it by the corpus's flattening: "They may include - Body or muscle aches
# - Chills - ... - Sore throat Is it a cold or the flu?" (the flu overview's symptom list, dropped whole for its "?")
_GLUED_HEADING = re.compile(r"^(?P<body>.*[a-z)])\s+(?P<heading>(?:Is|Are|What|How|When|Who|Why|Which|Can|Do|Does|"
                            r"Should)\b[^.!?]{0,80}\?)$")
_ITEM_WORDS = 25
"""A line under a lead-in ending in ':' without a bullet is one of its items when it is at most this long and does not
end a sentence ("Signs and symptoms of a stroke may include:" then "Sudden weakness", "Confusion", ...)."""


def _unglued(line: str) -> str:
    m = _GLUED_HEADING.match(line.strip())
    return m.group("body") if m else line


def _is_item(line: str, lead_colon: bool) -> bool:
    bare = line.strip()
    if bare.startswith(("-", "*", "\u2022")):
        return True
    return lead_colon and 0 < len(bare.split()) <= _ITEM_WORDS and not re.search(r"[.!?:]$", bare)


def candidates(question: str, shown: list[PromptPassage]) -> list[tuple[int, str]]:
    """Quotable units of the shown passages, (marker, text): whole sentences, and lists quoted as lists (a lead-in
    ending in ':' with its '- item' lines; GARD's flattened symptom tables as their rows)."""
    titles = [p.hit.passage.title for p in shown]
    out, seen = [], set()
    for p in shown:
        rows = table_items(p.text)
        if len(rows) >= 2:
            out.append((p.marker, listed(f"Signs and symptoms of {_focus(p.hit.passage.title)}", rows)))
        lines = [_unglued(without_referral(s)) for s in split_sentences(HPO_TABLE.sub(" ", p.text))
                 if not points_at_list(s) and not _NAVIGATION.match(s)]
        lines = [s for s in lines if s]
        last = lines[-1].strip() if lines else ""
        if last and not last.startswith(("-", "*", "\u2022")) and not re.search(r"[.!?:;)\]\"']$", last):
            lines = lines[:-1]  # cut by the chunk's end: "Most people with MELAS have a buildup of lactic acid in"
        i = 0
        while i < len(lines):
            s = lines[i]
            i += 1
            if s.rstrip().endswith(":") or _OPEN_LEAD.search(s):
                items = []
                while i < len(lines) and _is_item(lines[i], s.rstrip().endswith(":")):
                    items.append(lines[i].lstrip("-*\u2022 ").strip())
                    i += 1
                # the list with its lead-in, capped to stay readable; one long flattened line is its items run
                # together ("Symptoms are usually the same as with depression:" "Increased appetite ... Social
                # withdrawal"): quoted with its lead-in, it still says what was asked
                if (len(items) >= 2 or (items and len(items[0].split()) >= 6)) and not is_fragment(s):
                    lead = s
                    if leans_on_previous(s) and i - len(items) >= 2:  # "They may include:": its subject before it
                        prev = lines[i - len(items) - 2].strip()
                        if prev and not prev.endswith(":") and not leans_on_previous(prev) and not is_header(prev, titles):
                            lead = f"{prev} {s.strip()}"
                    out.append((p.marker, listed(lead, items)))
                continue
            if leans_on_previous(s):  # its subject is in the sentence before: quoted with it, or not at all
                prev = lines[i - 2].strip() if i >= 2 else ""
                if (not prev or prev.endswith(":") or prev.startswith(("-", "*", "\u2022")) or is_header(prev, titles)
                        or leans_on_previous(prev) or len(prev.split()) + len(s.split()) > MAX_QUOTE_WORDS):
                    continue
                s = f"{prev} {s.strip()}"
            key = " ".join(s.lower().split())
            if (len(s.split()) >= 5 and not is_header(s, titles) and not is_fragment(s) and key not in seen
                    and not title_like(s)
                    and not restates_question(s, question)  # "This summary is about adult leukemia."
                    and not s.rstrip().endswith(("...", "?"))):  # cut ends and the passage's own question ("What
                # are the treatments for gout?" opens MedQuAD answers) say nothing alone
                seen.add(key)  # a sentence a source repeats is quoted once
                out.append((p.marker, s))
    return out
