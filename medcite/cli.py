"""The `medcite` command: one console script, one verb per job.

    medcite index  [--config configs/index.yaml] [--data-dir DIR] [--out DIR]
    medcite search "how is ewing sarcoma treated" [-k 5] [--mode hybrid|dense|bm25] [--json]
    medcite search --queries questions.jsonl --json         # batch: {"id", "question"} per line

Heavy libraries (torch, faiss, transformers, litestar) are imported inside the verb that needs them, so
`medcite --help` is instant. User errors print one line, `medcite: error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from core.config import IndexConfig, field_docs, load_config
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
    if not os.path.isfile(path):
        raise MedciteError(f"queries file {path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise MedciteError(f"{path}:{n}: not valid JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
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

    for extra in EXTRA_VERBS:
        extra(sub)
    return parser


# Later verbs (ask, serve, finetune, eval) register their sub-parsers here.
EXTRA_VERBS: list[Callable[[argparse._SubParsersAction], None]] = []


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
