"""Verification benchmark: how the thresholds of the verification stage were chosen, and what it changes, on the
200 dev questions (reserved MedQuAD documents: never trained on), side by side in one run.

    .venv/bin/python benchmarks/verification.py [--index artifacts/index] [--limit 200] [--adapter DIR]
        [--backend hf|llamacpp]

1. Calibration without generation. Support: each dev question's shown passages (hybrid, k=3); the sentences of a
   passage scored against their own passage (supported) and against the other passages shown for the same
   question (a topically close passage that does not say it: the wrong-citation case), with a third of each
   sentence's words swapped for words of another passage (model-style drift; exact copies score 1.0 on overlap
   and would teach nothing). For each lexical weight: ROC AUC, and the lowest threshold at which at most 5% of
   the wrong pairs pass. Relevance: the question's best passage cosine for the dev questions vs 40 self-written
   questions the corpus cannot answer; min_relevance keeps >= 99% of dev questions.
2. Drafts: SmolLM2 (or base + --adapter) answers every question with hybrid retrieval and without retrieval,
   verification off (cached in benchmarks/results/verification_drafts*.jsonl; a rerun reuses them).
3. Verification over the same drafts, over a grid of support_threshold x min_kept_share: answers citing, cited
   sentences supported (the shared definition and the evaluation's independent lexical check), invented terms,
   out-of-range markers, answer modes, token F1 / ROUGE-L against gold.
4. Time: verification / generation, both measured in the same live `answer` calls (--timing questions).
   Before (the drafts) and after, with bootstrap intervals; the RAG arm vs the no-retrieval baseline (paired).

Writes benchmarks/results/verification.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import journal  # noqa: E402
from core.files import atomic_write_json  # noqa: E402
from core.quality import split_sentences  # noqa: E402
from core.types import NOT_ANSWER  # noqa: E402
from evaluation.config import EvalConfig  # noqa: E402
from generator.config import GeneratorConfig  # noqa: E402
from pipeline.verify.config import VerifyConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

# Questions the corpus cannot answer (self-written): everyday, technical and out-of-domain ones.
from train.calibrate import OUT_OF_SCOPE  # noqa: E402  (the calibration's own list)


def _bootstrap(values: list[float]) -> dict:
    from evaluation.stats import mean_ci

    return mean_ci(values, 2000, 0)


# --- 1. calibration ---------------------------------------------------------------------------------------------

def _drift(sentence: str, other: str, rng: random.Random) -> str:
    """Replace a third of the sentence's words with words of another passage (model-style drift)."""
    words, pool = sentence.split(), other.split() or ["the"]
    for i in rng.sample(range(len(words)), len(words) // 3):
        words[i] = rng.choice(pool)
    return " ".join(words)


def _auc(pos: list[float], neg: list[float]) -> float:
    from scipy.stats import mannwhitneyu

    return round(float(mannwhitneyu(pos, neg).statistic) / (len(pos) * len(neg)), 4)


def calibrate(retriever, items, log) -> dict:
    from generator.prompt import build_messages

    rng = random.Random(0)
    pairs: list[tuple[str, str, bool]] = []
    relevance = []
    shown_by_question = []
    for it in items:
        hits = retriever.search(it.question, k=3, mode="hybrid")
        _, shown = build_messages(it.question, hits, budget=1536)
        shown_by_question.append(shown)
        vecs = retriever.embed([it.question, *[p.text for p in shown]])
        relevance.append(float((vecs[1:] @ vecs[0]).max()))

    def focus(title: str) -> str:
        return title.split(":")[0].strip().lower()

    for q, shown in enumerate(shown_by_question):
        texts = [p.text for p in shown]
        elsewhere = shown_by_question[(q + 1 + rng.randrange(len(shown_by_question) - 1)) % len(shown_by_question)]
        for i, t in enumerate(texts):
            # hard negatives: a passage shown for the same question about another focus (gout vs pseudogout);
            # passages of the same focus from other records often say the same thing, so they are left out
            hard = [o.text for o in shown if focus(o.hit.passage.title) != focus(shown[i].hit.passage.title)]
            easy = [o.text for o in elsewhere]
            for s in [s for s in split_sentences(t) if len(s.split()) >= 6][:3]:
                noisy = _drift(s, rng.choice(hard or easy), rng)
                pairs.append((noisy, t, True))
                pairs.extend((noisy, o, False) for o in hard + easy[:1])
    out_rel = []
    for q in OUT_OF_SCOPE:
        hits = retriever.search(q, k=3, mode="hybrid")
        vecs = retriever.embed([q, *[h.passage.text for h in hits]])
        out_rel.append(float((vecs[1:] @ vecs[0]).max()))
    # overlap and cosine once per pair (embeddings in one batch); each weight only recombines them
    from core.markers import strip_markers
    from pipeline.verify.support import overlap, stems

    lex = [overlap(s, stems(p)) for s, p, _ in pairs]
    texts = sorted({strip_markers(s) for s, _, _ in pairs} | {p for _, p, _ in pairs})
    vecs = dict(zip(texts, retriever.embed(texts), strict=True))
    cos = [max(0.0, float(vecs[strip_markers(s)] @ vecs[p])) for s, p, _ in pairs]
    weights = {}
    for w in (0.0, 0.3, 0.5, 0.7, 1.0):
        scores = [w * a + (1 - w) * b for a, b in zip(lex, cos, strict=True)]
        pos = sorted(x for x, (_, _, y) in zip(scores, pairs, strict=True) if y)
        neg = sorted(x for x, (_, _, y) in zip(scores, pairs, strict=True) if not y)
        thr = round(neg[int(0.95 * len(neg))], 3)  # at most 5% of wrong pairs pass
        weights[str(w)] = {"auc": _auc(pos, neg), "threshold_at_5pct_wrong": thr,
                           "recall_at_that_threshold": round(sum(x >= thr for x in pos) / len(pos), 4),
                           "positives": len(pos), "negatives": len(neg)}
        log(f"lexical_weight {w}: AUC {weights[str(w)]['auc']}, threshold {thr}, "
            f"recall {weights[str(w)]['recall_at_that_threshold']}")
    dev_rel = sorted(relevance)
    min_relevance = round(dev_rel[int(0.01 * len(dev_rel))] - 0.005, 3)  # keeps >= 99% of dev questions
    return {"support": weights,
            "relevance": {"dev_p01": round(dev_rel[int(0.01 * len(dev_rel))], 4),
                          "dev_median": round(statistics.median(dev_rel), 4),
                          "out_of_scope_median": round(statistics.median(out_rel), 4),
                          "out_of_scope_max": round(max(out_rel), 4),
                          "min_relevance": min_relevance,
                          "dev_kept": round(sum(r >= min_relevance for r in relevance) / len(relevance), 4),
                          "out_of_scope_refused": round(sum(r < min_relevance for r in out_rel) / len(out_rel), 4)}}


# --- 2. drafts --------------------------------------------------------------------------------------------------

def drafts(items, retriever, generator, arm: str, path: Path, log) -> dict[str, dict]:
    """Generate (or reuse) the unverified answers of one arm; resumable after a kill (an append-only journal)."""
    from pipeline.answer import Pipeline
    from pipeline.config import PipelineConfig

    pipeline = Pipeline(retriever if arm == "hybrid" else None, generator, None, PipelineConfig(k=3, verify=None))
    done = {r["id"]: r for r in journal.read(path)}
    todo = [it for it in items if it.id not in done]
    log(f"{arm}: {len(done)} drafts cached, {len(todo)} to generate")
    for n, it in enumerate(todo, 1):
        t = time.perf_counter()
        a = pipeline.answer(it.question)
        row = {"id": it.id, "draft": a.draft, "passages": [h.passage.id for h in a.passages],
               "stop_reason": a.stop_reason, "completion_tokens": a.usage["completion_tokens"],
               "generate_ms": a.timings["generate_ms"], "seconds": round(time.perf_counter() - t, 2)}
        journal.append(path, row)
        done[it.id] = row
        if n % 20 == 0:
            log(f"{arm}: {n}/{len(todo)}")
    return done


# --- 3. verification over the drafts ----------------------------------------------------------------------------

def score(items, rows, retriever, cfg: VerifyConfig | None) -> list[dict]:
    """Per question: verify the cached draft with cfg (None: the draft as it is) and measure it."""
    from core.types import Generation
    from evaluation.metrics import open_metrics
    from generator.prompt import build_messages
    from pipeline.answer import Pipeline
    from pipeline.config import PipelineConfig

    out = []

    class DraftSource:  # stands in for the generator that wrote the cached drafts: assemble() reads its name
        name, context_window = "cached-draft", None

    pipeline = Pipeline(retriever, DraftSource, None, PipelineConfig(verify=cfg))  # type: ignore[arg-type]

    for it in items:
        r = rows[it.id]
        hits = retriever.search(it.question, k=3, mode="hybrid") if r["passages"] else None
        if hits is not None:
            assert [h.passage.id for h in hits] == r["passages"], "retrieval changed since the drafts"
        _, shown = build_messages(it.question, hits, count_tokens=COUNT, budget=1536)
        gen = Generation(r["draft"], 0, r["completion_tokens"], r["stop_reason"])
        a = pipeline.assemble(it.question, gen, shown, 0.0, r["generate_ms"], use_retrieval=hits is not None)
        m = open_metrics(a, it.gold_text, it.gold_record, retriever.resolve_record,
                         retriever.knows if hits is not None else None)
        m["out_of_range_markers"] = float(bool(a.invalid_markers))
        m["restatement_removed"] = float(any(NOT_ANSWER["restatement"] in w for w in a.warnings))
        out.append({"id": it.id, "mode": a.answer_mode, "metrics": m, "answer": a.text})
    return out


COUNT = None  # the generator's token counter, set in main (prompts must match what the drafts saw)


def summarize(scored: list[dict]) -> dict:
    keys = ("token_f1", "rouge_l", "cites", "citation_validity", "citation_support", "lexical_support",
            "invented_terms", "out_of_range_markers", "restatement_removed", "mode_generated", "mode_extractive",
            "mode_no_answer", "triage")
    answered = [r for r in scored if r["mode"] != "no_answer"]
    s = {k: _bootstrap([r["metrics"][k] for r in scored if k in r["metrics"]]) for k in keys
         if any(k in r["metrics"] for r in scored)}
    s["cites_among_answered"] = _bootstrap([r["metrics"]["cites"] for r in answered])
    cited = [r for r in answered if r["metrics"]["cites"]]
    s["lexical_support_among_citing"] = _bootstrap([r["metrics"]["lexical_support"] for r in cited])
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", default="artifacts/index")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--adapter", default="")
    ap.add_argument("--backend", default="hf", choices=("hf", "llamacpp"),
                    help="the drafts' generator: hf (the recorded numbers) or the served llama.cpp default "
                         "(writes verification-llamacpp.json)")
    ap.add_argument("--skip-calibration", action="store_true", help="keep the calibration of the last results file")
    ap.add_argument("--no-grid", action="store_true", help="keep the grid of the last results file")
    ap.add_argument("--timing", type=int, default=30, help="questions answered live to time verification / "
                    "generation side by side in the same calls (0: skip)")
    args = ap.parse_args()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    from evaluation.run import load_open_questions
    from evaluation.stats import paired_bootstrap
    from generator.loader import load_generator
    from retriever.search import IndexRetriever

    items = load_open_questions(EvalConfig(limit=args.limit), log)
    retriever = IndexRetriever.load(args.index)
    tag = ("-tuned" if args.adapter else "") + ("" if args.backend == "hf" else f"-{args.backend}")
    last = RESULTS / f"verification{tag}.json"
    previous = json.loads(last.read_text()) if last.is_file() else {}
    result: dict = {"questions": len(items), "index": retriever.fingerprint,
                    **{k: previous[k] for k in ("calibration", "grid") if k in previous}}
    if not args.skip_calibration:
        t = time.perf_counter()
        result["calibration"] = calibrate(retriever, items, log)
        result["calibration"]["seconds"] = round(time.perf_counter() - t, 1)
    # verification.json is the transformers fp32 path (drafts cached from it); --backend llamacpp the served default
    generator = load_generator(GeneratorConfig(backend=args.backend, adapter=args.adapter),
                               log=log)
    global COUNT
    COUNT = generator.count_tokens
    rows = {arm: drafts(items, retriever, generator, arm, RESULTS / f"verification_drafts{tag}-{arm}.jsonl", log)
            for arm in ("hybrid", "none")}
    before = score(items, rows["hybrid"], retriever, None)
    baseline = score(items, rows["none"], retriever, VerifyConfig())
    result["before"] = summarize(before)
    base = VerifyConfig()
    grid = []
    for thr in () if args.no_grid else (0.45, 0.5, 0.55, 0.6, 0.65):
        for keep in (0.0, 0.34, 0.5, 0.67):
            cfg = replace(base, support_threshold=thr, min_kept_share=keep)
            s = summarize(score(items, rows["hybrid"], retriever, cfg))
            grid.append({"support_threshold": thr, "min_kept_share": keep,
                         **{k: s[k]["mean"] for k in ("token_f1", "rouge_l", "cites_among_answered",
                                                      "citation_support", "lexical_support_among_citing",
                                                      "invented_terms", "mode_generated", "mode_extractive",
                                                      "mode_no_answer")}})
            log(json.dumps(grid[-1]))
    if grid:
        result["grid"] = grid
    after = score(items, rows["hybrid"], retriever, base)
    result["after"] = summarize(after)
    result["baseline_none"] = summarize(baseline)
    ids = [r["id"] for r in after]
    f1 = {r["id"]: r["metrics"]["token_f1"] for r in after}
    f1_before = {r["id"]: r["metrics"]["token_f1"] for r in before}
    f1_none = {r["id"]: r["metrics"]["token_f1"] for r in baseline}
    rl = {r["id"]: r["metrics"]["rouge_l"] for r in after}
    rl_before = {r["id"]: r["metrics"]["rouge_l"] for r in before}
    result["paired"] = {
        "after_vs_none_token_f1": paired_bootstrap([f1[i] for i in ids], [f1_none[i] for i in ids]),
        "before_vs_none_token_f1": paired_bootstrap([f1_before[i] for i in ids], [f1_none[i] for i in ids]),
        "after_vs_before_token_f1": paired_bootstrap([f1[i] for i in ids], [f1_before[i] for i in ids]),
        "after_vs_before_rouge_l": paired_bootstrap([rl[i] for i in ids], [rl_before[i] for i in ids]),
    }
    if args.timing:  # generation and verification timed in the same calls: the ratio is side by side
        from pipeline.answer import Pipeline
        from pipeline.config import PipelineConfig

        ratios = []
        timed = Pipeline(retriever, generator, None, PipelineConfig(k=3, verify=base))
        for it in items[:args.timing]:
            a = timed.answer(it.question)
            ratios.append(a.timings["verify_ms"] / a.timings["generate_ms"])
        result["timing"] = {"n": len(ratios), "verify_over_generate_median": round(statistics.median(ratios), 4),
                            "verify_over_generate_mean": round(statistics.fmean(ratios), 4),
                            "verify_over_generate_max": round(max(ratios), 4)}
        log(f"verify / generate: median {result['timing']['verify_over_generate_median']}")
    result["config"] = {"verify": base.__dict__, "adapter": args.adapter or None, "backend": args.backend}
    for a in after[:5]:  # to the terminal only: answers quote the corpus, whose text stays out of the repository
        log(f"{a['id']} {a['mode']}: {rows['hybrid'][a['id']]['draft'][:200]!r}\n  -> {a['answer'][:300]!r}")
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / f"verification{tag}.json", result)
    print(json.dumps({k: result[k] for k in ("before", "after", "paired")}, indent=1))


if __name__ == "__main__":
    main()
