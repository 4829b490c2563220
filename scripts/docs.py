"""Renders every generated block of the README and docs/ from its source: measured tables from
benchmarks/results/*.json (with the command and date that produced each file), the config tables from the config
dataclasses, the endpoint list and docs/openapi.json from the app's OpenAPI schema.

    .venv/bin/python scripts/docs.py            # rewrite the blocks in place
    .venv/bin/python scripts/docs.py --check    # exit 1 and name the stale blocks (tests/test_docs.py runs it)

A block is two marker lines in a Markdown file, `<!-- gen:NAME -->` and `<!-- /gen:NAME -->`; everything between
them belongs to the script. A NAME without a renderer, or a results file that is missing, is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from docs_blocks import (  # noqa: E402
    RESULTS,
    RULER_NAMES,
    ci,
    entailment,
    f3,
    generator_finetune,
    load,
    optional,
    source,
    table,
)

BLOCK = re.compile(r"(<!-- gen:([a-z0-9-]+) -->\n)(.*?)(<!-- /gen:\2 -->)", re.S)
PAGES = ("README.md", "docs/*.md")

def served_arm(a: dict) -> str:
    """The verification arm the answers file's served default used: the trained judges where the run had them (what
    `make demo` serves), else the lexical judge."""
    return "judges" if "judges" in a["sets"]["dev"] else "lexical"


def summary() -> str:
    a, j, r, t = load("answers"), load("judges"), load("retrieval"), load("triage")
    arm = served_arm(a)
    sets = a["sets"]
    dev, cons, oos = sets["dev"][arm], sets["consumer"][arm], sets["out_of_scope"][arm]
    d = a["dev_no_retrieval"][f"{arm}_minus_none"]
    fj = j["faithfulness"].get("judge_int8") or j["faithfulness"]["judge"]  # as served: int8 where measured
    rq = r["quality"]
    judge = "the trained judges, as `make demo` serves" if arm == "judges" else "the lexical judge"
    rows = [["retrieval: a relevant record in the top 5 (served; MedQuAD dev / consumer dev, 95% CI)",
             f"{ci(rq['medquad_dev']['served'], 'recall@5')} / {ci(rq['consumer']['served'], 'recall@5')}"],
            [f"answers citing a relevant record (MedQuAD dev / consumer dev, linked; verified by {judge})",
             f"{ci(dev, 'cites_gold')} / {ci(cons, 'cites_gold')}"],
            ["answers that refuse (no_answer): consumer dev, all 127", ci(cons, "no_answer")],
            ["token F1 gain of RAG over no retrieval (MedQuAD dev, 95% CI)",
             f"{d['mean_diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"],
            ["out-of-scope questions refused", f3(oos["no_answer"])]]
    review = RESULTS / "review-consumer.json"
    if review.is_file():
        rv = json.loads(review.read_text())
        v, before = rv["all"], RESULTS / "review-consumer-before.json"
        was = (f"{f3(json.loads(before.read_text())['all']['answers']['share'])} before quoting by default -> "
               if before.is_file() and "by_arm" not in rv else "")
        if "by_arm" in rv:  # the served arm beside the others of the same blind round
            others = "; ".join(f"{arm}: {f3(x['all']['answers']['share'])}" for arm, x in rv["by_arm"].items()
                               if arm != rv["served_arm"])
            was = "served: " if rv["served_arm"] == "served" else f"{rv['served_arm']} (served): "
            p = rv["paired"]["answers"]
            better, worse = (p["c"], p["b"]) if rv["paired"]["arms"][1] == rv["served_arm"] else (p["b"], p["c"])
            agreed_arms = (f" (same round, {others}; paired {better} better / {worse} worse, McNemar p "
                           f"{'< 0.001' if p['p_value'] < 0.001 else format(p['p_value'], '.3f')})")
        else:
            agreed_arms = ""
        agreed = (f"; a second reviewer agreed on {rv['consistency']['same_verdict']} of {rv['consistency']['mixed_in']}"
                  " earlier answers mixed in" if "consistency" in rv else "")
        rows.append([f"blind review: the answer gives the person what they asked (consumer dev, all 127, 95% CI{agreed})",
                     f"{was}{f3(v['answers']['share'])} [{f3(v['answers']['ci95'][0])}, {f3(v['answers']['ci95'][1])}]"
                     f"{agreed_arms}"])
        rows.append(["blind review: distorted (misleading for the person), same answers",
                     f"{f3(v['distorted']['share'])} [{f3(v['distorted']['ci95'][0])}, {f3(v['distorted']['ci95'][1])}]"])
    rows += [["faithfulness judge, served int8: balanced accuracy on altered / faithful sentences (`make demo` trains it)",
              f3(fj["balanced_accuracy"])],
             ["emergency triage recall / false alarms, blind probe (served: "
              + ("rules + learned layer" if t.get("layer") else "the rules alone, as `make demo` serves") + ")",
              f"{f3(t['probe_blind']['served']['recall'])} / {f3(t['probe_blind']['served']['false_alarms'])}"],
             ["emergency triage recall / false alarms, older held-out set (same)",
              f"{f3(t['heldout']['served']['recall'])} / {f3(t['heldout']['served']['false_alarms'])}"]]
    names = ["answers", "judges", "retrieval", "triage"] + [n for n in ("review-consumer", "review-consumer-before")
                                                           if (RESULTS / f"{n}.json").is_file()]
    stability = RESULTS / "triage-stability.json"
    if stability.is_file():
        st = json.loads(stability.read_text())
        pb = st["probe_blind_spread"]
        rows.append([f"with triage's learned layer (`make demo` trains it), blind probe, over {len(st['seeds'])} trainings: "
                     "recall / false alarms", f"{f3(pb['recall'][0])}-{f3(pb['recall'][1])} / "
                                              f"{f3(pb['false_alarms'][0])}-{f3(pb['false_alarms'][1])}"])
        names.append("triage-stability")
    return table(["what", "measured"], rows) + "\n\n" + source(*names)


def retrieval() -> str:
    r = load("retrieval")
    q = r["quality"]
    rows = [[RULER_NAMES[ruler], m, f3(v["recall@1"]), f3(v["recall@3"]), ci(v, "recall@5"), f3(v["recall@10"]),
             f3(v["mrr@10"])]
            for ruler in RULER_NAMES for m, v in q[ruler].items() if "recall@1" in v]
    lat = r["latency"]
    return (f"Both rulers over {r['passages']:,} passages: {r['dev_questions']} MedQuAD dev questions, "
            f"{r['consumer_questions']} linked consumer dev questions ({r['consumer_messages']} of them messages); "
            "record-level unless named; `served` is hybrid with the conditional question-type prior:\n\n"
            + table(["ruler", "mode", "recall@1", "recall@3", "recall@5 (95% CI)", "recall@10", "MRR@10"], rows)
            + f"\n\nRetrieve p50: bare FAISS {lat['p50_ms']['bare']} ms, dense {lat['p50_ms']['dense']} ms, hybrid "
              f"{lat['p50_ms']['hybrid']} ms ({lat['ratio_hybrid_retrieve_over_bare']}x bare). Index build "
              f"throughput {r['throughput']['ratio']}x a plain `encode` loop.\n\n" + source("retrieval"))


def embedding() -> str:
    e = load("embedding")
    t, q = e["throughput"], e["retrieval"]
    rate = {a: sorted(v)[len(v) // 2] for a, v in t["passages_per_s"].items()}
    names = {"plain_loop": "sentence-transformers fp32, one `encode` per batch in corpus order (the plain loop)",
             "st_encode": "sentence-transformers fp32, one `encode` over all (it sorts by length)",
             "torch_job": "the build's stage, `embed_backend: torch` (token-length-sorted shards)",
             "openvino_job": f"the build's stage, `embed_backend: openvino` ({t['precision']}), the default"}
    ratio = {"plain_loop": "1", **{a: f"{t['ratios'][f'{a}_over_plain_loop']}x" for a in names if a != "plain_loop"}}
    speed = table(["arm", "passages/s (median)", "vs the plain loop (median of paired reps)"],
                  [[names[a], round(rate[a], 1), ratio[a]] for a in names])
    rows = [[RULER_NAMES[ruler], arm, f3(v["fp32"]), f3(v["served_backend"]),
             f"{v['difference']['mean']:+.3f} [{v['difference']['ci95'][0]:+.3f}, {v['difference']['ci95'][1]:+.3f}]",
             v["difference"]["questions_changed"]]
            for ruler in RULER_NAMES if ruler in q for arm, v in q[ruler].items()]
    cos = t["cosine_to_fp32"]
    return (f"{t['passages']} passages of the index (a seeded sample, corpus order), batch {t['batch_size']}, "
            f"{t['threads']} threads, {t['reps']} reps interleaved A B C D / D C B A:\n\n" + speed
            + f"\n\nThe served vectors against sentence-transformers' fp32 ones: cosine mean {cos['mean']}, min "
              f"{cos['min']}. Recall@5 of the index built with each (same corpus, same settings otherwise):\n\n"
            + table(["ruler", "retrieval", "fp32 index", "served backend's index", "difference (95% CI)",
                     "questions changed"], rows)
            + "\n\n" + source("embedding"))


def serving() -> str:
    s = load("serving")
    p = s["penalty_scope_quality"]
    rows = [[scope, v["questions"], f3(v["token_f1"]), f3(v["end_of_turn_share"]), f3(v["runaway_list_share"]),
             v["mean_completion_tokens"]] for scope, v in p.items()]
    return (f"End to end: pipeline overhead over generation {s['e2e']['overhead']:.1%} (p50 {s['e2e']['e2e_p50_ms']} "
            f"ms for {s['e2e']['max_new_tokens']} new tokens); HTTP retrieve throughput {s['retrieve']['ratio']}x "
            f"in-process; decode {s['decode']['decode_tokens_per_s']} tokens/s, {s['decode']['ratio']} of the "
            f"memory-bandwidth bound.\n\nRepetition penalty 1.3 applied to generated tokens only, against the whole "
            "sequence:\n\n"
            + table(["penalty scope", "questions", "token F1", "ends its turn", "runaway lists", "mean tokens"], rows)
            + "\n\n" + source("serving"))


def load_() -> str:
    d = load("load")
    rows = []
    for name in ("retrieve", "answer", "answer_again", "burst"):
        v = d.get(name)
        if isinstance(v, dict) and "p50_ms" in v:
            rows.append([name, v.get("route", ""), v.get("requests", ""), v.get("concurrency", ""),
                         v.get("p50_ms"), v.get("p99_ms"), v.get("throughput_rps"),
                         v.get("unintended_error_count", 0)])
    return (d["what"] + ":\n\n" + table(["run", "route", "requests", "concurrency", "p50 ms", "p99 ms", "req/s",
                                          "unintended errors"], rows) + "\n\n" + source("load"))


def judges() -> str:
    from benchmarks.report_judges import render_judges

    return render_judges() + "\n" + source("judges")


def answers() -> str:
    from benchmarks.report_judges import render_answers

    names = ["answers"] + (["answers-ablation-generated"]
                           if (RESULTS / "answers-ablation-generated.json").is_file() else [])
    return render_answers() + "\n" + source(*names)


def answers_tuned() -> str:
    """The served answers with the tuned index (make retriever), every arm the file holds."""
    a = load("answers-tuned")
    rows = []
    for name, v in a["sets"].items():
        for arm, x in v.items():
            if arm == "n":
                continue
            f1 = f3(x["token_f1"]["mean"]) if x.get("token_f1") else "-"
            rows.append([name, v["n"], arm, f3(x["cites_gold"]), f3(x["gold_shown"]), f3(x["no_answer"]), f1])
    d = a["dev_no_retrieval"]["lexical_minus_none"]
    return (f"With `artifacts/index-tuned` (index {a['index'][:12]}, judges: {a['judges']}):\n\n"
            + table(["set", "n", "arm", "cites gold record", "gold shown", "no_answer", "token F1"], rows)
            + f"\n\nDev, paired: RAG (lexical) - no retrieval token F1 {d['mean_diff']:+.3f} "
              f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}].\n\n" + source("answers-tuned"))


def verification() -> str:
    keys = ("token_f1", "rouge_l", "cites", "citation_support", "invented_terms", "mode_extractive", "mode_no_answer")
    out = []
    for name in ("verification", "verification-llamacpp"):
        v = load(name)
        rows = [[k, f3(v["before"][k]["mean"]), f3(v["after"][k]["mean"]),
                 f3(v["baseline_none"][k]["mean"]) if k in v["baseline_none"] else "-"] for k in keys]
        out += [f"{v['questions']} dev questions, `{name}`: drafts before verification, verified answers, and no "
                "retrieval:", "", table(["metric", "draft", "verified", "no retrieval"], rows), ""]
        if "timing" in v:
            out += [f"Verification time / generation time: median {v['timing']['verify_over_generate_median']}.", ""]
    return "\n".join(out) + source("verification", "verification-llamacpp")


def gate() -> str:
    g = load("gate")
    names = ("dev", "consumer", "yes_no", "out_of_scope")
    rows = []
    for path, v in g["indexes"].items():
        cells = [f"{v['sets'][n].get('no_answer', v['sets'][n].get('refused')):.3f}" for n in names if n in v["sets"]]
        rows.append([f"`{path}`", f"{v['gate']:.4f} ({v['gate_source']}, {v.get('gate_embedder', 'index')} embedder)",
                     *cells])
    return ("The relevance gate in force for each index (its own calibration) and the share of each question set it "
            "answers `no_answer` (out of scope: the share refused); with the lexical judge this is the whole "
            "`no_answer` rate:\n\n"
            + table(["index", "gate (source)", "dev reference", "patient-style rewrites", "yes/no",
                     "out of scope refused"], rows) + "\n\n" + source("gate"))


def triage() -> str:
    t = load("triage")
    rows = []
    for name, label in (("probe_blind", "blind probe"), ("heldout", "held-out set"), ("rules_dev", "rules' dev set"),
                        ("dev_set", "dev set"), ("genmedgpt_reviewed", "GenMedGPT, reviewed")):
        v = t.get(name)
        if v is None:
            continue
        for layer in ("rules", "learned", "served") if t.get("layer") else ("rules",):
            rows.append([label, f"{v['n']['emergencies']} / {v['n']['non_urgent']}", layer, f3(v[layer]["recall"]),
                         f3(v[layer]["false_alarms"])])
    dev = t["dev"]
    return (table(["set", "emergencies / non-urgent", "layer", "recall", "false alarms"], rows)
            + f"\n\nOn the {dev['n']} dev reference questions the served triage fires on {dev['rate']:.1%}. "
            + (f"Learned layer: `{t['layer']}` ({t['precision']}, threshold {t['threshold']})" if t.get("layer") else
               "No learned layer was loaded (`make demo` trains it): served is the rules alone")
            + f", p50 {t['latency_p50_ms']} ms."
            + "\n\n" + source("triage") + stability())


def stability() -> str:
    """Triage's learned layer over several trainings (benchmarks/triage.py --stability), where the file exists."""
    st = optional("triage-stability")
    if st is None:
        return ""
    rows = [[seed, f"{v['thresholds']['fp32']} / {v['thresholds']['int8']}", ci(v["probe_blind"], "recall"),
             ci(v["probe_blind"], "false_alarms"), ci(v["heldout"], "recall"), ci(v["heldout"], "false_alarms")]
            for seed, v in st["seeds"].items()]
    rep = st["repeat"]
    return ("\n\nRules plus the learned layer (int8, as served) over three trainings from the same rows, one per seed "
            "(95% Wilson intervals):\n\n"
            + table(["seed", "threshold fp32 / int8", "blind probe recall", "blind probe false alarms",
                     "held-out recall", "held-out false alarms"], rows)
            + f"\n\nThe int8 threshold spans {st['int8_threshold_spread']['range']} over the seeds while recall and false "
              "alarms move within their intervals; the same seed twice "
            + (f"({rep['steps']} steps) gives identical weights and thresholds."
               if rep["identical_weights"] and rep["identical_thresholds"] else "did NOT repeat: see the file.")
            + "\n\n" + source("triage-stability") + training_speed())


