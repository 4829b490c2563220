"""The verbs of the `medcite` command, one function each (`medcite/cli.py` builds the parser and dispatches). Heavy
libraries are imported inside the verb that needs them, so `medcite --help` stays instant."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from core.config import load_config
from core.errors import DataError, InvalidRequestError, MedciteError
from evaluation.config import EvalConfig
from finetune.config import FinetuneConfig
from index_build.config import IndexConfig
from retriever.loader import load_retriever
from service.config import ServeConfig
from train.config import JudgeTrainConfig, RetrieverTrainConfig

QUICK = {"run_name": "quick", "limit": 50, "mirage_limit": 100, "arms": "base:none,base:hybrid"}
"""`medcite eval --quick`: a small run of both arms (about 11 minutes here)."""
CFG_PREFIX = "cfg:"
"""Where the parser keeps config-derived flags in the namespace (`cfg:generator.model`)."""


def _quiet_libraries() -> None:
    """Keep library chatter (progress bars of model loads, hub warnings) off a CLI user's terminal."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import logging

    for name in ("sentence_transformers", "transformers", "bitsandbytes", "bm25s", "faiss", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars at every load and checkpoint


def cmd_index(args: argparse.Namespace) -> int:
    cfg = load_config(IndexConfig, args.config, **overrides(args))
    _quiet_libraries()
    from index_build.build import build_index

    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    result = build_index(cfg, log=log)
    cal = result.manifest.get("calibration") or {}
    if cal.get("embedder_sha256") != result.manifest["embedder"]["sha256"]:
        from train.calibrate import calibrate_index

        calibrate_index(result.out, cfg.data_dir, log)
    from train.sentence_kinds import fit_index

    fit_index(result.out, log)  # what kind of answer each quotable sentence gives (a no-op when up to date)
    return 0


def _read_queries(path: str) -> list[tuple[str, str]]:
    from core.corpus import iter_jsonl

    rows = []
    for n, row in iter_jsonl(path):
        if not isinstance(row.get("question"), str):
            raise MedciteError(f'{path}:{n}: each line must be {{"id": ..., "question": "..."}}')
        rows.append((str(row.get("id", n)), row["question"]))
    return rows


def cmd_search(args: argparse.Namespace) -> int:
    if bool(args.query) == bool(args.queries):
        raise InvalidRequestError("give either a query or --queries FILE.jsonl")
    batch = _read_queries(args.queries) if args.queries else [("", args.query)]
    _quiet_libraries()
    retriever = load_retriever(args.index, threads=args.threads)  # as serve retrieves, with the default settings
    for qid, question in batch:
        hits = retriever.search(question, k=args.k, mode=args.mode, source=args.source,
                                per_record=not args.all_passages)
        if args.json:
            row = {"id": qid, "hits": [h.to_dict() for h in hits]} if args.queries else {
                "query": question, "hits": [h.to_dict(with_text=True) for h in hits]}
            print(json.dumps(row, ensure_ascii=False))
        else:
            for h in hits:
                p = h.passage
                print(f"{h.rank:>2}. [{h.score:.4f}] {p.title}  ({p.id}, {p.source})")
                if p.url:
                    print(f"    {p.url}")
                print(f"    {p.text[:200].replace(chr(10), ' ')}{'...' if len(p.text) > 200 else ''}")
    return 0


def _serve_config(args: argparse.Namespace) -> ServeConfig:
    return load_config(ServeConfig, args.config, **overrides(args))


def cmd_ask(args: argparse.Namespace) -> int:
    if not args.question.strip():  # say so before spending seconds loading models
        raise InvalidRequestError("question is empty")
    cfg = _serve_config(args)
    _quiet_libraries()
    from pipeline.loader import load_pipeline

    pipeline = load_pipeline(cfg, retrieval=not args.no_retrieval)
    decoding = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    a = pipeline.answer(args.question, **decoding)
    if args.json:
        print(json.dumps(a.to_dict(), ensure_ascii=False))
        return 0
    if a.triage:
        print(f"!! {a.triage['notice']}\n")
    print(a.text)
    if a.citations:
        print("\nSources:")
        for c in a.citations:
            p = c.hit.passage
            print(f"  [{c.marker}] {p.title} ({p.id}){'  ' + p.url if p.url else ''}")
    elif a.passages:
        print("\nClosest passages: " + ", ".join(f"{h.passage.title} ({h.passage.id})" for h in a.passages))
    if a.disclaimer:
        print(f"\n{a.disclaimer}")
    for w in a.warnings:
        print(f"note: {w}", file=sys.stderr)
    print(f"\n[{a.model}; {a.answer_mode}; judge {a.judge}; {a.usage['completion_tokens']} tokens, stop: {a.stop_reason}; "
          f"retrieve {a.timings['retrieve_ms']:.0f} ms, generate {a.timings['generate_ms']:.0f} ms, "
          f"verify {a.timings['verify_ms']:.0f} ms]", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _serve_config(args)
    _quiet_libraries()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from pipeline.loader import load_pipeline

    # Everything loads before the socket opens: a server that accepts traffic is ready.
    loaded = load_pipeline(cfg)
    retriever, generator, judges = loaded.retriever, loaded.generator, loaded.judges
    import uvicorn

    from core.feedback import FeedbackStore
    from pipeline.triage import classifier
    from service.app import create_app

    layer = classifier()  # the triage layer too, when one is trained
    store = FeedbackStore(cfg.feedback_db, cfg.log_text, cfg.feedback_retention_days) if cfg.feedback_db else None
    print("medcite: triage by the reviewed rules" + (f" and the learned layer ({layer.precision})" if layer else
          " alone (`make demo` or `medcite train-triage` trains the learned layer that catches how patients word "
          "emergencies)"),
          file=sys.stderr)
    faith = judges.faithfulness if judges else None
    print("medcite: " + (f"sentences verified by the trained faithfulness judge ({faith.precision}, threshold "
                         f"{faith.threshold:g})" + (" and answerhood scorer" if judges.answerhood else "") if faith else
                         "sentences verified by the lexical judge alone, which keeps negated and swapped facts "
                         "(`make demo` or `medcite train-judges all` trains the judges)"), file=sys.stderr)

    embedder = (getattr(retriever, "manifest", None) or {}).get("embedder", {})
    backend = " ".join(x for x in (embedder.get("backend", "torch"), embedder.get("precision")) if x)
    print(f"medcite: serving {generator.name} over index {retriever.fingerprint[:12]} (queries embedded on "
          f"{backend}) at http://{cfg.host}:{cfg.port} (OpenAPI: /schema)", file=sys.stderr)
    uvicorn.run(create_app(retriever, generator, cfg, judges, store), host=cfg.host, port=cfg.port, log_level="warning",
                access_log=False)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """JSONL in, JSONL out: each line {text, passages: [{id, title, text}], question?} checked by the pipeline's
    verification stage (the judge in force + the term guard) against its passages."""
    import msgspec

    from core.corpus import iter_jsonl
    from core.errors import DataError
    from service.schemas import VerifyRequest

    rows = []
    for n, row in iter_jsonl(args.input):
        try:
            rows.append((n, msgspec.convert(row, VerifyRequest)))
        except msgspec.ValidationError as e:
            raise DataError(f"{args.input}:{n}: {e}") from None
    cfg = _serve_config(args)
    _quiet_libraries()
    from pipeline.verify.judges import load_judges
    from pipeline.verify.stage import check, verify_passages

    retriever, judges = load_retriever(cfg.index, cfg.rerank), load_judges(cfg.verify.judges, cfg.verify.judge_precision)  # the corpus vocabulary guards invented terms
    for n, req in rows:
        checked, judge, threshold = check(req.question or "", req.text, verify_passages(req.passages), retriever,
                                          cfg.verify, judges)
        print(json.dumps({"line": n, "judge": judge, "threshold": threshold, "sentences": [
            {"text": c.verdict.text, "supported": c.verdict.supported and not c.problem, "score": c.verdict.score,
             "citations": c.verdict.citations, "reason": c.problem} for c in checked]}, ensure_ascii=False))
    return 0


def _set_overrides(pairs: list[str] | None) -> dict[str, str]:
    """`--set data.size=400 --set max_steps=10` -> {"data.size": "400", "max_steps": "10"} (coerced by load_config)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MedciteError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from a verb's derived flags, then its `--set` pairs (which win)."""
    flags = {k.removeprefix(CFG_PREFIX): v for k, v in vars(args).items() if k.startswith(CFG_PREFIX) and v is not None}
    return {**flags, **_set_overrides(getattr(args, "set", None))}


def cmd_finetune(args: argparse.Namespace) -> int:
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.action == "merge":
        if not args.adapter or not args.out:
            raise MedciteError("finetune merge needs --adapter DIR and --out DIR")
        _quiet_libraries()
        from finetune.train import merge

        merge(args.adapter, args.out, log)
        return 0
    cfg = load_config(FinetuneConfig, args.config, **overrides(args))
    _quiet_libraries()
    from finetune.train import run
    from retriever.search import IndexRetriever

    out = run(cfg, load_retriever=IndexRetriever.load, log=log, prepare_only=args.action == "prepare")
    print(out)
    return 0


def cmd_train_retriever(args: argparse.Namespace) -> int:
    cfg = load_config(RetrieverTrainConfig, args.config, **overrides(args))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    _quiet_libraries()
    from retriever.search import IndexRetriever
    from train.entailment import train_entailment
    from train.retriever import train_embedder, train_reranker

    retriever = IndexRetriever.load(cfg.index)
    stages = {"embedder": train_embedder, "reranker": train_reranker, "entailment": train_entailment}
    for stage in ("embedder", "reranker") if args.action == "all" else (args.action,):
        print(stages[stage](cfg, retriever, log))
    return 0


def cmd_train_judges(args: argparse.Namespace) -> int:
    cfg = load_config(JudgeTrainConfig, args.config, **overrides(args))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    _quiet_libraries()
    from train.judges import JUDGES, train_judge

    for judge in JUDGES if args.action == "all" else (args.action,):
        print(train_judge(cfg, judge, log))
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from core.feedback import FeedbackStore

    cfg = _serve_config(args)
    db = args.db or cfg.feedback_db
    if not db or not Path(db).is_file():
        raise DataError(f"no feedback database at {db!r} (serve writes it; feedback_db in the serve config)")
    n = FeedbackStore(db, cfg.log_text, cfg.feedback_retention_days).export(args.out)
    print(f"{n} feedback rows written to {args.out}", file=sys.stderr)
    return 0


def cmd_train_triage(args: argparse.Namespace) -> int:
    from core.config import default_data_dir

    _quiet_libraries()
    from train.triage import DEFAULT_OUT, train_triage

    print(train_triage(args.data_dir or default_data_dir(), args.out or DEFAULT_OUT, args.seed,
                       log=lambda m: print(m, file=sys.stderr, flush=True), precision=args.precision))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    cfg = load_config(EvalConfig, args.config, **{**(QUICK if args.quick else {}), **overrides(args)})
    _quiet_libraries()
    from evaluation.run import run_eval
    from generator.loader import load_generator

    def generator(gcfg, decoding):
        return load_generator(gcfg, decoding)

    def retriever(index: str):  # retrieval as served (RerankConfig's defaults)
        return load_retriever(index)

    out = run_eval(cfg, retriever, generator, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(out / "report.md")
    return 0
