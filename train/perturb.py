"""Sentence rewrites that keep or change what a sentence means: the training and probe data of the faithfulness
judge (the way FactCC, AlignScore and MiniCheck make their checkers' data: rule-based transformations of true
sentences).

    from train.perturb import ALTERATIONS, paraphrase
    rng = random.Random(0)
    paraphrase("It may cause pain (often severe).", rng, focus="Gout")   # "Gout can cause pain."
    ALTERATIONS["negation"]("Gout can be treated.", rng)                 # "Gout cannot be treated."

Every function returns the new sentence, or None when the rule does not apply to this sentence (no number to
change, no direction word to reverse). Meaning-changing families: negation, number, direction, quantifier,
condition (who, where, which kind: men/women, dominant/recessive, upper/lower...), term (a medical term swapped
for another of the corpus: `swap_term`), and the ones that need another record (`entity_swap`, `merge`: see
train.judge_data). Standard library only.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

# --- meaning-preserving rewrites ------------------------------------------------------------------------------

# Replacements that keep a medical sentence's meaning (checked against the corpus's use of each word).
_SYNONYMS = {
    "may": "can", "people": "individuals", "usually": "typically", "often": "frequently", "doctor": "physician",
    "doctors": "physicians", "medicines": "medications", "medicine": "medication", "such as": "including",
    "called": "known as", "begins": "starts", "begin": "start", "occur": "happen", "occurs": "happens",
    "rare": "uncommon", "help": "aid", "helps": "aids", "about": "approximately", "affects": "impacts",
    "also": "", "very": "", "serious": "severe", "problems": "difficulties",
    "children": "kids", "get": "develop", "gets": "develops", "treatment": "therapy", "large": "big",
}
_LEADS = ("In short, ", "Overall, ", "According to the sources, ", "In general, ", "Notably, ")
_DISCOURSE = re.compile(r"^(However|In addition|Also|Additionally|Moreover|Furthermore|For example|In some cases),\s+")
_PRONOUN = re.compile(r"^(It|This condition|This disorder|This disease|The condition|The disorder)\b")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _sub_word(sentence: str, old: str, new: str) -> str:
    def repl(m: re.Match) -> str:
        return _cap(new) if m.group(0)[:1].isupper() and new else new

    out = re.sub(rf"\b{re.escape(old)}\b", repl, sentence, count=1, flags=re.I)
    return re.sub(r"\s{2,}", " ", out).replace(" ,", ",").strip()


def synonyms(sentence: str, rng: random.Random) -> str | None:
    """One to three safe synonym replacements."""
    found = [w for w in _SYNONYMS if re.search(rf"\b{re.escape(w)}\b", sentence, re.I)]
    if not found:
        return None
    out = sentence
    for w in rng.sample(found, min(len(found), rng.randint(1, 3))):
        out = _sub_word(out, w, _SYNONYMS[w])
    return out if out != sentence else None


def drop_parenthetical(sentence: str, rng: random.Random) -> str | None:
    out = re.sub(r"\s*\([^()]{1,80}\)", "", sentence, count=1)
    return out if out != sentence else None


def truncate_clause(sentence: str, rng: random.Random) -> str | None:
    """Keep the first clause of a sentence with several: a part of what the passage says is still said by it."""
    m = re.search(r"(,\s+(which|and|but|while|although|because|so)\b|;\s)", sentence)
    if not m or len(sentence[: m.start()].split()) < 5:
        return None
    return sentence[: m.start()].rstrip(" ,;") + "."


def resolve_pronoun(sentence: str, rng: random.Random, focus: str = "") -> str | None:
    """"It is inherited..." -> "Gout is inherited..." (the generator names the subject; the passage says "It")."""
    if not focus or not _PRONOUN.match(sentence):
        return None
    return _PRONOUN.sub(focus, sentence, count=1)


def discourse(sentence: str, rng: random.Random) -> str | None:
    """Drop a leading "However, ..." or add a neutral lead-in."""
    if _DISCOURSE.match(sentence):
        return _cap(_DISCOURSE.sub("", sentence))
    return rng.choice(_LEADS) + sentence[:1].lower() + sentence[1:] if sentence[:2] != "I " else None


def percent_form(sentence: str, rng: random.Random) -> str | None:
    if re.search(r"\d+ percent\b", sentence):
        return re.sub(r"(\d+) percent\b", r"\1%", sentence, count=1)
    if re.search(r"\d+%", sentence):
        return re.sub(r"(\d+)%", r"\1 percent", sentence, count=1)
    return None


PARAPHRASES: tuple[Callable[..., str | None], ...] = (synonyms, drop_parenthetical, truncate_clause, discourse,
                                                     percent_form)


def paraphrase(sentence: str, rng: random.Random, focus: str = "") -> str:
    """One or two meaning-preserving rewrites (the sentence itself when none applies)."""
    out = resolve_pronoun(sentence, rng, focus) or sentence
    rules = list(PARAPHRASES)
    rng.shuffle(rules)
    done = 0
    for rule in rules:
        new = rule(out, rng)
        if new and len(new.split()) >= 4:
            out, done = new, done + 1
        if done >= rng.randint(1, 2):
            break
    return out


# --- meaning-changing rewrites -------------------------------------------------------------------------------

_AUX = re.compile(r"\b(is|are|was|were|can|could|should|will|would|may|might|must|does|do|did|has|have)\b(?! not)")
_NEG = re.compile(r"\b(is|are|was|were|could|should|will|would|may|might|must|does|do|did|has|have) not\b")
_OPPOSITE_NEG = (("cannot", "can"), ("can't", "can"), ("without", "with"), ("unlikely", "likely"),
                 ("unable", "able"), ("no longer", "still"), ("none of", "all of"), ("never", "sometimes"))


def negation(sentence: str, rng: random.Random) -> str | None:
    """Add or remove one negation ("is" -> "is not", "does not" -> "does", "cannot" -> "can")."""
    for neg, pos in _OPPOSITE_NEG:
        if re.search(rf"\b{neg}\b", sentence, re.I):
            return _sub_word(sentence, neg, pos)
    m = _NEG.search(sentence)
    if m:
        return sentence[: m.start()] + m.group(1) + sentence[m.end():]
    m = _AUX.search(sentence)
    if m:
        word = "cannot" if m.group(1) == "can" else f"{m.group(1)} not"
        return sentence[: m.start()] + word + sentence[m.end():]
    return None


def _pairs(words: Sequence[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for a, b in words:
        out[a], out[b] = b, a
    return out


DIRECTION = _pairs([("increase", "decrease"), ("increases", "decreases"), ("increased", "decreased"),
                    ("higher", "lower"), ("high", "low"), ("more", "less"), ("raise", "lower"), ("improve", "worsen"),
                    ("improves", "worsens"), ("larger", "smaller"), ("rise", "fall"), ("gain", "loss"),
                    ("before", "after"), ("early", "late"), ("slowly", "rapidly"), ("mild", "severe"),
                    ("excess", "lack"), ("overactive", "underactive"), ("positive", "negative"),
                    ("stimulates", "inhibits"), ("older", "younger"), ("above", "below"),
                    ("reduces", "raises"), ("prevent", "cause"), ("prevents", "causes"), ("benefit", "harm")])
QUANTIFIER = {w: v for w, v in _pairs([("most", "few"), ("always", "never"), ("usually", "rarely"),
                                          ("often", "seldom"), ("commonly", "rarely"), ("common", "rare"),
                                          ("many", "few"), ("all", "some"), ("frequently", "infrequently"),
                                          ("majority", "minority"), ("every", "no"), ("least", "most")]).items()
              if w != "no"}  # "have no symptoms" -> "have every symptoms": not a sentence
CONDITION = _pairs([("men", "women"), ("male", "female"), ("males", "females"), ("boys", "girls"),
                    ("children", "adults"), ("child", "adult"), ("dominant", "recessive"), ("benign", "malignant"),
                    ("acute", "chronic"), ("upper", "lower"), ("left", "right"), ("inherited", "acquired"),
                    ("mother", "father"), ("infants", "teenagers"), ("type 1", "type 2"), ("X-linked", "Y-linked"),
                    ("internal", "external"), ("primary", "secondary"), ("spine", "skull"), ("arteries", "veins")])

# Where a table word does not carry the meaning it is flipped for. Read from the probe's negatives (session 8):
# of its 87 direction, quantifier and condition rows about a third were not sentences or not claims ("The prevent
# of most brain tumors is not known", "the few common cause of", "pass it to his or her adults", "trials that may
# be right for you" <- "left for you", "For less information, click here", "the autosomal recessive and
# autosomal recessive types"), so the judge learned from, and was scored on, noise.
_SIDE = re.compile(r"^[\s-]*(side|sided|arm|leg|hand|foot|eye|ear|lung|kidney|ventricle|atrium|breast|hemisphere|"
                   r"lobe|hip|knee|shoulder|upper|lower)", re.I)
_POSSESSIVE = re.compile(r"\b(his|her|their|your|my|its|our|have|had|having)\s+$", re.I)  # offspring, not age
_NOUN_BEFORE = re.compile(r"\b(the|a|an|one|common|main|exact|underlying|known|major|leading|likely|usual|no|"
                          r"possible|other)\s+$", re.I)
_POINTER_AFTER = re.compile(r"^\s+(information|about|details|specific|on|resources|results)\b", re.I)
_MOST_ADJ = {"common", "commonly", "often", "frequent", "frequently", "likely", "severe", "serious", "important",
             "effective", "prevalent", "widely", "useful", "affected"}


def _reading(word: str, before: str, after: str) -> bool:
    """Whether this occurrence of a table word means what the table flips (a side, an age, a verb, a claim)."""
    w = word.lower()
    if w in ("left", "right"):
        return bool(_SIDE.match(after))
    if w in ("child", "children", "adult", "adults"):
        return not _POSSESSIVE.search(before)
    if w in ("cause", "causes", "prevent", "prevents"):
        return not (_NOUN_BEFORE.search(before) or re.match(r"^\s+of\b", after))
    if w in ("more", "less"):
        return not (_POINTER_AFTER.match(after) or re.search(r"\b(learn|read|find out|for)\s+$", before, re.I))
    if w in ("often", "seldom", "frequently", "common", "rare"):
        return not re.search(r"\b(how|most|least)\s+$", before, re.I)
    if w in ("all", "some"):
        return not re.search(r"\b(not|at)\s+$", before, re.I)
    return True


def _replacement(word: str, new: str, before: str, after: str) -> str | None:
    if word.lower() == "most":  # "the most common cause" -> "the least common", "most people" -> "few people"
        nxt = re.match(r"^\s+(\w+)", after)
        if not nxt:
            return None
        if nxt.group(1).lower() in _MOST_ADJ:
            return "least"
        plural = nxt.group(1).lower() in ("of", "people", "children", "men", "women") or nxt.group(1).endswith("s")
        return "few" if plural else None
    if word.lower() == "few" and re.search(r"\ba\s+$", before, re.I):
        return None  # "a few" -> "a many"
    return new


def _flip(sentence: str, table: dict[str, str], rng: random.Random) -> str | None:
    """Replace one occurrence of a table word with its opposite, where it reads as the table means and the
    sentence does not hold the opposite already ("men and women", "acute or chronic": flipping one of a pair
    makes "women and women", not a changed claim)."""
    found = []
    for w, opposite in table.items():
        if re.search(rf"\b{re.escape(opposite)}\b", sentence, re.I):
            continue
        for m in re.finditer(rf"\b{re.escape(w)}\b", sentence, re.I):
            before, after = sentence[: m.start()], sentence[m.end():]
            new = _reading(m.group(0), before, after) and _replacement(m.group(0), opposite, before, after)
            if new:
                found.append((m.start(), m.end(), new))
    if not found:
        return None
    start, end, new = rng.choice(sorted(found))
    if sentence[start:end][:1].isupper():
        new = _cap(new)
    before = re.sub(r"\b([Aa])(n?) $", lambda a: a.group(1) + ("n " if new[:1].lower() in "aeiou" else " "),
                    sentence[:start])  # "an increased" -> "a decreased"
    return before + new + sentence[end:]


def direction(sentence: str, rng: random.Random) -> str | None:
    return _flip(sentence, DIRECTION, rng)


def quantifier(sentence: str, rng: random.Random) -> str | None:
    return _flip(sentence, QUANTIFIER, rng)


def condition(sentence: str, rng: random.Random) -> str | None:
    return _flip(sentence, CONDITION, rng)


_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.]*\d)(?!\w)")
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def number(sentence: str, rng: random.Random) -> str | None:
    """Change one number (a count, a percentage, an age) or number word to another value."""
    found = list(_NUMBER.finditer(sentence))
    if found:
        m = rng.choice(found)
        value = float(m.group(1))
        while True:
            new = value * rng.choice((0.25, 0.5, 2, 3)) + rng.choice((0, 1, 5)) if value else rng.randint(1, 9)
            text = f"{new:.1f}" if "." in m.group(1) else str(int(round(new)))
            if text != m.group(1):
                break
        return sentence[: m.start()] + text + sentence[m.end():]
    words = [w for w in _NUMBER_WORDS if re.search(rf"\b{w}\b", sentence, re.I)]
    if not words:
        return None
    w = rng.choice(words)
    return _sub_word(sentence, w, rng.choice([x for x in _NUMBER_WORDS if x != w]))


BODY_PARTS = ("heart", "lungs", "liver", "kidneys", "brain", "skin", "eyes", "ears", "bones", "muscles", "stomach",
              "intestines", "colon", "bladder", "pancreas", "thyroid", "spinal cord", "blood vessels", "nerves",
              "joints", "breast", "prostate", "ovaries", "uterus", "cervix", "throat", "mouth", "teeth", "jaw",
              "hands", "feet", "legs", "hips", "knees", "spleen", "adrenal glands", "retina", "esophagus")
_BODY = re.compile(r"\b(" + "|".join(re.escape(b) for b in BODY_PARTS) + r"|kidney|lung|eye|ear|bone|muscle|"
                   r"intestine|ovary|hand|foot|leg|hip|knee|nerve|joint)\b", re.I)


def swap_term(sentence: str, rng: random.Random, terms: Sequence[str], passage_words: set[str]) -> str | None:
    """Replace one medical term (a body part, or a rare corpus word such as a drug or gene name) with another
    term that the passage does not contain."""
    m = _BODY.search(sentence)
    spans = [m] if m else []
    term_set = set(terms)
    spans += [w for w in re.finditer(r"[A-Za-z][A-Za-z0-9-]{5,}", sentence) if w.group(0).lower() in term_set]
    if not spans:
        return None
    target = rng.choice(spans)
    pool = BODY_PARTS if target is m else terms
    for _ in range(20):
        new = rng.choice(pool)
        if new.lower() != target.group(0).lower() and new.lower() not in passage_words:
            return sentence[: target.start()] + new + sentence[target.end():]
    return None


ALTERATIONS: dict[str, Callable[[str, random.Random], str | None]] = {
    "negation": negation, "number": number, "direction": direction, "quantifier": quantifier,
    "condition": condition,
}
"""The families that rewrite one sentence alone; `term`, `entity_swap`, `merge` and `other_record` need the
corpus (train.judge_data builds them)."""
