"""Answers benchmark: what the trained judges change in served answers, against the lexical judge, on the same
drafts in one run.

    .venv/bin/python benchmarks/answers.py [--index artifacts/index] [--judges artifacts/judges|off] [--limit 100]
    .venv/bin/python benchmarks/answers.py --index artifacts/index-tuned --name answers-tuned   # the tuned index
    .venv/bin/python benchmarks/answers.py --adapter artifacts/adapters/smollm2-medcite --name answers-finetuned

Question sets, the two rulers first (evaluation.rulers):
- dev: the dev split's reference questions (MedQuAD templates, reserved documents, never trained on);
- consumer: the 127 real consumer dev questions (../shared/data/consumer: 103 short Alexa questions, 24 messages
  people sent the NLM); "cites a relevant record" and F1 over the 49 linked, no_answer over all 127;
- consumer_messages: the 24 messages alone (7 linked), the kind that looks like the users;
- patient_style: patient-style rewrites of other reserved documents' questions (train.data.consumer_eval_set:
  story first, casual casing, typos, sometimes a second question);
- yes_no: the yes/no questions among dev and patient_style ("Is X inherited?", "can you tell me is it inherited");
- out_of_scope: 40 questions the corpus cannot answer (benchmarks/verification.py's list): must stay refused.
`--sets dev,consumer,out_of_scope` runs some of them. Consumer questions and answers are written only outside the
repository (artifacts/answers-review/, for a blind review): their text is not ours to commit.
Every question is retrieved and generated once with the served default (llama.cpp q4_0, hybrid, k=3; drafts cached
in benchmarks/results/answers_drafts-<index fingerprint>.jsonl, reused by a rerun), then verified twice: the lexical judge (overlap +
cosine, extractive quotes by cosine) and the trained judges (faithfulness + answerhood, `make demo`).
Per set and arm: the answer cites the gold record, the gold record is shown, no_answer, answer modes, token F1
against the gold answer; dev also without retrieval (paired bootstrap of RAG - none); verification time over
generation time. The first --sample answers of each arm and set go to benchmarks/results/answers_sample.jsonl for reading
(and for benchmarks/compare_answers.py, which checks two runs answer byte for byte alike).

Writes benchmarks/results/answers.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import journal  # noqa: E402
from core.files import atomic_write_json, atomic_write_jsonl  # noqa: E402
from core.markers import strip_markers  # noqa: E402
from core.quality import token_f1  # noqa: E402
from pipeline.config import AnswerConfig  # noqa: E402
from pipeline.verify.config import VerifyConfig  # noqa: E402
from train.config import RetrieverTrainConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
YES_NO = ("is ", "are ", "can ", "does ", "do ", "will ", "should ", "could ")


def is_yes_no(question: str, template: str = "") -> bool:
    return (template or question).strip().lower().startswith(YES_NO)


SETS = ("dev", "consumer", "consumer_messages", "patient_style", "yes_no", "out_of_scope")
PRIVATE = ("consumer", "consumer_messages")
"""Sets whose text stays out of the repository (read from ../shared, reviewed from artifacts/)."""


def question_sets(limit: int, names: tuple[str, ...] = SETS) -> dict[str, list[dict]]:
    """Rows {id, question, relevant: [record ids]} ("relevant" empty: nothing to cite, e.g. out of scope)."""
    from benchmarks.verification import OUT_OF_SCOPE
    from evaluation.rulers import consumer_questions, is_message
    from train.data import consumer_eval_set, read_dev

    cfg = RetrieverTrainConfig()
    dev = [{"id": d.get("id", ""), "question": d["question"], "relevant": [d["gold_medquad_id"]]} for d in read_dev(cfg)]
    patient = [{"id": str(i), "question": r["question"], "relevant": [r["gold_medquad_id"]],
                "template": r["template_question"]} for i, r in enumerate(consumer_eval_set(cfg, n=400))]
    yes_no = [d for d in dev if is_yes_no(d["question"])] + [c for c in patient if is_yes_no("", c["template"])]
    consumer = consumer_questions(cfg.data_dir)
    sets = {"dev": dev[:limit], "consumer": consumer, "consumer_messages": [q for q in consumer if is_message(q)],
            "patient_style": [c for c in patient if not is_yes_no("", c["template"])][:limit],
            "yes_no": yes_no[:limit],
            "out_of_scope": [{"id": f"oos-{i}", "question": q, "relevant": []} for i, q in enumerate(OUT_OF_SCOPE)]}
    return {name: sets[name] for name in names}


def drafts(sets, pipeline, path: Path) -> dict[tuple[str, bool], dict]:
    """One generation per (question, retrieval on/off) by the pipeline as served, cached in a journal (a rerun
    resumes)."""
    done = {(r["question"], r["rag"]): r for r in journal.read(path)} if path.is_file() else {}  # the latest wins
    wanted = [(q["question"], True) for rows in sets.values() for q in rows]
    wanted += [(q["question"], False) for q in sets.get("dev", [])]
    prepared = {}
    for question, rag in dict.fromkeys(wanted):  # retrieval is cheap: a draft whose passages changed (a new
        p = pipeline.prepare(question, use_retrieval=rag)
        prepared[(question, rag)] = p           # retrieval rule) is generated again
        row = done.get((question, rag))
        if row and [pid for _, pid, _ in row["shown"]] != [s.hit.passage.id for s in p.shown]:
            del done[(question, rag)]
    todo = [t for t in dict.fromkeys(wanted) if t not in done]
    print(f"generating {len(todo)} drafts ({len(done)} cached)", flush=True)
    for n, (question, rag) in enumerate(todo, 1):
        p = prepared[(question, rag)]
        shown, retrieve_ms = p.shown, p.retrieve_ms
        t = time.perf_counter()
        gen = pipeline.generator.generate(p.messages)
        row = {"question": question, "rag": rag, "text": gen.text, "prompt_tokens": gen.prompt_tokens,
               "completion_tokens": gen.completion_tokens, "stop_reason": gen.stop_reason,
               "generate_ms": round((time.perf_counter() - t) * 1000, 1), "retrieve_ms": round(retrieve_ms, 1),
               "shown": [[p.marker, p.hit.passage.id, p.text] for p in shown]}
        journal.append(path, row)
        done[(question, rag)] = row
        if n % 25 == 0:
            print(f"  {n}/{len(todo)}", flush=True)
    return done


def adapter_key(adapter: str) -> str:
    """A short hash of an adapter's weights and stamp (a retrained adapter gets new drafts)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(adapter).glob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".json"):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", default="artifacts/index")
    ap.add_argument("--judges", default="artifacts/judges")
    ap.add_argument("--limit", type=int, default=100, help="questions per set (dev, patient_style, yes_no)")
    ap.add_argument("--sets", default=",".join(SETS), help=f"which sets (default all: {','.join(SETS)})")
    ap.add_argument("--sample", type=int, default=30, help="answers of each arm and set written for reading")
    ap.add_argument("--name", default="answers", help="results file stem: benchmarks/results/<name>.json (e.g. "
                                                       "answers-tuned for --index artifacts/index-tuned)")
    ap.add_argument("--adapter", default="", help="a LoRA adapter from `medcite finetune` on the served generator "
                                                  "(merged into its GGUF; its drafts are cached apart)")
    ap.add_argument("--verify", action="append", default=[], metavar="KEY=VALUE",
                    help="a VerifyConfig field for both arms, e.g. section_prior=0.3 (repeatable)")
    args = ap.parse_args()

    from core.types import Generation, Hit
    from evaluation.stats import mean_ci, paired_bootstrap
    from generator.loader import load_generator
    from generator.prompt import PromptPassage
    from pipeline.answer import Pipeline
    from pipeline.verify.judges import Judges
    from retriever.loader import load_retriever

    cfg = AnswerConfig(index=args.index)
    if args.adapter:
        cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, adapter=args.adapter))
    verify_cfg = VerifyConfig(**{k: type(getattr(VerifyConfig(), k))(v)
                                 for k, _, v in (kv.partition("=") for kv in args.verify)})
    retriever = load_retriever(cfg.index, cfg.rerank)  # as served: the question-type prior (and a reranker, where configured)
    # --judges off (or no trained judges yet): the lexical arm alone
    judges = (Judges.load(args.judges, cfg.verify.judge_precision) if args.judges != "off"
              and Path(args.judges).is_dir() else None)
    generator = load_generator(cfg.generator, cfg.decoding)
    sets = question_sets(args.limit, tuple(args.sets.split(",")))
    # drafts depend on the index and the generator's weights: a cache per index fingerprint (and adapter)
    served = Pipeline(retriever, generator, None, cfg.pipeline())
    tag = f"-{adapter_key(args.adapter)}" if args.adapter else ""
    cache = drafts(sets, served, RESULTS / f"answers_drafts-{retriever.fingerprint[:12]}{tag}.jsonl")
    by_id = {}

    def passage(pid: str):
        if pid not in by_id:
            rid = pid.split("#")[0]
            for p in retriever.passages_of(retriever.resolve_record(rid)):
                by_id[p.id] = p
        return by_id[pid]

    def gold_text(gold: str) -> str:
        return " ".join(p.text for p in retriever.passages_of(retriever.resolve_record(gold)))

    review: list[dict] = []  # every consumer answer, for a blind review; written outside the repository

    arms = {"lexical": None, **({"judges": judges} if judges else {})}
    results: dict = {"command": "python benchmarks/answers.py " + " ".join(sys.argv[1:]), "date": str(date.today()),
                     "index": retriever.fingerprint, "model": generator.name, "adapter": args.adapter,
                     "judges": judges.describe() if judges else "off",
                     "verify": {kv.partition("=")[0]: getattr(verify_cfg, kv.partition("=")[0]) for kv in args.verify},
                     "sets": {}}
    sample: list[dict] = []
    f1_by_arm: dict[str, list[float]] = {}
    for name, rows in sets.items():
        out: dict = {"n": len(rows), "linked": sum(1 for q in rows if q["relevant"])}
        for arm, js in arms.items():
            pipeline = Pipeline(retriever, generator, js, dataclasses.replace(cfg.pipeline(), verify=verify_cfg))
            cites, shown_gold, no_answer, f1s, ratios, modes, verify_ms = [], [], [], [], [], {}, []
            for q in rows:
                d = cache[(q["question"], True)]
                shown = [PromptPassage(m, Hit(passage(pid), 1.0, m), text) for m, pid, text in d["shown"]]
                gen = Generation(d["text"], d["prompt_tokens"], d["completion_tokens"], d["stop_reason"])
                a = pipeline.assemble(q["question"], gen, shown, d["retrieve_ms"], d["generate_ms"])
                gold = {retriever.resolve_record(x) for x in q["relevant"]}
                cited = {retriever.resolve_record(c.hit.passage.record_id) for c in a.citations}
                if gold or name == "out_of_scope":  # over the linked questions (none cite out of scope)
                    cites.append(float(bool(gold & cited)))
                    shown_gold.append(float(bool(gold & {retriever.resolve_record(p.hit.passage.record_id)
                                                         for p in shown})))
                no_answer.append(float(a.answer_mode == "no_answer"))
                modes[a.answer_mode] = modes.get(a.answer_mode, 0) + 1
                if gold:
                    f1s.append(max(token_f1(strip_markers(a.text), gold_text(g)) for g in q["relevant"]))
                if name == "consumer":
                    review.append({"arm": arm, "id": q["id"], "question": q["question"], "answer": a.text,
                                   "mode": a.answer_mode, "cites_relevant": bool(gold & cited) if gold else None,
                                   "sources": [p.hit.passage.title for p in shown]})
                verify_ms.append(a.timings["verify_ms"])
                ratios.append(a.timings["verify_ms"] / max(d["generate_ms"], 1.0))
                if name not in PRIVATE and len([s for s in sample if s["arm"] == arm and s["set"] == name]
                                               ) < args.sample:
                    sample.append({"arm": arm, "set": name, "question": q["question"], "gold": sorted(gold),
                                   "cites_gold": bool(cites[-1]), "answer": a.text, "mode": a.answer_mode,
                                   "draft": d["text"], "warnings": a.warnings,
                                   "passages": [[p.marker, p.hit.passage.title, p.text] for p in shown]})
            cites_ci, no_answer_ci = mean_ci(cites), mean_ci(no_answer)
            out[arm] = {"cites_gold": round(statistics.fmean(cites), 4) if cites else None,
                        "cites_gold_ci95": [round(cites_ci["ci_low"], 4), round(cites_ci["ci_high"], 4)],
                        "gold_shown": round(statistics.fmean(shown_gold), 4) if shown_gold else None,
                        "no_answer": round(statistics.fmean(no_answer), 4),
                        "no_answer_ci95": [round(no_answer_ci["ci_low"], 4), round(no_answer_ci["ci_high"], 4)],
                        "modes": modes,
                        "token_f1": mean_ci(f1s) if f1s else None,
                        "verify_ms_p50": round(statistics.median(verify_ms), 1),
                        "verify_over_generate": round(sum(verify_ms) / sum(cache[(q["question"], True)]["generate_ms"]
                                                                           for q in rows), 4)}
            if name == "dev":
                f1_by_arm[arm] = f1s
        results["sets"][name] = out
        print(f"{name:13s} " + "  ".join(f"{arm}: cites gold {out[arm]['cites_gold'] or 0:.3f}, no_answer "
                                         f"{out[arm]['no_answer']:.3f}, F1 "
                                         f"{(out[arm]['token_f1'] or {}).get('mean', float('nan')):.3f}"
                                         for arm in arms), flush=True)
    if "dev" in sets:
        none_f1 = [token_f1(cache[(q["question"], False)]["text"], gold_text(q["relevant"][0])) for q in sets["dev"]]
        results["dev_no_retrieval"] = {"token_f1": mean_ci(none_f1),
                                       **{f"{arm}_minus_none": paired_bootstrap(f1_by_arm[arm], none_f1)
                                          for arm in arms},
                                       **({"judges_minus_lexical": paired_bootstrap(f1_by_arm["judges"],
                                                                                    f1_by_arm["lexical"])}
                                          if judges else {})}
        print(json.dumps(results["dev_no_retrieval"]))
    atomic_write_json(RESULTS / f"{args.name}.json", results)
    atomic_write_jsonl(RESULTS / f"{args.name}_sample.jsonl", sample)
    if review:
        atomic_write_jsonl(ROOT / "artifacts" / "answers-review" / f"{args.name}-consumer.jsonl", review)
    print(f"wrote {RESULTS / (args.name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
