"""The trained judges' tables, rendered from benchmarks/results/judges.json and answers.json (never typed by hand):
scripts/docs.py puts them into the docs' `judges` and `answers` blocks.

    .venv/bin/python benchmarks/report_judges.py          # print both tables
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render_judges() -> str:
    j = json.loads((ROOT / "benchmarks/results/judges.json").read_text())
    f = j["faithfulness"]
    out = [f"Measured (`{j['command']}`, {j['date']}, `benchmarks/results/judges.json`): a probe set of "
           f"{j['probe']['pairs']} (passage, sentence) pairs from {j['probe']['passages']} passages of the 200 dev "
           "questions' documents (reserved, never trained on; another seed than training), each judge at its own "
           "threshold, as served:", "",
           "| family | n | trained judge | lexical judge (0.55) |", "|---|---|---|---|"]
    for fam, v in f["judge"]["by_family"].items():
        what = "faithful: kept" if fam in ("copy", "paraphrase") else "altered: caught"
        out.append(f"| {fam} ({what}) | {v['n']} | {v['correct']:.3f} | {f['lexical']['by_family'][fam]['correct']:.3f} |")
    out += [f"| **balanced accuracy** | | **{f['judge']['balanced_accuracy']:.3f}** | "
            f"{f['lexical']['balanced_accuracy']:.3f} |",
            f"| faithful sentences kept | | {f['judge']['faithful_kept']:.3f} | {f['lexical']['faithful_kept']:.3f} |",
            f"| ROC AUC | | {f['judge']['auc']:.3f} | {f['lexical']['auc']:.3f} |", ""]
    if "judge_int8" in f:
        q = f["judge_int8"]
        out += [f"Served int8 (`verify.judge_precision`, the default) at the same threshold: balanced accuracy "
                f"{q['balanced_accuracy']:.3f}, faithful kept {q['faithful_kept']:.3f}, altered caught "
                f"{q['altered_caught']:.3f}, {f['int8_speedup']}x faster than fp32 (chunks of 100 pairs side by side).",
                ""]
    if "answerhood" in j:
        out += [f"Answerhood on the dev documents' questions against own and other sentences: ROC AUC "
                f"{j['answerhood']['scorer']['auc']:.3f} (the embedder's cosine: {j['answerhood']['cosine']['auc']:.3f})."
                f" The faithfulness judge costs {f['ms_per_pair']['judge']} ms a pair here.", ""]
    return "\n".join(out) + "\n"


def render_answers() -> str:
    a = json.loads((ROOT / "benchmarks/results/answers.json").read_text())
    arms = [arm for arm in ("lexical", "judges") if arm in a["sets"]["dev"]]
    out = [f"Served answers (`{a['command']}`, {a['date']}, `benchmarks/results/answers.json`): the same llama.cpp "
           "q4_0 drafts (the served retrieval: hybrid k=3, the conditional question-type prior, a message's subject "
           "line and asks) verified by " + (" and by ".join({"lexical": "the lexical judge",
                                                            "judges": "the trained judges (what `make demo` serves)"}[x]
                                                           for x in arms))
           + ". The two rulers first: MedQuAD dev (templates) and the real consumer dev questions (a relevant record "
             "cited over the linked ones, no_answer over all; the messages alone as their own row):", "",
           "| set | n (linked) | arm | cites a relevant record (95% CI) | relevant shown | no_answer (95% CI) | "
           "generated / extractive | token F1 |", "|---|---|---|---|---|---|---|---|"]

    def with_ci(x: dict, key: str) -> str:
        lo, hi = x.get(f"{key}_ci95", (None, None))
        return "-" if x.get(key) is None else f"{x[key]:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")

    # the same drafts with the model's own sentences allowed under the lexical judge (the default before it quoted)
    ablation = ROOT / "benchmarks/results/answers-ablation-generated.json"
    generated = json.loads(ablation.read_text())["sets"] if ablation.is_file() else {}

    for name, v in a["sets"].items():
        rows = [(arm, v[arm]) for arm in arms]
        if name in generated and name != "out_of_scope":
            rows.append(("lexical, model's sentences allowed", generated[name]["lexical"]))
        for arm, x in rows:
            f1 = f"{x['token_f1']['mean']:.3f}" if x.get("token_f1") else "-"
            shown = "-" if x.get("gold_shown") is None else f"{x['gold_shown']:.3f}"
            out.append(f"| {name} | {v['n']} ({v.get('linked', '-')}) | {arm} | {with_ci(x, 'cites_gold')} | {shown} | "
                       f"{with_ci(x, 'no_answer')} | {x['modes'].get('generated', 0)} / "
                       f"{x['modes'].get('extractive', 0)} | {f1} |")
    if generated:
        out += ["", "\"model's sentences allowed\": the same drafts verified with "
                    "`--verify generated_with_lexical_judge=1` (`benchmarks/results/answers-ablation-generated.json`): "
                    "the lexical judge lets the model's supported sentences through, as before quoting became its "
                    "default."]
    d, dev = a.get("dev_no_retrieval"), a["sets"]["dev"]

    def ci(x: dict) -> str:
        return f"{x['mean_diff']:+.3f} [{x['ci_low']:+.3f}, {x['ci_high']:+.3f}]"

    if d:
        last = arms[-1]
        out += ["", f"MedQuAD dev, paired: RAG ({last}) - no retrieval token F1 {ci(d[f'{last}_minus_none'])} (no "
                    f"retrieval: {d['token_f1']['mean']:.3f}). Verification time / generation time: "
                + ", ".join(f"{dev[x]['verify_over_generate']:.2f} {x} (p50 {dev[x]['verify_ms_p50']:.0f} ms)"
                            for x in arms) + "."]
        if "judges_minus_lexical" in d:
            out[-1] += f" Trained judges - lexical token F1 {ci(d['judges_minus_lexical'])}."
    return "\n".join(out) + "\n"


def render_judge_training() -> str:
    """Before / after of the judges' training (benchmarks/judge_training.py): time and quality in one table."""
    path = ROOT / "benchmarks/results/judge-training.json"
    r = json.loads(path.read_text()) if path.is_file() else {}
    out = []
    if "speed" in r:
        sp = r["speed"]
        out += [f"Training loop speed (`{sp['command']}`, {sp['date']}): each judge trained one epoch on a slice of "
                "its real rows in three arms, interleaved, {0} rounds; pairs per second (median ratio within a "
                "round):".format(sp["reps"]), "",
                "| judge | " + " | ".join(f"{a} (pairs/s per round)" for a in sp["arms"])
                + " | bf16 / fp32 | length-grouped / random (bf16) | after / before |",
                "|---|" + "---|" * (len(sp["arms"]) + 3)]
        for judge, rates in sp["pairs_per_s"].items():
            out.append(f"| {judge} | " + " | ".join(", ".join(f"{x:.1f}" for x in v) for v in rates.values())
                       + " | " + " | ".join(f"{x:.2f}x" for x in sp["ratios"][judge].values()) + " |")
        out.append("")
    if "quality" in r:
        q = r["quality"]

        def seconds(side: str) -> list[str]:
            t = q[side]["training"]
            total = sum(v["train_seconds"] for v in t.values())
            return [f"{t[j]['train_seconds']:.0f}" + (f" ({t[j]['train_loop_seconds']:.0f})"
                                                       if t[j].get("train_loop_seconds") else "") for j in t] \
                + [f"{total:.0f}"]

        def diff(key: str) -> str:
            d = q["difference"][key]
            return f"{d['mean_diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"

        rows = []
        for side, label in (("before", "before: fp32, random batches"),
                            ("after", "after: bf16 mixed, length-grouped batches (what `make demo` trains)")):
            s = q[side]
            rows.append([label, *seconds(side), f"{s['faithfulness_int8']['balanced_accuracy']:.3f}",
                         f"{s['faithfulness_fp32']['balanced_accuracy']:.3f}", f"{s['answerhood_auc']:.3f}"])
        rows.append(["after - before (paired 95% CI)", "", "", "", diff("faithfulness_int8_balanced_accuracy"),
                     diff("faithfulness_fp32_balanced_accuracy"), diff("answerhood_auc")])
        out += [f"Whole trainings of `configs/judges.yaml` and their quality on the probe sets of `benchmarks/judges.py` "
                f"({q['probe']['pairs']} faithfulness pairs, {q['probe']['answerhood_pairs']} answerhood pairs from "
                f"reserved documents; `{q['command']}`, {q['date']}). Seconds: the whole command (the training loop "
                "in brackets); the two trainings ran at different times on this shared machine, so the loop ratio "
                "above is the side-by-side measure:", "",
                "| training | faithfulness s | answerhood s | total s | faithfulness balanced accuracy, served "
                "int8 | same, fp32 | answerhood ROC AUC |", "|---|---|---|---|---|---|---|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    return "\n".join(out) + "\n" if out else "No judge-training results yet (`benchmarks/judge_training.py`).\n"


def main() -> int:
    print(render_judges() + "\n" + render_answers() + "\n" + render_judge_training(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
