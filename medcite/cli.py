"""The `medcite` command: one console script, one verb per job.

    medcite index  [--config configs/index.yaml] [--data-dir DIR] [--out DIR]
    medcite search "how is ewing sarcoma treated" [-k 5] [--mode hybrid|dense|bm25] [--json]
    medcite search --queries questions.jsonl --json         # batch: {"id", "question"} per line
    medcite ask "How is gout treated?" [--no-retrieval] [--json] [--config configs/serve.yaml]
    medcite serve [--config configs/serve.yaml] [--host 127.0.0.1] [--port 8000]
    medcite eval [--quick] [--config configs/eval.yaml] [--questions F.jsonl] [--arms base:none,base:hybrid] [--limit N]
    medcite finetune [prepare|train|merge] [--config configs/finetune-smollm2.yaml] [--set key=value ...]

Heavy libraries (torch, faiss, transformers, litestar) are imported inside the verb that needs them, so
`medcite --help` is instant. User errors print one line, `medcite: error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from core.config import (
    EvalConfig,
    FinetuneConfig,
    FinetuneDataConfig,
    GeneratorConfig,
    IndexConfig,
    ServeConfig,
    field_docs,
    load_config,
)
from core.errors import InvalidRequestError, MedciteError
from core.types import SEARCH_MODES

DEFAULT_INDEX = "artifacts/index"


def _quiet_libraries() -> None:
    """Keep library chatter (progress bars of model loads, hub warnings) off a CLI user's terminal."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import logging

    for name in ("sentence_transformers", "transformers", "bitsandbytes", "bm25s", "faiss", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- verbs ----------------------------------------------------------------------------------------------------

def cmd_index(args: argparse.Namespace) -> int:
    cfg = load_config(IndexConfig, args.config, data_dir=args.data_dir, out=args.out, limit=args.limit,
                      threads=args.threads, embedder=args.embedder, faiss_index=args.faiss_index)
    _quiet_libraries()
    from index_build.build import build_index

    build_index(cfg, log=lambda msg: print(msg, file=sys.stderr))
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

    retriever = IndexRetriever.load(args.index, threads=args.threads)
    for qid, question in batch:
        hits = retriever.search(question, k=args.k, mode=args.mode, source=args.source)
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
    return load_config(ServeConfig, args.config, index=args.index, k=getattr(args, "k", None),
                       mode=getattr(args, "mode", None), host=getattr(args, "host", None),
                       port=getattr(args, "port", None), **{"generator.model": args.model,
                                                            "generator.adapter": args.adapter,
                                                            "generator.threads": args.threads})


def cmd_ask(args: argparse.Namespace) -> int:
    if not args.question.strip():  # say so before spending seconds loading models
        raise InvalidRequestError("question is empty")
    cfg = _serve_config(args)
    _quiet_libraries()
    from service.components import load_generator, load_retriever
    from service.pipeline import answer

    retriever = None if args.no_retrieval else load_retriever(cfg)
    generator = load_generator(cfg)
    decoding = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    a = answer(args.question, retriever, generator, k=cfg.k, mode=cfg.mode, budget=cfg.prompt_tokens, **decoding)
    if args.json:
        print(json.dumps({"answer": a.text, "citations": [c.to_dict() for c in a.citations],
                          "passages": [h.to_dict(with_text=True) for h in a.passages],
                          "invalid_markers": a.invalid_markers, "usage": a.usage, "timings": a.timings,
                          "stop_reason": a.stop_reason, "model": a.model, "index": a.index,
                          "prompt_version": a.prompt_version}, ensure_ascii=False))
        return 0
    print(a.text)
    if a.citations:
        print("\nSources:")
        for c in a.citations:
            p = c.hit.passage
            print(f"  [{c.marker}] {p.title} ({p.id}){'  ' + p.url if p.url else ''}")
    elif a.passages:
        print("\n(no passage was cited; retrieved: " + ", ".join(h.passage.id for h in a.passages) + ")")
    print(f"\n[{a.model}; {a.usage['completion_tokens']} tokens, stop: {a.stop_reason}; "
          f"retrieve {a.timings['retrieve_ms']:.0f} ms, generate {a.timings['generate_ms']:.0f} ms]",
          file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _serve_config(args)
    _quiet_libraries()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from service.components import load_generator, load_retriever

    # Everything loads before the socket opens: a server that accepts traffic is ready.
    retriever = load_retriever(cfg)
    generator = load_generator(cfg)
    import uvicorn

    from service.app import create_app

    print(f"medcite: serving {generator.name} over index {retriever.fingerprint[:12]} at "
          f"http://{cfg.host}:{cfg.port} (OpenAPI: /schema)", file=sys.stderr)
    uvicorn.run(create_app(retriever, generator, cfg), host=cfg.host, port=cfg.port, log_level="warning",
                access_log=False)
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


def cmd_finetune(args: argparse.Namespace) -> int:
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.action == "merge":
        if not args.adapter or not args.out:
            raise MedciteError("finetune merge needs --adapter DIR and --out DIR")
        _quiet_libraries()
        from generator.finetune import merge

        merge(args.adapter, args.out, log)
        return 0
    overrides = _set_overrides(args.set)
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    cfg = load_config(FinetuneConfig, args.config, **overrides)
    _quiet_libraries()
    from generator.finetune import run
    from retriever.search import IndexRetriever

    out = run(cfg, load_retriever=IndexRetriever.load, log=log, prepare_only=args.action == "prepare")
    print(out)
    return 0


QUICK = {"run_name": "quick", "limit": 50, "mirage_limit": 100, "arms": "base:none,base:hybrid"}


def cmd_eval(args: argparse.Namespace) -> int:
    overrides: dict = {**(QUICK if args.quick else {}), **_set_overrides(args.set)}
    for key in ("questions", "arms", "limit", "mirage_limit", "out", "run_name", "adapter", "data_dir", "index"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = load_config(EvalConfig, args.config, **overrides)
    _quiet_libraries()
    from evaluation.run import run_eval
    from retriever.search import IndexRetriever
    from service.components import load_generator

    def generator(gcfg, decoding):
        return load_generator(ServeConfig(generator=gcfg, decoding=decoding))

    out = run_eval(cfg, IndexRetriever.load, generator, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(out / "report.md")
    return 0


# --- parser ---------------------------------------------------------------------------------------------------

def _help(cls: type, name: str) -> str:
    return field_docs(cls).get(name, "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medcite", description="Retrieval-augmented medical QA with citations.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("index", help="build the search index from corpus files",
                       description="Corpus files -> cleaned passages -> embeddings -> index directory.")
    p.add_argument("--config", help="YAML config (see configs/index.yaml); flags override it")
    p.add_argument("--data-dir", help=_help(IndexConfig, "data_dir"))
    p.add_argument("--out", help=_help(IndexConfig, "out"))
    p.add_argument("--embedder", help=_help(IndexConfig, "embedder"))
    p.add_argument("--faiss-index", choices=("flat", "hnsw", "ivfpq"), help=_help(IndexConfig, "faiss_index"))
    p.add_argument("--limit", type=int, help=_help(IndexConfig, "limit"))
    p.add_argument("--threads", type=int, help=_help(IndexConfig, "threads"))
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="retrieve passages for a query (no generation)")
    p.add_argument("query", nargs="?", help="the query text")
    p.add_argument("--queries", metavar="FILE.jsonl", help='batch input, one {"id", "question"} per line')
    p.add_argument("-k", type=int, default=5, help="passages to return (default 5)")
    p.add_argument("--mode", choices=SEARCH_MODES, default="hybrid", help="ranker (default hybrid)")
    p.add_argument("--source", help="only passages of this source, e.g. medquad/CancerGov or wikidoc")
    p.add_argument("--index", default=DEFAULT_INDEX, help=f"index directory (default {DEFAULT_INDEX})")
    p.add_argument("--threads", type=int, default=0, help="torch threads for the query embedder (0 = all)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.set_defaults(func=cmd_search)

    def serve_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="YAML config (see configs/serve.yaml); flags override it")
        p.add_argument("--index", help=_help(ServeConfig, "index"))
        p.add_argument("--model", help=_help(GeneratorConfig, "model"))
        p.add_argument("--adapter", help=_help(GeneratorConfig, "adapter"))
        p.add_argument("--threads", type=int, help=_help(GeneratorConfig, "threads"))

    p = sub.add_parser("ask", help="answer one question with citations")
    p.add_argument("question")
    serve_flags(p)
    p.add_argument("-k", type=int, help=_help(ServeConfig, "k"))
    p.add_argument("--mode", choices=SEARCH_MODES, help=_help(ServeConfig, "mode"))
    p.add_argument("--no-retrieval", action="store_true", help="the no-retrieval baseline: the model alone")
    p.add_argument("--max-new-tokens", type=int, help="cap on generated tokens (default 256)")
    p.add_argument("--json", action="store_true", help="print the full answer object as JSON")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("serve", help="run the HTTP API (loads index and model first)")
    serve_flags(p)
    p.add_argument("--host", help=_help(ServeConfig, "host"))
    p.add_argument("--port", type=int, help=_help(ServeConfig, "port"))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("eval", help="offline evaluation: arms x questions, paired statistics, report",
                       description="Open-ended dev questions and MIRAGE multiple choice through the server's "
                                   "pipeline; writes results.jsonl, summary.json, report.md under <out>/<run_name>.")
    p.add_argument("--config", help="YAML config (configs/eval.yaml); flags override it")
    p.add_argument("--quick", action="store_true",
                   help="50 dev questions + 100 MIRAGE items, base:none vs base:hybrid (run name 'quick')")
    p.add_argument("--questions", help=_help(EvalConfig, "questions"))
    p.add_argument("--arms", help="comma-separated arms, e.g. base:none,base:hybrid,tuned:hybrid")
    p.add_argument("--adapter", help=_help(EvalConfig, "adapter"))
    p.add_argument("--limit", type=int, help=_help(EvalConfig, "limit"))
    p.add_argument("--mirage-limit", type=int, help=_help(EvalConfig, "mirage_limit"))
    p.add_argument("--index", help=_help(EvalConfig, "index"))
    p.add_argument("--data-dir", help=_help(EvalConfig, "data_dir"))
    p.add_argument("--out", help=_help(EvalConfig, "out"))
    p.add_argument("--run-name", help=_help(EvalConfig, "run_name"))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field (repeatable)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("finetune", help="prepare data, train a (Q)LoRA adapter, keep the best checkpoint by answers",
                       description="prepare: build the training set only; train (default): prepare if needed, "
                                   "train or resume, pick the best checkpoint by probe answers; merge: write "
                                   "base + adapter as one model.")
    p.add_argument("action", nargs="?", choices=("train", "prepare", "merge"), default="train")
    p.add_argument("--config", help="YAML config (configs/finetune-smollm2.yaml, configs/finetune-llama3.2-3b.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. --set max_steps=20 --set data.size=400 (repeatable)")
    p.add_argument("--data-dir", help=_help(FinetuneDataConfig, "data_dir"))
    p.add_argument("--adapter", help="merge: the adapter directory")
    p.add_argument("--out", help="merge: where to write the merged model")
    p.set_defaults(func=cmd_finetune)
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
