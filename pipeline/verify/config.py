"""The verification stage's settings (the `verify:` block of serve and eval configs, `data.verify` of the finetune
configs)."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigError

UNSUPPORTED_ACTIONS = ("remove", "mark")


JUDGE_PRECISIONS = ("int8", "fp32")


DEFAULT_MIN_RELEVANCE = 0.45


"""The relevance gate for an index built without calibration: measured on the base MiniLM, where the dev
questions' 1st percentile was 0.481 and the highest of 40 out-of-scope questions 0.423."""


@dataclass(frozen=True)
class VerifyConfig:
    """The verification stage every answer passes (the `verify:` block of serve and eval configs). Thresholds
    were chosen by measurement on the dev split (benchmarks/verification.py, README "Verification")."""

    enabled: bool = True
    """Verify answers. Off only for measuring what verification changes (the eval's `draft` metrics do that too)."""
    support_threshold: float = 0.55
    """A passage supports a sentence when its score reaches this (score = lexical_weight x content-word overlap +
    the rest x embedder cosine). Measured on 200 dev drafts: the lowest threshold whose cited sentences pass the
    evaluation's independent lexical check >= 95% of the time (0.45: 89%, 0.50: 94%, 0.55: 98%, 0.60: 99%)."""
    lexical_weight: float = 0.5
    """Weight of content-word overlap in the support score; the rest is the index embedder's cosine."""
    unsupported: str = "remove"
    """What happens to a sentence no shown passage supports: `remove` it (default) or keep it and `mark` it
    unsupported."""
    min_kept_share: float = 0.5
    """Below this share of the generated sentences surviving, the answer becomes extractive (quoted passage
    sentences with their markers). Measured on 200 dev drafts (threshold 0.55): token F1 0.263 at 0, 0.294 at 0.34,
    0.295 at 0.5 (53% extractive), 0.342 at 0.67 (87% extractive: quotes match MedQuAD's gold wording); 0.5 keeps
    the model's answer whenever most of it is supported."""
    generated_with_lexical_judge: bool = False
    """Serve the model's own sentences when only the lexical judge checks them. Off (default): with the lexical
    judge, which cannot read meaning (it keeps negated and swapped facts), every answer quotes the passages
    (extractive); the trained faithfulness judge (`make demo`) lets checked generated sentences through. A blind
    review of the served answers to the 127 consumer dev questions: generated answers gave the person what they
    asked 8 of 44 times (11 distorted), extractive ones 39 of 81 (benchmarks/review_answers.py)."""
    generated_with_trained_judge: bool = False
    """Serve the model's own sentences when the trained faithfulness judge has checked them. Off (default): answers
    quote the passages with the trained judges too, chosen and gated by the answerhood scorer. A blind review of
    the 127 consumer dev questions, both arms in one round (benchmarks/review_answers.py): with it on, 20 answers
    were the model's checked sentences and 1 of them gave the person what they asked, where quotes did for 11 of
    those 20 questions; over all 127, 0.433 against 0.543 with quotes (paired: 7 better, 21 worse, McNemar p
    0.013); on MedQuAD dev the 3 generated answers of 30 all lost the relevant record."""
    min_relevance: float = -1.0
    """Below this cosine between the question and its best passage, the sources do not answer the question
    (answer_mode no_answer). -1 (default): the gate calibrated for the index in use (its manifest's
    `calibration`, written by `medcite index` from dev, patient-style and out-of-scope questions), or
    DEFAULT_MIN_RELEVANCE for an index without one; 0..1: this value, whatever the index."""
    extractive_sentences: int = 3
    """Passage sentences quoted in an extractive answer."""
    section_prior: float = 0.3
    """Added to the answerhood of a quotable sentence, for the order of quotes only, when its passage's MedQuAD
    section is the question type the question asks for ("Gout: treatment" for "how is gout treated"). With
    subject_prior, tuned index, trained judges, 40 a set: cites the gold record dev 0.800 -> 0.925, patient-style
    0.675 -> 0.750, yes/no 0.850 -> 0.875; 0.5 each changed nothing more (benchmarks/answers.py --verify)."""
    subject_prior: float = 0.3
    """Added the same way when its passage is about the condition the question names (the title's focus as a
    phrase): the asked condition's own passage before a similar condition's."""
    type_prior: float = 0.8
    """Added, times the probability that a quotable unit gives the kind of answer the question asks for (cause,
    symptoms, treatment, diagnosis, ...; not overview: pipeline.verify.kinds, fitted by `medcite index`), to its
    cosine, for the choice and order of quotes. Chosen on MedQuAD dev and patient-style rewrites (40 each, same
    drafts), token F1 at 0 / 0.4 / 0.8 / 1.0: dev 0.506 / 0.514 / 0.511 / 0.511, patient-style 0.368 / 0.386 /
    0.386 / 0.392; the consumer dev questions were read and blind-reviewed after (docs/trust.md). 0: cosine alone."""
    judges: str = ""
    """Directory of the trained judges (`make demo`, `make models`: faithfulness/ and answerhood/, each with calibration.json).
    Empty: artifacts/judges when it exists, else the lexical judge (overlap + embedder cosine) and the embedder's
    cosine for choosing quotes; `off`: never. /readyz and every answer say which judge ran."""
    judge_precision: str = "int8"
    """int8: the judges' Linear layers run as torch dynamic int8 (benchmarks/judges.py measures both on the probe
    set at the calibrated thresholds); fp32: as trained."""
    judge_threshold: float = 0.0
    """A sentence is supported when the faithfulness judge's probability reaches this; 0: the threshold calibrated
    with the judge (its calibration.json). Without a judge, support_threshold applies to the lexical score."""
    answer_threshold: float = 0.0
    """A sentence answers the question when the answerhood scorer's probability reaches this; 0: the calibrated
    no-answer gate of the scorer (calibration.json `gate`) where answerhood_gate is on. No shown sentence reaching
    it: answer_mode no_answer."""
    quotes_by_answerhood: bool = False
    """Choose and order extractive quotes by the answerhood scorer (with its priors). Off (default): by the
    embedder's cosine, as without trained judges. Blind review of the 127 consumer dev questions in one round:
    quotes by answerhood gave the person what they asked 0.512 (distorted 0.126), by cosine 0.543 (0.094); paired
    9 better, 13 worse; linked questions 0.653 against 0.755. On MedQuAD dev token F1 +0.022 [-0.008, +0.057]."""
    answerhood_gate: bool = False
    """Gate answers by the answerhood scorer's calibrated threshold (refuse when no shown sentence reaches it, drop
    quotes below it). Off (default): the scorer orders the quotes and the relevance gate alone refuses (out of
    scope: 40 of 40 either way). The gate is calibrated on MedQuAD questions and refused real consumer questions
    the corpus answers: with it, consumer dev no_answer 0.063 and the messages 0.250; without it 0.032 and 0.083,
    as with the lexical judge (benchmarks/answers.py, same drafts). An answer_threshold set above 0 gates always."""
    disclaimer: str = ("General information from the cited sources, not medical advice: ask a clinician about "
                       "your own situation.")
    """Sent with every answer."""

    def __post_init__(self) -> None:
        if self.min_relevance != -1.0 and not 0.0 <= self.min_relevance <= 1.0:
            raise ConfigError(f"verify.min_relevance must be -1 (calibrated) or in [0, 1], got {self.min_relevance}")
        for name in ("support_threshold", "lexical_weight", "min_kept_share", "judge_threshold", "answer_threshold",
                     "section_prior", "subject_prior", "type_prior"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"verify.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.unsupported not in UNSUPPORTED_ACTIONS:
            raise ConfigError(f"verify.unsupported must be remove or mark, got {self.unsupported!r}")
        if self.judge_precision not in JUDGE_PRECISIONS:
            raise ConfigError(f"verify.judge_precision must be int8 or fp32, got {self.judge_precision!r}")
        if not 1 <= self.extractive_sentences <= 10:
            raise ConfigError(f"verify.extractive_sentences must be in [1, 10], got {self.extractive_sentences}")


DEFAULT_JUDGES = "artifacts/judges"
