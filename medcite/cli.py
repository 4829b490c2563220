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
import sys
import typing
from typing import Any

from core.config import field_docs
from core.errors import MedciteError
from core.progress import run_elapsed, stage_prefix
from core.types import SEARCH_MODES
from evaluation.config import EvalConfig
from finetune.config import FinetuneConfig
from index_build.config import EMBED_BACKENDS, FAISS_KINDS, INDEX_ENGINES, IndexConfig
from medcite.commands import (
    CFG_PREFIX,
    cmd_ask,
    cmd_eval,
    cmd_feedback,
    cmd_finetune,
    cmd_index,
    cmd_search,
    cmd_serve,
    cmd_train_judges,
    cmd_train_retriever,
    cmd_train_triage,
    cmd_verify,
)
from retriever.config import DEFAULT_INDEX
from service.config import ServeConfig
from train.config import JudgeTrainConfig, RetrieverTrainConfig
from train.precision import PRECISIONS

# --- verbs ----------------------------------------------------------------------------------------------------




# --- parser ---------------------------------------------------------------------------------------------------



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
        kwargs: dict[str, Any] = {"dest": CFG_PREFIX + name, "default": None, "help": field_docs(owner).get(leaf, "")}
        if hints[leaf] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = leaf.upper()
            kwargs["choices"] = CHOICES.get(leaf)
        p.add_argument(*([aliases[name]] if name in aliases else []), "--" + name.replace("_", "-"), **kwargs)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override any {cls.__name__} field, e.g. --set k=5 (repeatable; wins over flags)")


CHOICES: dict[str, tuple[str, ...]] = {"mode": SEARCH_MODES, "faiss_index": FAISS_KINDS, "engine": INDEX_ENGINES,
                                        "embed_backend": EMBED_BACKENDS, "precision": PRECISIONS}
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
    config_flags(p, IndexConfig, ("data_dir", "out", "embedder", "embed_backend", "faiss_index", "limit", "threads",
                                   "engine", "ray_address", "ray_actors"))
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
    p.add_argument("action", nargs="?", choices=("embedder", "reranker", "entailment", "all"), default="embedder",
                   help="all: embedder and reranker; entailment: the question-entailment cross-encoder")
    p.add_argument("--config", help="YAML config (configs/retriever.yaml); flags override it")
    config_flags(p, RetrieverTrainConfig, ("index", "data_dir", "out", "max_pairs", "seed"))
    p.set_defaults(func=cmd_train_retriever)

    p = sub.add_parser("train-judges", help="train the faithfulness judge and/or the answerhood scorer",
                       description="faithfulness: a cross-encoder (passage, sentence) -> P(the passage states it); "
                                   "answerhood: (question, sentence) -> P(it answers the question). serve, ask and "
                                   "eval use artifacts/judges by themselves (verify.judges).")
    p.add_argument("action", nargs="?", choices=("faithfulness", "answerhood", "all"), default="all")
    p.add_argument("--config", help="YAML config (configs/judges.yaml); flags override it")
    config_flags(p, JudgeTrainConfig, ("data_dir", "out", "seed", "precision"))
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
                                   "threshold chosen on data/triage/dev.jsonl (never trained on).")
    p.add_argument("--data-dir", help="root of the data sets (default $MEDCITE_DATA_DIR or ../shared/data)")
    p.add_argument("--out", help="where to write the layer (default artifacts/triage)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 mixed precision where the CPU multiplies bf16 natively, else fp32")
    p.set_defaults(func=cmd_train_triage)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if stage_prefix():  # under `make demo`: each stage opens with its name and the run's time so far
        print(f"{stage_prefix()}medcite {' '.join(argv if argv is not None else sys.argv[1:])}{run_elapsed()}",
              file=sys.stderr, flush=True)
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