def training_speed() -> str:
    """The learned layer's training in fp32 against bf16 mixed precision (benchmarks/triage.py --speed)."""
    sp = optional("triage-speed")
    if sp is None:
        return ""
    b = sp["bf16_seed_0"]

    rows = [[f"fp32, seed {seed}", f"{v['train_seconds']:.0f}", ci(v["heldout"], "recall"),
             ci(v["heldout"], "false_alarms"), ci(v["probe_blind"], "recall"), ci(v["probe_blind"], "false_alarms")]
            for seed, v in sp.get("fp32_seeds", {}).items()]
    rows.append([f"{b['train_precision']}, seed 0 (benchmarks/triage.py --speed, on an earlier machine)", f"{b['train_seconds']:.0f}",
                 ci(b["heldout"], "recall"), ci(b["heldout"], "false_alarms"), ci(b["probe_blind"], "recall"),
                 ci(b["probe_blind"], "false_alarms")])
    inside = all(all(v.values()) for v in sp.get("inside_fp32_spread", {}).values())
    return ("\n\nTraining time before (fp32) and after (bf16 mixed precision, where the CPU multiplies bf16 "
            f"natively), served quality beside it. Steps per second, {sp['steps']} steps an arm, interleaved: "
            f"fp32 {sp['steps_per_s']['fp32']}, bf16 {sp['steps_per_s']['bf16']} ({sp['bf16_over_fp32']}x); "
            "the fp32 seeds' whole-training seconds were measured on a busier machine, so only the steps ratio is "
            "side by side:\n\n"
            + table(["training", "seconds", "held-out recall", "held-out false alarms", "blind probe recall",
                     "blind probe false alarms"], rows)
            + "\n\nThe bf16 layer's recall and false alarms are "
            + ("inside" if inside else "NOT inside") + " the fp32 trainings' spread on both sets.\n\n"
            + source("triage-speed"))


