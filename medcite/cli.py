"""The `medcite` command: one console script, one verb per job.

    medcite index  [--config configs/index.yaml] [--data-dir DIR] [--out DIR]
    medcite search "how is ewing sarcoma treated" [-k 5] [--mode hybrid|dense|bm25] [--json]
    medcite search --queries questions.jsonl --json         # batch: {"id", "question"} per line
    medcite ask "How is gout treated?" [--no-retrieval] [--json] [--config configs/serve.yaml]
    medcite serve [--config configs/serve.yaml] [--host 127.0.0.1] [--port 8000]
    medcite eval [--quick] [--config configs/eval.yaml] [--questions F.jsonl] [--arms base:none,base:hybrid] [--limit N]
    medcite finetune [prepare|train|merge] [--config configs/finetune-smollm2.yaml] [--set key=value ...]
    medcite train-retriever [embedder|reranker|all] [--config configs/retriever.yaml] [--set key=value ...]

Heavy libraries (torch, faiss, transformers, litestar) are imported inside the verb that needs them, so
`medcite --help` is instant. User errors print one line, `medcite: error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any

from core.config import (
    DEFAULT_INDEX,
    FAISS_KINDS,
    INDEX_ENGINES,
    EvalConfig,
    FinetuneConfig,
    IndexConfig,
    JudgeTrainConfig,
    RerankConfig,
    RetrieverTrainConfig,
    ServeConfig,
    field_docs,
    load_config,
    resolve_index,
    resolve_reranker,
)
from core.errors import DataError, InvalidRequestError, MedciteError
from core.types import SEARCH_MODES


def _quiet_libraries() -> None:
    """Keep library chatter (progress bars of model loads, hub warnings) off a CLI user's terminal."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import logging

    for name in ("sentence_transformers", "transformers", "bitsandbytes", "bm25s", "faiss", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- verbs ----------------------------------------------------------------------------------------------------

def cmd_index(args: argparse.Namespace) -> int:
    cfg = load_config(IndexConfig, args.config, **overrides(args))
    _quiet_libraries()
    from index_build.build import build_index

    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    result = build_index(cfg, log=log)
    cal = result.manifest.get("calibration") or {}
    if cal.get("embedder_sha256") != result.manifest["embedder"]["sha256"]:
        from retriever_train.calibrate import (
            calibrate_index,  # the gates verify reads, for this index's embedder
        )

        calibrate_index(result.out, cfg.data_dir, log)
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
    from retriever.search import IndexRetriever

    rerank, reranker = RerankConfig(), None
    model = resolve_reranker(args.index, rerank.model)  # as serve retrieves: the tuned reranker goes with its index
    if model:
        from retriever.rerank import Reranker

        reranker = Reranker.load(model, rerank.top_n, threads=args.threads, fuse=rerank.fuse)
    retriever = IndexRetriever.load(resolve_index(args.index), threads=args.threads, reranker=reranker,
                                    qtype_prior=rerank.qtype_prior)
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
    from service.components import load_generator, load_judges, load_retriever
    from service.pipeline import answer

    retriever = None if args.no_retrieval else load_retriever(cfg)
    judges = None if args.no_retrieval else load_judges(cfg)
    generator = load_generator(cfg)
    decoding = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    a = answer(args.question, retriever, generator, k=cfg.k, mode=cfg.mode, budget=cfg.prompt_tokens,
               verify_cfg=cfg.verify, judges=judges, **decoding)
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
    from service.components import load_generator, load_judges, load_retriever

    # Everything loads before the socket opens: a server that accepts traffic is ready.
    retriever = load_retriever(cfg)
    judges = load_judges(cfg)
    generator = load_generator(cfg)
    import uvicorn

    from service.app import create_app
    from service.feedback import FeedbackStore
    from service.triage import classifier

    layer = classifier()  # the triage layer too, when one is trained
    store = FeedbackStore(cfg.feedback_db, cfg.log_text) if cfg.feedback_db else None
    print("medcite: triage by the reviewed rules" + (f" and the learned layer ({layer.precision})" if layer else
          " alone (`make models` trains the learned layer that catches how patients word emergencies)"),
          file=sys.stderr)

    print(f"medcite: serving {generator.name} over index {retriever.fingerprint[:12]} at "
          f"http://{cfg.host}:{cfg.port} (OpenAPI: /schema)", file=sys.stderr)
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
    from service.components import load_judges, load_retriever
    from service.verify import check, verify_passages

    retriever, judges = load_retriever(cfg), load_judges(cfg)  # the corpus vocabulary guards invented terms
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
    flags = {k.removeprefix(_CFG): v for k, v in vars(args).items() if k.startswith(_CFG) and v is not None}
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
    from retriever_train.train import train_embedder, train_reranker

    retriever = IndexRetriever.load(cfg.index)
    for stage in ("embedder", "reranker") if args.action == "all" else (args.action,):
        print((train_embedder if stage == "embedder" else train_reranker)(cfg, retriever, log))
    return 0


def cmd_train_judges(args: argparse.Namespace) -> int:
    cfg = load_config(JudgeTrainConfig, args.config, **overrides(args))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    _quiet_libraries()
    from retriever_train.judges import JUDGES, train_judge

    for judge in JUDGES if args.action == "all" else (args.action,):
        print(train_judge(cfg, judge, log))
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from service.feedback import FeedbackStore

    cfg = _serve_config(args)
    db = args.db or cfg.feedback_db
    if not db or not Path(db).is_file():
        raise DataError(f"no feedback database at {db!r} (serve writes it; feedback_db in the serve config)")
    n = FeedbackStore(db, cfg.log_text).export(args.out)
    print(f"{n} feedback rows written to {args.out}", file=sys.stderr)
    return 0


def cmd_train_triage(args: argparse.Namespace) -> int:
    from core.config import default_data_dir

    _quiet_libraries()
    from retriever_train.triage import DEFAULT_OUT, train_triage

    print(train_triage(args.data_dir or default_data_dir(), args.out or DEFAULT_OUT, args.seed,
                       log=lambda m: print(m, file=sys.stderr, flush=True)))
    return 0


QUICK = {"run_name": "quick", "limit": 50, "mirage_limit": 100, "arms": "base:none,base:hybrid"}


def cmd_eval(args: argparse.Namespace) -> int:
    cfg = load_config(EvalConfig, args.config, **{**(QUICK if args.quick else {}), **overrides(args)})
    _quiet_libraries()
    from evaluation.run import run_eval
    from retriever.search import IndexRetriever
    from service.components import load_generator

    def generator(gcfg, decoding):
        return load_generator(ServeConfig(generator=gcfg, decoding=decoding))

    def retriever(index: str):  # retrieval as served (the question-type prior of RerankConfig)
        return IndexRetriever.load(index, qtype_prior=RerankConfig().qtype_prior)

    out = run_eval(cfg, retriever, generator, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(out / "report.md")
    return 0


# --- parser ---------------------------------------------------------------------------------------------------

_CFG = "cfg:"


def config_flags(p: argparse.ArgumentParser, cls: type, names: tuple[str, ...],
                 aliases: dict[str, str] | None = None) -> None:
    """Flags for config fields, derived from the dataclass: `data_dir` -> `--data-dir`, `generator.model` ->
    `--generator.model` (or a short alias), help from the field's docstring, choices where the config has a
    fixed set, booleans as --x/--no-x. Values go through load_config's coercion and checks, like YAML values.
    Every verb also takes `--config FILE` and `--set KEY=VALUE` for any field."""
    aliases = aliases or {}
    hints_of: dict[type, dict[str, Any]] = {}
    for name in names:
        owner, leaf = cls, name
        while "." in leaf:
            head, _, leaf = leaf.partition(".")
            owner = typing.get_type_hints(owner)[head]
        hints = hints_of.setdefault(owner, typing.get_type_hints(owner))
        kwargs: dict[str, Any] = {"dest": _CFG + name, "default": None, "help": field_docs(owner).get(leaf, "")}
        if hints[leaf] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = leaf.upper()
            kwargs["choices"] = CHOICES.get(leaf)
        p.add_argument(*([aliases[name]] if name in aliases else []), "--" + name.replace("_", "-"), **kwargs)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override any {cls.__name__} field, e.g. --set k=5 (repeatable; wins over flags)")


CHOICES: dict[str, tuple[str, ...]] = {"mode": SEARCH_MODES, "faiss_index": FAISS_KINDS, "engine": INDEX_ENGINES}
_SERVE_FLAGS = ("index", "generator.model", "generator.adapter", "generator.threads")
_SERVE_ALIASES = {"generator.model": "--model", "generator.adapter": "--adapter", "generator.threads": "--threads"}


def build_parser() -> argparse.ArgumentParser:
    from medcite import __version__

    parser = argparse.ArgumentParser(prog="medcite", description="Retrieval-augmented medical QA with citations.")
    parser.add_argument("--version", action="version", version=f"medcite {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("index", help="build the search index from corpus files",
                       description="Corpus files -> cleaned passages -> embeddings -> index directory.")
    p.add_argument("--config", help="YAML config (see configs/index.yaml); flags override it")
    config_flags(p, IndexConfig, ("data_dir", "out", "embedder", "faiss_index", "limit", "threads", "engine",
                                   "ray_address", "ray_actors"))
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="retrieve passages for a query (no generation)")
    p.add_argument("query", nargs="?", help="the query text")
    p.add_argument("--queries", metavar="FILE.jsonl", help='batch input, one {"id", "question"} per line')
    p.add_argument("-k", type=int, default=5, help="passages to return (default 5)")
    p.add_argument("--mode", choices=SEARCH_MODES, default="hybrid", help="ranker (default hybrid)")
    p.add_argument("--source", help="only passages of this source, e.g. medquad/CancerGov or wikidoc")
    p.add_argument("--all-passages", action="store_true",
                   help="the top-k passages themselves (default: k distinct records, each by its best passage)")
    p.add_argument("--index", default=DEFAULT_INDEX, help=f"index directory (default {DEFAULT_INDEX})")
    p.add_argument("--threads", type=int, default=0, help="torch threads for the query embedder (0 = all)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ask", help="answer one question with citations")
    p.add_argument("question")
    p.add_argument("--config", help="YAML config (see configs/serve.yaml); flags override it")
    config_flags(p, ServeConfig, (*_SERVE_FLAGS, "k", "mode"), {**_SERVE_ALIASES, "k": "-k"})
    p.add_argument("--no-retrieval", action="store_true", help="the no-retrieval baseline: the model alone")
    p.add_argument("--max-new-tokens", type=int, help="cap on generated tokens (default 256)")
    p.add_argument("--json", action="store_true", help="print the full answer object as JSON")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("verify", help="check any text against given sources (JSONL batches), as answers are",
                       description='Each input line {"text", "passages": [{"id", "title", "text"}], "question"?} '
                                   "-> one output line with every sentence: supported, score, citations, reason.")
    p.add_argument("input", metavar="FILE.jsonl", help="one request per line (POST /v1/verify's body)")
    p.add_argument("--config", help="YAML config (see configs/serve.yaml): index, verify.judges, thresholds")
    config_flags(p, ServeConfig, ("index",))
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("serve", help="run the HTTP API (loads index and model first)")
    p.add_argument("--config", help="YAML config (see configs/serve.yaml); flags override it")
    config_flags(p, ServeConfig, (*_SERVE_FLAGS, "host", "port"), _SERVE_ALIASES)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("eval", help="offline evaluation: arms x questions, paired statistics, report",
                       description="Open-ended dev questions and MIRAGE multiple choice through the server's "
                                   "pipeline; writes results.jsonl, summary.json, report.md under <out>/<run_name>.")
    p.add_argument("--config", help="YAML config (configs/eval.yaml); flags override it")
    p.add_argument("--quick", action="store_true",
                   help="50 dev questions + 100 MIRAGE items, base:none vs base:hybrid (run name 'quick')")
    config_flags(p, EvalConfig, ("questions", "arms", "adapter", "limit", "concurrency", "mirage_limit", "index", "data_dir", "out",
                                 "run_name"))
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("finetune", help="prepare data, train a (Q)LoRA adapter, keep the best checkpoint by answers",
                       description="prepare: build the training set only; train (default): prepare if needed, "
                                   "train or resume, pick the best checkpoint by probe answers; merge: write "
                                   "base + adapter as one model.")
    p.add_argument("action", nargs="?", choices=("train", "prepare", "merge"), default="train")
    p.add_argument("--config", help="YAML config (configs/finetune-smollm2.yaml, configs/finetune-llama3.2-3b.yaml)")
    config_flags(p, FinetuneConfig, ("data.data_dir", "allow_worse"), {"data.data_dir": "--data-dir"})
    p.add_argument("--adapter", help="merge: the adapter directory")
    p.add_argument("--out", help="merge: where to write the merged model")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("train-retriever", help="train the domain-tuned embedder and/or the cross-encoder reranker",
                       description="embedder: fine-tune the index's embedder on (question -> answer passage) pairs "
                                   "with mined hard negatives; reranker: train a cross-encoder on the same pairs. "
                                   "Then `medcite index --embedder <out>/embedder --out artifacts/index-tuned`.")
    p.add_argument("action", nargs="?", choices=("embedder", "reranker", "all"), default="embedder")
    p.add_argument("--config", help="YAML config (configs/retriever.yaml); flags override it")
    config_flags(p, RetrieverTrainConfig, ("index", "data_dir", "out", "max_pairs", "seed"))
    p.set_defaults(func=cmd_train_retriever)

    p = sub.add_parser("train-judges", help="train the faithfulness judge and/or the answerhood scorer",
                       description="faithfulness: a cross-encoder (passage, sentence) -> P(the passage states it); "
                                   "answerhood: (question, sentence) -> P(it answers the question). serve, ask and "
                                   "eval use artifacts/judges by themselves (verify.judges).")
    p.add_argument("action", nargs="?", choices=("faithfulness", "answerhood", "all"), default="all")
    p.add_argument("--config", help="YAML config (configs/judges.yaml); flags override it")
    config_flags(p, JudgeTrainConfig, ("data_dir", "out", "seed"))
    p.set_defaults(func=cmd_train_judges)

    p = sub.add_parser("feedback", help="export people's feedback on answers as JSONL for review",
                       description="Every feedback row joined with its answer record (text only where the server "
                                   "ran with log_text; otherwise hashes and sources).")
    p.add_argument("action", choices=("export",))
    p.add_argument("--out", default="feedback.jsonl", help="JSONL file to write (default feedback.jsonl)")
    p.add_argument("--db", help="SQLite file (default: feedback_db of the serve config)")
    p.add_argument("--config", help="serve YAML config (configs/serve.yaml)")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("train-triage", help="train triage's learned layer (artifacts/triage; resumable)",
                       description="The packaged MiniLM fine-tuned as a classifier of emergency kinds and none; "
                                   "threshold chosen on half of benchmarks/data/triage_dev.jsonl.")
    p.add_argument("--data-dir", help="root of the data sets (default $MEDCITE_DATA_DIR or ../shared/data)")
    p.add_argument("--out", help="where to write the layer (default artifacts/triage)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train_triage)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MedciteError as e:
        print(f"medcite: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medcite: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `medcite search ... | head`
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