def judge_training() -> str:
    from benchmarks.report_judges import render_judge_training

    return render_judge_training() + "\n" + source("judge-training")


def followup() -> str:
    f = load("followup")
    rows = [[arm, f3(v.get("gold_shown")), f3(v.get("cites_gold")), f3(v.get("query_overlap_with_written_out")),
             v.get("rewrite_ms_p50", "-")] for arm, v in f["arms"].items()]
    return (f"{f['n']} two-turn conversations; turn 2 is a follow-up that names no subject (`written_out`: the same "
            "question with its subject spelled out, the ceiling):\n\n"
            + table(["arm", "gold shown", "cites gold", "query overlap with written-out", "rewrite p50 ms"], rows)
            + "\n\n" + source("followup"))


def overhead() -> str:
    o = load("overhead")
    return (f"/metrics and feedback on vs off, {o['n']} retrieve requests: p50 {o['retrieve_p50_ms']['on']} vs "
            f"{o['retrieve_p50_ms']['off']} ms (+{o['added_p50_ms']} ms, ratio {o['ratio_on_off']}).\n\n"
            + source("overhead"))


def page() -> str:
    p = load("page")
    return (f"In chromium: first draft on screen {p['first_draft_over_retrieve_prefill_ms_p50']} ms (p50) after "
            f"retrieval + prefill; page script {p['script_ms_per_token_p50']} ms per streamed token (p50, max "
            f"{p['script_ms_per_token_max']}).\n\n" + source("page"))


def faiss() -> str:
    from benchmarks.faiss_scale import table as faiss_table

    return faiss_table(load("faiss_scale")) + "\n\n" + source("faiss_scale")


def ray_index() -> str:
    r = load("ray_index")
    rows = [[arm, v["embed_passages_per_s"], v["build_passages_per_s"], v["build_s"],
             r["ratios"].get(arm, {}).get("embed_vs_local", 1.0)] for arm, v in r["arms"].items()]
    return (f"{r['records']} MedQuAD records ({r['runs']['local'][0]['passages']} passages), {r['device']}, Ray "
            f"{r['ray_version']}, {r['repeats']} rounds A/B/C (medians); `ray.init` {r['ray_init_seconds']} s once "
            f"per job; same passages as the local engine: {r['same_passages_as_local']}.\n\n"
            + table(["arm", "embedding passages/s", "whole build passages/s", "build s", "embedding vs local"], rows)
            + "\n\n" + source("ray_index"))


def finetune_speed() -> str:
    f = load("finetune")
    return (f"{f['what']}: tokens/s ratio {f['tokens_per_s_ratio_A_over_B']} (target >= {f['target_speed_ratio']}),"
            f" peak memory ratio {f['peak_memory_ratio_A_over_B']}; NF4 over float peak memory "
            f"{f['peak_memory_nf4_over_float_A']}.\n\n" + source("finetune"))


def config_tables() -> str:
    from docs_tables import markdown_tables

    return markdown_tables().rstrip("\n") + "\n\n_Rendered from the config dataclasses beside each job (`*/config.py`) " \
        "by `scripts/docs.py`._"


def _schema() -> dict:
    from service.app import create_app
    from service.config import ServeConfig
    from tests.fakes import FakeGenerator, FakeRetriever

    app = create_app(FakeRetriever(), FakeGenerator(), ServeConfig())
    return app.openapi_schema.to_schema()


def openapi() -> str:
    schema = _schema()
    rows = []
    for path, ops in sorted(schema["paths"].items()):
        for method, op in ops.items():
            if method in ("get", "post", "put", "delete", "patch"):
                codes = ", ".join(sorted(op.get("responses", {})))
                rows.append([f"`{method.upper()} {path}`", (op.get("summary") or op.get("description") or "")
                             .splitlines()[0] if (op.get("summary") or op.get("description")) else "", codes])
    return (table(["endpoint", "what it does", "responses"], rows)
            + f"\n\n_Rendered from the app's OpenAPI schema (medcite {schema['info']['version']}) by "
              "`scripts/docs.py`; the whole schema: [openapi.json](openapi.json), or `/schema/openapi.json` from a "
              "running server._")


RENDERERS: dict[str, Callable[[], str]] = {
    "summary": summary, "retrieval": retrieval, "embedding": embedding, "serving": serving, "load": load_, "judges": judges,
    "answers": answers, "answers-tuned": answers_tuned, "verification": verification, "triage": triage, "followup": followup,
    "overhead": overhead, "page": page, "gate": gate, "faiss": faiss, "ray-index": ray_index, "finetune-speed": finetune_speed,
    "config-tables": config_tables, "openapi": openapi, "judge-training": judge_training, "entailment": entailment,
    "generator-finetune": generator_finetune}


def files() -> list[Path]:
    out = []
    for pattern in PAGES:
        out += sorted(ROOT.glob(pattern))
    return out


def render_file(text: str, cache: dict[str, str]) -> str:
    def fill(m: re.Match) -> str:
        name = m.group(2)
        if name not in RENDERERS:
            raise SystemExit(f"docs: no renderer for block {name!r} ({', '.join(RENDERERS)})")
        if name not in cache:
            cache[name] = RENDERERS[name]().rstrip("\n") + "\n"
        return m.group(1) + cache[name] + m.group(4)

    return BLOCK.sub(fill, text)


def extra_files() -> dict[Path, str]:
    """Generated files beside the pages: the OpenAPI schema, and the changelog as a page."""
    return {ROOT / "docs" / "openapi.json": json.dumps(_schema(), indent=1, sort_keys=True) + "\n",
            ROOT / "docs" / "changelog.md": "<!-- copied from CHANGELOG.md by scripts/docs.py: edit that file -->\n"
                                            + (ROOT / "CHANGELOG.md").read_text()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if any block or generated file is stale")
    args = ap.parse_args()
    cache: dict[str, str] = {}
    stale = []
    outputs = {p: render_file(p.read_text(), cache) for p in files()} | extra_files()
    for path, new in outputs.items():
        old = path.read_text() if path.is_file() else None
        if old != new:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"docs: stale generated content in {', '.join(stale)}; run python scripts/docs.py", file=sys.stderr)
        return 1
    print(f"docs: {len(cache)} block kind(s) in {len(outputs)} file(s); "
          f"{'up to date' if not stale else 'rewrote ' + ', '.join(stale)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
